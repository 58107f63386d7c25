"""`lightwam convert`: official checkpoint + config.yaml + dataset_stats.json + Wan2.1 VAE -> bundle."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lightwam_ros.bundle.convert import ConvertError, ConvertRequest, convert
from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import MANIFEST
from lightwam_ros.model.dtypes import DTYPES
from lightwam_ros.text.encode import read_instruction_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint <run>/checkpoints/weights/step_NNNNNN.pt")
    parser.add_argument("--config", required=True, type=Path, help="the run's resolved config.yaml")
    parser.add_argument("--stats", required=True, type=Path, help="the run's dataset_stats.json")
    parser.add_argument("--vae", required=True, type=Path, help="Wan2.1_VAE.pth (only the encoder half is kept)")
    parser.add_argument("--text-cache", type=Path, help="official text-embedding cache dir "
                        "(<sha256>.t5_len128.wan21t2v13b.pt files) to take instruction contexts from")
    parser.add_argument("--instruction", action="extend", nargs="+", default=[], metavar="TEXT",
                        help="instruction(s) to include from --text-cache (repeatable)")
    parser.add_argument("--instructions-file", type=Path,
                        help="file with one instruction per line, kept verbatim (blank and # lines skipped)")
    parser.add_argument("--layout", help="canvas layout (default: from data.train.concat_multi_camera)")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="weight dtype in the bundle")
    parser.add_argument("--action-rate-hz", type=float,
                        help="chunk step rate in Hz (the training data does not record it)")
    parser.add_argument("--action-names", help="comma-separated action names (default by layout, e.g. ALOHA joints)")
    parser.add_argument("--state-names", help="comma-separated state names (default by layout)")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory to write")


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(n.strip() for n in value.split(",") if n.strip())


def run(args: argparse.Namespace) -> int:
    instructions = list(args.instruction)
    try:
        if args.instructions_file is not None:
            if not args.instructions_file.is_file():
                raise ValueError(f"--instructions-file {args.instructions_file}: no such file")
            instructions += read_instruction_file(args.instructions_file)
        if args.out.exists() and any(args.out.iterdir()) and not (args.out / MANIFEST).is_file():
            raise ValueError(f"--out {args.out} exists, is not empty and is not a bundle; refusing to write into it")
        req = ConvertRequest(
            ckpt=args.ckpt, config=args.config, stats=args.stats, vae=args.vae, out=args.out,
            text_cache=args.text_cache, instructions=tuple(dict.fromkeys(instructions)), layout=args.layout,
            dtype=args.dtype, action_rate_hz=args.action_rate_hz,
            action_names=_names(args.action_names), state_names=_names(args.state_names),
        )
        t0 = time.perf_counter()
        bundle = convert(req)
    except (ConvertError, BundleError, ValueError, OSError) as exc:
        print(f"lightwam convert: error: {exc}", file=sys.stderr)
        return 2
    cfg, emb = bundle.model_config, bundle.embodiment
    print(f"wrote bundle {bundle.path} in {time.perf_counter() - t0:.1f} s")
    print(f"  model: dim {cfg.dim}, blocks 0..{cfg.run_layers - 1} of {cfg.num_layers}, adapters "
          f"{list(cfg.adapter_layers)}, action_dim {cfg.action_dim}, proprio_dim {cfg.proprio_dim}, "
          f"horizon {cfg.horizon} (trained {emb.trained_steps})")
    h, w = emb.layout.canvas_hw
    print(f"  layout {emb.layout.name} {h}x{w}, cameras {list(emb.cameras)}, "
          f"normalization {emb.normalization['mode']}")
    print(f"  instructions: {len(bundle.instructions)}")
    for name, digest in bundle.files.items():
        size = (bundle.path / name).stat().st_size
        print(f"  {name:<30} {size / 2**20:10.1f} MB  sha256 {digest[:16]}...")
    return 0
