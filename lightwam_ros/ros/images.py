"""sensor_msgs/Image <-> numpy, and header stamps <-> integer nanoseconds. No cv_bridge.

API
- ``image_to_rgb(msg, topic="") -> np.ndarray`` -- uint8 [H, W, 3] RGB, C-contiguous; rgb8 without
  row padding is a zero-copy view of ``msg.data`` (treat it as read-only).
- ``rgb_to_image(array, stamp_ns=0, frame_id="") -> sensor_msgs.msg.Image`` -- rgb8, fast path.
- ``time_to_ns(stamp) -> int``, ``ns_to_time(ns) -> builtin_interfaces.msg.Time``
- ``ENCODINGS``, ``ImageError``

Why no cv_bridge: the ROS 2 cv_bridge is not installable from a registry, and the PyPI one is ROS 1
code broken with numpy 2 (docs/design.md, "ROS 2 from package registries"). Every 8-bit colour format a
camera driver publishes is a reshape plus a channel selection: numpy views it (rgb8 needs no copy) and
OpenCV's cvtColor makes
the one copy the others need.

Why ``array.array`` on publish: assigning ``bytes`` or a list to a uint8[] message field runs a
per-element Python check (seconds per camera frame); an ``array.array('B')`` is taken as is.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

# encoding -> (bytes per pixel, channel slice giving R, G, B); mono8 repeats its single channel.
# Slices (not index lists) keep the selection a view, so the one copy is the contiguous result.
ENCODINGS: dict[str, tuple[int, slice]] = {
    "rgb8": (3, slice(None)),
    "bgr8": (3, slice(None, None, -1)),
    "rgba8": (4, slice(0, 3)),
    "bgra8": (4, slice(2, None, -1)),
    "mono8": (1, slice(None)),
}
# The same conversions by OpenCV, used for the copy: numpy copies a reversed channel order element by
# element (~2 ms per 480x640 frame), cv2.cvtColor with SIMD (~0.02 ms), and the frame budget is ~3 ms.
_CV2_CODES: dict[str, int] = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}


class ImageError(ValueError):
    """An image message that cannot be converted; the message names the topic and encoding."""


def time_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_time(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def image_to_rgb(msg: Image, topic: str = "") -> np.ndarray:
    """Decode an 8-bit Image into uint8 [H, W, 3] RGB.

    Respects ``step`` (row padding); ``is_bigendian`` is irrelevant for 8-bit channels. Raises
    ImageError for an unsupported encoding, zero size, a step shorter than a row, or a data length
    other than step * height.
    """
    where = f"image on '{topic or '?'}' ({msg.encoding!r}, {msg.width}x{msg.height})"
    spec = ENCODINGS.get(msg.encoding)
    if spec is None:
        raise ImageError(f"{where}: unsupported encoding; supported: {', '.join(ENCODINGS)}")
    channels, select = spec
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ImageError(f"{where}: zero size")
    row = w * channels
    if step < row:
        raise ImageError(f"{where}: step {step} is shorter than a row of {row} bytes")
    n = len(msg.data)
    if n != step * h:
        what = "truncated" if n < step * h else "too long"
        raise ImageError(f"{where}: data is {what}: {n} bytes, expected step*height = {step * h}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    px = buf.reshape(h, step)[:, :row].reshape(h, w, channels)  # view, padding skipped
    code = _CV2_CODES.get(msg.encoding)
    if code is not None:
        return cv2.cvtColor(px[:, :, 0] if channels == 1 else px, code)  # the one copy
    return np.ascontiguousarray(px[:, :, select])  # rgb8 unpadded: no copy


def rgb_to_image(rgb: np.ndarray, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """uint8 [H, W, 3] RGB -> rgb8 Image (step = 3 * W). One copy of the pixels into the message."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"rgb_to_image needs uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    msg = Image()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = h, w, "rgb8", 0, 3 * w
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(rgb).data)  # buffer protocol: no intermediate bytes object
    msg.data = data
    return msg
