"""Exact-timing harness for the fault tests: the node's controller and bridge on a simulated clock.

The same driver as offline replay (lightwam_ros.replay.simulation.Simulation): the demo profile's
PolicyConfig (with overrides), the bundle loaded and warmed up exactly as the node's configure does
(ros/assembly.py), the PolicyController behind the PolicyBridge fed real ROS messages in time
order, inference run synchronously and released a fixed latency later on the simulated clock
(SimulatedInference, with the node's worker count), and publishers that record instead of sending.
Why not DDS: hold timing "within 2 control periods" and "no stale frame is used" must be exact,
and a faulty input stream (backwards stamps, truncated images) is easier to script here than over
a best-effort transport. Everything robot-facing is recorded per tick.

The simulated robot executes its commands: the joint state it publishes is the last forward
command (or the start pose before the first), so a jump in the command would show in the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from node_harness import as_overrides, demo_parameters
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from lightwam_ros import config as cfgmod
from lightwam_ros.demo.synthetic import joint_positions, render_scene
from lightwam_ros.replay.simulation import SimClock, SimulatedInference, Simulation
from lightwam_ros.ros.assembly import LoadedPolicy, load_policy
from lightwam_ros.ros.bridge import Publishers
from lightwam_ros.ros.images import ns_to_time, rgb_to_image
from lightwam_ros.ros.node import PolicyNode

START_NS = 1_700_000_000_000_000_000
CAMERA_PERIOD_NS = 33_333_333  # 30 Hz
CAMERA_PHASE_NS = 1_000_000  # camera i is i ms after camera 0 (not hardware-triggered together)
JOINT_PERIOD_NS = 10_000_000  # 100 Hz
TICK_NS = 20_000_000  # demo profile: 50 Hz
DIAG_NS = 100_000_000  # diagnostics at 10 Hz in the sim


class Recorder:
    """Stands in for an rclpy publisher: keeps (sim time, message)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.messages: list[tuple[int, Any]] = []

    def publish(self, msg: Any) -> None:
        self.messages.append((self.clock.now_ns, msg))

    def get_subscription_count(self) -> int:
        return 1


class LogSpy:
    """The controller's (or the node's) logger: keeps (level, message, throttle seconds) of every
    call, throttled or not, so tests can check what was said and how it is throttled."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, float]] = []

    def _make(self, level: str) -> Callable[..., Any]:
        def log(msg: str, **kw: Any) -> bool:
            self.records.append((level, msg, float(kw.get("throttle_duration_sec", 0.0) or 0.0)))
            return True
        return log

    def __getattr__(self, name: str) -> Any:
        if name in ("debug", "info", "warning", "warn", "error", "fatal"):
            return self._make(name)
        raise AttributeError(name)

    def errors(self) -> list[tuple[str, float]]:
        return [(m, t) for lv, m, t in self.records if lv in ("error", "fatal")]


@dataclass
class SimRobot:
    """Cameras, joint states, instruction and the clock around an active, simulated policy."""

    sim: Simulation
    loaded: LoadedPolicy
    clock: SimClock
    log: LogSpy
    params: dict
    output: Recorder
    chunks: Recorder
    diagnostics: Recorder
    frames: dict = field(default_factory=dict)
    # hooks: (camera index, camera name, frame number, stamp) -> Image to deliver, or None (dropped)
    camera_hook: Callable[[int, str, int, int], Image | None] | None = None
    joint_hook: Callable[[int], JointState | None] | None = None
    silent_cameras: set = field(default_factory=set)
    camera_delay_ns: int = 0  # transport delay: a frame stamped t arrives at t + delay
    publish_joints: bool = True
    stamp_offset_ns: int = 0  # added to camera stamps (jump_clock moves it with the clock)
    next_event: dict = field(default_factory=dict)  # message source -> time of its next message

    @property
    def controller(self) -> Any:
        return self.sim.controller

    @property
    def worker(self) -> SimulatedInference:
        return self.sim.inference

    @property
    def ticks(self) -> list:
        return self.sim.ticks

    @property
    def cameras(self) -> list[str]:
        return list(self.params["cameras.names"])

    @property
    def topics(self) -> list[str]:
        return list(self.params["cameras.topics"])

    def image(self, i: int, k: int, stamp_ns: int) -> Image:
        return rgb_to_image(self.frames[i][k % len(self.frames[i])], stamp_ns, self.cameras[i])

    def position(self) -> np.ndarray:
        """Where the simulated robot is: its last command (a trajectory's first point), else the
        start pose."""
        for _, msg in reversed(self.output.messages):
            return command_of(msg)
        return joint_positions(0.0, len(self.params["joints.names"]))

    def joint_state(self, t_ns: int) -> JointState:
        msg = JointState()
        msg.header.stamp = ns_to_time(t_ns)
        msg.name = list(self.params["joints.names"])
        msg.position = self.position().tolist()
        return msg

    # -- what the node's services, parameters and lifecycle call ------------------------------------

    def send_instruction(self, text: str) -> None:
        self.sim.instruction(String(data=text))

    def deliver_joint_state(self, msg: JointState) -> None:
        self.sim.joint_state(msg)

    def set_parameters(self, **changes: Any) -> tuple[bool, str]:
        """Runtime parameter changes, dotted names with '__' (as the node's parameter callback)."""
        return self.sim.set_parameters({k.replace("__", "."): v for k, v in changes.items()})

    def pause(self) -> tuple[bool, str]:
        return self.sim.pause()

    def resume(self) -> tuple[bool, str]:
        return self.sim.resume()

    def deactivate(self) -> bool:
        return self.sim.deactivate()

    def activate(self) -> None:
        self.sim.activate()

    # -- time ----------------------------------------------------------------------------------------

    def run(self, seconds: float) -> None:
        """Advance the clock by `seconds`, delivering every event due (messages before timers on
        ties; joint states before camera frames)."""
        until = self.clock.now_ns + round(seconds * 1e9)
        while True:
            source, t = min(self.next_event.items(), key=lambda kv: (kv[1], _ORDER[kv[0][0]]))
            if t > until:
                break
            self.sim.run_timers(t)
            self.clock.now_ns = t
            if source[0] == "cam":
                i, k = source[1], source[2]
                self.next_event.pop(source)
                self.next_event[("cam", i, k + 1)] = START_NS + (k + 1) * CAMERA_PERIOD_NS + i * CAMERA_PHASE_NS \
                    + self.camera_delay_ns + self.stamp_offset_ns
                self._deliver_camera(i, k, START_NS + k * CAMERA_PERIOD_NS + i * CAMERA_PHASE_NS
                                     + self.stamp_offset_ns)
            else:
                self.next_event[source] = t + JOINT_PERIOD_NS
                msg = self.joint_hook(t) if self.joint_hook else (self.joint_state(t) if self.publish_joints else None)
                if msg is not None:
                    self.sim.joint_state(msg)
        self.sim.run_timers(until + 1)
        self.clock.now_ns = until

    def jump_clock(self, delta_ns: int) -> None:
        """Move the clock and every source with it (a /clock restart, a looping bag): camera and
        joint stamps continue on the new timeline."""
        self.clock.now_ns += delta_ns
        self.stamp_offset_ns += delta_ns
        self.next_event = {k: t + delta_ns for k, t in self.next_event.items()}
        self.sim.shift_timers(delta_ns)

    def _deliver_camera(self, i: int, k: int, t_ns: int) -> None:
        name = self.cameras[i]
        if name in self.silent_cameras:
            return
        msg = self.camera_hook(i, name, k, t_ns) if self.camera_hook else self.image(i, k, t_ns)
        if msg is None:  # the hook dropped this frame
            return
        self.sim.image(msg, name, self.topics[i])

    # -- queries -----------------------------------------------------------------------------------

    def ticks_between(self, t0: int, t1: int) -> list:
        return [tk for tk in self.ticks if t0 <= tk.t_ns < t1]

    def last_status(self, suffix: str) -> Any:
        _, arr = self.diagnostics.messages[-1]
        return next(s for s in arr.status if s.name.endswith(f": {suffix}"))

    def status_values(self, suffix: str) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.last_status(suffix).values}

    def close(self) -> None:
        try:
            self.sim.close()
        finally:
            self.loaded.close()


_ORDER = {"joint": 0, "cam": 1}


def command_of(msg: Any) -> np.ndarray:
    """The command a published output message carries: a forward command's values, or a
    JointTrajectory's first point (what the controller moves to first)."""
    if hasattr(msg, "data"):
        return np.asarray(msg.data, dtype=np.float64)
    return np.asarray(msg.points[0].positions, dtype=np.float64)


def _context() -> Any:
    ctx = rclpy.Context()
    rclpy.init(args=["lightwam_fault_sim"], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    return ctx


def configure_only(bundle: Any, name: str, **overrides: Any) -> tuple[PolicyNode, LogSpy, Any, Any]:
    """A real node with the demo profile (and overrides), configure attempted once:
    (node, log, ctx, result). For what only the node does: declaring parameters, the lifecycle."""
    params = demo_parameters(bundle, **overrides)
    ctx = _context()
    log = LogSpy()
    node = PolicyNode(name, context=ctx, parameter_overrides=as_overrides(params), log=log)
    return node, log, ctx, node.trigger_configure()


def start(bundle: Any, *, latency_ms: float = 40.0, name: str = "lw_sim", image_hw: tuple[int, int] = (96, 128),
          workers: int | None = None, **overrides: Any) -> SimRobot:
    """An active simulated policy with the demo profile (forward output, 10 Hz diagnostics).
    The default 40 ms simulated latency is a GPU-like one, so chunks arrive ticks after their
    request as on a robot (with 0 they would be merged by the next tick).
    ``workers`` (test-only): run that many overlapping simulated inferences (chunk.max_inflight is
    set to it too), as the node does on a GPU backend whose max_concurrency allows it; the CPU
    backend here caps the node's own count at 1."""
    if workers is not None:
        overrides = {"chunk__max_inflight": workers, **overrides}
    overrides = {"output__mode": "forward", "output__topic": "/sim/forward_controller/commands",
                 "diagnostics__rate_hz": 10.0, "debug__canvas_rate_hz": 0.0, **overrides}
    clock = SimClock(START_NS)
    params = demo_parameters(bundle, **overrides)
    cfg = cfgmod.from_params(params)
    log = LogSpy()
    loaded = load_policy(cfg, log)
    inference = SimulatedInference(loaded.predict, clock, round(latency_ms * 1e6), keep_frames=True,
                                   workers=workers if workers is not None else loaded.workers)
    output, chunks, diagnostics = Recorder(clock), Recorder(clock), Recorder(clock)
    publishers = Publishers(output=output, action_chunk=chunks, canvas=Recorder(clock), diagnostics=diagnostics)
    sim = Simulation(loaded, cfg, publishers, clock, log, inference=inference, name=name, diagnostics_period_ns=DIAG_NS)
    sim.activate()
    h, w = image_hw
    frames = {i: [render_scene(i, k / 30.0, h, w) for k in range(4)] for i in range(len(params["cameras.names"]))}
    robot = SimRobot(sim=sim, loaded=loaded, clock=clock, log=log, params=params, output=output, chunks=chunks,
                     diagnostics=diagnostics, frames=frames)
    robot.next_event = {("joint",): START_NS + JOINT_PERIOD_NS}
    for i in range(len(params["cameras.names"])):
        robot.next_event[("cam", i, 1)] = START_NS + CAMERA_PERIOD_NS + i * CAMERA_PHASE_NS
    return robot


def max_steps(params: dict) -> np.ndarray:
    return np.asarray(params["safety.max_step"], dtype=np.float64)
