"""sensor_msgs/CompressedImage <-> RGB numpy, as image_transport's compressed plugin writes them.

Why: robots record and stream ``<topic>/compressed`` (JPEG or PNG); raw 3 x 480x640 at 30 Hz is
~83 MB/s, more than most Wi-Fi links and a heavy load on a bag recorder. The pixels are decoded with
OpenCV (``cv2.imdecode``, libjpeg-turbo / libpng), which releases the GIL while it works, so the node
can decode on a thread of its own without delaying its control ticks (ros/decode_thread.py).

The ``format`` field says how to read the bytes. image_transport writes
``"<original encoding>; <codec> compressed <encoding of the compressed pixels>"``, for example
``"rgb8; jpeg compressed bgr8"``: the compressed pixels are BGR (OpenCV's order), whatever the camera
published. Older publishers and many camera drivers write just ``"jpeg"`` or ``"png"``, which means
the same BGR order. A compressed encoding of ``rgb8`` / ``rgba8`` (pixels stored in RGB order) is
honoured, and a 1-channel image is grey. Anything else (16-bit PNG, ``compressedDepth``, other codecs)
is refused with an ImageError naming the topic and the format.

API
- ``compressed_to_rgb(msg, topic="") -> np.ndarray`` -- uint8 [H, W, 3] RGB; ImageError when the
  format is unsupported or the data is corrupt or truncated.
- ``decode_compressed(fmt, data, where, reduced=False) -> np.ndarray`` -- the same on the bare fields
  (``reduced``: a JPEG at half size, see CompressedDecoder).
- ``CompressedDecoder(halved).decode(msg, camera, topic)`` -- what the node and replay decode with:
  JPEG frames of a camera the model halves anyway are decoded at half size (``cameras.jpeg_decode``).
- ``rgb_to_compressed(rgb, codec="jpeg", quality=90, stamp_ns=0, frame_id="") -> CompressedImage``
- ``encode_rgb(rgb, codec, quality) -> bytes``, ``compressed_format(codec) -> str``, ``CODECS``
"""

from __future__ import annotations

import array
from collections.abc import Mapping

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage

from lightwam_ros.ros.images import ImageError, ns_to_time

CODECS: tuple[str, ...] = ("jpeg", "png")
# A compressed camera frame is far below this; a larger message is refused before decoding (a
# decoder handed a lying header could otherwise size a huge image from a few bytes).
MAX_COMPRESSED_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 8192 * 8192
PNG_LEVEL = 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_BIT_DEPTH_BYTE = 24  # signature (8), IHDR length and type (8), width and height (8), then bit depth
_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


def parse_format(fmt: str, where: str) -> tuple[str, str]:
    """(codec, channel order of the compressed pixels: 'bgr' | 'rgb') from a format string."""
    text = fmt.strip().lower()
    if ";" in text:
        _, _, rest = text.partition(";")
        words = rest.split()
    else:
        words = text.split()
    if not words:
        raise ImageError(f"{where}: empty format; expected 'jpeg', 'png' or '<enc>; jpeg compressed <enc>'")
    codec = words[0]
    if codec not in CODECS:
        raise ImageError(f"{where}: unsupported format {fmt!r}; supported codecs: {', '.join(CODECS)} "
                         "(image_transport's compressed plugin)")
    packed = words[-1] if len(words) >= 3 and words[1] == "compressed" else "bgr8"
    if packed.endswith("16"):
        raise ImageError(f"{where}: format {fmt!r}: 16-bit images are not camera frames the model reads; "
                         "publish 8-bit colour")
    return codec, "rgb" if packed.startswith("rgb") else "bgr"


def decode_compressed(fmt: str, data: bytes | memoryview | array.array | np.ndarray, where: str,
                      reduced: bool = False) -> np.ndarray:
    """Decode JPEG or PNG bytes into uint8 [H, W, 3] RGB (see the module doc for the format).

    The decoder writes RGB itself (``IMREAD_COLOR_RGB``, OpenCV >= 4.10: the same pixels as decoding
    to BGR and converting, without the extra pass over the frame); grey and 4-channel images come
    out as RGB too. A 16-bit PNG is refused from its header rather than silently scaled to 8 bits.
    ``reduced``: a JPEG comes out at half its size (ceil), scaled by libjpeg in the DCT domain
    (``IMREAD_REDUCED_COLOR_2``); ignored for PNG, whose decoder has no cheaper half size.
    """
    codec, order = parse_format(fmt, where)
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.size == 0:
        raise ImageError(f"{where}: no data")
    if buf.size > MAX_COMPRESSED_BYTES:
        raise ImageError(f"{where}: {buf.size} bytes, more than {MAX_COMPRESSED_BYTES} for one frame")
    if buf.size > PNG_BIT_DEPTH_BYTE and bytes(buf[:8]) == PNG_SIGNATURE and buf[PNG_BIT_DEPTH_BYTE] > 8:
        raise ImageError(f"{where}: a {int(buf[PNG_BIT_DEPTH_BYTE])}-bit PNG; only 8-bit images are supported")
    stored_rgb = order == "rgb"
    if reduced and codec == "jpeg":
        # BGR at half size, converted below: a pass over a quarter of the pixels, and the same call
        # on every OpenCV (the reduced flags do not combine with IMREAD_COLOR_RGB before OpenCV 5)
        flag = cv2.IMREAD_REDUCED_COLOR_2
    else:
        flag = cv2.IMREAD_COLOR if stored_rgb or _IMREAD_RGB is None else _IMREAD_RGB
    try:
        px = cv2.imdecode(buf, flag)
    except cv2.error as exc:
        raise ImageError(f"{where}: corrupt data ({str(exc).strip().splitlines()[-1]})") from None
    if px is None:
        raise ImageError(f"{where}: corrupt or truncated {codec} data ({buf.size} bytes could not be decoded)")
    if px.shape[0] * px.shape[1] > MAX_PIXELS:
        raise ImageError(f"{where}: {px.shape[1]}x{px.shape[0]} pixels is beyond any camera frame")
    if flag in (cv2.IMREAD_COLOR, cv2.IMREAD_REDUCED_COLOR_2) and not stored_rgb:
        return cv2.cvtColor(px, cv2.COLOR_BGR2RGB)  # reduced, or an OpenCV without IMREAD_COLOR_RGB
    return px


def _where(msg: CompressedImage, topic: str) -> str:
    return f"compressed image on '{topic or '?'}' ({msg.format!r}, {len(msg.data)} bytes)"


def compressed_to_rgb(msg: CompressedImage, topic: str = "") -> np.ndarray:
    return decode_compressed(msg.format, msg.data, _where(msg, topic))


class CompressedDecoder:
    """CompressedImage -> RGB for one node (or replay), JPEG at half size where the model halves it.

    Why: the model's first step for a camera with a data-config shape (the layout's ``pre_resize_hw``,
    240x320 for the RoboTwin cameras) is a resize; for a 480x640 camera it halves the frame. libjpeg
    can decode a JPEG at half size in the DCT domain, skipping three quarters of the inverse transform's
    output and the halving resize: with the model on the CPU it cuts the host cost of a compressed
    3-camera frame set by a third to a half (docs/network.md). The half-size frame is libjpeg's 2x2
    scaling, not the training's triangle filter, so the canvas moves further from the raw input's
    (about twice JPEG's own change to the actions, docs/network.md): it is the node's choice only
    with ``cameras.jpeg_decode: reduced``; the default, ``full``, decodes every frame in full. PNG
    frames are always decoded in full.

    ``halved``: camera -> the shape its frames are halved to (empty: decode everything in full). A
    camera's frame size is learned from its first frame, decoded in full; a JPEG is decoded at half
    size only while the camera's frames are exactly twice that shape, and a frame whose half-size
    decode comes out another size (the camera changed resolution) is decoded again in full and the
    size learned anew. One decoder per decoding thread: the learned sizes are not locked.
    """

    def __init__(self, halved: Mapping[str, tuple[int, int]] | None = None) -> None:
        self._halved = {camera: (int(h), int(w)) for camera, (h, w) in (halved or {}).items()}
        self._full_hw: dict[str, tuple[int, int]] = {}
        self.reduced_frames = 0  # frames decoded at half size (tests and benchmarks read it)

    def decode(self, msg: CompressedImage, camera: str, topic: str = "") -> np.ndarray:
        where = _where(msg, topic)
        target = self._halved.get(camera)
        if (target is not None and self._full_hw.get(camera) == (2 * target[0], 2 * target[1])
                and parse_format(msg.format, where)[0] == "jpeg"):
            rgb = decode_compressed(msg.format, msg.data, where, reduced=True)
            if rgb.shape[:2] == target:
                self.reduced_frames += 1
                return rgb
        rgb = decode_compressed(msg.format, msg.data, where)
        self._full_hw[camera] = (int(rgb.shape[0]), int(rgb.shape[1]))
        return rgb


def encode_rgb(rgb: np.ndarray, codec: str = "jpeg", quality: int = 90) -> bytes:
    """uint8 [H, W, 3] RGB -> JPEG or PNG bytes of the BGR pixels, as image_transport writes them.

    quality: JPEG quality 1..100 (image_transport's jpeg_quality; its default is 95). PNG is
    lossless and written at zlib level PNG_LEVEL, image_transport's default png_level."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"encode_rgb needs uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:
        raise ImageError(f"OpenCV could not encode a {rgb.shape} image as {codec}")
    return buf.tobytes()


def compressed_format(codec: str) -> str:
    """The format string image_transport writes for an rgb8 camera image."""
    return f"rgb8; {codec} compressed bgr8"


def rgb_to_compressed(rgb: np.ndarray, codec: str = "jpeg", quality: int = 90, stamp_ns: int = 0,
                      frame_id: str = "") -> CompressedImage:
    msg = CompressedImage()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    msg.format = compressed_format(codec)
    data = array.array("B")
    data.frombytes(encode_rgb(rgb, codec, quality))
    msg.data = data
    return msg
