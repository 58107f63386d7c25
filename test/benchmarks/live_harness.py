"""The live benchmarks' harness: the real policy node in its own process, fed over real DDS.

Used by bench_control_jitter.py and soak.py (not a test module; nothing here is collected by pytest).

    node process     python live_harness.py node --tick-log F -- <node args>: lightwam_ros.ros.node.main
                     with the control-timer callback wrapped to record its start/end times
                     (time.monotonic_ns), written to F on exit -- the node's own tick period, not
                     blurred by DDS delivery.
    feeder process   python live_harness.py feed ...: 3 cameras (pre-rendered synthetic frames, any
                     size/encoding/rate, stamped with the send time), joint states, a latched
                     instruction -- a separate process, so publishing does not share the node's or
                     the recorder's cores' GIL.
    recorder         in the calling process: output commands (receive times), /diagnostics (latest
                     values per status), lifecycle state, and the node's resident memory (/proc).

Isolation as in test/conftest.py: a ROS_DOMAIN_ID claimed with a lock file in the same lock
directory (so benchmarks and test runs never share a graph), ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST,
the shared-memory Fast DDS profile (config/fastdds_shm.xml: camera-size frames arrive whole), HOME.
"""

from __future__ import annotations

import argparse
import array
import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
for _path in (REPO_ROOT, REPO_ROOT / "test" / "support"):  # the package, and test/support/ros_domain.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
from ros_domain import claim_domain_id  # noqa: E402

from lightwam_ros.ros.dds_profile import NEW_VARIABLE, OLD_VARIABLE, profile_env  # noqa: E402

FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_shm.xml"
DEMO_PROFILE = REPO_ROOT / "config" / "demo.yaml"
OUTPUT_TOPIC = "/bench/commands"


# ---------------------------------------------------------------------------------------------
# Environment, bundle, parameters
# ---------------------------------------------------------------------------------------------

def isolate_environment() -> dict[str, str]:
    """Set (in os.environ, before rclpy initializes) and return the isolated ROS environment."""
    os.environ["ROS_DOMAIN_ID"] = str(claim_domain_id())
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    # The variable Fast DDS reads differs by major version (2.x: FASTRTPS_, 3.x: FASTDDS_); the other
    # name is dropped so a profile from the caller's shell cannot shadow ours.
    for name in (OLD_VARIABLE, NEW_VARIABLE):
        os.environ.pop(name, None)
    os.environ.update(profile_env(FASTDDS_PROFILE))
    if not os.environ.get("HOME") or not os.access(os.environ["HOME"], os.W_OK):
        os.environ["HOME"] = tempfile.mkdtemp(prefix="lightwam_bench_home_")
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="lightwam_bench_roslog_"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ)


def ensure_tiny_bundle(directory: Path) -> Path:
    """The tiny demo bundle (deterministic random weights) at directory, written if absent."""
    if not (directory / "manifest.json").is_file():
        from lightwam_ros.demo.tiny_bundle import write_demo_bundle

        write_demo_bundle(directory, "tiny")
    return directory


def node_parameters(bundle: Path, **overrides: Any) -> dict[str, Any]:
    """config/demo.yaml with the bundle, forward output on OUTPUT_TOPIC (one message per control tick:
    its receive times give the tick period as a subscriber sees it), and overrides (dotted names)."""
    from lightwam_ros.config import load_profile

    _, params = load_profile(DEMO_PROFILE)
    params.update({"bundle": str(bundle), "output.mode": "forward", "output.topic": OUTPUT_TOPIC})
    params.update(overrides)
    return params


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def period_stats(times_ns: Sequence[int], period_ns: int) -> dict[str, float]:
    """Tick-to-tick intervals: |interval - period| p50/p99/max in ms, mean/max interval, and ticks
    missed (intervals of 1.5 periods or more)."""
    t = np.asarray(times_ns, dtype=np.int64)
    if len(t) < 3:
        return {"n": float(len(t))}
    d = np.diff(t).astype(np.float64)
    dev = np.abs(d - period_ns) / 1e6
    return {"n": float(len(d)), "dev_p50_ms": float(np.percentile(dev, 50)),
            "dev_p99_ms": float(np.percentile(dev, 99)), "dev_max_ms": float(dev.max()),
            "period_mean_ms": float(d.mean() / 1e6), "period_max_ms": float(d.max() / 1e6),
            "missed": float(np.sum(d >= 1.5 * period_ns))}


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

@dataclass
class NodeProcess:
    """The policy node started with --autostart in its own process, ticks recorded."""

    proc: subprocess.Popen
    tick_log: Path
    log_path: Path

    def ticks(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) monotonic ns of every control tick, available after stop()."""
        data = json.loads(self.tick_log.read_text())
        return np.asarray(data["start"], dtype=np.int64), np.asarray(data["end"], dtype=np.int64)

    def errors(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if "[ERROR]" in line or "Traceback" in line]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def node_process(params: Mapping[str, Any], workdir: Path, tweaks: Sequence[str] = ()):
    from lightwam_ros.config import NODE_NAME
    from lightwam_ros.ros.launch_config import NodeLaunchPlan

    plan = NodeLaunchPlan(profile=DEMO_PROFILE, parameters=dict(params), log_level="warn")
    params_file = plan.write_params_file(workdir)
    tick_log, log_path = workdir / "ticks.json", workdir / "node.log"
    cmd = [sys.executable, __file__, "node", "--tick-log", str(tick_log), *(f"--tweak={t}" for t in tweaks), "--",
           f"{NODE_NAME}", *plan.node_arguments, *plan.ros_arguments(params_file)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    node = NodeProcess(proc, tick_log, log_path)
    try:
        yield node
    finally:
        node.stop()


@contextmanager
def feeder_process(params: Mapping[str, Any], *, camera_hz: float, size: tuple[int, int], encoding: str = "rgb8",
                   joint_hz: float = 100.0, workdir: Path):
    cmd = [sys.executable, __file__, "feed", "--camera-hz", str(camera_hz), "--size", f"{size[0]}x{size[1]}",
           "--encoding", encoding, "--joint-hz", str(joint_hz),
           "--camera-topics", *params["cameras.topics"], "--joint-topic", params["joints.state_topic"],
           "--joint-names", *params["joints.names"], "--instruction-topic", params["instruction.topic"],
           "--instruction", params["instruction.default"], "--stats", str(workdir / "feeder.json")]
    with open(workdir / "feeder.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def feeder_stats(workdir: Path) -> dict[str, Any]:
    path = workdir / "feeder.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ---------------------------------------------------------------------------------------------
# Recorder (in the calling process)
# ---------------------------------------------------------------------------------------------

@dataclass
class Recorded:
    command_times_ns: list[int] = field(default_factory=list)  # monotonic receive times
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)  # status name suffix -> values
    diag_levels: dict[str, int] = field(default_factory=dict)
    diag_messages: dict[str, str] = field(default_factory=dict)
    worst_level: dict[str, int] = field(default_factory=dict)
    diag_time_ns: int = 0  # monotonic receive time of the latest /diagnostics


class Recorder:
    """Subscribes to the node's forward commands and /diagnostics; spins on its own thread."""

    def __init__(self, output_topic: str = OUTPUT_TOPIC, policy: str = "/lightwam_policy"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import GetState
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import Float64MultiArray

        from lightwam_ros.ros.qos import record_qos

        self._rclpy, self._GetState, self._policy = rclpy, GetState, policy
        self.ctx = rclpy.Context()
        rclpy.init(args=["bench_recorder"], context=self.ctx)
        self.node = rclpy.create_node("bench_recorder", context=self.ctx)
        self.data = Recorded()
        self.lock = threading.Lock()
        self.node.create_subscription(Float64MultiArray, output_topic, self._on_command, record_qos(200))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="bench-recorder", daemon=True)
        self.thread.start()

    def _on_command(self, msg: Any) -> None:
        t = time.monotonic_ns()
        with self.lock:
            self.data.command_times_ns.append(t)

    def _on_diagnostics(self, msg: Any) -> None:
        with self.lock:
            self.data.diag_time_ns = time.monotonic_ns()
            for s in msg.status:
                key = s.name.rsplit(": ", 1)[-1]
                self.data.diagnostics[key] = {kv.key: kv.value for kv in s.values}
                level = int.from_bytes(s.level, "little") if isinstance(s.level, bytes) else int(s.level)
                self.data.diag_levels[key] = level
                self.data.diag_messages[key] = s.message
                self.data.worst_level[key] = max(level, self.data.worst_level.get(key, 0))

    def command_times(self) -> list[int]:
        with self.lock:
            return list(self.data.command_times_ns)

    def diagnostics(self) -> dict[str, dict[str, str]]:
        with self.lock:
            return {k: dict(v) for k, v in self.data.diagnostics.items()}

    def diagnostics_at(self) -> tuple[int, dict[str, dict[str, str]]]:
        """(monotonic receive time, values) of the latest /diagnostics."""
        with self.lock:
            return self.data.diag_time_ns, {k: dict(v) for k, v in self.data.diagnostics.items()}

    def wait_active(self, node: NodeProcess, timeout: float = 180.0) -> float:
        """Seconds until the node reports lifecycle 'active' (raises with the log tail otherwise)."""
        client = self.node.create_client(self._GetState, f"{self._policy}/get_state")
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < timeout:
                if node.proc.poll() is not None:
                    tail = node.log_path.read_text()[-3000:]
                    raise RuntimeError(f"the node exited ({node.proc.returncode}):\n{tail}")
                if client.wait_for_service(timeout_sec=0.5):
                    future = client.call_async(self._GetState.Request())
                    end = time.monotonic() + 2.0
                    while not future.done() and time.monotonic() < end:
                        time.sleep(0.02)
                    if future.done() and future.result() is not None and \
                            future.result().current_state.label == "active":
                        return time.monotonic() - t0
                time.sleep(0.2)
        finally:
            self.node.destroy_client(client)
        raise RuntimeError(f"the node did not become active in {timeout} s:\n{node.log_path.read_text()[-3000:]}")

    def wait_following(self, timeout: float = 60.0) -> float:
        """Seconds until the control status says 'following the policy'."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with self.lock:
                if self.data.diag_messages.get("control") == "following the policy":
                    return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"the node was not following the policy after {timeout} s; control status: "
                           f"{self.data.diag_messages.get('control')!r}")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.ctx)


# ---------------------------------------------------------------------------------------------
# Subprocess entry points
# ---------------------------------------------------------------------------------------------

TWEAKS = ("torch1", "switch1ms", "rt")  # experiments on the node process (not the shipped node)


def _apply_tweaks(tweaks: Sequence[str]) -> None:
    """Process-level changes a node could make, to measure their effect on the control tick:
    torch1    torch.set_num_threads(1): inference leaves the other core to the executor thread
    switch1ms sys.setswitchinterval(0.001): a thread waiting for the GIL gets it within ~1 ms
    rt        the executor thread (from its first control tick on) runs SCHED_FIFO priority 20; threads
              it starts later inherit that, the inference worker (started at configure) does not
              (needs CAP_SYS_NICE)"""

    if "torch1" in tweaks:
        import torch

        torch.set_num_threads(1)
    if "switch1ms" in tweaks:
        sys.setswitchinterval(0.001)


def _run_node(tick_log: Path, node_argv: list[str], tweaks: Sequence[str] = ()) -> None:
    """lightwam_ros.ros.node.main with the control tick's start/end times recorded (the node's
    control timer calls PolicyBridge.on_tick: wrapped here, timed)."""
    from lightwam_ros.ros import node as node_module
    from lightwam_ros.ros.bridge import PolicyBridge

    _apply_tweaks(tweaks)

    starts, ends = array.array("q"), array.array("q")
    original = PolicyBridge.on_tick

    realtime = ["rt" in tweaks]

    def timed_tick(self: Any) -> Any:
        if realtime[0]:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
            realtime[0] = False
        starts.append(time.monotonic_ns())
        try:
            return original(self)
        finally:
            ends.append(time.monotonic_ns())

    PolicyBridge.on_tick = timed_tick

    def dump() -> None:
        tick_log.write_text(json.dumps({"start": starts.tolist(), "end": ends.tolist()}))

    atexit.register(dump)
    exit_now = node_module.exit_now  # a node stopped by a signal leaves by os._exit: no atexit

    def dump_and_exit() -> None:
        dump()
        exit_now()

    node_module.exit_now = dump_and_exit
    node_module.main(node_argv)


def compressed_encoding(encoding: str) -> tuple[str, int]:
    """'jpeg90' -> ('jpeg', 90), 'png' -> ('png', 0), a raw encoding -> ('', 0)."""
    if encoding.startswith("jpeg"):
        return "jpeg", int(encoding[4:] or 90)
    return ("png", 0) if encoding == "png" else ("", 0)


def _run_feeder(a: argparse.Namespace) -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import String

    from lightwam_ros.demo.synthetic import encode_image, joint_positions, render_scene
    from lightwam_ros.ros.compressed import rgb_to_compressed
    from lightwam_ros.ros.images import ns_to_time
    from lightwam_ros.ros.qos import instruction_qos, sensor_feed_qos

    h, w = (int(v) for v in a.size.split("x"))
    codec, quality = compressed_encoding(a.encoding)
    frames = []  # per camera: a few pre-built messages (rendering each frame would load the CPU)
    for i, _ in enumerate(a.camera_topics):
        msgs = []
        for k in range(6):
            rgb = render_scene(i, k / a.camera_hz, h, w)
            if codec:
                msgs.append(rgb_to_compressed(rgb, codec, quality))
                continue
            pixels, step = encode_image(rgb, a.encoding)
            m = Image(height=h, width=w, encoding=a.encoding, is_bigendian=0, step=step)
            m.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
            msgs.append(m)
        frames.append(msgs)
    rclpy.init()
    node = rclpy.create_node("bench_feeder")
    cams = [node.create_publisher(CompressedImage, t + "/compressed", sensor_feed_qos()) if codec
            else node.create_publisher(Image, t, sensor_feed_qos()) for t in a.camera_topics]
    joints = node.create_publisher(JointState, a.joint_topic, 10)
    node.create_publisher(String, a.instruction_topic, instruction_qos()).publish(String(data=a.instruction))
    sent = {"frame_sets": 0, "joint_states": 0, "late_ms": []}
    start = time.monotonic()

    def on_camera() -> None:
        stamp = ns_to_time(node.get_clock().now().nanoseconds)
        k = sent["frame_sets"] % 6
        for pub, msgs in zip(cams, frames):
            msgs[k].header.stamp = stamp
            pub.publish(msgs[k])
        sent["frame_sets"] += 1

    def on_joints() -> None:
        m = JointState()
        m.header.stamp = ns_to_time(node.get_clock().now().nanoseconds)
        m.name = list(a.joint_names)
        m.position = joint_positions(time.monotonic() - start, len(a.joint_names)).tolist()
        joints.publish(m)
        sent["joint_states"] += 1

    node.create_timer(1.0 / a.camera_hz, on_camera)
    node.create_timer(1.0 / a.joint_hz, on_joints)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        elapsed = time.monotonic() - start
        Path(a.stats).write_text(json.dumps({"frame_sets": sent["frame_sets"], "joint_states": sent["joint_states"],
                                             "seconds": elapsed}))
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "node":
        p = argparse.ArgumentParser(prog="live_harness.py node")
        p.add_argument("--tick-log", type=Path, required=True)
        p.add_argument("--tweak", action="append", default=[], choices=TWEAKS)
        split = argv.index("--")
        a = p.parse_args(argv[1:split])
        _run_node(a.tick_log, argv[split + 1:], a.tweak)
        return
    p = argparse.ArgumentParser(prog="live_harness.py feed")
    p.add_argument("mode", choices=["feed"])
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--size", default="480x640")
    p.add_argument("--encoding", default="rgb8")
    p.add_argument("--joint-hz", type=float, default=100.0)
    p.add_argument("--camera-topics", nargs="+", required=True)
    p.add_argument("--joint-topic", required=True)
    p.add_argument("--joint-names", nargs="+", required=True)
    p.add_argument("--instruction-topic", required=True)
    p.add_argument("--instruction", required=True)
    p.add_argument("--stats", required=True)
    _run_feeder(p.parse_args(argv))


if __name__ == "__main__":
    main()
