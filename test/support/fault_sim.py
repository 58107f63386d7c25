"""Exact-timing harness for the fault tests: the real PolicyNode on a simulated clock.

The same driving as offline replay (lightwam_ros.replay.offline): the node is configured from the
demo profile exactly as a launch would, then its own callbacks (``_on_image``, ``_on_joint_state``,
``_on_instruction``, ``_on_control_tick``, ``_on_diagnostics``) are called with real ROS messages in
time order, ``_now_ns`` returns the simulated clock, inference runs synchronously and is released a
fixed latency later (replay_offline.SimulatedInference, with the node's worker count; the node's
monotonic clock is the simulated one, so a chunk merges at exactly request + latency), and the
publishers record instead of sending. Why not DDS: hold timing "within 2 control periods" and
"no stale frame is used" must be exact, and a faulty input stream (backwards stamps, truncated
images) is easier to script here than over a best-effort transport. Everything robot-facing is
recorded per tick.

The simulated robot executes its commands: the joint state it publishes is the last forward
command (or the start pose before the first), so a jump in the command would show in the state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from node_harness import as_overrides, demo_parameters
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from lightwam_ros.demo.synthetic import joint_positions, render_scene
from lightwam_ros.replay.offline import SimClock, SimulatedInference, simulate_inference
from lightwam_ros.ros.images import ns_to_time, rgb_to_image
from lightwam_ros.ros.node import PolicyNode

START_NS = 1_700_000_000_000_000_000
CAMERA_PERIOD_NS = 33_333_333  # 30 Hz
CAMERA_PHASE_NS = 1_000_000  # camera i is i ms after camera 0 (not hardware-triggered together)
JOINT_PERIOD_NS = 10_000_000  # 100 Hz
TICK_NS = 20_000_000  # demo profile: 50 Hz
DIAG_NS = 100_000_000  # diagnostics at 10 Hz in the sim


class Recorder:
    """Drop-in for an rclpy publisher: keeps (sim time, message)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.messages: list[tuple[int, Any]] = []

    def publish(self, msg: Any) -> None:
        self.messages.append((self.clock.now_ns, msg))

    def get_subscription_count(self) -> int:
        return 1


class LogSpy:
    """Stands in for the node's ROS logger: keeps (level, message, throttle seconds) of every call."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.records: list[tuple[str, str, float]] = []

    def _make(self, level: str) -> Callable[..., Any]:
        def log(msg: str, **kw: Any) -> bool:
            # Recorded, not forwarded: rclpy keys its throttling by the caller's code location, and
            # one forwarding function for every severity would be that location for all of them.
            self.records.append((level, msg, float(kw.get("throttle_duration_sec", 0.0) or 0.0)))
            return True
        return log

    def __getattr__(self, name: str) -> Any:
        if name in ("debug", "info", "warning", "warn", "error", "fatal"):
            return self._make(name)
        return getattr(self._logger, name)

    def errors(self) -> list[tuple[str, float]]:
        return [(m, t) for lv, m, t in self.records if lv in ("error", "fatal")]


@dataclass
class TickRecord:
    t_ns: int
    hold: Any  # HoldReason | None
    command: np.ndarray | None  # the forward command published this tick (None: nothing published)


@dataclass
class SimRobot:
    """Cameras, joint states, instruction and the clock around a configured, active PolicyNode."""

    node: PolicyNode
    clock: SimClock
    worker: SimulatedInference
    log: LogSpy
    ctx: Any
    params: dict
    output: Recorder
    chunks: Recorder
    diagnostics: Recorder
    ticks: list[TickRecord] = field(default_factory=list)
    frames: dict = field(default_factory=dict)
    # hooks: (camera index, camera name, frame number, stamp) -> Image to deliver, or None (dropped)
    camera_hook: Callable[[int, str, int, int], Image | None] | None = None
    joint_hook: Callable[[int], JointState | None] | None = None
    silent_cameras: set = field(default_factory=set)
    camera_delay_ns: int = 0  # transport delay: a frame stamped t arrives at t + delay
    publish_joints: bool = True
    stamp_offset_ns: int = 0  # added to camera stamps (jump_clock moves it with the clock)
    _next: dict = field(default_factory=dict)

    @property
    def rt(self) -> Any:
        return self.node.runtime

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

    def send_instruction(self, text: str) -> None:
        self.node._on_instruction(String(data=text))  # noqa: SLF001

    def run(self, seconds: float) -> None:
        """Advance the clock by `seconds`, delivering every event due (messages before timers on ties)."""
        until = self.clock.now_ns + round(seconds * 1e9)
        while True:
            source, t = min(self._next.items(), key=lambda kv: (kv[1], _ORDER[kv[0][0]]))
            if t > until:
                break
            self.clock.now_ns = t
            kind = source[0]
            if kind == "cam":
                i, k = source[1], source[2]
                self._next.pop(source)
                self._next[("cam", i, k + 1)] = START_NS + (k + 1) * CAMERA_PERIOD_NS + i * CAMERA_PHASE_NS \
                    + self.camera_delay_ns + self.stamp_offset_ns
                self._deliver_camera(i, k, START_NS + k * CAMERA_PERIOD_NS + i * CAMERA_PHASE_NS
                                     + self.stamp_offset_ns)
            elif kind == "joint":
                self._next[source] = t + JOINT_PERIOD_NS
                msg = self.joint_hook(t) if self.joint_hook else (self.joint_state(t) if self.publish_joints else None)
                if msg is not None:
                    self.node._on_joint_state(msg)  # noqa: SLF001
            elif kind == "tick":
                self._next[source] = t + TICK_NS
                n = len(self.output.messages)
                self.node._on_control_tick()  # noqa: SLF001
                rt = self.rt
                if rt is None or not rt.active:
                    continue
                new = self.output.messages[n:]
                cmd = command_of(new[-1][1]) if new else None
                self.ticks.append(TickRecord(t, rt.hold, cmd))
            else:
                self._next[source] = t + DIAG_NS
                self.node._on_diagnostics()  # noqa: SLF001
        self.clock.now_ns = until

    def jump_clock(self, delta_ns: int) -> None:
        """Move the clock and every source with it (a /clock restart, a looping bag): camera and
        joint stamps continue on the new timeline."""
        self.clock.now_ns += delta_ns
        self.stamp_offset_ns += delta_ns
        self._next = {k: t + delta_ns for k, t in self._next.items()}

    def _deliver_camera(self, i: int, k: int, t_ns: int) -> None:
        name = self.cameras[i]
        if name in self.silent_cameras:
            return
        msg = self.camera_hook(i, name, k, t_ns) if self.camera_hook else self.image(i, k, t_ns)
        if msg is None:  # the hook dropped this frame
            return
        self.node._on_image(msg, name, self.topics[i])  # noqa: SLF001

    # -- queries -----------------------------------------------------------------------------------

    def ticks_between(self, t0: int, t1: int) -> list[TickRecord]:
        return [tk for tk in self.ticks if t0 <= tk.t_ns < t1]

    def last_status(self, suffix: str) -> Any:
        _, arr = self.diagnostics.messages[-1]
        return next(s for s in arr.status if s.name.endswith(f": {suffix}"))

    def status_values(self, suffix: str) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.last_status(suffix).values}

    def close(self) -> None:
        try:
            self.node.destroy_node()
        finally:
            rclpy.try_shutdown(context=self.ctx)


_ORDER = {"joint": 0, "cam": 1, "tick": 2, "diag": 3}


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
    """A node with the demo profile (and overrides), configure attempted once: (node, log, ctx, result)."""
    params = demo_parameters(bundle, **overrides)
    ctx = _context()
    node = PolicyNode(name, context=ctx, parameter_overrides=as_overrides(params))
    log = LogSpy(node._logger)  # noqa: SLF001
    node._logger = log  # noqa: SLF001
    return node, log, ctx, node.trigger_configure()


def start(bundle: Any, *, latency_ms: float = 40.0, name: str = "lw_sim", image_hw: tuple[int, int] = (96, 128),
          workers: int | None = None, **overrides: Any) -> SimRobot:
    """Configure and activate a PolicyNode on the simulated clock (forward output, 10 Hz diagnostics).
    The default 40 ms simulated latency is a GPU-like one: with 0 the scheduler, pacing requests from
    the measured latency, asks only when the plan has ended and every cycle holds a tick.
    ``workers`` (test-only): run that many overlapping simulated inferences (chunk.max_inflight is
    set to it too), as the node does on a GPU backend whose max_concurrency allows it; the CPU
    backend here caps the node's own count at 1."""
    if workers is not None:
        overrides = {"chunk__max_inflight": workers, **overrides}
    overrides = {"output__mode": "forward", "output__topic": "/sim/forward_controller/commands",
                 "diagnostics__rate_hz": 10.0, "debug__canvas_rate_hz": 0.0, **overrides}
    clock = SimClock(START_NS)
    params = demo_parameters(bundle, **overrides)
    ctx = _context()
    node = PolicyNode(name, context=ctx, parameter_overrides=as_overrides(params))
    node._now_ns = lambda: clock.now_ns  # noqa: SLF001 - the node's only clock accessor
    log = LogSpy(node._logger)  # noqa: SLF001
    node._logger = log  # noqa: SLF001
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        rclpy.try_shutdown(context=ctx)
        raise AssertionError(f"configure failed: {log.errors()}")
    rt = node.runtime
    if workers is not None:
        rt.workers = workers
        rt.scheduler.reconfigure(dataclasses.replace(rt.config.chunk, max_inflight=workers))
    worker = simulate_inference(node, clock, round(latency_ms * 1e6), keep_frames=True)
    output, chunks, diagnostics = Recorder(clock), Recorder(clock), Recorder(clock)
    rt.output_pub, rt.chunk_pub, rt.diag_pub, rt.canvas_pub = output, chunks, diagnostics, Recorder(clock)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h, w = image_hw
    frames = {i: [render_scene(i, k / 30.0, h, w) for k in range(4)] for i in range(len(params["cameras.names"]))}
    sim = SimRobot(node=node, clock=clock, worker=worker, log=log, ctx=ctx, params=params, output=output,
                   chunks=chunks, diagnostics=diagnostics, frames=frames)
    sim._next = {("joint",): START_NS + JOINT_PERIOD_NS, ("tick",): START_NS + TICK_NS,  # noqa: SLF001
                 ("diag",): START_NS + DIAG_NS}
    for i in range(len(params["cameras.names"])):
        sim._next[("cam", i, 1)] = START_NS + CAMERA_PERIOD_NS + i * CAMERA_PHASE_NS  # noqa: SLF001
    return sim


def max_steps(params: dict) -> np.ndarray:
    return np.asarray(params["safety.max_step"], dtype=np.float64)
