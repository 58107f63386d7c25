"""Synthetic recordings: deterministic, distinct per camera, stamps/dropouts/joint order as specified."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lightwam_ros.demo.synthetic import (
    ALOHA_JOINT_NAMES,
    CameraDropout,
    ImageEncoding,
    SyntheticBagSpec,
    TimedInstruction,
    decode_reference,
    encode_image,
    iter_messages,
    joint_positions,
    render_scene,
    write_synthetic_bag,
)
from lightwam_ros.replay.bags import BagReader, stamp_ns

SMALL = dict(height=60, width=80, seconds=1.0, rate_hz=20.0)


def test_scene_is_deterministic_distinct_per_camera_and_moves():
    a = render_scene(0, 0.5, 60, 80)
    assert a.dtype == np.uint8 and a.shape == (60, 80, 3)
    assert np.array_equal(a, render_scene(0, 0.5, 60, 80))
    # other cameras see something else; the same camera later sees a different frame
    for other in (1, 2):
        assert np.abs(a.astype(int) - render_scene(other, 0.5, 60, 80)).mean() > 10
    assert np.abs(a.astype(int) - render_scene(0, 1.0, 60, 80)).mean() > 1


@pytest.mark.parametrize("encoding", list(ImageEncoding))
def test_encode_image_layout(encoding):
    rgb = render_scene(1, 0.3, 20, 30)
    pixels, step = encode_image(rgb, encoding)
    assert step == 30 * encoding.channels
    if encoding is ImageEncoding.BGR8:
        assert np.array_equal(pixels[..., 0], rgb[..., 2]) and np.array_equal(pixels[..., 2], rgb[..., 0])
    if encoding in (ImageEncoding.RGBA8, ImageEncoding.BGRA8):
        assert pixels.shape == (20, 30, 4) and np.all(pixels[..., 3] == 255)
    if encoding is ImageEncoding.MONO8:
        luma = np.rint(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
        assert pixels.shape == (20, 30) and np.abs(pixels - luma).max() <= 1
        assert np.array_equal(decode_reference(pixels, encoding), np.repeat(pixels[..., None], 3, axis=2))
    else:
        assert np.array_equal(decode_reference(pixels, encoding), rgb)


def test_camera_stamps_jitter_phase_and_dropout():
    spec = SyntheticBagSpec(**SMALL, jitter_ms=3.0, dropouts=(CameraDropout("cam_left_wrist", 0.3, 0.6),))
    msgs = [m for m in iter_messages(spec) if m.msgtype == "sensor_msgs/msg/Image"]
    per_cam = {c: [m for m in msgs if m.topic == spec.camera_topic(c)] for c in spec.cameras}
    assert len(per_cam["cam_high"]) == 20 and len(per_cam["cam_right_wrist"]) == 20
    left = per_cam["cam_left_wrist"]
    t_left = [(m.record_ns - spec.start_ns) / 1e9 for m in left]
    assert not any(0.3 <= t < 0.6 for t in t_left)  # silent in the window
    assert any(t >= 0.6 for t in t_left) and any(t < 0.3 for t in t_left)  # comes back
    assert len(left) == 20 - 6  # frames at 0.30..0.55 s (+1 ms phase) are dropped
    for m in msgs:
        assert abs(m.stamp_ns - m.record_ns) <= 3_000_000
    assert len({m.stamp_ns - m.record_ns for m in msgs}) > 10  # really jittered
    # frames are recorded at n/rate + camera_index ms
    assert [m.record_ns - spec.start_ns for m in per_cam["cam_right_wrist"][:2]] == [2_000_000, 52_000_000]


def test_joint_states_shuffled_order_carries_the_same_positions_by_name():
    spec = SyntheticBagSpec(**SMALL, joint_order="shuffled")
    names = spec.recorded_joint_names
    assert sorted(names) == sorted(ALOHA_JOINT_NAMES) and names != ALOHA_JOINT_NAMES
    js = [m for m in iter_messages(spec) if m.msgtype == "sensor_msgs/msg/JointState"]
    assert len(js) == 100  # 100 Hz for 1 s
    m = js[37]
    assert m.stamp_ns == m.record_ns == spec.start_ns + 370_000_000
    by_name = dict(zip(m.payload["name"], m.payload["position"]))
    canonical = joint_positions(0.37, 14)
    assert np.allclose([by_name[n] for n in ALOHA_JOINT_NAMES], canonical)
    assert not np.allclose(m.payload["position"], canonical)


def test_joint_trajectory_is_smooth_and_bounded():
    t = np.arange(0, 30, 0.01)
    q = np.stack([joint_positions(x, 14) for x in t])
    assert np.abs(q).max() < 1.0
    assert np.abs(np.diff(q, axis=0)).max() < 0.05  # < 5 rad/s everywhere


def test_spec_validation_names_the_field():
    with pytest.raises(ValueError, match="jitter_ms"):
        SyntheticBagSpec(rate_hz=30.0, jitter_ms=20.0)
    with pytest.raises(ValueError, match="unknown camera 'nope'"):
        SyntheticBagSpec(dropouts=(CameraDropout("nope", 0, 1),))
    with pytest.raises(ValueError, match="drop-camera"):
        CameraDropout.parse("cam_high:1-2")
    assert TimedInstruction.parse("stack the blocks@2.5") == TimedInstruction("stack the blocks", 2.5)
    assert TimedInstruction.parse("email me@home") == TimedInstruction("email me@home", 0.0)


def test_written_bag_is_bit_identical_across_runs(tmp_path):
    spec = SyntheticBagSpec(**SMALL, instructions=(TimedInstruction("a"), TimedInstruction("b", 0.5)))
    raws = []
    for name in ("one", "two"):
        write_synthetic_bag(spec, tmp_path / name)
        with BagReader(tmp_path / name) as r:
            raws.append([(m.topic, m.log_ns, m.raw) for m in r.messages()])
    assert raws[0] == raws[1]
    # the instruction topic is latched and carries both texts at their times
    with BagReader(tmp_path / "one") as r:
        assert r.info.topics[spec.instruction_topic].transient_local
        instr = [(m.log_ns - spec.start_ns, r.decode(m).data) for m in r.messages([spec.instruction_topic])]
    assert instr == [(0, "a"), (500_000_000, "b")]


def test_written_image_content_matches_the_rendered_scene(tmp_path):
    spec = dataclasses.replace(SyntheticBagSpec(**SMALL), encoding="bgra8")
    write_synthetic_bag(spec, tmp_path / "bag")
    with BagReader(tmp_path / "bag") as r:
        msgs = list(r.messages([spec.camera_topic("cam_left_wrist")]))
        img = r.decode(msgs[4])
    assert (img.encoding, img.height, img.width, img.step) == ("bgra8", 60, 80, 320)
    assert stamp_ns(img.header.stamp) != msgs[4].log_ns or spec.jitter_ms == 0
    pixels = img.data.reshape(60, 80, 4)
    t_s = (msgs[4].log_ns - spec.start_ns) / 1e9
    assert np.array_equal(decode_reference(pixels, "bgra8"), render_scene(1, t_s, 60, 80))


def test_default_instruction_is_one_the_demo_bundle_knows():
    from lightwam_ros.demo.synthetic import default_instruction
    from lightwam_ros.demo.tiny_bundle import DEMO_INSTRUCTIONS

    assert default_instruction() in DEMO_INSTRUCTIONS


def test_make_bag_command(tmp_path, capsys):
    from lightwam_ros.cli import main

    out = tmp_path / "bag"
    rc = main(["make-bag", "--out", str(out), "--cameras", "2", "--size", "48x64", "--rate", "10", "--seconds", "1",
               "--drop-camera", "cam_left_wrist@0.2-0.5", "--encoding", "bgr8", "--storage", "sqlite3",
               "--version", "8", "--joint-order", "shuffled",
               "--instruction", "stack the green block on the blue block@0.5",
               "--instruction", "pick up the red block"])
    assert rc == 0
    with BagReader(out) as r:
        info = r.info
        instr = [(m.log_ns - info.start_ns, r.decode(m).data) for m in r.messages(["/demo/instruction"])]
    assert (info.storage, info.version) == ("sqlite3", 8)
    assert info.topics["/demo/cam_high/image_raw"].count == 10
    assert info.topics["/demo/cam_left_wrist/image_raw"].count == 7  # frames at 0.2, 0.3, 0.4 s dropped
    assert instr == [(0, "pick up the red block"), (500_000_000, "stack the green block on the blue block")]
    # a second run refuses to overwrite, with the error on stderr and exit code 2
    assert main(["make-bag", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
