"""Real-DDS harness for the node tests: a robot stand-in node and executors on background threads.

No mocked ROS: the PolicyNode under test and the stand-in are ordinary rclpy nodes in one process
that talk over Fast DDS (rclpy has no intra-process shortcut), each spun by its own
SingleThreadedExecutor thread, exactly as in the deployed process. Environment isolation
(ROS_DOMAIN_ID, SHM profile) comes from conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Log
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lightwam_ros import config as cfgmod
from lightwam_ros.demo.synthetic import joint_positions, render_scene
from lightwam_ros.ros.compressed import rgb_to_compressed
from lightwam_ros.ros.images import ns_to_time, rgb_to_image
from lightwam_ros.ros.qos import instruction_qos, rosout_qos, sensor_feed_qos

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_PROFILE = REPO_ROOT / "config" / "demo.yaml"


def demo_parameters(bundle: Path, **overrides: Any) -> dict[str, Any]:
    """The shipped demo profile with the test bundle (and any overrides, dotted names with '__')."""
    _, params = cfgmod.load_profile(DEMO_PROFILE)
    params["bundle"] = str(bundle)
    params.update({k.replace("__", "."): v for k, v in overrides.items()})
    return params


def as_overrides(params: Mapping[str, Any]) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in params.items()]


@dataclass
class Received:
    """Messages recorded by the stand-in, with their receive time (time.monotonic)."""

    trajectories: list[tuple[float, JointTrajectory]] = field(default_factory=list)
    commands: list[tuple[float, Float64MultiArray]] = field(default_factory=list)
    chunks: list[tuple[float, JointTrajectory]] = field(default_factory=list)
    diagnostics: list[tuple[float, DiagnosticArray]] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    canvases: list[tuple[float, Image]] = field(default_factory=list)


class RobotStandIn(Node):
    """Plays the robot around the policy node: cameras, joint states and an instruction in;
    trajectories / commands, chunks, diagnostics and the node's log (/rosout) recorded."""

    def __init__(self, context: rclpy.Context, params: Mapping[str, Any], *, camera_hz: float = 30.0,
                 joint_hz: float = 100.0, image_hw: tuple[int, int] = (96, 128), instruction: str | None = None,
                 encoding: str = "rgb8", policy_name: str = "/lightwam_policy"):
        super().__init__("robot_stand_in", context=context)
        self.params = dict(params)
        self.policy_name = policy_name
        self.received = Received()
        self.lock = threading.Lock()
        self.cameras = list(params["cameras.names"])
        self.joint_names = list(params["joints.names"])
        self.encoding = encoding
        self.publish_cameras = True
        self.silent_cameras: set[str] = set()
        self.publish_joints = True
        self.start = time.monotonic()
        # pre-rendered frames: rendering every frame would load the 2 cores the node needs
        h, w = image_hw
        self._frames = {c: [render_scene(i, k / camera_hz, h, w) for k in range(8)] for i, c in enumerate(self.cameras)}
        self._frame_index = 0
        # cameras.transports compressed: JPEG CompressedImage on <topic>/compressed, encoded up front
        transports = list(params.get("cameras.transports") or ["raw"] * len(self.cameras))
        self.compressed = {c: t == "compressed" for c, t in zip(self.cameras, transports)}
        self.corrupt_compressed = False  # send truncated JPEG bytes (the error tests)
        self._jpeg = {c: [rgb_to_compressed(f, "jpeg", 90) for f in self._frames[c]]
                      for c in self.cameras if self.compressed[c]}
        self._cam_pubs = {c: self.create_publisher(CompressedImage if self.compressed[c] else Image,
                                                   t + "/compressed" if self.compressed[c] else t, sensor_feed_qos())
                          for c, t in zip(self.cameras, params["cameras.topics"])}
        self._joint_pub = self.create_publisher(JointState, params["joints.state_topic"], 10)
        self._instruction_pub = self.create_publisher(String, params["instruction.topic"], instruction_qos())
        if instruction is not None:
            self.send_instruction(instruction)
        out_topic = self._policy_relative(params["output.topic"])
        mode = params.get("output.mode", "joint_trajectory")
        if mode == "joint_trajectory":
            self.create_subscription(JointTrajectory, out_topic, self._record("trajectories"), 50)
        elif mode == "forward":
            self.create_subscription(Float64MultiArray, out_topic, self._record("commands"), 50)
        self.create_subscription(JointTrajectory, f"{policy_name}/action_chunk", self._record("chunks"), 50)
        self.create_subscription(Image, f"{policy_name}/debug/canvas", self._record("canvases"), 5)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._record("diagnostics"), 50)
        self.create_subscription(Log, "/rosout", self._on_log, rosout_qos())
        self.create_timer(1.0 / camera_hz, self._publish_cameras)
        self.create_timer(1.0 / joint_hz, self._publish_joints)

    def _policy_relative(self, topic: str) -> str:
        return topic if topic.startswith("/") else f"{self.policy_name.rsplit('/', 1)[0]}/{topic}"

    def _record(self, what: str) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            with self.lock:
                getattr(self.received, what).append((time.monotonic(), msg))
        return cb

    def _on_log(self, msg: Log) -> None:
        if msg.name.endswith(self.policy_name.strip("/").replace("/", ".")):
            with self.lock:
                self.received.logs.append(msg)

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def send_instruction(self, text: str) -> None:
        self._instruction_pub.publish(String(data=text))

    def _publish_cameras(self) -> None:
        if not self.publish_cameras:
            return
        stamp = self.now_ns()
        k = self._frame_index % 8
        self._frame_index += 1
        for c, pub in self._cam_pubs.items():
            if c in self.silent_cameras:
                continue
            if self.compressed[c]:
                msg = self._jpeg[c][k]
                msg.header.stamp = ns_to_time(stamp)
                if self.corrupt_compressed:
                    msg = CompressedImage(header=msg.header, format=msg.format, data=msg.data[: len(msg.data) // 3])
                pub.publish(msg)
                continue
            msg = rgb_to_image(self._frames[c][k], stamp, c)
            if self.encoding != "rgb8":
                msg.encoding = self.encoding  # deliberately wrong/unsupported for the error tests
            pub.publish(msg)

    def _publish_joints(self) -> None:
        if not self.publish_joints:
            return
        msg = JointState()
        stamp = self.now_ns()
        msg.header.stamp = ns_to_time(stamp)
        msg.name = list(self.joint_names)
        msg.position = joint_positions(time.monotonic() - self.start, len(self.joint_names)).tolist()
        self._joint_pub.publish(msg)

    # -- service helpers (called from the test thread; the executor thread answers) -------------

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 20.0) -> Any:
        client = self.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service {name} did not answer in {timeout} s")
                time.sleep(0.01)
            return future.result()
        finally:
            self.destroy_client(client)

    def lifecycle(self, transition_id: int) -> bool:
        req = ChangeState.Request()
        req.transition = Transition(id=transition_id)
        return self.call(ChangeState, f"{self.policy_name}/change_state", req, timeout=60.0).success

    def lifecycle_state(self) -> str:
        return self.call(GetState, f"{self.policy_name}/get_state", GetState.Request()).current_state.label

    def trigger(self, name: str) -> Trigger.Response:
        return self.call(Trigger, f"{self.policy_name}/{name}", Trigger.Request())

    def set_parameters(self, **values: Any) -> list:
        req = SetParameters.Request()
        req.parameters = [Parameter(k.replace("__", "."), value=v).to_parameter_msg() for k, v in values.items()]
        return list(self.call(SetParameters, f"{self.policy_name}/set_parameters", req).results)

    # -- queries ---------------------------------------------------------------------------------

    def snapshot(self) -> Received:
        with self.lock:
            r = self.received
            return Received(list(r.trajectories), list(r.commands), list(r.chunks), list(r.diagnostics),
                            list(r.logs), list(r.canvases))

    def clear(self) -> None:
        with self.lock:
            self.received = Received()

    def errors(self) -> list[str]:
        with self.lock:
            return [m.msg for m in self.received.logs if m.level >= Log.ERROR]

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float, what: str) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            time.sleep(0.02)
        snap = self.snapshot()
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {len(snap.trajectories)} "
                             f"trajectories, {len(snap.commands)} commands, {len(snap.chunks)} chunks; "
                             f"node errors: {self.errors()}")


@contextmanager
def spinning(nodes: Iterable[Node]):
    """Spin each node on its own SingleThreadedExecutor thread until the block ends."""
    executors, threads = [], []
    for node in nodes:
        ex = SingleThreadedExecutor(context=node.context)
        ex.add_node(node)
        t = threading.Thread(target=ex.spin, name=f"spin-{node.get_name()}", daemon=True)
        t.start()
        executors.append(ex)
        threads.append(t)
    try:
        yield
    finally:
        for ex in executors:
            ex.shutdown(timeout_sec=5.0)
        for t in threads:
            t.join(timeout=10.0)


@contextmanager
def ros_context(args: list[str] | None = None):
    ctx = rclpy.Context()
    rclpy.init(args=args, context=ctx)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


def trajectory_times_ns(msg: JointTrajectory) -> np.ndarray:
    return np.array([p.time_from_start.sec * 1_000_000_000 + p.time_from_start.nanosec for p in msg.points])


def trajectory_positions(msg: JointTrajectory) -> np.ndarray:
    return np.array([list(p.positions) for p in msg.points], dtype=np.float64)
