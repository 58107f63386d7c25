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
Refused chunks and failed inferences are counted (``RepeatedFault``): logged once, then at most one
line per REPEAT_LOG_PERIOD_S with the count; after refusals in a row the next request waits
(``backoff_ns``, chunk.refusal_backoff_max) and from chunk.refusal_error_count in a row the control
status is ERROR naming what to check; an accepted chunk ends all of it at once.
Commands are ``ForwardCommand`` (one position/delta vector) or ``TrajectoryCommand`` (points
``dt_ns`` apart, the first one ``dt_ns`` after the start: the arrival, or the stamp
output.trajectory_start_delay ahead on the node clock; with output.send_velocities, velocities
that continue the motion across handovers -- docs/design.md, "JointTrajectoryController
conventions").
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lightwam_ros.config import BundleInfo, OutputMode, PolicyConfig
from lightwam_ros.control.diagnostics import Diagnostics, DiagnosticsInput
from lightwam_ros.control.instruction import InstructionGate, InstructionSource, clipped
from lightwam_ros.control.joint_input import JointStateInput
from lightwam_ros.control.jtc_spline import Knot, knot_velocities, sample
from lightwam_ros.control.safety import HoldReason, SafetyFilter, hold_reason
from lightwam_ros.control.scheduler import ChunkOutcome, ChunkScheduler
from lightwam_ros.control.sync import FrameSync
from lightwam_ros.types import ActionChunk, FrameSet

THROTTLE_S = 2.0  # min seconds between repeats of one error message (bad frames, unknown joints)
INSTRUCTION_ERROR_THROTTLE_S = 10.0  # the unusable-instruction error, repeated from the tick
TICK_WINDOW = 500  # control-tick periods kept for the jitter figures in diagnostics (10 s at 50 Hz)
# Repeated refused chunks / failed inferences: the first is logged at once, then at most one line per
# period with the count. Not a parameter: diagnostics carry the live count every publish, so the log
# only has to show that it started and that it goes on; 30 s keeps an hour of a broken model to 120
# lines whatever the chunk rate. The reasons name values that differ per chunk, so a logger that
# throttles by message text (control/logs.py) or a wall-clock throttle would not bound them.
REPEAT_LOG_PERIOD_S = 30.0


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
    """A JointTrajectory: ``points[k]`` at (k + 1) * dt_ns after its start, which is ``stamp_ns`` on
    the node clock, or the arrival at the controller when ``stamp_ns`` is 0 (header.stamp 0).
    ``velocities`` [m, A] (None: positions only, the JTC interpolates linearly) are those of the
    limited points, the last 0 (jtc_spline.knot_velocities)."""

    points: np.ndarray
    dt_ns: int
    velocities: np.ndarray | None = None
    stamp_ns: int = 0


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


class RepeatedFault:
    """One kind of repeated failure (refused chunks, failed inferences): how many in a row, and
    when to say so in the log.

    Why counted here and not throttled by the logger: each reason names the values of its chunk, so
    every line differs and a text-keyed throttle lets all of them through (79 ERROR lines in 14
    minutes of replay with a random-weight bundle), and rclpy throttles on the wall clock while the
    controller runs on the node clock (a replay runs faster). Here the first failure is said at
    once and later ones are counted into at most one line per ``period_ns`` of the node clock: "x17
    in the last 30.0 s: <last reason>". ``consecutive`` ends with a success (``clear``); the line
    timing does not, so a model flapping between good and bad chunks is bounded too."""

    def __init__(self, what: str, period_ns: int) -> None:
        self.what = what
        self.period_ns = period_ns
        self.consecutive = 0  # failures since the last success
        self.reason = ""  # of the last failure
        self._unsaid = 0  # failures not yet in a log line
        self._line_ns: int | None = None  # node-clock time of the last line

    def record(self, reason: str) -> None:
        """Count one failure (``due`` says whether to log it now)."""
        self.consecutive += 1
        self.reason = reason
        self._unsaid += 1

    def due(self, now_ns: int) -> str | None:
        """The line for the failures not yet said, once a period has passed since the last line
        (always after a clock jump back: a negative interval says nothing about time passed)."""
        if not self._unsaid:
            return None
        last = self._line_ns
        if last is not None and 0 <= now_ns - last < self.period_ns:
            return None
        count = f" (x{self._unsaid} in the last {(now_ns - last) / 1e9:.1f} s)" if last is not None and \
            self._unsaid > 1 and now_ns >= last else ""
        self._unsaid, self._line_ns = 0, now_ns
        return f"{self.what}{count}: {self.reason}"

    def clear(self) -> int:
        """A success: returns how many failed in a row before it."""
        run, self.consecutive = self.consecutive, 0
        return run


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
        self.scheduler = ChunkScheduler(self._chunk_config(config), self._start_delay_ns(config))
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
        # (camera, reason) -> frames that arrived but never reached the sync: "undecodable" (a bad
        # raw or compressed image), "decode_backlog" (dropped undecoded while decoding fell behind)
        self.lost_frames: Counter[tuple[str, str]] = Counter()
        self.ticks = 0
        self.chunks_published = 0
        self.trajectories_published = 0
        self.tick_periods_ns: list[int] = []  # recent tick-to-tick periods on the monotonic clock
        self._last_tick_mono: int | None = None
        self._last_tick_now: int | None = None  # node-clock time of the previous tick
        period = int(REPEAT_LOG_PERIOD_S * 1e9)
        self.refusals = RepeatedFault("chunk refused", period)
        self.failures = RepeatedFault("inference failed", period)
        self._retry_at_ns: int | None = None  # no inference request before this (refusal back-off)
        # The last trajectory sent while following, as the JTC executes it: knot times on the node
        # clock (the first: where it started from, when it was sent) and knots (_executing).
        self._sent: tuple[np.ndarray, list[Knot]] | None = None

    # -- configuration -----------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return self.pool.workers

    @property
    def steps(self) -> int:
        """Steps of a chunk that may run (chunk.execute_steps capped by the trained steps)."""
        return self.config.chunk.steps_limit(self.bundle_info.trained_steps)

    @staticmethod
    def _start_delay_ns(config: PolicyConfig) -> int:
        """How far ahead a sent plan starts: a stamped trajectory's delay, else nothing."""
        out = config.output
        return out.trajectory_start_delay_ns if out.mode is OutputMode.JOINT_TRAJECTORY else 0

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
        if new.safety != self.config.safety or new.chunk != self.config.chunk:
            self._retry_at_ns = None  # new limits or back-off: let the next frame set show whether they help
        self.config = new
        self.sync.reconfigure(new.sync)
        self.scheduler.reconfigure(self._chunk_config(new))
        self.scheduler.start_delay_ns = self._start_delay_ns(new)
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
        self._retry_at_ns = None  # the first request after activation is never delayed

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
            self._retry_at_ns = None  # and ask for it at once, whatever the refusal back-off was
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

    def on_lost_frames(self, camera: str, reason: str, count: int = 1) -> None:
        """Frames of ``camera`` that arrived but could not be used; the camera simply has no frame
        (the sync's dead-camera and staleness rules decide whether the robot holds)."""
        if count > 0:
            self.lost_frames[(camera, reason)] += count

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
        if self._retry_at_ns is not None and now < self._retry_at_ns:
            return  # backing off after refused chunks (the robot holds chunk_refused meanwhile)
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
            self.failures.record(self.last_error)
            line = self.failures.due(now)
            if line:
                self.log.error(f"{line}; holding")
            return False
        self.failures.clear()
        chunk = result.chunk
        outcome = self.scheduler.on_chunk(chunk, now, ticket, check=self.safety.check_chunk)
        self.chunks_published += 1
        finished.append(FinishedChunk(chunk, now, outcome))
        self.diagnostics_aggregator.record_chunk(outcome, chunk.timings_ms)
        if outcome is ChunkOutcome.VOID:  # requested before a resume/activation: never used
            return False
        if outcome is ChunkOutcome.REFUSED:
            self.last_error = self.scheduler.last_refusal or "chunk refused"
            self.refusals.record(self.last_error)
            self._back_off(now)
            self._log_refusals(now)
            return False
        if outcome is ChunkOutcome.ACCEPTED:
            self._refusals_over()
        else:
            self.log.warning(f"chunk {outcome.value} (observation {(now - chunk.stamp_ns) / 1e6:.0f} ms old)",
                             throttle_duration_sec=THROTTLE_S)
        return outcome is ChunkOutcome.ACCEPTED

    # -- refused chunks: back-off and recovery -------------------------------------------------------

    def backoff_ns(self, consecutive: int) -> int:
        """The wait before the next request after ``consecutive`` refused chunks in a row: none
        after the first (one bad chunk may be a glitch: ask again at once), then one chunk period
        (the usable steps x dt: what one chunk would have run), doubling, up to
        chunk.refusal_backoff_max (0: never wait).

        Why back off at all: a model whose every output is refused would otherwise be run back to
        back for as long as the node is up -- the GPU busy, a request at every chance -- while the
        robot holds anyway. Why not stop asking: the refusal may be fixed without a restart
        (a runtime change of the limits, or inputs that made the model diverge going back to
        normal), and one request per back-off period notices that."""
        limit = self.config.chunk.refusal_backoff_max_ns
        if consecutive < 2 or limit <= 0:
            return 0
        period = self.steps * (self.scheduler.dt_ns or self.model.dt_ns)
        return min(limit, period << min(consecutive - 2, 62))

    def _back_off(self, now: int) -> None:
        wait = self.backoff_ns(self.refusals.consecutive)
        self._retry_at_ns = now + wait if wait > 0 else None

    def _log_refusals(self, now: int) -> None:
        """The refusal line, if one is due (RepeatedFault): with the back-off still to wait."""
        line = self.refusals.due(now)
        if not line:
            return
        wait = 0 if self._retry_at_ns is None else self._retry_at_ns - now
        self.log.error(f"{line}; holding" + (f", next inference request in {wait / 1e9:.2f} s "
                                             f"({self.refusals.consecutive} refused in a row)" if wait > 0 else ""))

    def _refusals_over(self) -> None:
        """An accepted chunk: the back-off, the count and the escalated status end at once."""
        run = self.refusals.clear()
        self._retry_at_ns = None
        if run >= self.config.chunk.refusal_error_count:  # the status was ERROR: say that it is over
            self.log.info(f"chunk accepted after {run} refused in a row; following the policy again")

    def _refusal_fault(self) -> str | None:
        """The control status' ERROR message once chunk.refusal_error_count chunks in a row were
        refused (before that a refused chunk holds at WARN: the next one may be fine)."""
        run = self.refusals.consecutive
        if run < self.config.chunk.refusal_error_count:
            return None
        return (f"model output persistently refused: {run} chunks in a row (last: {self.refusals.reason}); "
                "check safety.position_min/max in the profile against the bundle's action range "
                "(embodiment.normalization.action in its manifest), the normalization statistics and "
                "the joint order (joints.names / output.joint_names against the bundle's)")

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
        self._log_refusals(now)  # failures counted since the last line, once a period has passed
        line = self.failures.due(now)
        if line:
            self.log.error(f"{line}; holding")
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
        self._retry_at_ns = None  # a deadline on the old timeline: the first request is never delayed

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
        elif out.mode is OutputMode.JOINT_TRAJECTORY and resend and self.following and self._sent is not None:
            # A new plan merged while the JTC executes the last trajectory: the new one starts from
            # where that one has the JTC now. A step toward the new plan would already have moved
            # the reference by up to max_step that the JTC never receives, and the first point,
            # capped from it, would then be up to two steps (and a reversal) from the JTC's position.
            command = self.safety.track(self._executing(now))
        else:
            command = self.safety.step(action, measured)
        if command is None:
            self.safety.silent(HoldReason.STALE_STATE)
            return False, None
        if out.mode is OutputMode.FORWARD:
            return True, ForwardCommand(command)
        if out.mode is OutputMode.JOINT_TRAJECTORY and resend:
            trajectory = self._trajectory(command, now, measured)
            if trajectory is not None:
                self.trajectories_published += 1
                return True, trajectory
        return True, None

    def _trajectory(self, command: np.ndarray, now: int, measured: np.ndarray | None) -> TrajectoryCommand | None:
        """The plan from its start on as a JointTrajectory, limited like the per-tick commands.

        The start is now (header.stamp 0: the JTC starts it on arrival) or now +
        output.trajectory_start_delay (header.stamp on the node clock). Row 0 of what is limited is
        the plan at the start -- capped from this tick's command over the delay, so with no delay it
        *is* this tick's command: where the trajectory starts from -- and rows 1.. are the points,
        dt apart. The velocities are central differences over all rows (jtc_spline.knot_velocities),
        so the first point's velocity continues the motion the JTC is executing when it takes the
        new trajectory over, and they come from the limited rows, so they obey the same cap."""
        out = self.config.output
        dt = self.scheduler.dt_ns or self.config.control_period_ns
        delay = out.trajectory_start_delay_ns
        start = now + delay
        # upcoming(t) samples t + (k + 1) * dt: from start - dt, row k is the plan at start + k * dt.
        rows = self.scheduler.upcoming(start - dt, out.trajectory_steps + 1 if out.trajectory_steps else 0)
        if len(rows) < 2:  # the plan ends within a step of the start: hold where the command is
            rows = np.stack([command, command])
        limited = self.safety.limit_trajectory(rows, dt, self.config.control_period_ns, measured, first_dt_ns=delay)
        if limited is None:
            return None
        anchor, points = limited[0], limited[1:]
        velocities = knot_velocities(anchor, points, dt) if out.send_velocities else None
        times = np.concatenate(([now], start + dt * np.arange(1, len(points) + 1, dtype=np.int64)))
        per_point = velocities if velocities is not None else [None] * len(points)
        knots = [Knot(command)] + [Knot(p, v) for p, v in zip(points, per_point)]
        self._sent = (times, knots)
        return TrajectoryCommand(points, dt, velocities, start if delay > 0 else 0)

    def _executing(self, now: int) -> np.ndarray:
        """Where the JTC is at ``now`` on the last trajectory sent: its points at their times (the
        stamp, or the send time standing for the arrival), from where it started at the send time
        -- that first segment linear, the JTC's own starting velocity being unknown here; the others
        the JTC's spline. Ticks fall on the points when the control period is the action period."""
        times, knots = self._sent
        return sample(times, knots, now)

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
        extra["refusals.consecutive"] = self.refusals.consecutive
        if self._retry_at_ns is not None and self._retry_at_ns > now:
            extra["refusals.next_request_in_s"] = (self._retry_at_ns - now) / 1e9
        extra["inference_failures.consecutive"] = self.failures.consecutive
        for (camera, reason), n in sorted(self.lost_frames.items()):
            extra[f"lost_frames.{camera}.{reason}"] = n
        extra.update(self.instruction.diagnostics())
        inp = DiagnosticsInput(
            sync=self.sync.stats(), dead_cameras=self.sync.dead_cameras(now), silence_ns=self.sync.silence_ns(now),
            hold=self.hold if self.active else HoldReason.INACTIVE, queue_steps=sched.remaining_steps(now),
            safety=self.safety.stats(), backend=self.model.backend, device=self.model.device,
            dtype=self.model.dtype, expected_latency_ns=latency, keeps_up=keeps_up,
            state_age_ns=self.joints.age_ns(now), instruction=clipped(self.instruction.current) or None,
            extra=extra, chunk_steps=self.steps, dt_ns=sched.dt_ns or self.model.dt_ns,
            max_inflight=sched.config.max_inflight, fault=self._refusal_fault() if self.active else None)
        return self.diagnostics_aggregator.statuses(now, inp), now
