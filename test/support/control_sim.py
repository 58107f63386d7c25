"""Event-sequence driver for the control-path property tests (test/control/test_control_properties.py).

Built on the same pieces as fault_sim (the node's controller and bridge in a
lightwam_ros.replay.simulation.Simulation, a simulated clock, recording publishers,
SimulatedInference) but with its own event loop, because the properties need what the
fixed-stream SimRobot.run does not give: the clock jumping backwards and forwards, joint states and
camera stamps corrupted per segment, chunks corrupted or delayed per request, lifecycle and
parameter operations between ticks, and a robot that executes every published command (forward
commands at once, JointTrajectory points by linear interpolation) and can be moved by hand.

Why the model is replaced by a synthetic chunk generator: the properties are about what reaches
the robot whatever the chunks are, and a real CPU inference (seconds on a loaded machine) would
allow only a handful of examples. Why one loaded policy per test module and a fresh Simulation per
example: loading verifies the bundle and warms the model up (~10 s); a Simulation builds a fresh
controller (sync, scheduler, safety filter) from a config with ros/assembly.py's build_controller,
as the node's configure does, so every example starts from a just-configured controller with its
own config (output mode, action space) without paying for the model again.

Every published output message is checked against the invariants (``Violation`` names the one
broken); see ``Episode`` for the exact rules.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fault_sim import START_NS, LogSpy, Recorder, start
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from lightwam_ros import config as cfgmod
from lightwam_ros.demo.synthetic import joint_positions
from lightwam_ros.replay.simulation import SimClock, SimulatedInference, Simulation
from lightwam_ros.ros.bridge import Publishers
from lightwam_ros.ros.images import ns_to_time, rgb_to_image
from lightwam_ros.types import ActionChunk

MS = 1_000_000
S = 1_000_000_000
CAMERA_PERIOD_NS = 33_333_333
JOINT_PERIOD_NS = 10_000_000
DIAG_NS = 100_000_000
EPS = 1e-9
# generous: a callback on the executor thread delays the 20 ms control tick. Timed: the control tick
# and the message callbacks (whatever a message carries, it must not stall the executor); lifecycle
# transitions, parameter updates and diagnostics are operator-paced and not bounded here.
# CPU time of the calling thread, not wall time: other processes on a loaded CI machine cannot
# inflate it, while a callback doing unbounded work (a 10 MB instruction, 10^6 joint names) still
# exceeds it by orders of magnitude (the bounded callbacks take about 1 ms).
CALLBACK_BOUND_S = float(os.environ.get("LIGHTWAM_CALLBACK_BOUND_MS", "50")) / 1e3
TIMED = frozenset({"tick", "joint", "camera", "instruction", "joint(huge)", "joint(new names)"})
HORIZON = 32  # rows the synthetic model returns (the demo bundle's horizon; trained_steps is 24)
UNKNOWN_INSTRUCTION = "do a backflip"

CAMERA_MODES = ("ok", "late", "one_silent", "all_silent", "duplicate", "backwards", "future")
JOINT_MODES = ("ok", "reordered", "extra", "nan_state", "nan_measured", "future", "slight_future", "past",
               "silent", "wrong_len", "dup_name", "unstamped")
CHUNK_MODES = ("ok", "nan_row0", "nan_tail", "huge", "beyond_limits", "far_target")
LATENCIES_MS = (0, 20, 40, 150, 400, 700)
OPS = ("none", "pause", "resume", "dry_run_on", "dry_run_off", "deactivate", "activate", "instruction",
       "param", "jump_back", "jump_fwd", "move", "huge_names", "many_name_lists", "huge_instruction")
PARAM_CHOICES = (("chunk.merge", "replace"), ("chunk.merge", "blend"), ("chunk.execute_steps", 4),
                 ("chunk.execute_steps", 0), ("chunk.blend_steps", 0), ("chunk.blend_steps", 30),
                 ("chunk.latency_margin", 0.0), ("chunk.latency_margin", 3.0), ("output.trajectory_steps", 1),
                 ("output.trajectory_steps", 0), ("joints.max_age", 0.05), ("joints.max_age", 0.25),
                 ("sync.queue_size", 1000), ("sync.slop", 0.05), ("instruction.default", ""))


class Violation(AssertionError):
    """An invariant on the output (or on the callbacks) broke; the message names it."""


@dataclass(frozen=True)
class Step:
    """One segment of an episode: ``op`` happens at the start, then ``ticks`` control periods run
    with cameras, joint states and new inference requests in the given modes."""

    ticks: int = 5
    op: str = "none"
    arg: Any = None
    cams: str = "ok"
    joints: str = "ok"
    chunks: str = "ok"
    latency_ms: int = 40

    def __repr__(self) -> str:  # short, readable counterexamples
        parts = [f"ticks={self.ticks}"]
        for f in dataclasses.fields(self)[1:]:
            v = getattr(self, f.name)
            if v != f.default:
                parts.append(f"{f.name}={v!r}")
        return f"Step({', '.join(parts)})"


@dataclass(frozen=True)
class Profile:
    """Which configuration an episode runs: output mode, action space, measured joints."""

    mode: str = "forward"  # forward | joint_trajectory
    delta: bool = False  # actions are deltas (output names not in the joint state)
    aux_joint: bool = False  # one action dim is a joint of the joint state that is not in joints.names
    workers: int = 1  # overlapping inference requests (2: chunks can arrive out of order)
    amplitude: float = 0.6  # rad, of the synthetic policy's motion (fast enough to hit max_step)


class ControlInference(SimulatedInference):
    """SimulatedInference whose latency and chunk faults follow the episode's current step, and
    that counts the wall time spent predicting (excluded from the callback-time bound)."""

    def __init__(self, episode: Episode, workers: int) -> None:
        super().__init__(self._predict_synthetic, episode.clock, 40 * MS, workers=workers)
        self.episode = episode
        self.predict_s = 0.0

    def submit(self, ticket: int | None, frames: Any) -> bool:
        self.latency_ns = self.episode.step.latency_ms * MS
        t0 = time.thread_time()
        try:
            return super().submit(ticket, frames)
        finally:
            self.predict_s += time.thread_time() - t0

    def _predict_synthetic(self, frames: Any) -> ActionChunk:
        return self.episode.synthetic_chunk(frames.stamp_ns)


@dataclass
class _Trajectory:
    t0: int
    start: np.ndarray
    times: np.ndarray  # absolute ns
    points: np.ndarray


class ControlSim:
    """One loaded policy that hands out a fresh Simulation (controller and bridge) per episode."""

    def __init__(self, bundle: Any, name: str = "lw_props") -> None:
        self.robot = start(bundle, name=name, image_hw=(8, 8), latency_ms=40.0)
        self.loaded = self.robot.loaded
        self.clock: SimClock = self.robot.clock
        self.base_params = dict(self.robot.params)
        self.info = self.robot.controller.bundle_info
        # one-time costs (lazy imports, first diagnostics message) are not what the time bound is about
        self.robot.sim.diagnostics()

    def close(self) -> None:
        self.robot.close()

    def params_for(self, profile: Profile) -> dict[str, Any]:
        p = dict(self.base_params)
        p.update({"output.mode": profile.mode, "chunk.max_inflight": profile.workers, "debug.canvas_rate_hz": 0.0,
                  "diagnostics.rate_hz": 10.0, "control.realtime_priority": 0})
        names = list(p["joints.names"])
        if profile.delta:
            p["output.joint_names"] = [f"d_{n}" for n in names]
            if "output.action_space" in cfgmod.SPECS:
                p["output.action_space"] = "delta"
        elif profile.aux_joint:
            p["output.joint_names"] = names[:-1] + ["aux_gripper"]
        return p

    def episode(self, profile: Profile) -> Episode:
        params = self.params_for(profile)
        cfg = cfgmod.from_params(params)
        cfgmod.validate_against_bundle(cfg, self.info)
        self.clock.now_ns = START_NS
        ep = Episode(self, profile, cfg)
        ep.controller.scheduler.prime(40 * MS, cfg.chunk.steps_limit(self.info.trained_steps), cfg.control_period_ns)
        ep.activate()
        return ep


@dataclass
class Episode:
    """Drives one configured runtime through a list of Steps and checks every output message.

    Invariants (each raises Violation naming it):
    - finite: nothing non-finite is published;
    - limits: every published position is within [safety.position_min, position_max];
    - dry_run / inactive: nothing is published while dry_run is set or the node is inactive (the
      one hold sent on the transition into them excepted);
    - delta_hold: with a delta action space, a hold publishes nothing;
    - step: forward mode, a command published the tick after another is within max_step of it; the
      first after a silent tick (nothing published) is within max_step of the measured position
      (the latest joint-state position the node received, fresh or not); joint_trajectory mode,
      point k within max_step * (t_k - t_(k-1)) / period of point k-1, point 0 within
      max_step * t_0 / period of where the controller is (the previous trajectory evaluated now,
      or the measured position);
    - no_reference: nothing is commanded before any measured position was received;
    - callback_time: no callback (inference excluded) takes more than CALLBACK_BOUND_S;
    - raised: no callback raises.
    """

    owner: ControlSim
    profile: Profile
    config: Any  # PolicyConfig of this episode
    step: Step = field(default_factory=Step)

    def __post_init__(self) -> None:
        self.clock = self.owner.clock
        self.inference = ControlInference(self, self.profile.workers)
        self.output = Recorder(self.clock)
        publishers = Publishers(output=self.output, action_chunk=Recorder(self.clock), canvas=Recorder(self.clock),
                                diagnostics=Recorder(self.clock))
        self.sim = Simulation(self.owner.loaded, self.config, publishers, self.clock, LogSpy(),
                              inference=self.inference)
        self.controller = self.sim.controller
        cfg = self.config
        self.joint_names = list(cfg.joints.names)
        self.out_names = list(cfg.output.joint_names)
        extra = [n for n in self.out_names if n not in self.joint_names] if not self.profile.delta else []
        self.robot_names = self.joint_names + extra
        q = joint_positions(0.0, len(self.joint_names))
        self.q = np.concatenate([q, np.full(len(extra), 0.5)]).astype(np.float64)  # extra joints at 0.5
        self.out_idx = None if self.profile.delta else np.array([self.robot_names.index(n) for n in self.out_names])
        self.traj: _Trajectory | None = None
        self.active = False
        self.silent = True  # forward mode: the previous tick published nothing
        self.last_pub: np.ndarray | None = None
        self.meas_refs: dict[str, np.ndarray] = {}  # "any" / "fresh": measured positions the node got
        self.injected: list[str] = []
        self.time_offset = 0  # camera stamps follow the clock through jumps
        self.next: dict[tuple, int] = {}
        self.frozen_stamp: int | None = None
        self.worst_callback_s = 0.0
        self.dry_ticks = 0  # control ticks run with dry_run set, since it was last switched on
        self.last_traj_point: np.ndarray | None = None
        self.frame = np.zeros((8, 8, 3), np.uint8)
        self.center = (np.asarray(cfg.safety.position_min) + np.asarray(cfg.safety.position_max)) / 2

    # -- the robot -----------------------------------------------------------------------------------

    def robot_out(self, t: int) -> np.ndarray | None:
        """Where the controller holds the action dims at t (None for deltas)."""
        if self.out_idx is None:
            return None
        tr = self.traj
        if tr is None:
            return self.q[self.out_idx].copy()
        times = np.concatenate(([tr.t0], tr.times))
        pts = np.concatenate((tr.start[None], tr.points))
        if t >= times[-1]:
            return pts[-1].copy()
        i = int(np.searchsorted(times, t, side="right")) - 1
        a = (t - times[i]) / (times[i + 1] - times[i])
        return pts[i] + a * (pts[i + 1] - pts[i])

    def _settle(self, t: int) -> None:
        out = self.robot_out(t)
        if out is not None:
            self.q[self.out_idx] = out

    def move(self, rng: np.random.Generator) -> None:
        """Someone moves the robot by hand (the controller re-latches where it was left)."""
        if self.out_idx is None:
            return
        self._settle(self.clock.now_ns)
        self.traj = None
        cfg = self.controller.config.safety
        lo, hi = np.asarray(cfg.position_min) + 0.01, np.asarray(cfg.position_max) - 0.01
        self.q[self.out_idx] = np.clip(self.q[self.out_idx] + rng.uniform(-0.4, 0.4, len(self.out_idx)), lo, hi)
        self._deliver_joint(self.clock.now_ns)  # the robot reports where it now is

    # -- the synthetic policy --------------------------------------------------------------------------

    def synthetic_chunk(self, stamp_ns: int) -> ActionChunk:
        cfg = self.controller.config
        dt = cfg.control_period_ns
        a = len(self.out_names)
        t = (stamp_ns + dt * np.arange(HORIZON)) / S
        phase = np.arange(a)[None, :] * 0.7
        if self.profile.delta:
            actions = 0.02 * np.sin(2 * np.pi * 0.5 * t[:, None] + phase)
        else:
            actions = self.center + self.profile.amplitude * np.sin(2 * np.pi * 0.5 * t[:, None] + phase)
        mode = self.step.chunks
        limit = cfg.chunk.steps_limit(self.owner.info.trained_steps)
        lo, hi = np.asarray(cfg.safety.position_min), np.asarray(cfg.safety.position_max)
        if mode == "nan_row0":
            actions[0, 1] = np.nan
        elif mode == "nan_tail":  # rows past the executable prefix are never run, so they may be anything
            actions[limit:] = np.nan
        elif mode == "huge":
            actions[:, 2] = 1e9
        elif mode == "beyond_limits":  # slightly beyond: clamped, not refused
            actions[:, :] = hi + 0.05 * (hi - lo)
        elif mode == "far_target":
            actions[:, :] = lo + 0.1 * (hi - lo)
        if mode != "ok":
            self.injected.append(mode)
        return ActionChunk(actions=actions.astype(np.float32), stamp_ns=stamp_ns, dt_ns=dt,
                           trained_steps=self.owner.info.trained_steps)

    # -- messages -------------------------------------------------------------------------------------

    def _joint_msg(self, t: int) -> JointState | None:
        mode = self.step.joints
        if mode == "silent":
            return None
        names, pos = list(self.robot_names), self.q.astype(np.float64).tolist()
        stamp = t
        if mode == "reordered":
            names, pos = names[::-1], pos[::-1]
        elif mode == "extra":
            names, pos = ["base_yaw", *names, "camera_tilt"], [0.1, *pos, -0.2]
        elif mode == "nan_state":
            pos[2] = float("nan")
        elif mode == "nan_measured":  # a joint used only as the measured position (aux) or the last action joint
            pos[len(pos) - 1] = float("nan")
        elif mode == "future":
            stamp = t + 2 * S
        elif mode == "slight_future":
            stamp = t + 20 * MS
        elif mode == "past":
            stamp = t - 400 * MS
        elif mode == "wrong_len":
            pos = pos[:-1]
        elif mode == "dup_name":
            names, pos = [*names, names[0]], [*pos, pos[0] + 1.0]
        elif mode == "unstamped":
            stamp = 0
        msg = JointState()
        msg.header.stamp = ns_to_time(max(stamp, 0))
        msg.name, msg.position = names, pos
        return msg

    def _deliver_joint(self, t: int) -> None:
        msg = self._joint_msg(t)
        if msg is None:
            return
        self._call("joint", self.sim.joint_state, msg)
        # what the node may take as the measured position (for the first-command-after-silence rule)
        if self.out_idx is None or self.step.joints in ("wrong_len", "dup_name"):
            return
        out = self.q[self.out_idx]
        if self.step.joints in ("nan_measured", "nan_state") and not np.isfinite(
                np.asarray(msg.position)[[list(msg.name).index(n) for n in self.out_names]]).all():
            return
        if self.step.joints == "future":
            return
        self.meas_refs["any"] = out.copy()
        if self.step.joints not in ("past",):
            self.meas_refs["fresh"] = out.copy()

    def _deliver_camera(self, i: int, t: int) -> None:
        mode = self.step.cams
        names = list(self.controller.config.cameras.names)
        if mode == "all_silent" or (mode == "one_silent" and i == 1):
            return
        stamp = t
        if mode == "late":
            stamp = t - 60 * MS
        elif mode == "duplicate" and i == 0:
            if self.frozen_stamp is None:
                self.frozen_stamp = t
            stamp = self.frozen_stamp
        elif mode == "backwards" and i == 0:
            stamp = t - 3 * S
        elif mode == "future" and i == 0:
            stamp = t + 5 * S
        msg = rgb_to_image(self.frame, max(stamp, 1), names[i])
        self._call("camera", self.sim.image, msg, names[i], self.controller.config.cameras.topics[i])

    # -- calling the node -----------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        n = len(self.output.messages)
        dry_before, active_before = self.controller.config.dry_run, self.controller.active
        p0 = self.inference.predict_s
        t0 = time.thread_time()
        try:
            result = fn(*args)
        except Exception as exc:
            raise Violation(f"raised: {what} callback raised {type(exc).__name__}: {exc}") from exc
        took = time.thread_time() - t0 - (self.inference.predict_s - p0)
        self.worst_callback_s = max(self.worst_callback_s, took)
        if took > CALLBACK_BOUND_S and what in TIMED:
            raise Violation(f"callback_time: {what} took {took * 1e3:.1f} ms")
        for _, msg in self.output.messages[n:]:
            self._check(what, msg, dry_before, active_before)
        if what == "tick":
            self.dry_ticks = self.dry_ticks + 1 if self.controller.config.dry_run else 0
            published = len(self.output.messages) > n
            if self.profile.mode == "forward":
                self.silent = not published
            if self.profile.delta and published and self.controller.hold is not None:
                raise Violation(f"delta_hold: a hold ({self.controller.hold.value}) published a delta command")
        return result

    def _is_hold_of_last(self, points: np.ndarray) -> bool:
        """A message that only repeats the last published position (moves nothing)."""
        last = self.last_pub if self.profile.mode == "forward" else self.last_traj_point
        return last is not None and len(points) == 1 and bool(np.array_equal(points[0], last)) \
            if self.profile.mode == "forward" else last is not None and len(points) == 1

    def _check(self, what: str, msg: Any, dry_before: bool, active_before: bool) -> None:
        cfg = self.controller.config.safety
        lo, hi, cap = (np.asarray(x, dtype=np.float64) for x in (cfg.position_min, cfg.position_max, cfg.max_step))
        now = self.clock.now_ns
        if self.profile.mode == "forward":
            points, times = np.asarray(msg.data, dtype=np.float64)[None], None
        else:
            points = np.array([list(p.positions) for p in msg.points], dtype=np.float64)
            times = np.array([p.time_from_start.sec * S + p.time_from_start.nanosec for p in msg.points])
        if not np.isfinite(points).all():
            tail = " (a chunk with NaN rows past chunk.steps_limit was merged)" if "nan_tail" in self.injected \
                and "nan_row0" not in self.injected else ""
            raise Violation(f"finite: {what} published non-finite values{tail}: {points.tolist()}")
        if dry_before and not (what == "tick" and self.dry_ticks == 0 and self._is_hold_of_last(points)):
            # (the one hold of the last command on the first tick after dry_run was switched on is allowed)
            raise Violation(f"dry_run: {what} published while dry_run was set")
        if not active_before:
            raise Violation(f"inactive: {what} published while the node was inactive")
        if self.profile.delta and what != "tick":
            raise Violation(f"delta_hold: {what} published a hold command with a delta action space")
        if ((points < lo - EPS) | (points > hi + EPS)).any():
            raise Violation(f"limits: {what} published a position outside the limits: {points.tolist()}")
        if self.profile.mode == "forward":
            cmd = points[0]
            if self.profile.delta:
                if not self.silent and self.last_pub is not None and (np.abs(cmd - self.last_pub) > cap + EPS).any():
                    raise Violation("step: consecutive delta commands differ by more than max_step")
            elif not self.silent and self.last_pub is not None:
                if (np.abs(cmd - self.last_pub) > cap + EPS).any():
                    raise Violation(f"step: {what} command moves {np.abs(cmd - self.last_pub).max():.4f} from the "
                                    f"previous tick's command (max_step {cap.min():g})")
            else:
                refs = list(self.meas_refs.values())
                if not refs:
                    raise Violation(f"no_reference: {what} commanded before any measured position was received")
                d = min(float((np.abs(cmd - r) - cap).max()) for r in refs)
                if d > EPS:
                    raise Violation(f"step: first command after a silence ({what}) is {d + cap.min():.4f} from the "
                                    f"measured position (max_step {cap.min():g})")
            self.last_pub = cmd
            if self.out_idx is not None:
                self.q[self.out_idx] = cmd
            return
        period = self.controller.config.control_period_ns
        if len(points) == 0:
            return
        for k in range(1, len(points)):
            bound = cap * (times[k] - times[k - 1]) / period
            if (np.abs(points[k] - points[k - 1]) > bound + EPS).any():
                raise Violation(f"step: trajectory point {k} moves faster than max_step per period")
        where = self.robot_out(now)
        refs = [where] + list(self.meas_refs.values())
        bound0 = cap * times[0] / period
        if not self.meas_refs:
            raise Violation(f"no_reference: {what} sent a trajectory before any measured position was received")
        d = min(float((np.abs(points[0] - r) - bound0).max()) for r in refs)
        if d > EPS:
            raise Violation(f"step: {what} trajectory starts {d + cap.min():.4f} from where the robot is "
                            f"(max_step {cap.min():g} per period)")
        self._settle(now)
        self.last_traj_point = points[-1].copy()
        self.traj = _Trajectory(now, self.q[self.out_idx].copy(), now + times, points)

    # -- operations -------------------------------------------------------------------------------------

    def activate(self) -> None:
        self._call("activate", self.sim.activate)
        self.active = True
        self.silent = True
        now = self.clock.now_ns
        self.next = {("joint",): now + JOINT_PERIOD_NS, ("tick",): now + self.controller.config.control_period_ns,
                     ("diag",): now + DIAG_NS}
        for i in range(len(self.controller.config.cameras.names)):
            self.next[("cam", i)] = now + CAMERA_PERIOD_NS + i * MS

    def set_param(self, name: str, value: Any) -> Any:
        """Through the node's parameter path (PolicyBridge.update_parameters: validated as a whole)."""
        return self._call(f"set {name}={value!r}", self.sim.set_parameters, {name: value})

    def apply(self, step: Step, rng: np.random.Generator) -> None:
        op, arg = step.op, step.arg
        if op == "pause":
            self._call("pause", self.sim.pause)
        elif op == "resume":
            self._call("resume", self.sim.resume)
        elif op == "dry_run_on":
            self.set_param("dry_run", True)
        elif op == "dry_run_off":
            self.set_param("dry_run", False)
        elif op == "deactivate" and self.active:
            self._call("deactivate", self.sim.deactivate)
            self.active, self.silent = False, True
        elif op == "activate" and not self.active:
            self.activate()
        elif op == "instruction":
            self._call("instruction", self.sim.instruction, String(data=arg))
        elif op == "huge_instruction":
            self._call("instruction", self.sim.instruction, String(data="x" * 10_000_000))
        elif op == "param":
            self.set_param(*arg)
        elif op in ("jump_back", "jump_fwd"):
            delta = (-1 if op == "jump_back" else 1) * int(arg * S)
            self._settle(self.clock.now_ns)
            if self.traj is not None:  # the controller finished (or dropped) its trajectory meanwhile
                self.traj = None
            self.clock.now_ns += delta
            self.next = {k: v + delta for k, v in self.next.items()}
        elif op == "move":
            self.move(rng)
        elif op == "huge_names":
            msg = JointState()
            msg.header.stamp = ns_to_time(self.clock.now_ns)
            msg.name = [f"j{i}" for i in range(200_000)]
            msg.position = [0.0] * 200_000
            self._call("joint(huge)", self.sim.joint_state, msg)
        elif op == "many_name_lists":
            for k in range(200):
                msg = self._joint_msg(self.clock.now_ns) or JointState()
                msg.name = [*msg.name, f"extra_{k}"]
                msg.position = [*msg.position, 0.0]
                self._call("joint(new names)", self.sim.joint_state, msg)
            kept = self.controller.joints.known_name_lists()
            if kept > 64:
                raise Violation(f"bounded_cache: {kept} joint-name index maps kept after 200 distinct name lists")

    def run(self, steps: list[Step], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        for step in steps:
            self.step = step
            self.frozen_stamp = None
            self.apply(step, rng)
            if not self.active:  # no ticks run while inactive; time passes
                self.clock.now_ns += step.ticks * self.controller.config.control_period_ns
                self.next = {k: v + step.ticks * self.controller.config.control_period_ns for k, v in self.next.items()}
                continue
            self.run_ticks(step.ticks)

    def run_ticks(self, ticks: int) -> None:
        order = {"joint": 0, "cam": 1, "tick": 2, "diag": 3}
        done = 0
        while done < ticks:
            source, t = min(self.next.items(), key=lambda kv: (kv[1], order[kv[0][0]]))
            self.clock.now_ns = t
            kind = source[0]
            if kind == "cam":
                self.next[source] = t + CAMERA_PERIOD_NS
                self._deliver_camera(source[1], t)
            elif kind == "joint":
                self.next[source] = t + JOINT_PERIOD_NS
                self._settle(t)
                self._deliver_joint(t)
            elif kind == "tick":
                self.next[source] = t + self.controller.config.control_period_ns
                self._call("tick", self.sim.tick)
                done += 1
            else:
                self.next[source] = t + DIAG_NS
                self._call("diagnostics", self.sim.diagnostics)
