"""lightwam_ros.ros.qos: each publisher/subscription pair the node takes part in is compatible.

rclpy's own compatibility check (no DDS traffic): an incompatible pair would match silently to
nothing on a robot, so the pairs are checked here rather than discovered as a node that never acts.
"""

from __future__ import annotations

import pytest
from rclpy.qos import (
    DurabilityPolicy,
    QoSCompatibility,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
)

from lightwam_ros.ros import qos

# ros2_control's controllers subscribe with the system default QoS, which Fast DDS makes reliable.
CONTROLLER = QoSProfile(depth=10)
# rcl publishes /rosout like this (rcl's rosout QoS; rclpy exports it as qos_profile_rosout_default
# only from Kilted on, so it is spelled out for Jazzy).
ROSOUT = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# rclpy's time source (use_sim_time) subscribes /clock like this.
TIME_SOURCE = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)

PAIRS = {  # name: (publisher, subscription)
    "camera driver -> node": (qos.sensor_feed_qos(), qos.camera_qos(2)),
    "reliable camera driver -> node": (qos.playback_qos(), qos.camera_qos(2)),
    "joint driver -> node": (qos.sensor_feed_qos(), qos.joint_state_qos()),
    "bag playback joints -> node": (qos.playback_qos(), qos.joint_state_qos()),
    "instruction -> node": (qos.instruction_qos(), qos.instruction_qos()),
    "node output -> controller": (qos.output_qos(), CONTROLLER),
    "node output -> recorder": (qos.output_qos(), qos.record_qos()),
    "node canvas -> recorder": (qos.canvas_qos(), qos.record_qos()),
    "node diagnostics -> aggregator": (qos.diagnostics_qos(), CONTROLLER),
    "node diagnostics -> recorder": (qos.diagnostics_qos(), qos.record_qos()),
    "replay clock -> time source": (qos.clock_qos(), TIME_SOURCE),
    "rcl /rosout -> log reader": (ROSOUT, qos.rosout_qos()),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_pair_is_compatible(name: str) -> None:
    publisher, subscription = PAIRS[name]
    compatibility, reason = qos_check_compatible(publisher, subscription)
    # Nobody sets liveliness, and rclpy warns that it cannot judge two system defaults: not a problem.
    problems = [p for p in reason.split(";") if p.strip() and "liveliness is system_default" not in p]
    assert compatibility is not QoSCompatibility.ERROR and not problems, f"{name}: {reason}"


def test_camera_depth_is_the_sync_queue() -> None:
    assert qos.camera_qos(7).depth == 7


def test_instruction_is_latched_only_when_the_publisher_offers_it() -> None:
    # The reason the publishers use instruction_qos too: a volatile publisher cannot serve a late joiner.
    volatile = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    assert qos.instruction_qos().durability is DurabilityPolicy.TRANSIENT_LOCAL
    assert qos_check_compatible(volatile, qos.instruction_qos())[0] is not QoSCompatibility.OK


def test_best_effort_output_would_not_reach_a_controller() -> None:
    best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    assert qos_check_compatible(best_effort, CONTROLLER)[0] is not QoSCompatibility.OK
    assert qos.output_qos().reliability is ReliabilityPolicy.RELIABLE
