"""Live replay: the bag's inputs over real DDS to a PolicyNode process, and its outputs recorded.

What a robot's node would see from `ros2 bag play --clock`: every camera, joint-state and
instruction message is published as the recorded raw CDR bytes (``publisher.publish(raw)``) at its
record time, scaled by ``--rate`` (one that does not decode is skipped and counted instead:
replay/undecodable.py), and a simulated ``/clock`` (1 kHz by default) carries the bag
clock. The node runs in its own process, started exactly as the launch file starts it (the
launch plan's params file and arguments, ``--autostart``) plus ``use_sim_time:=true``, so its
staleness checks and control timer run on the bag clock at any playback rate. Everything the node
publishes (~/action_chunk, the output topic, ~/debug/canvas, /diagnostics) is recorded through raw
subscriptions into the output bag at bag-clock receive times.

The node can run somewhere else than the replay (``node_prefix``: its command line is appended to
that argv, e.g. ``ip netns exec NS`` for another network namespace): the replay then stands for the
robot and the frames cross a real network link. Both ends load the same Fast DDS profile
(``dds_profile``; ``udp`` for a link), because the replay's participant picks its transports too.

Delivery is what DDS and the machine make of it: frames can be late or lost, inference takes its
real time. The report therefore compares what was published (frames, and the frame sets they make)
with what the node formed and used, from the node's own /diagnostics.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from lightwam_ros.config import OutputMode, PolicyConfig
from lightwam_ros.replay.bags import BagReader
from lightwam_ros.replay.metrics import percentiles
from lightwam_ros.replay.options import ReplayError, ReplayOptions
from lightwam_ros.replay.streams import (
    COMPRESSED_IMAGE,
    IMAGE,
    FrameSetCounter,
    InputTopics,
    OutputRecorder,
    OutputTopics,
    input_stream,
    msgtype_of,
)
from lightwam_ros.replay.undecodable import InputDecoder

log = logging.getLogger(__name__)

# /clock publications per wall second at rate >= 1 (timer granularity of the node). Below real time
# the rate scales with the playback rate, so the node still sees a 1 ms step of bag time without the
# replay spending wall-clock CPU on ticks nobody can tell apart: a slow replay is chosen because the
# CPU is short (`lightwam demo` on a slow machine, load-robust tests).
CLOCK_RATE_HZ = 1000.0

ACTIVATE_TIMEOUT_S = 300.0  # configure loads, verifies and warms up the model
MATCH_TIMEOUT_S = 30.0
SETTLE_S = 1.0  # after matching, the first ~0.6 s of samples can be lost (docs/design.md, "DDS and large messages")
STOP_TIMEOUT_S = 20.0
# The node's counters are read from its /diagnostics. At a profile's 1 Hz the last message before the
# end of the window can be a second old, and the next one counts a second of tail without inputs
# (stale-state holds that never happened on the robot). At 10 Hz the first message at or after the
# end is < 100 ms into the tail, before joints.max_age / camera_timeout can expire. Only the
# diagnostics rate is changed; control, sync and inference run with the profile's parameters.
LIVE_DIAGNOSTICS_HZ = 10.0


def clock_rate_hz(rate: float) -> float:
    """/clock publications per wall second for a playback rate (bag seconds per wall second)."""
    return CLOCK_RATE_HZ * min(1.0, rate)


class BagClock:
    """Bag time as a function of wall time: paused at ``start_ns`` until ``start()``."""

    def __init__(self, start_ns: int, rate: float) -> None:
        self.start_ns, self.rate = start_ns, rate
        self._wall0: int | None = None

    def start(self) -> None:
        self._wall0 = time.monotonic_ns()

    def now_ns(self) -> int:
        if self._wall0 is None:
            return self.start_ns
        return self.start_ns + int((time.monotonic_ns() - self._wall0) * self.rate)

    def wall_until(self, t_ns: int) -> float:
        """Wall seconds until bag time t_ns."""
        return max(0.0, (t_ns - self.now_ns()) / self.rate / 1e9)


def _diag_values(raw_diagnostics: list[bytes], stop_ns: int) -> tuple[dict[str, dict[str, str]], int | None]:
    """Values of each status ('cameras', 'sync', 'inference', 'control') in the first /diagnostics
    stamped at or after stop_ns (else the last one), and that message's stamp."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import deserialize_message

    from lightwam_ros.ros.images import time_to_ns

    out: dict[str, dict[str, str]] = {}
    stamp = None
    for raw in raw_diagnostics:
        msg = deserialize_message(raw, DiagnosticArray)
        stamp = time_to_ns(msg.header.stamp)
        for st in msg.status:
            key = st.name.rsplit(": ", 1)[-1]
            out[key] = {kv.key: kv.value for kv in st.values} | {"_message": st.message}
        if stamp >= stop_ns:
            break
    return out, stamp


def _num(values: dict[str, str], key: str) -> float | int | None:
    v = values.get(key)
    if v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return int(f) if f.is_integer() else f


def run_live(options: ReplayOptions, plan: Any, cfg: PolicyConfig, inputs: InputTopics, topics: OutputTopics,
             recorder: OutputRecorder, start_ns: int, stop_ns: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Publish [start_ns, stop_ns) of the bag to a node process; returns (report part, extras)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.srv import GetState
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    from lightwam_ros.ros.qos import clock_qos, instruction_qos, playback_qos, record_qos  # imports rclpy

    clock = BagClock(start_ns, options.rate)
    diag_hz = max(cfg.diagnostics_rate_hz, LIVE_DIAGNOSTICS_HZ)
    plan = dataclasses.replace(plan, parameters={**plan.parameters, "diagnostics.rate_hz": diag_hz})
    # The replay's own participant publishes the camera frames: it needs the node's Fast DDS profile
    # too (large shared-memory segment, or large UDP socket buffers), or camera-size frames fragment
    # and get lost on the way out.
    # Fast DDS reads it when the process creates its first participant; a variable the user set wins.
    for key, value in plan.additional_env.items():
        os.environ.setdefault(key, value)
    ctx = rclpy.Context()
    rclpy.init(args=["lightwam_replay"], context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("lightwam_replay", context=ctx, use_global_arguments=False)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, name="lightwam-replay-executor", daemon=True)
    proc: subprocess.Popen | None = None
    stop_clock = threading.Event()
    log_path = options.out / "node.log"
    try:
        # -- publishers for the inputs (QoS compatible with the node's subscriptions) --------------
        types = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage, "sensor_msgs/msg/JointState": JointState,
                 "std_msgs/msg/String": String}
        pubs = {}
        for bag_topic, node_topic in inputs.node_topic.items():
            qos = instruction_qos() if bag_topic == inputs.instruction else playback_qos()
            pubs[bag_topic] = node.create_publisher(types[inputs.msgtype[bag_topic]], node_topic, qos)
        clock_pub = node.create_publisher(Clock, "/clock", clock_qos())

        # -- recorder: raw subscriptions to everything the node publishes ------------------------
        diagnostics: list[bytes] = []
        received: Counter[str] = Counter()

        def record(topic: str, msgtype: str):
            def cb(raw: bytes) -> None:
                recorder.write(topic, msgtype, clock.now_ns(), raw)
                received[topic] += 1
                if topic == topics.diagnostics:
                    diagnostics.append(raw)
            return cb

        subs = [(topics.action_chunk, JointTrajectory), (topics.canvas, Image), (topics.diagnostics, DiagnosticArray)]
        if topics.output:
            subs.append((topics.output, JointTrajectory if cfg.output.mode is OutputMode.JOINT_TRAJECTORY
                         else Float64MultiArray))
        for topic, cls in subs:
            node.create_subscription(cls, topic, record(topic, msgtype_of(cls)), record_qos(), raw=True)
        spin.start()

        def clock_loop() -> None:
            period = 1.0 / clock_rate_hz(options.rate)
            next_wall = time.monotonic()
            while not stop_clock.is_set():
                t = clock.now_ns()
                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = divmod(t, 1_000_000_000)
                clock_pub.publish(msg)
                next_wall += period
                delay = next_wall - time.monotonic()
                if delay > 0:
                    stop_clock.wait(delay)
                else:
                    next_wall = time.monotonic()

        clock_thread = threading.Thread(target=clock_loop, name="lightwam-replay-clock", daemon=True)
        clock_thread.start()

        # -- the node process ---------------------------------------------------------------------
        with tempfile.TemporaryDirectory(prefix="lightwam_replay_") as tmp:
            params = plan.write_params_file(tmp)
            cmd = [*options.node_prefix, sys.executable, "-m", "lightwam_ros.ros.node", "--autostart",
                   *plan.ros_arguments(params), "-p", "use_sim_time:=true"]
            with open(log_path, "w") as logf:
                proc = subprocess.Popen(cmd, env=plan.environment(), stdout=logf, stderr=subprocess.STDOUT)
            t_wait = time.monotonic()
            _wait_active(node, GetState, plan.fully_qualified_name, proc, log_path)
            startup_s = time.monotonic() - t_wait
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            if time.monotonic() > deadline:
                missing = [inputs.node_topic[t] for t, p in pubs.items() if p.get_subscription_count() == 0]
                raise ReplayError(f"the node did not subscribe to {missing} within {MATCH_TIMEOUT_S} s")
            time.sleep(0.05)
        time.sleep(SETTLE_S)

        # -- playback -----------------------------------------------------------------------------
        counter = FrameSetCounter(inputs.cameras, cfg.sync, start_ns)
        published: Counter[str] = Counter()
        lateness_ms: list[float] = []
        clock.start()
        wall0 = time.monotonic()
        with BagReader(options.bag) as reader:
            decoder = InputDecoder(types, reader.info.start_ns)
            for t_ns, msg in input_stream(reader, inputs, start_ns, stop_ns):
                # decoded before the wait, so the check takes no playback time; never published if
                # it does not decode (the node's middleware would drop it unseen and uncounted)
                if decoder.decode(msg, inputs.msgtype[msg.topic]) is None:
                    continue
                wait = clock.wall_until(t_ns)
                if wait > 0:
                    time.sleep(wait)
                pubs[msg.topic].publish(msg.raw)
                lateness_ms.append((clock.now_ns() - t_ns) / 1e6)
                published[msg.topic] += 1
                counter.add(msg, t_ns)
        end = stop_ns + round(options.tail_s * 1e9)
        while (wait := clock.wall_until(end)) > 0:
            time.sleep(min(wait, 0.1))
        wall_s = time.monotonic() - wall0
    finally:
        stop_clock.set()
        if proc is not None:
            _stop(proc)
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)

    diag, diag_stamp = _diag_values(diagnostics, stop_ns)
    inference, control = diag.get("inference", {}), diag.get("control", {})
    # Frame-set counters from the node's last report (the end of the tail): no frame arrives after
    # the bag's end, so they only add what was still on its way -- a compressed frame decoded on the
    # node's decode thread after the report at the bag's end (holds come from that report: the tail
    # has no inputs, so its holds never happened on the robot).
    sync = _diag_values(diagnostics, 2**63 - 1)[0].get("sync", {})
    frames_published = {inputs.cameras[t]: published[t] for t in inputs.cameras}
    holds = {k.removeprefix("safety.hold."): _num(control, k) for k in control if k.startswith("safety.hold.")}
    report = {
        "delivery": {
            "frames_published": sum(frames_published.values()),
            "frames_published_per_camera": frames_published,
            "frame_sets_published": counter.sets,
            "frame_sets_formed_by_node": _num(sync, "sets_formed"),
            "frame_sets_fresh": _num(sync, "sets_emitted"),
            "frame_sets_used": received[topics.action_chunk],
            "messages_published": dict(published),
            "publish_lateness_ms": percentiles(lateness_ms),
            "note": ("frame_sets_published: sets the profile's sync forms from the published stamps with no "
                     "staleness gate; formed/fresh: the node's FrameSync (its last /diagnostics, after the "
                     "tail); used: one per ~/action_chunk the node published"),
        },
        "frame_sets": {
            "in_bag": counter.sets,
            "formed": _num(sync, "sets_formed"),
            "fresh": _num(sync, "sets_emitted"),
            "used": received[topics.action_chunk],
            "frame_drops": {k.removeprefix("drops."): _num(sync, k) for k in sync if k.startswith("drops.")},
        },
        "undecodable": decoder.counts(),
        "holds": {"ticks": _num(control, "ticks"), "by_reason": holds},
        "node": {
            "latency_ms": {k: _num(inference, k) for k in inference if k.startswith("total_ms.")},
            "chunks": {k.removeprefix("chunks."): _num(inference, k) for k in inference if k.startswith("chunks.")},
            "backend": inference.get("backend"), "device": inference.get("device"),
            "tick_period_ms": {k: _num(control, k) for k in control if k.startswith("tick_period_ms.")},
            "log": str(log_path),
            "diagnostics_rate_hz": diag_hz,
            "counters_at_s": None if diag_stamp is None else (diag_stamp - start_ns) / 1e9,
            "startup_s": round(startup_s, 2),
        },
        "throughput": {"wall_s": round(wall_s, 3), "rate": options.rate,
                       "bag_s": (stop_ns - start_ns) / 1e9},
    }
    return report, {}


def _wait_active(node: Any, GetState: Any, fqn: str, proc: subprocess.Popen, log_path: Any) -> None:
    """Block until the node process reports lifecycle state 'active' (or fail with its log tail)."""
    client = node.create_client(GetState, f"{fqn}/get_state")
    deadline = time.monotonic() + ACTIVATE_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ReplayError(f"the policy node exited with code {proc.returncode} before activating; "
                                  f"its log ({log_path}) ends with:\n{_tail(log_path)}")
            if client.wait_for_service(timeout_sec=0.5):
                future = client.call_async(GetState.Request())
                t_end = time.monotonic() + 2.0
                while not future.done() and time.monotonic() < t_end:
                    time.sleep(0.02)
                if future.done() and future.result() is not None and future.result().current_state.label == "active":
                    return
                time.sleep(0.2)
        raise ReplayError(f"the policy node did not become active within {ACTIVATE_TIMEOUT_S} s; "
                          f"its log ({log_path}) ends with:\n{_tail(log_path)}")
    finally:
        node.destroy_client(client)


def _tail(path: Any, lines: int = 15) -> str:
    try:
        return "\n".join(open(path, errors="replace").read().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT (the node deactivates and exits cleanly), then SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("policy node %d did not exit after SIGINT; killing it", proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
