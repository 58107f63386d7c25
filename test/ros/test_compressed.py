"""CompressedImage decoding as image_transport writes it: codecs, the format string's colour
order, and a named ImageError for everything else (corrupt, truncated, 16-bit, other codecs).

The references are independent of the decoder under test: the expected RGB pixels are the input
itself (PNG is lossless) or a plain pixel colour checked by value (JPEG), and the compressed bytes
of the non-default orders are built here with OpenCV directly.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from lightwam_ros.demo.synthetic import render_scene
from lightwam_ros.ros.compressed import (
    CompressedDecoder,
    compressed_format,
    compressed_to_rgb,
    decode_compressed,
    encode_rgb,
    parse_format,
    rgb_to_compressed,
)
from lightwam_ros.ros.images import ImageError

TOPIC = "/cam/image_raw/compressed"


def _frame(h: int = 48, w: int = 64) -> np.ndarray:
    return render_scene(0, 0.25, h, w)


def _msg(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    buf = array.array("B")
    buf.frombytes(data)
    msg.data = buf
    return msg


@pytest.mark.parametrize("fmt", ["rgb8; png compressed bgr8", "bgr8; png compressed bgr8", "png", "PNG"])
def test_png_in_bgr_order_decodes_to_the_exact_rgb_pixels(fmt) -> None:
    rgb = _frame()
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    assert np.array_equal(compressed_to_rgb(_msg(fmt, buf.tobytes()), TOPIC), rgb)


def test_a_compressed_encoding_of_rgb8_means_the_pixels_are_stored_in_rgb_order() -> None:
    rgb = _frame()
    ok, buf = cv2.imencode(".png", rgb)  # stored as given: R in OpenCV's first channel
    assert ok
    assert np.array_equal(compressed_to_rgb(_msg("rgb8; png compressed rgb8", buf.tobytes()), TOPIC), rgb)


def test_grey_and_four_channel_pngs_become_rgb() -> None:
    grey = _frame()[:, :, 1].copy()
    ok, buf = cv2.imencode(".png", grey)
    out = compressed_to_rgb(_msg("mono8; png compressed mono8", buf.tobytes()), TOPIC)
    assert np.array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))
    rgb = _frame()
    bgra = np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    ok, buf = cv2.imencode(".png", bgra)
    assert np.array_equal(compressed_to_rgb(_msg("bgra8; png compressed bgra8", buf.tobytes()), TOPIC), rgb)


def test_jpeg_keeps_a_flat_red_image_red() -> None:
    red = np.zeros((32, 48, 3), np.uint8)
    red[:, :, 0] = 220  # R
    msg = rgb_to_compressed(red, "jpeg", 95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out = compressed_to_rgb(msg, TOPIC).astype(int)
    assert out.shape == red.shape
    assert np.abs(out - red).max() <= 3  # flat colour: JPEG is near exact, and a swap would be 220 off


def test_round_trip_through_our_encoder() -> None:
    rgb = _frame(96, 128)
    assert np.array_equal(decode_compressed(compressed_format("png"), encode_rgb(rgb, "png"), TOPIC), rgb)
    jpeg = decode_compressed(compressed_format("jpeg"), encode_rgb(rgb, "jpeg", 90), TOPIC).astype(int)
    assert np.mean(np.abs(jpeg - rgb)) < 8  # lossy, but the same picture


@pytest.mark.parametrize("case, fmt, data, expect", [
    ("empty", "jpeg", b"", "no data"),
    ("garbage", "jpeg", b"\x00" * 100, "corrupt or truncated"),
    ("other codec", "h264", b"\x00" * 10, "unsupported format"),
    ("depth", "16UC1; compressedDepth png", b"\x00" * 10, "unsupported format"),
    ("16-bit png", "mono16; png compressed mono16", b"\x00" * 10, "16-bit"),
    ("empty format", "", b"\x00" * 10, "empty format"),
])
def test_bad_messages_are_refused_naming_the_topic(case, fmt, data, expect) -> None:
    with pytest.raises(ImageError) as err:
        compressed_to_rgb(_msg(fmt, data), TOPIC)
    assert TOPIC in str(err.value) and expect in str(err.value), str(err.value)


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_truncated_and_bit_flipped_frames_raise_image_error_only(codec) -> None:
    good = encode_rgb(_frame(), codec, 90)
    rng = np.random.default_rng(0)
    for n in (1, 10, len(good) // 2, len(good) - 1):
        with pytest.raises(ImageError, match="corrupt"):
            decode_compressed(compressed_format(codec), good[:n], TOPIC)
    for _ in range(50):  # flipped bytes: decodes to something or is refused, never another error
        bad = bytearray(good)
        for i in rng.integers(0, len(bad), 8):
            bad[i] ^= int(rng.integers(1, 256))
        try:
            out = decode_compressed(compressed_format(codec), bytes(bad), TOPIC)
        except ImageError:
            continue
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def test_a_16_bit_png_that_says_8_bit_is_refused() -> None:
    deep = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 13)
    ok, buf = cv2.imencode(".png", deep)
    with pytest.raises(ImageError, match="8-bit"):
        compressed_to_rgb(_msg("png", buf.tobytes()), TOPIC)


def test_format_parsing() -> None:
    assert parse_format("rgb8; jpeg compressed bgr8", "x") == ("jpeg", "bgr")
    assert parse_format("bgr8; png compressed rgb8", "x") == ("png", "rgb")
    assert parse_format(" jpeg ", "x") == ("jpeg", "bgr")


# -- CompressedDecoder: JPEG at half size where the model halves the camera -------------------------

HALF = (120, 160)  # the data-config shape of a 240x320 camera in these tests


def _jpeg_msg(rgb: np.ndarray, quality: int = 95) -> CompressedImage:
    return _msg(compressed_format("jpeg"), encode_rgb(rgb, "jpeg", quality))


def _box_halved(rgb: np.ndarray) -> np.ndarray:
    """A plain 2x2 mean: what a half-size decode approximates (libjpeg scales in the DCT domain)."""
    x = rgb.astype(np.float64)
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4.0


def test_jpeg_frames_of_a_halved_camera_are_decoded_at_half_size_after_the_first() -> None:
    rgb = _frame(240, 320)
    decoder = CompressedDecoder({"cam": HALF})
    first = decoder.decode(_jpeg_msg(rgb), "cam", TOPIC)
    assert first.shape == (240, 320, 3)  # the camera's size is learned from a full decode
    second = decoder.decode(_jpeg_msg(rgb), "cam", TOPIC)
    assert second.shape == (120, 160, 3) and second.dtype == np.uint8
    assert decoder.reduced_frames == 1
    # the same picture, in RGB order: within a few grey levels of a 2x2 mean of the full decode
    err = np.abs(second.astype(np.float64) - _box_halved(first))
    assert err.mean() < 2.0, err.mean()
    red = np.zeros((240, 320, 3), np.uint8)
    red[..., 0] = 220
    px = decoder.decode(_jpeg_msg(red), "cam", TOPIC)
    assert px.shape == (120, 160, 3) and px[60, 80, 0] > 200 and px[60, 80, 2] < 30


def test_full_size_decoding_where_the_camera_is_not_halved_or_the_codec_is_png() -> None:
    rgb = _frame(240, 320)
    decoder = CompressedDecoder({"cam": HALF})
    for _ in range(3):
        assert decoder.decode(_jpeg_msg(rgb), "other", TOPIC).shape == (240, 320, 3)  # no data-config shape
        assert decoder.decode(_msg(compressed_format("png"), encode_rgb(rgb, "png")), "cam", TOPIC).shape == (
            240, 320, 3)
    odd = _frame(200, 320)  # not twice HALF: decoded in full, as the raw path would resize it
    for _ in range(2):
        assert decoder.decode(_jpeg_msg(odd), "cam", TOPIC).shape == (200, 320, 3)
    assert CompressedDecoder().decode(_jpeg_msg(rgb), "cam", TOPIC).shape == (240, 320, 3)
    assert decoder.reduced_frames == 0


def test_a_camera_that_changes_resolution_is_decoded_in_full_and_relearned() -> None:
    decoder = CompressedDecoder({"cam": HALF})
    big, small = _frame(240, 320), _frame(120, 160)
    assert decoder.decode(_jpeg_msg(big), "cam", TOPIC).shape == (240, 320, 3)
    assert decoder.decode(_jpeg_msg(big), "cam", TOPIC).shape == (120, 160, 3)
    assert decoder.decode(_jpeg_msg(small), "cam", TOPIC).shape == (120, 160, 3)  # retried in full: its size
    assert decoder.decode(_jpeg_msg(small), "cam", TOPIC).shape == (120, 160, 3)  # full from now on
    assert decoder.reduced_frames == 1
    assert decoder.decode(_jpeg_msg(big), "cam", TOPIC).shape == (240, 320, 3)  # relearned
    assert decoder.decode(_jpeg_msg(big), "cam", TOPIC).shape == (120, 160, 3)
    assert decoder.reduced_frames == 2


def test_a_corrupt_frame_on_the_half_size_path_is_an_image_error_naming_the_topic() -> None:
    rgb = _frame(240, 320)
    decoder = CompressedDecoder({"cam": HALF})
    decoder.decode(_jpeg_msg(rgb), "cam", TOPIC)
    data = encode_rgb(rgb, "jpeg", 90)
    with pytest.raises(ImageError, match=TOPIC):
        decoder.decode(_msg(compressed_format("jpeg"), data[: len(data) // 3] + b"\x00" * 64), "cam", TOPIC)
