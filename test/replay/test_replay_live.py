"""Live replay over real DDS (conftest: own ROS_DOMAIN_ID, SHM Fast DDS profile, localhost discovery):
the bag published as raw CDR with a simulated /clock to a PolicyNode process, its outputs recorded."""

from __future__ import annotations

import numpy as np
import pytest

from lightwam_ros.control.latency_advice import ChunkTiming
from lightwam_ros.demo.run import paced_rate
from lightwam_ros.demo.synthetic import DEFAULT_INSTRUCTION, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
from lightwam_ros.replay.bags import BagReader, header_stamp_from_cdr
from lightwam_ros.replay.options import ReplayOptions
from lightwam_ros.replay.runner import run_replay

# The demo profile's chunks: 24 steps of the tiny bundle at 50 Hz, one inference at a time.
DEMO_CHUNK = ChunkTiming(24, 20_000_000)


@pytest.fixture
def live_rate(tiny_bundle, monkeypatch) -> float:
    """The playback rate at which inference fits a chunk on the node's (bag) clock on this machine,
    now (the demo's rule): on a fast machine real time, on a slow or busy one slower, so what the
    tests assert does not depend on the CPU. The node runs torch with one thread, as measured."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return paced_rate(tiny_bundle, DEMO_CHUNK)


def set_stamps(bag, spec: SyntheticBagSpec) -> set[int]:
    """Stamps of the camera sets in the bag (jitter 0: the newest camera stamp of frame n)."""
    last = spec.camera_topic(spec.cameras[-1])
    with BagReader(bag) as r:
        return {header_stamp_from_cdr(m.raw) for m in r.messages([last])}


def test_live_and_offline_give_the_same_chunk_for_the_same_frame_set(tmp_path, tiny_bundle, live_rate):
    """Cameras at 2.5 Hz: the 24-step (0.48 s) plan outlasts a frame period, so offline uses every
    frame set and live most of them (paced so inference fits a chunk on the bag clock); the chunks
    of the sets both used are matched by observation stamp. The robot stands still, because the node
    pairs a set with the newest joint state at the moment it requests inference, and that moment
    differs between modes (model latency); the images and instruction go through DDS here."""
    spec = SyntheticBagSpec(height=120, width=160, rate_hz=2.5, seconds=4.0, jitter_ms=0.0, joint_motion="static",
                            instructions=(TimedInstruction(DEFAULT_INSTRUCTION),))
    write_synthetic_bag(spec, tmp_path / "bag")
    common = dict(bag=tmp_path / "bag", profile="demo", bundle=str(tiny_bundle), plot=False)
    offline = run_replay(ReplayOptions(out=tmp_path / "offline", mode="offline", **common))
    live = run_replay(ReplayOptions(out=tmp_path / "live", mode="live", rate=live_rate, **common))

    available = set_stamps(tmp_path / "bag", spec)
    assert len(available) == 10
    live_chunks = {c.stamp_ns: c for c in live.chunks}
    off_chunks = {c.stamp_ns: c for c in offline.chunks}
    assert set(off_chunks) == available  # offline used every set
    assert set(live_chunks) <= available  # live chunks come from real frame sets of the bag
    matched = sorted(set(live_chunks) & set(off_chunks))
    # Paced, inference takes at most ~230 ms of the 400 ms between sets on the node's clock, so the
    # node uses at least every other set; 4 of 10 leaves room for a slower moment of the machine.
    assert len(matched) >= 4, f"only {len(matched)} common frame sets at rate {live_rate}: live {sorted(live_chunks)}"
    for s in matched:
        np.testing.assert_allclose(live_chunks[s].actions, off_chunks[s].actions, rtol=0, atol=1e-4)
    # the live report accounts for what was published and what the node did with it
    d = live.report["delivery"]
    assert d["frames_published"] == 30 and d["frame_sets_published"] == 10
    assert d["frame_sets_formed_by_node"] == 10 and d["frame_sets_used"] == len(live.chunks)
    assert live.report["open_loop_error"]["chunks_scored"] == len(live.chunks)


def test_live_camera_size_images_are_delivered(tmp_path, tiny_bundle, live_rate):
    """Three 480x640 rgb8 cameras at 30 Hz (~0.9 MB frames): with the SHM profile the node gets
    (nearly) every frame set, keeps following the policy, and the recording holds its outputs.
    Paced like the other live test, so chunks arrive in time on a slow or busy machine too."""
    spec = SyntheticBagSpec(height=480, width=640, rate_hz=30.0, seconds=2.0, jitter_ms=2.0,
                            instructions=(TimedInstruction(DEFAULT_INSTRUCTION),))
    write_synthetic_bag(spec, tmp_path / "bag")
    result = run_replay(ReplayOptions(bag=tmp_path / "bag", profile="demo", bundle=str(tiny_bundle),
                                      out=tmp_path / "out", mode="live", rate=live_rate))
    d = result.report["delivery"]
    assert d["frames_published"] == 180 and d["frame_sets_published"] == 60
    assert d["frame_sets_formed_by_node"] >= 0.9 * 60, d
    assert d["frame_sets_used"] >= 2 and len(result.chunks) == d["frame_sets_used"]
    assert result.report["holds"]["by_reason"]["stale_cameras"] == 0
    with BagReader(result.output_bag) as r:
        topics = r.info.topics
    assert topics["/lightwam_policy/action_chunk"].count == len(result.chunks)
    assert topics["/demo/arm_controller/joint_trajectory"].count >= 1
    assert topics["/diagnostics"].count >= 1
    assert result.plot_path is not None and result.plot_path.stat().st_size > 10_000
    ole = result.report["open_loop_error"]
    assert ole["chunks_scored"] == len(result.chunks) and len(ole["mae_per_joint"]) == 14
