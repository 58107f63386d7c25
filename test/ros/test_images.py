"""images.py: sensor_msgs/Image <-> numpy for every supported 8-bit encoding, and its errors."""

from __future__ import annotations

import array

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from lightwam_ros.ros.images import ENCODINGS, ImageError, image_to_rgb, ns_to_time, rgb_to_image, time_to_ns

H, W = 3, 5
RGB = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3) * 3 + 1  # distinct values per channel
GRAY = (np.arange(H * W, dtype=np.uint8).reshape(H, W) * 7 + 2)


def raw_pixels(encoding: str) -> np.ndarray:
    """The per-pixel bytes a driver would send for RGB (mono8: GRAY), built independently."""
    r, g, b = RGB[..., 0], RGB[..., 1], RGB[..., 2]
    alpha = np.full((H, W), 200, np.uint8)
    return {
        "rgb8": np.stack([r, g, b], -1),
        "bgr8": np.stack([b, g, r], -1),
        "rgba8": np.stack([r, g, b, alpha], -1),
        "bgra8": np.stack([b, g, r, alpha], -1),
        "mono8": GRAY[..., None],
    }[encoding]


def make_msg(encoding: str, pad: int = 0, bigendian: int = 0) -> Image:
    px = raw_pixels(encoding)
    row = W * px.shape[2]
    rows = [px[y].tobytes() + bytes([0xAB]) * pad for y in range(H)]  # padding must never leak
    msg = Image(height=H, width=W, encoding=encoding, is_bigendian=bigendian, step=row + pad)
    data = array.array("B")
    data.frombytes(b"".join(rows))
    msg.data = data
    return msg


def expected(encoding: str) -> np.ndarray:
    return np.repeat(GRAY[..., None], 3, axis=2) if encoding == "mono8" else RGB


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
def test_decode_every_encoding(encoding, pad):
    out = image_to_rgb(make_msg(encoding, pad), topic="cam")
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected(encoding))


def test_big_endian_flag_is_irrelevant_for_8_bit():
    np.testing.assert_array_equal(image_to_rgb(make_msg("bgr8", bigendian=1)), RGB)


def test_rgb8_unpadded_is_zero_copy():
    msg = make_msg("rgb8")
    out = image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert not np.shares_memory(image_to_rgb(make_msg("rgb8", pad=2)), np.frombuffer(msg.data, np.uint8))


def broken(**fields) -> Image:
    msg = make_msg("bgr8")
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize("fields,fragment", [
    ({"encoding": "bayer_rggb8"}, "unsupported encoding; supported: rgb8, bgr8, rgba8, bgra8, mono8"),
    ({"encoding": "16UC1"}, "unsupported encoding"),
    ({"height": 0}, "zero size"),
    ({"width": 0}, "zero size"),
    ({"step": W * 3 - 1}, f"step {W * 3 - 1} is shorter than a row of {W * 3} bytes"),
    ({"height": H + 1}, f"truncated: {H * W * 3} bytes, expected step*height = {(H + 1) * W * 3}"),
    ({"height": H - 1}, "too long"),
])
def test_errors_name_topic_encoding_and_problem(fields, fragment):
    msg = broken(**fields)
    with pytest.raises(ImageError) as ei:
        image_to_rgb(msg, topic="cam_left/image_raw")
    text = str(ei.value)
    assert "'cam_left/image_raw'" in text and repr(msg.encoding) in text and fragment in text


def test_truncated_data():
    msg = make_msg("rgba8")
    msg.data = msg.data[:-1]
    with pytest.raises(ImageError, match="truncated"):
        image_to_rgb(msg, "t")


def test_rgb_to_image_fields_and_roundtrip():
    src = np.ascontiguousarray(np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8))
    msg = rgb_to_image(src, stamp_ns=1_700_000_000_123_456_789, frame_id="canvas")
    assert (msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian) == (4, 6, 18, "rgb8", 0)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert msg.header.frame_id == "canvas"
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B" and len(msg.data) == 72
    assert msg.data.tobytes() == src.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), src)


def test_rgb_to_image_accepts_non_contiguous_and_survives_cdr():
    from rclpy.serialization import deserialize_message, serialize_message

    src = RGB[:, ::-1]  # negative stride view
    msg = deserialize_message(serialize_message(rgb_to_image(src, 5)), Image)
    np.testing.assert_array_equal(image_to_rgb(msg), src)
    assert time_to_ns(msg.header.stamp) == 5


@pytest.mark.parametrize("bad", [RGB.astype(np.float32), RGB[..., 0], np.zeros((2, 2, 4), np.uint8)])
def test_rgb_to_image_rejects_non_rgb(bad):
    with pytest.raises(ImageError, match=r"uint8 \[H, W, 3\]"):
        rgb_to_image(bad)


def test_stamp_conversion():
    assert time_to_ns(Time(sec=12, nanosec=5)) == 12_000_000_005
    t = ns_to_time(-1)
    assert (t.sec, t.nanosec) == (-1, 999_999_999)
    assert time_to_ns(ns_to_time(1_234_567_890_123)) == 1_234_567_890_123
