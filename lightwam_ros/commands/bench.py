"""`lightwam bench`: per-stage latency (median/p90) and peak memory of a bundle on a backend/device/dtype."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.config import Backend
from lightwam_ros.inference.bench import BenchConfig, run_bench, write_json
from lightwam_ros.model.dtypes import DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, type=Path, help="bundle directory")
    parser.add_argument("--backend", default="torch", choices=[k.value for k in Backend])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="cpu always runs float32")
    parser.add_argument("--runs", type=int, default=50, help="timed runs after warm-up (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs (default 5)")
    parser.add_argument("--steps", type=int, help="chunk rows (default: the model horizon)")
    parser.add_argument("--compile", action="store_true", help="torch: torch.compile each stage")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch: replay the pass as a CUDA graph (GPU)")
    parser.add_argument("--no-merge-lora", action="store_true", help="torch: run LoRA unmerged (reference math)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here, with every run's time per "
                        "stage (samples_ms; `lightwam replay --latency-file` draws from its totals)")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = BenchConfig(bundle=args.bundle, backend=args.backend, device=args.device, dtype=args.dtype,
                          runs=args.runs, warmup=args.warmup, compile=args.compile, cuda_graphs=args.cuda_graphs,
                          merge_lora=not args.no_merge_lora, steps=args.steps)
        result = run_bench(cfg)
    except (BundleError, ValueError, OSError) as exc:
        print(f"lightwam bench: error: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    if args.json is not None:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
