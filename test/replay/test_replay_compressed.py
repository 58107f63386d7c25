"""A bag whose cameras are all CompressedImage replays like its raw twin.

Three recordings of the same held-out reach-scene episode (make-bag --scene reach, seed 3): raw
rgb8 Images, PNG and JPEG (quality 90) CompressedImages on ``<topic>/compressed``. Replayed offline
with the shipped demo profile (``cameras.transports: compressed`` for the compressed twins) and the
same seeded latency, the node must form the same frame sets and publish chunks at the same stamps;
PNG is lossless, so its chunks are identical to the raw twin's; JPEG's differ by the compression
error only: relative L2 of the normalised chunk within JPEG_Q90_MAX_RELATIVE_L2 (docs/network.md
and docs/verification.md give the measured figures, on this model and on the full-size one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from lightwam_ros.bundle.format import Bundle
from lightwam_ros.demo.synthetic import Compression, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
from lightwam_ros.demo.train import trained_bundle_path
from lightwam_ros.model.normalization import Normalizer
from lightwam_ros.replay.bags import BagError
from lightwam_ros.replay.options import ReplayOptions
from lightwam_ros.replay.runner import run_replay

REPO = Path(__file__).resolve().parents[2]
# Measured 0.008-0.024 per chunk on this 2 s bag; a swapped or misdecoded image gives > 0.3.
JPEG_Q90_MAX_RELATIVE_L2 = 0.1


def spec(compression: str) -> SyntheticBagSpec:
    return SyntheticBagSpec(scene="reach", seconds=2.0, seed=3, compression=compression, quality=90,
                            instructions=(TimedInstruction("pick up the red block"),))


def compressed_profile(tmp_path: Path, jpeg_decode: str = "full") -> Path:
    doc = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    params = doc["lightwam_policy"]["ros__parameters"]
    params["cameras"]["transports"] = ["compressed"] * len(params["cameras"]["names"])
    params["cameras"]["jpeg_decode"] = jpeg_decode
    path = tmp_path / f"demo_compressed_{jpeg_decode}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def relative_l2(test: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(test - reference) / np.linalg.norm(reference))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compressed")
    profile = compressed_profile(tmp)
    results = {}
    for compression in ("none", "png", "jpeg"):
        bag = write_synthetic_bag(spec(compression), tmp / f"bag_{compression}")
        results[compression] = run_replay(ReplayOptions(
            bag=bag, profile=str(REPO / "config" / "demo.yaml") if compression == "none" else str(profile),
            out=tmp / f"out_{compression}", latency_ms=100.0, latency_jitter_ms=30.0, seed=1, plot=False))
    return results


def test_the_compressed_twins_form_the_same_frame_sets_and_chunk_stamps(twins) -> None:
    raw = twins["none"]
    assert len(raw.chunks) >= 3
    for name in ("png", "jpeg"):
        other = twins[name]
        assert [c.stamp_ns for c in other.chunks] == [c.stamp_ns for c in raw.chunks], name
        assert other.report["frame_sets"]["formed"] == raw.report["frame_sets"]["formed"], name


def test_png_chunks_are_identical_to_the_raw_twin(twins) -> None:
    for a, b in zip(twins["png"].chunks, twins["none"].chunks, strict=True):
        assert np.array_equal(a.actions, b.actions)


def test_jpeg_chunks_differ_from_the_raw_twin_by_the_compression_error_only(twins) -> None:
    norm = Normalizer.from_dict(Bundle.load(trained_bundle_path(), verify=False).embodiment.normalization)
    errors = [relative_l2(norm.normalize_actions(a.actions), norm.normalize_actions(b.actions))
              for a, b in zip(twins["jpeg"].chunks, twins["none"].chunks, strict=True)]
    assert max(errors) <= JPEG_Q90_MAX_RELATIVE_L2, errors
    assert max(errors) > 0  # lossy: the node did decode the JPEG bytes, not something else


def test_a_raw_profile_on_a_compressed_bag_names_the_setting(tmp_path) -> None:
    bag = write_synthetic_bag(spec("jpeg"), tmp_path / "bag")
    with pytest.raises(BagError, match="cameras.transports to compressed for cam_high"):
        run_replay(ReplayOptions(bag=bag, profile=str(REPO / "config" / "demo.yaml"), out=tmp_path / "out",
                                 plot=False))


def test_compression_enum_names_what_make_bag_accepts() -> None:
    assert [c.value for c in Compression] == ["none", "jpeg", "png"]


@pytest.fixture(scope="module")
def camera_size_twins(tmp_path_factory, tiny_bundle):
    """480x640 cameras into the RoboTwin layout (data-config shape 240x320, so the model halves each
    frame first): raw, and JPEG decoded in full (the default) or at half size (cameras.jpeg_decode
    reduced)."""
    tmp = tmp_path_factory.mktemp("halved")
    runs = {}
    for name, compression, profile in (
            ("raw", "none", str(REPO / "config" / "demo.yaml")),
            ("reduced", "jpeg", str(compressed_profile(tmp, "reduced"))),
            ("full", "jpeg", str(compressed_profile(tmp, "full")))):
        bag_spec = SyntheticBagSpec(seconds=1.5, seed=4, height=480, width=640, compression=compression, quality=90,
                                    instructions=(TimedInstruction("pick up the red block"),))
        bag = tmp / f"bag_{compression}"
        if not bag.exists():
            write_synthetic_bag(bag_spec, bag)
        runs[name] = run_replay(ReplayOptions(bag=bag, profile=profile, bundle=str(tiny_bundle),
                                              out=tmp / f"out_{name}", latency_ms=100.0, latency_jitter_ms=30.0,
                                              seed=1, plot=False))
    return runs


def test_half_size_jpeg_decoding_stays_within_the_compression_error(camera_size_twins, tiny_bundle) -> None:
    raw, reduced, full = (camera_size_twins[k] for k in ("raw", "reduced", "full"))
    assert len(raw.chunks) >= 2
    norm = Normalizer.from_dict(Bundle.load(tiny_bundle, verify=False).embodiment.normalization)
    for run in (reduced, full):
        assert [c.stamp_ns for c in run.chunks] == [c.stamp_ns for c in raw.chunks]
        errors = [relative_l2(norm.normalize_actions(a.actions), norm.normalize_actions(b.actions))
                  for a, b in zip(run.chunks, raw.chunks, strict=True)]
        assert max(errors) <= JPEG_Q90_MAX_RELATIVE_L2, errors
    # the two decodes differ (the half-size path was taken), by less than either differs from raw
    between = [relative_l2(norm.normalize_actions(a.actions), norm.normalize_actions(b.actions))
               for a, b in zip(reduced.chunks, full.chunks, strict=True)]
    assert 0 < max(between) <= JPEG_Q90_MAX_RELATIVE_L2, between
