"""Offline replay: the real node on the bag clock, checked against independently computed expectations.

Every replay here uses the demo profile (config/demo.yaml) and the tiny demo bundle. Expected
images come from the synthetic scene renderer and the reference decoder in synthetic.py (not from
lightwam_ros.ros.images); expected chunks from a separate PolicyPipeline on those images; expected
states from the synthetic trajectory by joint name.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lightwam_ros.cli import main as cli_main
from lightwam_ros.demo.synthetic import (
    DEFAULT_INSTRUCTION,
    CameraDropout,
    SyntheticBagSpec,
    TimedInstruction,
    decode_reference,
    encode_image,
    joint_positions,
    render_scene,
    write_synthetic_bag,
)
from lightwam_ros.demo.tiny_bundle import DEMO_INSTRUCTIONS, DEMO_JOINT_NAMES
from lightwam_ros.replay.bags import BagError, BagReader
from lightwam_ros.replay.metrics import (
    ReferenceKind,
    ReferenceTrack,
    command_track,
    joint_state_track,
    open_loop_error,
)
from lightwam_ros.replay.options import ReplayError, ReplayOptions
from lightwam_ros.replay.runner import run_replay
from lightwam_ros.types import ActionChunk

NEW_INSTRUCTION = "place the cup on the coaster"
TICK_NS = 20_000_000  # demo profile: 50 Hz
JOINT_PERIOD_NS = 10_000_000  # synthetic joint states: 100 Hz


def small_spec(**kw) -> SyntheticBagSpec:
    base = dict(height=120, width=160, rate_hz=30.0, seconds=1.0, jitter_ms=0.0,
                instructions=(TimedInstruction(DEFAULT_INSTRUCTION),))
    base.update(kw)
    return SyntheticBagSpec(**base)


def replay(bag, bundle, out, **kw):
    return run_replay(ReplayOptions(bag=bag, profile="demo", bundle=str(bundle), out=out,
                                    keep_frames=True, plot=False, **kw))


@pytest.fixture(scope="module")
def pipeline(tiny_bundle):
    from lightwam_ros.inference.pipeline import PolicyPipeline

    p = PolicyPipeline.from_bundle(tiny_bundle, backend="torch", device="cpu", dtype="float32", steps=24)
    yield p
    p.close()


def expected_frames(spec: SyntheticBagSpec, set_stamp_ns: int) -> dict[str, np.ndarray]:
    """RGB the node must have decoded for the set whose newest stamp is set_stamp_ns (jitter 0:
    the set holds frame n of every camera; the last camera's phase is (N-1) ms)."""
    period = 1e9 / spec.rate_hz
    last_phase = (len(spec.cameras) - 1) * 1_000_000
    n = round((set_stamp_ns - spec.start_ns - last_phase) / period)
    out = {}
    for i, cam in enumerate(spec.cameras):
        t_s = (round(n * period) + i * 1_000_000) / 1e9
        pixels, _ = encode_image(render_scene(i, t_s, spec.height, spec.width), spec.encoding)
        out[cam] = decode_reference(pixels, spec.encoding)
    return out


def expected_state(spec: SyntheticBagSpec, obs_stamp_ns: int) -> np.ndarray:
    """The joint state at the frame set's observation time: the latest joint state (stamp = record
    time) with stamp <= the set's stamp, in the bundle's (canonical) joint order."""
    k = (obs_stamp_ns - spec.start_ns) // JOINT_PERIOD_NS
    t = k * JOINT_PERIOD_NS / 1e9 if spec.joint_motion.value == "smooth" else 0.0
    return joint_positions(t, len(DEMO_JOINT_NAMES))


def chunk_by_stamp(result) -> dict[int, ActionChunk]:
    return {c.stamp_ns: c for c in result.chunks}


@pytest.mark.parametrize("encoding,storage,version", [
    ("rgb8", "mcap", 9), ("bgr8", "sqlite3", 8), ("rgba8", "mcap", 8), ("bgra8", "sqlite3", 9), ("mono8", "mcap", 9),
])
def test_every_encoding_storage_and_version_gives_the_reference_chunks(
        tmp_path, tiny_bundle, pipeline, encoding, storage, version):
    spec = small_spec(encoding=encoding, storage=storage, version=version)
    write_synthetic_bag(spec, tmp_path / "bag")
    result = replay(tmp_path / "bag", tiny_bundle, tmp_path / "out")
    assert (result.report["bag_storage"], result.report["bag_version"]) == (storage, version)
    assert result.report["frame_sets"]["formed"] == result.report["frame_sets"]["in_bag"] == 30
    assert len(result.requests) >= 2 and len(result.chunks) == len(result.requests)
    published = chunk_by_stamp(result)
    for req in result.requests[:2]:
        frames = expected_frames(spec, req.stamp_ns)
        for cam, img in frames.items():  # the node decoded every encoding to the reference RGB
            assert np.array_equal(req.images[cam], img), f"{encoding}: camera {cam} decoded wrongly"
        state = expected_state(spec, req.stamp_ns)
        np.testing.assert_allclose(req.state, state, rtol=0, atol=1e-12)
        direct = pipeline.predict(frames, state, DEFAULT_INSTRUCTION, req.stamp_ns)
        np.testing.assert_allclose(published[req.stamp_ns].actions, direct.actions[:24], rtol=0, atol=1e-5)
    # output bag: MCAP with the chunk, the JTC commands and diagnostics
    with BagReader(result.output_bag) as r:
        assert r.info.storage == "mcap"
        assert r.info.topics["/lightwam_policy/action_chunk"].count == len(result.chunks)
        assert r.info.topics["/demo/arm_controller/joint_trajectory"].count >= 1
        assert "/diagnostics" in r.info.topics


def test_camera_dropout_with_jitter_holds_then_recovers(tmp_path, tiny_bundle, capsys):
    """A camera silent for 1.0-2.2 s: no frame set with a stamp in the gap, the robot holds
    (stale_cameras once the camera is silent for sync.camera_timeout = 0.5 s) on a constant
    command, and chunks resume when it comes back. Run through the `lightwam replay` command."""
    spec = small_spec(seconds=3.0, jitter_ms=3.0, dropouts=(CameraDropout("cam_left_wrist", 1.0, 2.2),))
    write_synthetic_bag(spec, tmp_path / "bag")
    rc = cli_main(["replay", "--bag", str(tmp_path / "bag"), "--profile", "demo", "--bundle", str(tiny_bundle),
                   "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "offline throughput:" in printed and "frame sets/s" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (tmp_path / "out" / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t0, t1 = spec.start_ns + 1_000_000_000, spec.start_ns + 2_200_000_000
    stamps = report["chunks"]["stamps_ns"]
    # the last stamp before the gap and the first after it; nothing inside (jitter <= 3 ms)
    assert all(not (t0 + 3_000_000 < s < t1 - 3_000_000) for s in stamps)
    assert any(s < t0 for s in stamps) and any(s >= t1 - 3_000_000 for s in stamps)
    # 90 sets in 3 s minus the 36 the dropout removes (frames at 1.0..2.2 s)
    assert report["frame_sets"]["in_bag"] == report["frame_sets"]["formed"] == 90 - 36
    intervals = report["holds"]["intervals"]
    stale = [iv for iv in intervals if iv["hold"] == "stale_cameras"]
    assert len(stale) == 1
    # dead after camera_timeout: last frame ~0.98 s (+1 ms phase) -> dead from ~1.48 s until it returns
    assert stale[0]["start_s"] == pytest.approx(1.5, abs=0.03)
    assert stale[0]["end_s"] == pytest.approx(2.2, abs=0.03)
    assert intervals[-1]["hold"] == "none" and intervals[-1]["end_s"] > 2.8  # following again
    # the hold is a constant command: the JTC output during the hold is a single held point
    with BagReader(tmp_path / "out" / "outputs") as r:
        track = command_track(r, "/demo/arm_controller/joint_trajectory", DEMO_JOINT_NAMES)
    lo, hi = spec.start_ns + round(1.55e9), spec.start_ns + round(2.15e9)
    held = track.at(np.arange(lo, hi, TICK_NS))
    assert np.isfinite(held).all() and np.ptp(held, axis=0).max() == 0.0


def test_instruction_change_mid_bag_switches_the_context(tmp_path, tiny_bundle, pipeline):
    spec = small_spec(seconds=2.0, instructions=(TimedInstruction(DEFAULT_INSTRUCTION, 0.0),
                                                  TimedInstruction(NEW_INSTRUCTION, 1.0)))
    assert NEW_INSTRUCTION in DEMO_INSTRUCTIONS
    write_synthetic_bag(spec, tmp_path / "bag")
    result = replay(tmp_path / "bag", tiny_bundle, tmp_path / "out")
    change = spec.start_ns + 1_000_000_000
    before = [r for r in result.requests if r.request_ns < change]
    after = [r for r in result.requests if r.request_ns >= change]
    assert before and len(after) >= 2
    assert all(r.instruction == DEFAULT_INSTRUCTION for r in before)
    assert all(r.instruction == NEW_INSTRUCTION for r in after)
    published = chunk_by_stamp(result)
    for req in after[:2]:
        frames = expected_frames(spec, req.stamp_ns)
        state = expected_state(spec, req.stamp_ns)
        new = pipeline.predict(frames, state, NEW_INSTRUCTION, req.stamp_ns).actions[:24]
        old = pipeline.predict(frames, state, DEFAULT_INSTRUCTION, req.stamp_ns).actions[:24]
        got = published[req.stamp_ns].actions
        np.testing.assert_allclose(got, new, rtol=0, atol=1e-5)
        assert np.abs(got - old).max() > 1e-3  # the instruction really changes the chunk


def test_joint_state_in_another_order_is_picked_by_name(tmp_path, tiny_bundle):
    canonical = small_spec(seconds=1.0)
    shuffled = small_spec(seconds=1.0, joint_order="shuffled")
    assert shuffled.recorded_joint_names != canonical.recorded_joint_names
    write_synthetic_bag(canonical, tmp_path / "canonical")
    write_synthetic_bag(shuffled, tmp_path / "shuffled")
    a = replay(tmp_path / "canonical", tiny_bundle, tmp_path / "out_a")
    b = replay(tmp_path / "shuffled", tiny_bundle, tmp_path / "out_b")
    assert [c.stamp_ns for c in a.chunks] == [c.stamp_ns for c in b.chunks] and len(a.chunks) >= 2
    for ca, cb in zip(a.chunks, b.chunks):
        np.testing.assert_array_equal(ca.actions, cb.actions)
    for req in b.requests:
        np.testing.assert_allclose(req.state, expected_state(shuffled, req.stamp_ns), rtol=0, atol=1e-12)
    # the open-loop error is scored by name too: identical for both recordings
    assert a.report["open_loop_error"]["mae_per_joint"] == b.report["open_loop_error"]["mae_per_joint"]


def test_window_with_latched_instruction_and_fixed_latency_is_deterministic(tmp_path, tiny_bundle):
    """--start/--duration: the instruction recorded before the window still applies (latched);
    a fixed simulated latency delays every chunk by at least that much on the bag clock, and
    the run is reproducible."""
    spec = small_spec(seconds=3.0)
    write_synthetic_bag(spec, tmp_path / "bag")
    runs = [replay(tmp_path / "bag", tiny_bundle, tmp_path / f"out{i}", start_s=1.5, duration_s=1.0,
                   latency_ms=150.0) for i in range(2)]
    lo, hi = spec.start_ns + 1_500_000_000, spec.start_ns + 2_500_000_000
    a, b = runs
    assert len(a.chunks) >= 2
    assert all(lo <= r.stamp_ns < hi and r.instruction == DEFAULT_INSTRUCTION for r in a.requests)
    assert [c.stamp_ns for c in a.chunks] == [c.stamp_ns for c in b.chunks]
    for ca, cb in zip(a.chunks, b.chunks):
        np.testing.assert_array_equal(ca.actions, cb.actions)
    assert all(r.ready_ns - r.request_ns == 150_000_000 for r in a.requests)
    assert a.report["chunks"]["observation_to_publish_ms"]["p50"] >= 150.0
    assert a.report["inference"]["latency_model"] == {
        "kind": "fixed", "latency_ms": 150.0,
        "note": "chunks are merged at the first control tick at or after request + latency"}
    # the first tick is one control period into the window; no tick after the window
    assert a.ticks[0].t_ns == lo + TICK_NS and a.ticks[-1].t_ns < hi


def test_profile_topics_missing_from_the_bag_are_named(tmp_path, tiny_bundle):
    spec = small_spec(namespace="/robot", cameras=("cam_high", "cam_left_wrist", "cam_top"))
    write_synthetic_bag(spec, tmp_path / "bag")
    with pytest.raises(BagError, match=r"cameras.topics \(cam_high\) '/demo/cam_high/image_raw'.*"
                                       r"'/robot/cam_left_wrist/image_raw', '/robot/cam_top/image_raw'"):
        replay(tmp_path / "bag", tiny_bundle, tmp_path / "out")
    with pytest.raises(ReplayError, match="--rate must be > 0"):
        ReplayOptions(bag=tmp_path / "bag", profile="demo", out=tmp_path / "o", rate=0.0)


# --- metrics on hand-made data ------------------------------------------------------------------
def _track(times_s, values) -> ReferenceTrack:
    t = np.asarray([round(x * 1e9) for x in times_s], dtype=np.int64)
    return ReferenceTrack("/js", ReferenceKind.JOINT_STATES, ("a", "b"), t, np.asarray(values, dtype=np.float64))


def test_open_loop_error_interpolates_the_recording_at_each_step_time():
    # recorded: a(t) = t, b(t) = 2 - t, sampled at 0, 1, 2 s (linear, so interpolation is exact)
    track = _track([0.0, 1.0, 2.0], [[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    dt = 250_000_000
    k = np.arange(4)
    # chunk at 0.5 s: a predicted exactly, b off by +0.1 at every step
    c1 = ActionChunk(np.stack([0.5 + 0.25 * k, 1.5 - 0.25 * k + 0.1], 1).astype(np.float32), 500_000_000, dt, 4)
    # chunk at 1.5 s: steps 0..2 inside the recording (1.5, 1.75, 2.0), step 3 (2.25 s) outside -> not scored
    c2 = ActionChunk(np.stack([1.5 + 0.25 * k + 0.2, 0.5 - 0.25 * k], 1).astype(np.float32), 1_500_000_000, dt, 4)
    e = open_loop_error([c1, c2], track)
    assert e["chunks_scored"] == 2 and e["steps_scored"] == 4
    assert e["mae_per_joint"] == pytest.approx([0.2 * 3 / 7, 0.1 * 4 / 7], abs=1e-6)
    assert e["mae_per_step"][3] == pytest.approx(0.05, abs=1e-6)  # only c1 scores step 3: (0 + 0.1) / 2
    assert e["mae_per_step_joint"][0] == pytest.approx([0.1, 0.05], abs=1e-6)
    assert e["rmse_per_joint"][0] == pytest.approx(math.sqrt(3 * 0.04 / 7), abs=1e-6)


def test_command_track_follows_jtc_replacement_semantics(tmp_path):
    from lightwam_ros.replay.bags import BagWriter

    with BagWriter(tmp_path / "cmd") as w:
        w.add_topic("/jtc", "trajectory_msgs/msg/JointTrajectory")
        ts = w.typestore
        JT, P = ts.types["trajectory_msgs/msg/JointTrajectory"], ts.types["trajectory_msgs/msg/JointTrajectoryPoint"]
        H, T, D = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"], \
            ts.types["builtin_interfaces/msg/Duration"]
        e = np.zeros(0)

        def traj(points):  # stamp 0: starts on arrival; joint order b, a
            return JT(H(T(0, 0), ""), ["b", "a"], [P(np.array(p, float), e, e, e, D(0, tfs)) for tfs, p in points])

        w.write_message("/jtc", 1_000_000_000, traj([(100_000_000, [10.0, 1.0]), (200_000_000, [20.0, 2.0]),
                                                     (300_000_000, [30.0, 3.0])]))
        # arrives at 1.15 s: replaces the knots from 1.15 s on (those at 1.2 and 1.3 s)
        w.write_message("/jtc", 1_150_000_000, traj([(100_000_000, [-1.0, -0.1])]))
    with BagReader(tmp_path / "cmd") as r:
        track = command_track(r, "/jtc", ["a", "b"])
    # 1.15 s: where the first trajectory was (halfway between its 1.1 and 1.2 s points), then the new point
    assert track.times_ns.tolist() == [1_100_000_000, 1_150_000_000, 1_250_000_000]
    np.testing.assert_allclose(track.positions, [[1.0, 10.0], [1.5, 15.0], [-0.1, -1.0]], rtol=0, atol=1e-12)


def test_open_loop_reference_can_be_a_recorded_command_topic(tmp_path, tiny_bundle):
    """--reference: a recorded forward-controller command topic (Float64MultiArray, action order) that
    commanded exactly the recorded joint trajectory scores the chunks as the joint states do."""
    from lightwam_ros.replay.bags import BagWriter, copy_messages

    spec = small_spec(seconds=1.0)
    write_synthetic_bag(spec, tmp_path / "src")
    with BagReader(tmp_path / "src") as src, BagWriter(tmp_path / "bag") as w:
        copy_messages(src, w, src.info.topics)
        w.add_topic("/demo/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray")
        F, L = w.typestore.types["std_msgs/msg/Float64MultiArray"], w.typestore.types["std_msgs/msg/MultiArrayLayout"]
        for k in range(200):  # 200 Hz commands, positions in the bundle's action order
            t = k * 5_000_000
            w.write_message("/demo/forward_position_controller/commands", spec.start_ns + t,
                            F(L([], 0), joint_positions(t / 1e9, 14)))
    by_cmd = replay(tmp_path / "bag", tiny_bundle, tmp_path / "b",
                    reference_topic="/demo/forward_position_controller/commands")
    with BagReader(tmp_path / "bag") as r:
        states = joint_state_track(r, spec.joint_state_topic, DEMO_JOINT_NAMES)
    e_state, e_cmd = open_loop_error(by_cmd.chunks, states), by_cmd.report["open_loop_error"]
    assert e_cmd["reference_kind"] == "forward" and e_state["reference_kind"] == "joint_states"
    assert e_cmd["chunks_scored"] == e_state["chunks_scored"] >= 2
    # same trajectory sampled at 100 vs 200 Hz: linear interpolation differs by < 1e-3 rad
    np.testing.assert_allclose(e_cmd["mae_per_joint"], e_state["mae_per_joint"], rtol=0, atol=1e-3)


def test_motion_report_marks_every_chunk_handover(tmp_path, tiny_bundle):
    """report.json's motion: the merges the controller recorded are the ticks where the plan
    changed. With the demo profile's trajectory output, a tick that follows a following tick
    publishes a JointTrajectory exactly when a new chunk was merged."""
    from lightwam_ros.replay.offline import chunk_merges
    from lightwam_ros.replay.runner import node_plan

    spec = small_spec(seconds=1.5)
    write_synthetic_bag(spec, tmp_path / "bag")
    result = replay(tmp_path / "bag", tiny_bundle, tmp_path / "out", latency_ms=60.0)
    _, cfg = node_plan(ReplayOptions(bag=tmp_path / "bag", profile="demo", bundle=str(tiny_bundle),
                                     out=tmp_path / "unused"))
    merges = chunk_merges(result.ticks)
    merged = {i for i, _ in merges}
    ticks = result.ticks
    pairs = [i for i in range(1, len(ticks)) if ticks[i].hold is None and ticks[i - 1].hold is None]
    assert pairs and len(merged) >= 3
    assert [i for i in pairs if ticks[i].command is not None] == [i for i in pairs if i in merged]
    m = json.loads(result.report_path.read_text())["motion"]
    assert m["available"]
    assert m["chunks_merged"] == len(merges) and m["seams"]["handovers"] == len(merged) - 1
    assert m["seams"]["scored"] >= 1 and m["seams"]["ratio_p99"][0] is not None
    assert len(m["handover_bag_times_s"]) == m["seams"]["handovers"]
    assert m["observation_to_first_execution_ms"]["p50"] >= 60.0
    assert 0 < m["following_after_first_chunk"]["fraction"] <= 1
    assert len(m["executed"]["jerk"]["p99"]) == len(cfg.output.joint_names)
