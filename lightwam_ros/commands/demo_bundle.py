"""`lightwam demo-bundle`: a bundle with the real architecture and deterministic random weights."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import MANIFEST
from lightwam_ros.demo.tiny_bundle import write_demo_bundle
from lightwam_ros.model.config import MODEL_SIZES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--size", default="tiny", choices=sorted(MODEL_SIZES),
                        help="tiny: fast on a CPU (tests, demo); full: real Light-WAM dims, bf16 (GPU bench)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same bundle)")


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / MANIFEST).is_file():
        print(f"lightwam demo-bundle: error: --out {args.out} exists, is not empty and is not a bundle",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        bundle = write_demo_bundle(args.out, size=args.size, seed=args.seed)
    except (ValueError, BundleError, OSError) as exc:
        print(f"lightwam demo-bundle: error: {exc}", file=sys.stderr)
        return 2
    params = sum(w["params"] for w in bundle.weights.values())
    print(f"wrote {args.size} demo bundle {bundle.path} ({params / 1e6:.2f} M parameters, seed {args.seed}) "
          f"in {time.perf_counter() - t0:.1f} s")
    print(f"  cameras {list(bundle.embodiment.cameras)}, canvas {bundle.embodiment.layout.canvas_hw}, "
          f"{bundle.model_config.action_dim}-d actions, horizon {bundle.model_config.horizon} "
          f"(trained {bundle.embodiment.trained_steps}) at {bundle.embodiment.action_rate_hz} Hz")
    print("  instructions: " + "; ".join(repr(i) for i in bundle.known_instructions))
    return 0
