"""PolicyController: every decision the policy node makes, as plain Python -- events in, commands out.

What it owns: FrameSync (camera matching, staleness, liveness), the JointStateInput (joint state,
its history for pairing), the InstructionGate, the ChunkScheduler (the plan, request pacing), the
SafetyFilter (limits, step caps, holds) and the diagnostics aggregator; and it hands frame sets to
an inference pool it is given. What it is given: the clocks (``Clocks``: the node clock all stamps
are judged on, and the monotonic clock the pool stamps finish times with), the pool
(``submit / poll / busy / close`` and ``workers``, as inference.pool.InferencePool), what the bundle
knows about instructions (``InstructionSource``) and a logger (rclpy's, or any object with
``error / warning / info(msg, throttle_duration_sec=...)``).

Why a class of its own: the same decisions must run in three places -- the ROS node (over DDS),
offline replay (on the bag clock) and the fault and property tests (on an exact simulated clock) --
and each must be the node's own code, not a copy. The node (ros/node.py) keeps parameters, the
lifecycle, the ROS entities and message conversion (ros/bridge.py); replay/simulation.py drives
the same controller and bridge on a simulated clock.

Events (all on one thread -- the node's executor -- so nothing here needs a lock):
- ``on_frame(camera, stamp_ns, rgb)``, ``on_joint_state(names, positions, stamp_ns)``,
  ``on_instruction(text)``: inputs; a completed fresh frame set may start an inference;
- ``tick() -> TickResult``: one control period -- merge finished chunks (each at the time its worker
  finished), decide follow or hold and why, form the command; request the next chunk if due;
- ``activate()``, ``deactivate() -> Command | None``, ``pause()``, ``resume()``,
  ``reconfigure(config) -> Command | None``: lifecycle, services and runtime parameters;
- ``diagnostics() -> (statuses, now_ns)``.
Commands are ``ForwardCommand`` (one position/delta vector) or ``TrajectoryCommand`` (points
``dt_ns`` apart, the first one ``dt_ns`` after arrival).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lightwam_ros.config import BundleInfo, OutputMode, PolicyConfig
from lightwam_ros.control.diagnostics import Diagnostics, DiagnosticsInput
from lightwam_ros.control.instruction import InstructionGate, InstructionSource, clipped
from lightwam_ros.control.joint_input import JointStateInput
from lightwam_ros.control.safety import HoldReason, SafetyFilter, hold_reason
from lightwam_ros.control.scheduler import ChunkOutcome, ChunkScheduler
from lightwam_ros.control.sync import FrameSync
from lightwam_ros.types import ActionChunk, FrameSet

THROTTLE_S = 2.0  # min seconds between repeats of one error message (bad frames, unknown joints)
INSTRUCTION_ERROR_THROTTLE_S = 10.0  # the unusable-instruction error, repeated from the tick
TICK_WINDOW = 500  # control-tick periods kept for the jitter figures in diagnostics (10 s at 50 Hz)


# ---------------------------------------------------------------------------------------------
# What the controller is given and what it returns
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clocks:
    """now_ns: the node clock (ROS time, /clock in simulation, the bag clock in replay), on which
    every stamp is judged. mono_ns: the clock the inference pool stamps finish times with (a
    chunk is merged as if it arrived when its worker finished, mapped onto the node clock)."""

    now_ns: Callable[[], int]
    mono_ns: Callable[[], int]


class Log(Protocol):
    def error(self, message: str, **kwargs: Any) -> Any: ...
    def warning(self, message: str, **kwargs: Any) -> Any: ...
    def info(self, message: str, **kwargs: Any) -> Any: ...


class Pool(Protocol):
    """The inference pool's interface (inference.pool.InferencePool; replay's SimulatedInference)."""

    @property
    def workers(self) -> int: ...
    @property
    def busy(self) -> bool: ...
    def submit(self, ticket: int | None, request: FrameSet) -> bool: ...
    def poll(self) -> list[Any]: ...  # PoolResult: ticket, request, chunk | None, error, finished_monotonic_ns
    def close(self, timeout: float = ...) -> bool: ...


@dataclass(frozen=True)
class ModelInfo:
    """Where the model runs, for diagnostics."""

    backend: str
    device: str
    dtype: str
    dt_ns: int  # the bundle's action period


@dataclass(frozen=True)
class Topics:
    """Resolved input topic names, quoted in errors."""

    joint_state: str
    instruction: str


@dataclass(frozen=True)
class ForwardCommand:
    """One command for a forward controller (positions, or deltas with output.action_space delta)."""

    values: np.ndarray


@dataclass(frozen=True)
class TrajectoryCommand:
    """A JointTrajectory: ``points[k]`` at (k + 1) * dt_ns after arrival."""

    points: np.ndarray
    dt_ns: int
    velocities: bool = False


Command = ForwardCommand | TrajectoryCommand


@dataclass(frozen=True)
class FinishedChunk:
    """A chunk a worker finished (published on ~/action_chunk whatever came of it)."""

    chunk: ActionChunk
    arrival_ns: int  # node-clock time its worker finished
    outcome: ChunkOutcome


@dataclass
class TickResult:
    """One control period: the hold reason (None: following the plan), the command to publish
    (None: nothing this tick) and the chunks merged this tick, in finish order."""

    hold: HoldReason | None
    command: Command | None = None
    chunks: list[FinishedChunk] = field(default_factory=list)


def inference_workers(max_inflight: int, max_concurrency: int) -> int:
    """Worker threads to run: chunk.max_inflight, capped by how many predict() calls the backend
    overlaps usefully (1 on the CPU, with CUDA graphs and torch.compile)."""
    return max(1, min(int(max_inflight), int(max_concurrency)))


# ---------------------------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------------------------

class PolicyController:
    """See the module doc. Public attributes are for reading (tests, diagnostics, replay)."""

    def __init__(self, config: PolicyConfig, bundle_info: BundleInfo, pool: Pool, instructions: InstructionSource,
                 clocks: Clocks, log: Log, *, name: str, model: ModelInfo, topics: Topics,
                 warm_latency_ns: int | None = None) -> None:
        now = clocks.now_ns()
        self.config = config
        self.bundle_info = bundle_info
        self.pool = pool
        self.clocks = clocks
        self.log = log
        self.model = model
        self.sync = FrameSync(config.cameras.names, config.sync, now)
        self.scheduler = ChunkScheduler(self._chunk_config(config))
        self.safety = SafetyFilter(config.safety, config.output.joint_names)
        self.joints = JointStateInput(config, topics.joint_state)
        self.instruction = InstructionGate(config.instruction.default, topics.instruction, instructions)
        self.diagnostics_aggregator = Diagnostics(name, config.cameras.names, now)
        if warm_latency_ns:  # pace the first requests from the warm-up
            self.scheduler.prime(int(warm_latency_ns), self.steps, model.dt_ns)
        self.latest_set: FrameSet | None = None
        self.active = False
        self.paused = False
        self.following = False  # the last tick followed the plan (a hold must be sent on leaving it)
        self.hold: HoldReason | None = HoldReason.INACTIVE
        self.last_error = ""
        self.ticks = 0
        self.chunks_published = 0
        self.trajectories_published = 0
        self.tick_periods_ns: list[int] = []  # recent tick-to-tick periods on the monotonic clock
        self._last_tick_mono: int | None = None
        self._last_tick_now: int | None = None  # node-clock time of the previous tick

    # -- configuration -----------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return self.pool.workers

    @property
    def steps(self) -> int:
        """Steps of a chunk that may run (chunk.execute_steps capped by the trained steps)."""
        return self.config.chunk.steps_limit(self.bundle_info.trained_steps)

    def _chunk_config(self, config: PolicyConfig) -> Any:
        """The scheduler paces requests for the inferences that can really run at once."""
        return dataclasses.replace(config.chunk, max_inflight=min(config.chunk.max_inflight, self.pool.workers))

    def reconfigure(self, new: PolicyConfig) -> Command | None:
        """Apply a validated runtime update. Switching dry_run on sends one hold of the last
        command (the last thing the executor hears) and then nothing."""
        command = None
        if new.dry_run and not self.config.dry_run and self.following:
            command = self._hold_command(HoldReason.DRY_RUN)
            self.following = False
        self.config = new
        self.sync.reconfigure(new.sync)
        self.scheduler.reconfigure(self._chunk_config(new))
        self.safety.reconfigure(new.safety)
        self.joints.config = new
        self.instruction.default = new.instruction.default
        return command

    # -- lifecycle and services ----------------------------------------------------------------------

    def activate(self) -> None:
        """Start following from a fresh chunk and from the measured position: results computed
        before activation are stale, requests still running become void, and the robot may have
        been moved while inactive."""
        for result in self.pool.poll():
            self.scheduler.inference_failed(result.ticket)
        self.scheduler.reset()
        self.safety.reset()
        self.active, self.paused, self.following = True, False, False
        self._last_tick_now = None

    def deactivate(self, reason: HoldReason = HoldReason.INACTIVE) -> Command | None:
        """Stop; a node that was following sends one last hold (the executor stops where it was
        told to be)."""
        command = self._hold_command(reason) if self.following else None
        self.active, self.following, self.hold = False, False, reason
        return command

    def pause(self) -> tuple[bool, str]:
        if not self.active:
            return False, "not active"
        self.paused = True
        return True, "paused: holding the last command"

    def resume(self) -> tuple[bool, str]:
        if not self.active:
            return False, "not active"
        if self.paused:
            self.paused = False
            self.scheduler.reset()  # the plan from before the pause is stale: wait for a fresh chunk
        return True, "resumed: following the policy from a fresh chunk"

    def close(self, timeout_s: float) -> bool:
        """Stop the pool; False if an inference was still running after ``timeout_s``."""
        self.active = False
        return self.pool.close(timeout_s)

    # -- inputs --------------------------------------------------------------------------------------

    def on_frame(self, camera: str, stamp_ns: int, rgb: np.ndarray) -> None:
        now = self.clocks.now_ns()
        frames = self.sync.add(camera, stamp_ns, rgb, now)
        if frames is not None:
            self.latest_set = frames
            self._maybe_request_inference(now)

    def on_joint_state(self, names: Any, positions: Any, stamp_ns: int) -> None:
        error = self.joints.offer(names, positions, stamp_ns, self.clocks.now_ns())
        if error:
            self.log.error(error, throttle_duration_sec=THROTTLE_S)

    def on_instruction(self, text: str) -> None:
        level, message = self.instruction.receive(text)
        if level == "error":
            self.log.error(message)
        elif level:
            self.log.info(message)

    # -- inference requests ------------------------------------------------------------------------

    def _maybe_request_inference(self, now: int) -> None:
        """Hand the newest fresh frame set to a free worker when the scheduler needs the next chunk."""
        if not self.active or self.paused or self.latest_set is None or self.pool.busy:
            return
        frames = self.latest_set
        if not self.scheduler.wants_inference(now, obs_stamp_ns=frames.stamp_ns):
            return
        if now - frames.stamp_ns > self.config.sync.max_age_ns or not self.joints.fresh(now):
            return
        ok, _ = self.instruction.status()
        if not ok:
            return
        state = self.joints.state_at(frames.stamp_ns)
        if state is None:
            return
        request = dataclasses.replace(frames, state=state.copy(), instruction=self.instruction.current)
        ticket = self.scheduler.inference_started(now, obs_stamp_ns=frames.stamp_ns)
        if self.pool.submit(ticket, request):
            self.latest_set = None  # one set is used once
        else:  # no free slot after all: the ticket must not stay in flight
            self.scheduler.inference_failed(ticket)

    def _collect(self, now: int) -> tuple[bool, list[FinishedChunk]]:
        """Merge every finished chunk into the plan, in finish order, each at the node-clock time its
        worker finished (the pool's monotonic finish time mapped onto the node clock, clamped to the
        interval since the previous tick): a chunk that finished mid-period is planned from when it
        was ready, not from when the tick collected it. Returns (plan changed, finished chunks)."""
        results = self.pool.poll()
        if not results:
            return False, []
        mono = self.clocks.mono_ns()
        lo = self._last_tick_now if self._last_tick_now is not None else now
        changed = False
        finished: list[FinishedChunk] = []
        for result in results:
            arrival = min(now, max(lo, now - (mono - result.finished_monotonic_ns)))
            changed = self._merge(result, arrival, finished) or changed
        return changed, finished

    def _merge(self, result: Any, now: int, finished: list[FinishedChunk]) -> bool:
        """Merge one finished request at node-clock time ``now``; True when the plan changed."""
        ticket = result.ticket
        if result.chunk is None:
            self.scheduler.inference_failed(ticket)
            self.last_error = result.error or "inference failed"
            self.log.error(f"inference failed: {self.last_error}; holding", throttle_duration_sec=THROTTLE_S)
            return False
        chunk = result.chunk
        outcome = self.scheduler.on_chunk(chunk, now, ticket, check=self.safety.check_chunk)
        self.chunks_published += 1
        finished.append(FinishedChunk(chunk, now, outcome))
        self.diagnostics_aggregator.record_chunk(outcome, chunk.timings_ms)
        if outcome is ChunkOutcome.VOID:  # requested before a resume/activation: never used
            return False
        if outcome is ChunkOutcome.REFUSED:
            self.last_error = self.scheduler.last_refusal or "chunk refused"
            self.log.error(f"chunk refused: {self.last_error}; holding", throttle_duration_sec=THROTTLE_S)
            return False
        if outcome is not ChunkOutcome.ACCEPTED:
            self.log.warning(f"chunk {outcome.value} (observation {(now - chunk.stamp_ns) / 1e6:.0f} ms old)",
                             throttle_duration_sec=THROTTLE_S)
        return outcome is ChunkOutcome.ACCEPTED

    # -- control -----------------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """One control period (see the module doc). Inactive: nothing happens."""
        if not self.active:
            return TickResult(hold=HoldReason.INACTIVE)
        mono = self.clocks.mono_ns()
        if self._last_tick_mono is not None:
            self.tick_periods_ns.append(mono - self._last_tick_mono)
            del self.tick_periods_ns[:-TICK_WINDOW]
        self._last_tick_mono = mono
        self.ticks += 1
        now = self.clocks.now_ns()
        if self._last_tick_now is not None and now < self._last_tick_now:
            self._on_clock_jump(now)
        new_plan, finished = self._collect(now)
        tick = self.scheduler.tick(now)
        ok_instruction, why = self.instruction.status()
        if why:
            self.log.error(why, throttle_duration_sec=INSTRUCTION_ERROR_THROTTLE_S)
        reason = hold_reason(active=self.active, paused=self.paused, state_fresh=self.joints.fresh(now),
                             dead_cameras=self.sync.dead_cameras(now), have_instruction=ok_instruction,
                             tick_status=tick.status, dry_run=self.config.dry_run)
        self.hold = reason
        command: Command | None = None
        if self.config.dry_run:  # never commands, whatever else holds (the switch sent the last hold)
            self.safety.silent(reason or HoldReason.DRY_RUN)
            followed = False
        elif reason is None:
            followed, command = self._follow(tick.action, now, resend=new_plan or not self.following)
        else:
            command = self._hold_tick(reason)
            followed = False
        self.following = followed
        self._maybe_request_inference(now)
        self._last_tick_now = now
        return TickResult(hold=reason, command=command, chunks=finished)

    def _on_clock_jump(self, now: int) -> None:
        """The node clock ran backwards (a looping bag, a /clock restart): every stamp held so far
        belongs to another timeline. The plan, requests in flight, the joint state and its history
        and the camera queues are dropped; the robot holds until fresh input forms a new plan."""
        self.log.warning(
            f"clock jumped back by {(self._last_tick_now - now) / 1e9:.3f} s: plan, joint state and camera "
            "queues reset; holding until fresh input")
        self.scheduler.reset()
        self.sync.reset(now)
        self.latest_set = None
        self.joints.clear()
        self._last_tick_now = None

    @property
    def _has_output(self) -> bool:
        return self.config.output.mode is not OutputMode.NONE

    def _measured(self, fallback: np.ndarray | None) -> np.ndarray | None:
        """Measured positions in action order; when the action dims are not joints of the joint
        state, or are deltas (a measured position is no reference for an increment), the plan's
        own current value is the reference."""
        if self.joints.measured is not None and self.config.output.holds_by_repeating:
            return self.joints.measured
        return fallback

    def _follow(self, action: np.ndarray, now: int, resend: bool) -> tuple[bool, Command | None]:
        """Command the plan's action for this tick. (False, None) if no command could be formed
        (no reference position: nothing is published, the tick counts as silent)."""
        measured = self._measured(action)
        out = self.config.output
        if out.mode is OutputMode.JOINT_TRAJECTORY and self.safety.last_commanded is None:
            # A trajectory starts from where the controller is now and reaches its first point one
            # step later, so after a silence the reference is the measured position itself (a
            # step taken now would let the first point be two steps away).
            command = self.safety.anchor(measured)
        else:
            command = self.safety.step(action, measured)
        if command is None:
            self.safety.silent(HoldReason.STALE_STATE)
            return False, None
        if out.mode is OutputMode.FORWARD:
            return True, ForwardCommand(command)
        if out.mode is OutputMode.JOINT_TRAJECTORY and resend:
            points = self.scheduler.upcoming(now, out.trajectory_steps)
            if len(points) == 0:
                points = command[None]
            dt = self.scheduler.dt_ns or self.config.control_period_ns
            limited = self.safety.limit_trajectory(points, dt, self.config.control_period_ns, measured)
            if limited is not None:
                self.trajectories_published += 1
                return True, TrajectoryCommand(limited, dt, out.send_velocities)
        return True, None

    def _hold_tick(self, reason: HoldReason) -> Command | None:
        """One hold tick. Position actions: forward mode repeats the last command every tick (the
        controller must be told where to stay); a trajectory controller gets one hold message when
        the node stops following and then silence (it keeps the hold). Delta actions: never the
        last delta again (that keeps the robot moving) -- output.hold_command if configured, else
        nothing."""
        out = self.config.output
        if out.mode is OutputMode.FORWARD and not out.holds_by_repeating:
            if out.hold_command:
                return ForwardCommand(self.safety.hold_with(reason, out.hold_command))
            self.safety.silent(reason)
            return None
        if out.mode is OutputMode.FORWARD or (out.mode is OutputMode.JOINT_TRAJECTORY and self.following):
            return self._hold_command(reason)
        self.safety.silent(reason)
        return None

    def _hold_command(self, reason: HoldReason) -> Command | None:
        """The position to hold (position actions) -- or, for delta actions, the neutral hold
        command or nothing (see _hold_tick)."""
        out = self.config.output
        if not out.holds_by_repeating:
            if out.hold_command and out.mode is OutputMode.FORWARD:
                return ForwardCommand(self.safety.hold_with(reason, out.hold_command))
            self.safety.silent(reason)
            return None
        position = self.safety.hold(reason, self._measured(None))
        if position is None or not self._has_output:
            return None
        if out.mode is OutputMode.FORWARD:
            return ForwardCommand(position)
        self.trajectories_published += 1
        return TrajectoryCommand(position[None], self.config.control_period_ns)

    # -- diagnostics -------------------------------------------------------------------------------

    def diagnostics(self) -> tuple[list[dict[str, Any]], int]:
        """(statuses, now_ns) for /diagnostics (control.diagnostics status dicts)."""
        now = self.clocks.now_ns()
        sched = self.scheduler
        latency = sched.expected_latency_ns
        keeps_up = None
        if latency is not None and sched.dt_ns:
            keeps_up = ChunkScheduler.keeps_up(latency, self.steps, sched.dt_ns, max_inflight=sched.config.max_inflight)
        extra: dict[str, Any] = {"lifecycle": "active" if self.active else "inactive", "paused": self.paused,
                                 "dry_run": self.config.dry_run, "ticks": self.ticks,
                                 "trajectories_published": self.trajectories_published,
                                 "chunks_published": self.chunks_published}
        if len(self.tick_periods_ns) > 1:  # monotonic periods of the last TICK_WINDOW control ticks
            periods = np.asarray(self.tick_periods_ns, dtype=np.float64) / 1e6
            extra.update({"tick_period_ms.mean": float(periods.mean()), "tick_period_ms.std": float(periods.std()),
                          "tick_period_ms.p99": float(np.percentile(periods, 99)),
                          "tick_period_ms.max": float(periods.max())})
        if self.last_error:
            extra["last_error"] = self.last_error
        extra.update(self.instruction.diagnostics())
        inp = DiagnosticsInput(
            sync=self.sync.stats(), dead_cameras=self.sync.dead_cameras(now), silence_ns=self.sync.silence_ns(now),
            hold=self.hold if self.active else HoldReason.INACTIVE, queue_steps=sched.remaining_steps(now),
            safety=self.safety.stats(), backend=self.model.backend, device=self.model.device,
            dtype=self.model.dtype, expected_latency_ns=latency, keeps_up=keeps_up,
            state_age_ns=self.joints.age_ns(now), instruction=clipped(self.instruction.current) or None,
            extra=extra, chunk_steps=self.steps, dt_ns=sched.dt_ns or self.model.dt_ns,
            max_inflight=sched.config.max_inflight)
        return self.diagnostics_aggregator.statuses(now, inp), now
