"""What JPEG compression of the cameras does to the action chunk: a benchmark script, not a test.

    .venv/bin/python test/benchmarks/bench_compression_actions.py [--size full] [--sets 3]
        [--qualities 90 75] [--threads 2]

For each of ``--sets`` frame sets (3 cameras at 480x640: the synthetic textured scene with
sensor-like noise, as bench_host.py uses) the frames go raw, and through JPEG at each quality and
PNG, into the node's own decoder (ros/compressed.py; JPEG in full, cameras.jpeg_decode's default,
and jpeg<Q>-half rows at half size as its reduced mode decodes a 480x640 camera) and Preprocessor (robotwin_3cam canvas,
384x320), then through the Light-WAM network at ``--size`` (full: the real 1.3B-parameter
architecture with the demo's random weights -- what compression does to the DiT's input does not
need trained weights to show; tiny: the small test architecture) in float32 on the CPU. It prints,
per encoding, the relative L2 of the normalised chunk against the raw input's chunk,
||a_q - a_raw|| / ||a_raw|| over all horizon steps and action dimensions (median and max over the
sets), and the canvas's mean absolute difference in [-1, 1] units. PNG is lossless: its rows must
read 0.

The full size needs ~12 GB of memory and ~10 s per forward pass on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch

from lightwam_ros.demo.synthetic import render_scene
from lightwam_ros.demo.tiny_bundle import demo_contexts, demo_model_config, demo_state_dict
from lightwam_ros.inference.layouts import Preprocessor
from lightwam_ros.model.canvas_layout import LAYOUTS
from lightwam_ros.model.policy import LightWAMPolicy
from lightwam_ros.ros.compressed import compressed_format, decode_compressed, encode_rgb

LAYOUT = LAYOUTS["robotwin_3cam"]
H, W = 480, 640
INSTRUCTION = "pick up the red block"


def camera_like_frame(camera: int, t_s: float) -> np.ndarray:
    """The textured scene plus sensor-like noise (sigma 3 grey levels), as in bench_host.py."""
    rng = np.random.default_rng([camera, round(t_s * 1000)])
    noisy = render_scene(camera, t_s, H, W).astype(np.float32) + rng.normal(0.0, 3.0, (H, W, 3))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


HALF_SUFFIX = "-half"  # jpeg<Q>-half: decoded at half size (cameras.jpeg_decode reduced)


def through(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The pixels the node would hand the Preprocessor for this encoding: JPEG in full (the default),
    jpeg<Q>-half at half size (the layout halves a 480x640 camera; cameras.jpeg_decode reduced)."""
    if encoding == "raw":
        return rgb
    half = encoding.endswith(HALF_SUFFIX)
    codec, quality = ("png", 90) if encoding == "png" else (
        "jpeg", int(encoding.removeprefix("jpeg").removesuffix(HALF_SUFFIX)))
    return decode_compressed(compressed_format(codec), encode_rgb(rgb, codec, quality), encoding,
                             reduced=codec == "jpeg" and half)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="full", choices=["full", "tiny"])
    p.add_argument("--sets", type=int, default=3, help="frame sets (each a different moment of the scene)")
    p.add_argument("--qualities", type=int, nargs="+", default=[90, 75])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = demo_model_config(args.size)
    model = LightWAMPolicy(cfg)
    model.load_state_dict(demo_state_dict(args.size, seed=0), assign=True)  # assign: no second copy
    model.eval()
    context = demo_contexts(cfg, 0, torch.float32)[INSTRUCTION].unsqueeze(0)
    proprio = torch.zeros((1, cfg.proprio_dim))
    pre = Preprocessor(LAYOUT)
    print(f"action chunk vs JPEG quality: {args.size} Light-WAM architecture (random demo weights), float32 CPU, "
          f"{args.threads} threads, {args.sets} frame sets of 3 x {H}x{W} -> "
          f"{LAYOUT.canvas_hw[0]}x{LAYOUT.canvas_hw[1]} canvas; model built in {time.perf_counter() - t0:.0f} s")
    encodings = ["raw", *(f"jpeg{q}{suffix}" for q in args.qualities for suffix in ("", HALF_SUFFIX)), "png"]
    rel: dict[str, list[float]] = {e: [] for e in encodings[1:]}
    canvas_mad: dict[str, list[float]] = {e: [] for e in encodings[1:]}
    pass_s = []
    for k in range(args.sets):
        t_s = 0.4 + 0.7 * k
        frames = {cam: camera_like_frame(i, t_s) for i, cam in enumerate(LAYOUT.cameras)}
        chunks, canvases = {}, {}
        for enc in encodings:
            canvas = pre({cam: through(rgb, enc) for cam, rgb in frames.items()})
            t1 = time.perf_counter()
            with torch.no_grad():
                chunks[enc] = model(canvas, proprio, context).numpy()
            pass_s.append(time.perf_counter() - t1)
            canvases[enc] = canvas
        for enc in encodings[1:]:
            rel[enc].append(float(np.linalg.norm(chunks[enc] - chunks["raw"]) / np.linalg.norm(chunks["raw"])))
            canvas_mad[enc].append(float((canvases[enc] - canvases["raw"]).abs().mean()))
    print(f"{'encoding':<12}{'rel L2 median':>14}{'rel L2 max':>12}{'canvas MAD':>12}")
    for enc in encodings[1:]:
        print(f"{enc:<12}{np.median(rel[enc]):>14.4f}{max(rel[enc]):>12.4f}{np.mean(canvas_mad[enc]):>12.4f}")
    print(f"forward pass median {np.median(pass_s):.1f} s; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
