"""The node with compressed cameras over real DDS: JPEG CompressedImage in, trajectories out.

One node (demo profile with ``cameras.transports: compressed`` for every camera, a 5 Hz tiny demo
bundle as in test_node_pipeline.py, so inference fits a chunk on a slow or busy CPU) is driven by
the robot stand-in publishing JPEG frames on ``<topic>/compressed``, as image_transport names
them. The node decodes them on its decode thread and follows the policy; truncated JPEG data is
counted per camera in the diagnostics, logged naming the compressed topic, and the cameras have no
frame -- the robot holds until good frames come back. Nothing asserts a wall-clock speed.
"""

from __future__ import annotations

import time

import pytest
import torch
from node_harness import RobotStandIn, as_overrides, demo_parameters, ros_context, spinning

from lightwam_ros.demo.tiny_bundle import write_demo_bundle
from lightwam_ros.ros.node import PolicyNode

ACTION_RATE_HZ = 5.0
INSTRUCTION = "pick up the red block"


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    bundle = write_demo_bundle(tmp_path_factory.mktemp("bundle") / "demo_tiny_5hz", "tiny", seed=0,
                               action_rate_hz=ACTION_RATE_HZ).path
    params = demo_parameters(bundle, diagnostics__rate_hz=5.0)
    params["cameras.transports"] = ["compressed"] * len(params["cameras.names"])
    params["cameras.jpeg_decode"] = "reduced"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ros_context() as ctx:
            node = PolicyNode(context=ctx, autostart=True, parameter_overrides=as_overrides(params))
            # 480x640 frames: the layout halves them first, so with cameras.jpeg_decode reduced the
            # node decodes the JPEGs at half size after each camera's first frame
            robot = RobotStandIn(ctx, params, instruction=INSTRUCTION, image_hw=(480, 640))
            try:
                with spinning([node, robot]):
                    robot.wait_for(lambda r: sum(len(m.points) > 1 for _, m in r.trajectories) >= 2, 180,
                                   "the first trajectories from compressed cameras")
                    yield node, robot, params
            finally:
                node.destroy_node()
                robot.destroy_node()
    finally:
        torch.set_num_threads(threads)


def _control_values(received) -> tuple[int, dict[str, str]]:
    for _, arr in reversed(received.diagnostics):
        for s in arr.status:
            if s.name.endswith(": control"):
                stamp = arr.header.stamp.sec * 1_000_000_000 + arr.header.stamp.nanosec
                return stamp, {kv.key: kv.value for kv in s.values}
    return 0, {}


def test_compressed_cameras_drive_the_policy(system) -> None:
    _, robot, params = system
    snap = robot.snapshot()
    assert sum(len(m.points) > 1 for _, m in snap.trajectories) >= 2
    assert not [e for e in robot.errors() if "compressed" in e], robot.errors()
    _, values = _control_values(robot.snapshot())
    assert not any(k.startswith("lost_frames.") for k in values), values


def test_corrupt_compressed_frames_are_counted_logged_and_hold(system) -> None:
    _, robot, params = system
    topic = params["cameras.topics"][0] + "/compressed"
    robot.corrupt_compressed = True
    try:
        since = robot.now_ns()

        def holding(received) -> bool:
            stamp, values = _control_values(received)
            return stamp > since and values.get("hold") == "stale_cameras"
        robot.wait_for(holding, 30, "diagnostics hold=stale_cameras with corrupt JPEG frames")
        errors = [e for e in robot.errors() if topic in e and "corrupt or truncated" in e]
        assert errors, robot.errors()
        _, values = _control_values(robot.snapshot())
        camera = params["cameras.names"][0]
        assert int(values.get(f"lost_frames.{camera}.undecodable", 0)) > 0, values
    finally:
        robot.corrupt_compressed = False
    mark = time.monotonic()
    robot.wait_for(lambda r: any(t >= mark and len(m.points) > 1 for t, m in r.trajectories), 90,
                   "the node to follow the policy again once the frames decode")
