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
- ``decode_compressed(fmt, data, where) -> np.ndarray`` -- the same on the bare fields.
- ``rgb_to_compressed(rgb, codec="jpeg", quality=90, stamp_ns=0, frame_id="") -> CompressedImage``
- ``encode_rgb(rgb, codec, quality) -> bytes``, ``compressed_format(codec) -> str``, ``CODECS``
"""

from __future__ import annotations

import array

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


def decode_compressed(fmt: str, data: bytes | memoryview | array.array | np.ndarray, where: str) -> np.ndarray:
    """Decode JPEG or PNG bytes into uint8 [H, W, 3] RGB (see the module doc for the format).

    The decoder writes RGB itself (``IMREAD_COLOR_RGB``, OpenCV >= 4.10: the same pixels as decoding
    to BGR and converting, without the extra pass over the frame); grey and 4-channel images come
    out as RGB too. A 16-bit PNG is refused from its header rather than silently scaled to 8 bits.
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
    flag = cv2.IMREAD_COLOR if stored_rgb or _IMREAD_RGB is None else _IMREAD_RGB
    try:
        px = cv2.imdecode(buf, flag)
    except cv2.error as exc:
        raise ImageError(f"{where}: corrupt data ({str(exc).strip().splitlines()[-1]})") from None
    if px is None:
        raise ImageError(f"{where}: corrupt or truncated {codec} data ({buf.size} bytes could not be decoded)")
    if px.shape[0] * px.shape[1] > MAX_PIXELS:
        raise ImageError(f"{where}: {px.shape[1]}x{px.shape[0]} pixels is beyond any camera frame")
    if flag == cv2.IMREAD_COLOR and not stored_rgb:  # an OpenCV without IMREAD_COLOR_RGB
        return cv2.cvtColor(px, cv2.COLOR_BGR2RGB)
    return px


def compressed_to_rgb(msg: CompressedImage, topic: str = "") -> np.ndarray:
    where = f"compressed image on '{topic or '?'}' ({msg.format!r}, {len(msg.data)} bytes)"
    return decode_compressed(msg.format, msg.data, where)


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
