"""outputs.py message builders and diagnostics.py aggregation (no rclpy.init; messages only)."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.serialization import deserialize_message, serialize_message
from trajectory_msgs.msg import JointTrajectory

from lightwam_ros.control.diagnostics import Diagnostics, DiagnosticsInput, LatencyWindow, Level
from lightwam_ros.control.safety import HoldReason
from lightwam_ros.control.scheduler import ChunkOutcome
from lightwam_ros.control.sync import DropReason, SyncStats
from lightwam_ros.ros.images import image_to_rgb, time_to_ns
from lightwam_ros.ros.outputs import (
    action_chunk_from_msg,
    action_chunk_msg,
    debug_canvas,
    diagnostic_array,
    duration_to_ns,
    forward_command,
    joint_trajectory,
    ns_to_duration,
)
from lightwam_ros.types import ActionChunk

MS = 1_000_000
NAMES = ["j0", "j1"]


def roundtrip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def test_joint_trajectory_for_jtc():
    pos = np.array([[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]])
    msg = roundtrip(joint_trajectory(NAMES, pos, 20 * MS))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 0)  # start on arrival
    assert list(msg.joint_names) == NAMES
    assert [(p.time_from_start.sec, p.time_from_start.nanosec) for p in msg.points] == \
        [(0, 20_000_000), (0, 40_000_000), (0, 60_000_000)]
    np.testing.assert_array_equal([list(p.positions) for p in msg.points], pos)
    assert all(len(p.velocities) == 0 for p in msg.points)


def test_time_from_start_crosses_seconds_and_strictly_increases():
    msg = joint_trajectory(NAMES, np.zeros((3, 2)), 1_500_000_000)
    assert [(p.time_from_start.sec, p.time_from_start.nanosec) for p in msg.points] == \
        [(1, 500_000_000), (3, 0), (4, 500_000_000)]
    t = [duration_to_ns(p.time_from_start) for p in msg.points]
    assert all(b > a for a, b in zip(t, t[1:]))


def test_velocities_and_a_start_stamp_are_carried_as_given():
    """The controller computes the velocities (jtc_spline.knot_velocities) and the start stamp
    (output.trajectory_start_delay on the node clock); the builder puts them in the message."""
    pos = np.array([[0.0, 0.0], [1.0, -1.0], [3.0, -1.0]])
    vel = np.array([[2.0, -2.0], [3.0, -1.0], [0.0, 0.0]])
    stamp = 1_700_000_000 * 1_000_000_000 + 123_456_789
    msg = roundtrip(joint_trajectory(NAMES, pos, 500 * MS, vel, stamp_ns=stamp))
    assert time_to_ns(msg.header.stamp) == stamp
    np.testing.assert_array_equal([list(p.velocities) for p in msg.points], vel)
    assert [duration_to_ns(p.time_from_start) for p in msg.points] == [500 * MS, 1000 * MS, 1500 * MS]
    assert all(len(p.accelerations) == 0 for p in msg.points)  # cubic, never quintic
    one = joint_trajectory(NAMES, pos[:1], 500 * MS, np.zeros((1, 2)))
    assert list(one.points[0].velocities) == [0.0, 0.0]
    assert time_to_ns(one.header.stamp) == 0  # start on arrival


@pytest.mark.parametrize("vel,stamp,fragment", [
    (np.zeros((2, 2)), 0, "shape"),
    (np.array([[np.nan, 0.0], [0.0, 0.0], [0.0, 0.0]]), 0, "finite"),
    (np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]]), 0, "last point's velocities must be 0"),
    (None, -1, "stamp_ns"),
])
def test_joint_trajectory_refuses_velocities_a_jtc_would_not_take(vel, stamp, fragment):
    with pytest.raises(ValueError, match=fragment):
        joint_trajectory(NAMES, np.zeros((3, 2)), 20 * MS, vel, stamp_ns=stamp)


@pytest.mark.parametrize("pos,dt,fragment", [
    (np.zeros((2, 3)), 20 * MS, r"\[m, 2\]"),
    (np.zeros(2), 20 * MS, r"\[m, 2\]"),
    (np.zeros((0, 2)), 20 * MS, "at least one point"),
    (np.zeros((2, 2)), 0, "dt_ns"),
])
def test_joint_trajectory_errors(pos, dt, fragment):
    with pytest.raises(ValueError, match=fragment):
        joint_trajectory(NAMES, pos, dt)


def test_forward_command():
    msg = roundtrip(forward_command(np.array([0.25, -1.0], np.float32)))
    assert list(msg.data) == [0.25, -1.0]


def test_action_chunk_carries_stamp_and_trained_rows_only():
    actions = np.arange(32 * 2, dtype=np.float32).reshape(32, 2) / 7
    chunk = ActionChunk(actions, stamp_ns=1_700_000_000_250_000_000, dt_ns=20 * MS, trained_steps=24)
    msg = roundtrip(action_chunk_msg(chunk, NAMES))
    assert isinstance(msg, JointTrajectory) and len(msg.points) == 24
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 250_000_000)
    assert duration_to_ns(msg.points[0].time_from_start) == 0  # action 0 is at the observation
    assert duration_to_ns(msg.points[23].time_from_start) == 23 * 20 * MS
    stamp, dt, back, names = action_chunk_from_msg(msg)
    assert stamp == chunk.stamp_ns and dt == 20 * MS and names == NAMES
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, actions[:24])
    one = ActionChunk(actions, 5, 20 * MS, trained_steps=1)
    assert action_chunk_from_msg(action_chunk_msg(one, NAMES))[1] is None


def test_debug_canvas_and_durations():
    canvas = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    msg = roundtrip(debug_canvas(canvas, 42, "camera_canvas"))
    assert msg.encoding == "rgb8" and time_to_ns(msg.header.stamp) == 42 and msg.header.frame_id == "camera_canvas"
    np.testing.assert_array_equal(image_to_rgb(msg), canvas)
    d = ns_to_duration(2_000_000_001)
    assert (d.sec, d.nanosec) == (2, 1)


# --- diagnostics ---------------------------------------------------------------------------------

def test_latency_window_percentiles():
    w = LatencyWindow(size=100)
    assert w.summary() == {"n": 0}
    for x in range(1000, 0, -1):  # only the last 100 (100 .. 1) are kept
        w.add(x)
    assert w.summary() == pytest.approx({"n": 100, "p50": 50.5, "p90": 90.1, "p99": 99.01, "max": 100.0})


def stats(arrivals, drops=None, emitted=0, spread=None):
    d = {r: 0 for r in DropReason}
    d.update(drops or {})
    return SyncStats(sets_formed=emitted, sets_emitted=emitted, drops=d, arrivals=arrivals,
                     queue_depths={"left": 1, "right": 0}, clock_resets=0,
                     last_set_stamp_ns=None, spread_ns=spread)


def inp(sync, **kw):
    base = dict(sync=sync, dead_cameras=[], silence_ns={"left": 10 * MS, "right": 20 * MS}, hold=None,
                queue_steps=12, safety={"clamped": 3}, backend="torch", device="cpu", dtype="float32")
    return DiagnosticsInput(**{**base, **kw})


def by_name(statuses):
    return {s["name"].split(": ")[1]: s for s in statuses}


def test_diagnostics_rates_levels_and_messages():
    d = Diagnostics("lightwam_policy", ["left", "right"], now_ns=0)
    out = by_name(d.statuses(1_000_000_000, inp(stats({"left": 30, "right": 29}, emitted=28, spread=3 * MS))))
    assert set(out) == {"cameras", "sync", "inference", "control"}
    cams = out["cameras"]
    assert cams["level"] is Level.OK and cams["values"]["left.rate_hz"] == pytest.approx(30.0)
    assert cams["values"]["right.silent_s"] == pytest.approx(0.02)
    assert out["sync"]["level"] is Level.OK and out["sync"]["values"]["set_rate_hz"] == pytest.approx(28.0)
    assert out["sync"]["values"]["last_spread_ms"] == pytest.approx(3.0)
    assert out["control"]["level"] is Level.OK and out["control"]["message"] == "following the policy"
    assert out["control"]["values"]["queue_steps"] == 12 and out["control"]["values"]["safety.clamped"] == 3

    # next period: 0.5 s later, right camera dead, 2 future drops, a refused chunk hold
    d.record_chunk(ChunkOutcome.ACCEPTED, {"total": 80.0, "vae": 10.0})
    d.record_chunk(ChunkOutcome.EXPIRED, {"total": 120.0, "vae": 12.0})
    out = by_name(d.statuses(1_500_000_000, inp(
        stats({"left": 45, "right": 29}, drops={DropReason.FUTURE: 2}, emitted=28),
        dead_cameras=["right"], silence_ns={"left": 0, "right": 600 * MS}, hold=HoldReason.CHUNK_REFUSED,
        keeps_up=False, expected_latency_ns=130 * MS)))
    assert out["cameras"]["level"] is Level.ERROR and "right (no current frame for 0.60 s)" in out["cameras"]["message"]
    assert out["cameras"]["values"]["left.rate_hz"] == pytest.approx(30.0)  # 15 frames in 0.5 s
    assert out["cameras"]["values"]["right.rate_hz"] == 0.0
    assert out["sync"]["level"] is Level.WARN and "2 future" in out["sync"]["message"]
    inf = out["inference"]
    assert inf["level"] is Level.WARN and "too slow" in inf["message"] and "1 chunks expired" in inf["message"]
    assert inf["values"]["total_ms.p50"] == pytest.approx(100.0) and inf["values"]["total.n"] == 2
    assert inf["values"]["chunks.accepted"] == 1 and inf["values"]["request_to_chunk_ms"] == pytest.approx(130.0)
    # a refused chunk alone is WARN (the controller asks again); a persistent fault it reports is ERROR
    assert out["control"]["level"] is Level.WARN and out["control"]["message"] == "holding: chunk_refused"
    fault = by_name(Diagnostics("lightwam_policy", ["left", "right"], now_ns=0).statuses(1_000_000_000, inp(
        stats({"left": 30, "right": 29}), hold=HoldReason.CHUNK_REFUSED, fault="refused 3 in a row")))
    assert fault["control"]["level"] is Level.ERROR
    assert fault["control"]["message"] == "holding: chunk_refused; refused 3 in a row"

    # a quiet period: drops do not repeat as warnings; expiries/evictions are routine
    out = by_name(d.statuses(2_500_000_000, inp(stats({"left": 75, "right": 59}, drops={
        DropReason.FUTURE: 2, DropReason.EXPIRED: 9, DropReason.EVICTED: 4}),
                                                hold=HoldReason.PAUSED)))
    assert out["sync"]["level"] is Level.OK and out["control"]["level"] is Level.OK
    assert out["inference"]["level"] is Level.OK


def test_diagnostic_array_message():
    d = Diagnostics("lightwam_policy", ["left", "right"], now_ns=0)
    statuses = d.statuses(1_000_000_000, inp(stats({"left": 3, "right": 3}), dead_cameras=["left"],
                                             extra={"dry_run": True}))
    msg = roundtrip(diagnostic_array(statuses, 7_000_000_123))
    assert isinstance(msg, DiagnosticArray) and time_to_ns(msg.header.stamp) == 7_000_000_123
    cams = next(s for s in msg.status if s.name == "lightwam_policy: cameras")
    assert cams.level == DiagnosticStatus.ERROR
    values = {kv.key: kv.value for kv in cams.values}
    assert values["left.rate_hz"] == "3" and values["left.queue"] == "1"
    control = next(s for s in msg.status if s.name == "lightwam_policy: control")
    assert control.level == DiagnosticStatus.OK
    assert {kv.key: kv.value for kv in control.values}["dry_run"] == "true"
