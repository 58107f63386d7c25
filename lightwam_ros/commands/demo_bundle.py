"""`lightwam demo-bundle`: a bundle with the real architecture: deterministic random weights, or
(--trained) the tiny model trained on the joystick scene (demo/train.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import MANIFEST, Bundle
from lightwam_ros.demo.tiny_bundle import write_demo_bundle
from lightwam_ros.model.config import MODEL_SIZES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    parser.add_argument("--size", default="tiny", choices=sorted(MODEL_SIZES),
                        help="tiny: fast on a CPU (tests, demo); full: real Light-WAM dims, bf16 (GPU bench)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (same seed, same bundle)")
    parser.add_argument("--trained", action="store_true",
                        help="train the tiny model on the synthetic joystick scene (a few minutes on 2 CPU "
                             "cores, deterministic for a seed on a given machine) instead of random weights")


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / MANIFEST).is_file():
        print(f"lightwam demo-bundle: error: --out {args.out} exists, is not empty and is not a bundle",
              file=sys.stderr)
        return 2
    if args.trained and args.size != "tiny":
        print("lightwam demo-bundle: error: --trained needs --size tiny (training runs on the CPU)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        if args.trained:
            bundle = _train(args)
        else:
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


def _train(args: argparse.Namespace) -> Bundle:
    from lightwam_ros.demo.train import TrainingConfig, write_trained_bundle

    cfg = TrainingConfig(seed=args.seed)
    t0 = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        if step % 100 == 0 or step == cfg.steps - 1:
            print(f"  step {step + 1}/{cfg.steps}: loss {loss:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    print(f"training the tiny demo model on the joystick scene: {cfg.episodes} episodes, {cfg.steps} steps")
    bundle, report = write_trained_bundle(args.out, cfg, progress)
    v = report.validation
    print(f"  held-out episodes: MAE {v['mae']:.4f} vs hold-still {v['hold_mae']:.4f} (normalised units), "
          f"ratio {v['ratio']:.3f}")
    return bundle
