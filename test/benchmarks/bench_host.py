"""Host-side cost of one camera frame set, per stage: a benchmark script, not a test.

    .venv/bin/python test/benchmarks/bench_host.py [--runs 300] [--threads 1] [--encodings rgb8 jpeg90 ...]

For 3 cameras at 480x640 (the robotwin_3cam layout) it times, per frame set:
  decode     sensor_msgs/Image -> uint8 HxWx3 RGB (images.image_to_rgb) x3, or for jpeg90 / jpeg75 /
             png a sensor_msgs/CompressedImage decompressed by the node's CompressedDecoder x3 (in
             full, cameras.jpeg_decode's default; jpeg90-half / jpeg75-half at half size, its
             reduced mode) --
             in the node that runs on its decode thread, not the control thread, but on the same CPU
  sync       FrameSync.add x3 (the third completes the set)
  preprocess Preprocessor on the CPU: upload, [0,1] float, the training resize chain, tiling into the
             384x320 canvas, [-1,1]
  total      the three back to back (timed as one span, not summed)
and ``float chain``: the same canvas by the plain float resize chain (ToTensor, two F.interpolate
resizes, tiling, Normalize), i.e. the Preprocessor without its exact 2x path -- the before/after of
that optimisation. It runs on the same frame sets in alternating blocks of BLOCK sets, so both see
the same machine load without sharing caches and allocator state set by set. All of it
with torch limited to ``--threads`` intra-op threads (1 = "one CPU core"), and prints median and p90
in ms over ``--runs`` frame sets after a warm-up. The messages are deserialized from CDR as rclpy
delivers them (``data`` is an array.array), so decode sees what the node sees. The frames are the
synthetic textured scene with sensor-like noise; a table of bytes per camera frame (what crosses the
network, CDR included) and MB/s at 30 Hz follows.

Two clocks: ``cpu`` is this thread's CPU time (time.thread_time_ns) -- the cost on one core, which
other processes on a busy machine do not inflate -- and ``wall`` the elapsed time, which they do
(the load average is printed for that reason). With --threads > 1 only wall is meaningful.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HOME", "/tmp")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2
import numpy as np
import torch
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from lightwam_ros.config import SyncConfig
from lightwam_ros.control.sync import FrameSync
from lightwam_ros.demo.synthetic import render_scene
from lightwam_ros.inference.layouts import Preprocessor, resize
from lightwam_ros.model.canvas_layout import LAYOUTS
from lightwam_ros.ros.compressed import CompressedDecoder, rgb_to_compressed
from lightwam_ros.ros.images import image_to_rgb, ns_to_time

LAYOUT = LAYOUTS["robotwin_3cam"]
H, W = 480, 640
PERIOD_NS = 33_333_333  # 30 Hz cameras
BLOCK = 25  # frame sets per alternating block (pipeline, then float chain)
HALF_SUFFIX = "-half"  # jpeg<Q>-half: decoded at half size (cameras.jpeg_decode reduced)
ENCODINGS = ("rgb8", "bgr8", "jpeg90", "jpeg90-half", "jpeg75", "jpeg75-half", "png")


def make_message(rgb: np.ndarray, encoding: str, stamp_ns: int) -> Image | CompressedImage:
    """An Image (or, for jpeg<Q> / png, a CompressedImage) as a subscriber receives it (serialized +
    deserialized)."""
    if encoding.startswith("jpeg") or encoding == "png":
        codec = "png" if encoding == "png" else "jpeg"
        quality = int(encoding[4:].removesuffix(HALF_SUFFIX) or 90) if codec == "jpeg" else 90
        cmsg = rgb_to_compressed(rgb, codec, quality, stamp_ns)
        return deserialize_message(serialize_message(cmsg), CompressedImage)
    px = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    msg = Image(height=H, width=W, encoding=encoding, is_bigendian=0, step=3 * W)
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.data = np.ascontiguousarray(px).tobytes()
    return deserialize_message(serialize_message(msg), Image)


def camera_like_frame(camera: int) -> np.ndarray:
    """The synthetic textured scene plus sensor-like noise (sigma 3 grey levels): the content decides
    how large a JPEG is and how long it takes to decode, and flat synthetic colours would flatter both."""
    rng = np.random.default_rng(camera)
    noisy = render_scene(camera, 0.5, H, W).astype(np.float32) + rng.normal(0.0, 3.0, (H, W, 3))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def to_rgb(msg: Image | CompressedImage, camera: str, topic: str, decoder: CompressedDecoder) -> np.ndarray:
    return decoder.decode(msg, camera, topic) if isinstance(msg, CompressedImage) else image_to_rgb(msg, topic)


def message_bytes(msg: Image | CompressedImage) -> int:
    return len(serialize_message(msg))


def float_chain(images: dict[str, np.ndarray]) -> torch.Tensor:
    """The canvas by the plain float chain (what Preprocessor computed before its exact 2x path)."""
    h, w = LAYOUT.canvas_hw
    canvas = torch.zeros((1, 3, h, w))
    for cell in LAYOUT.cells:
        x = torch.from_numpy(images[cell.camera]).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        x = resize(resize(x, LAYOUT.pre_resize_hw[cell.camera]), (cell.height, cell.width))
        canvas[:, :, cell.row:cell.row + cell.height, cell.col:cell.col + cell.width] = x
    return canvas.sub_(0.5).div_(0.5)


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return float(np.median(a)), float(np.percentile(a, 90))


def bench(encoding: str, runs: int, warmup: int) -> dict[str, tuple[float, float]]:
    cameras = LAYOUT.cameras
    frames = [camera_like_frame(c) for c in range(len(cameras))]
    # distinct messages per set (fresh buffers, as arriving frames are), built before timing
    sets = [[make_message(frames[c], encoding, (i + 1) * PERIOD_NS + c * 1000) for c in range(len(cameras))]
            for i in range(runs + warmup)]
    sync = FrameSync(cameras, SyncConfig(), now_ns=0)
    pre = Preprocessor(LAYOUT, "cpu")
    # the node's decoder: JPEG in full (cameras.jpeg_decode full, the default), or for a *-half
    # encoding at half size where the layout halves the camera (cameras.jpeg_decode reduced)
    decoder = CompressedDecoder(LAYOUT.pre_resize_hw if encoding.endswith(HALF_SUFFIX) else {})
    stages = ("decode", "sync", "preprocess", "total", "float chain")
    times: dict[tuple[str, str], list[int]] = {(c, k): [] for c in ("cpu", "wall") for k in stages}
    block: list[dict[str, np.ndarray]] = []
    for i, msgs in enumerate(sets):
        now = (i + 1) * PERIOD_NS + 5_000_000
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        rgbs = [to_rgb(m, cam, f"/{cam}", decoder) for cam, m in zip(cameras, msgs)]
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        out = None
        for cam, m, rgb in zip(cameras, msgs, rgbs):
            out = sync.add(cam, m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec, rgb, now)
        c2, w2 = time.thread_time_ns(), time.perf_counter_ns()
        if out is None:
            raise RuntimeError("FrameSync did not complete a set; the benchmark's stamps are wrong")
        canvas = pre(out.images)
        c3, w3 = time.thread_time_ns(), time.perf_counter_ns()
        if i >= warmup:
            for clock, (a, b, c, d) in (("cpu", (c0, c1, c2, c3)), ("wall", (w0, w1, w2, w3))):
                for k, v in zip(stages, (b - a, c - b, d - c, d - a)):
                    times[(clock, k)].append(v)
        if i >= warmup:
            block.append(out.images)
        if len(block) == BLOCK or (i == len(sets) - 1 and block):
            for images in block:
                c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
                reference = float_chain(images)
                c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
                times[("cpu", "float chain")].append(c1 - c0)
                times[("wall", "float chain")].append(w1 - w0)
            block = []
    assert canvas.shape == (1, 3, *LAYOUT.canvas_hw)
    times[("bytes", "per camera")] = [message_bytes(m) for m in sets[-1]]
    diff = float((canvas - reference).abs().max())  # the last set, by both
    if diff > 1e-6:
        raise RuntimeError(f"Preprocessor and the float chain differ by {diff}")
    out = {k: percentiles(v) for k, v in times.items() if k[0] != "bytes"}
    out[("bytes", "per camera")] = (float(np.mean(times[("bytes", "per camera")])), 0.0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=300, help="timed frame sets per encoding (>= 200 recommended)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = one CPU core)")
    p.add_argument("--encodings", nargs="+", default=list(ENCODINGS), choices=ENCODINGS,
                   help="raw Image encodings, or CompressedImage: jpeg<quality> or png, decoded by the node's "
                        "decoder (decode is then the decompression; in full, the default cameras.jpeg_decode "
                        "full), jpeg<quality>-half at half size (cameras.jpeg_decode reduced)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)  # image_to_rgb converts with OpenCV
    print(f"host cost of one frame set: 3 x {H}x{W} -> {LAYOUT.canvas_hw[0]}x{LAYOUT.canvas_hw[1]} canvas "
          f"({LAYOUT.name}); torch {torch.__version__}, {args.threads} thread(s), {args.runs} runs; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'encoding':<12}{'stage':<12}{'cpu median':>11}{'cpu p90':>9}{'wall median':>13}{'wall p90':>10}  (ms)")
    sizes = {}
    for enc in args.encodings:
        r = bench(enc, args.runs, args.warmup)
        sizes[enc] = r[("bytes", "per camera")][0]
        for stage in ("decode", "sync", "preprocess", "total", "float chain"):
            (cm, c9), (wm, w9) = r[("cpu", stage)], r[("wall", stage)]
            print(f"{enc:<12}{stage:<12}{cm:>11.3f}{c9:>9.3f}{wm:>13.3f}{w9:>10.3f}")
    print(f"\nbandwidth per camera at 30 Hz ({H}x{W}, the frames above: textured scene + sensor-like noise)")
    print(f"{'encoding':<12}{'bytes/frame':>12}{'MB/s':>8}{'vs raw':>8}")
    raw = sizes.get("rgb8")
    for enc, n in sizes.items():
        ratio = f"{raw / n:>7.1f}x" if raw else "-"
        print(f"{enc:<12}{n:>12.0f}{n * 30 / 1e6:>8.2f}{ratio:>8}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
