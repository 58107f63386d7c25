"""`lightwam encode-text`: encode instructions with umT5-XXL and add their contexts to a bundle.

Run on a workstation (a GPU helps: ≈1.2 TFLOP per instruction); the robot then needs no text encoder.
`--official-cache` instead copies contexts from the official training cache (no umT5 needed).
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import time

import torch

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.text.umt5 import UMT5_DTYPES, UMT5LoadError, UMT5TextEncoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle directory to add the contexts to")
    parser.add_argument("--wan-dir", help="Wan2.1-T2V-1.3B folder (models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/)")
    parser.add_argument("--official-cache", metavar="DIR",
                        help="copy contexts from an official text-embedding cache instead of running umT5")
    parser.add_argument("--instruction", action="append", default=[], metavar="TEXT",
                        help="instruction, verbatim (repeatable)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="text file with one instruction per line (blank and # lines skipped; repeatable)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--dtype", default="bfloat16", choices=list(UMT5_DTYPES),
                        help="umT5 compute dtype (default bfloat16, as the official cache)")
    parser.add_argument("--batch-size", type=int, default=8, help="instructions per umT5 forward (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="re-encode instructions the bundle already has")


def _peak_memory(device: str) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
    out = f"peak RSS {rss:.2f} GiB (includes the memory-mapped weights that were read)"
    if device.startswith("cuda"):
        out += f", peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return out


def run(args: argparse.Namespace) -> int:
    from lightwam_ros.text.encode import encode_into_bundle, import_official_cache, read_instruction_file

    try:
        instructions = list(args.instruction)
        for path in args.file:
            instructions += read_instruction_file(path)
        if not instructions:
            raise ValueError("give at least one --instruction or --file")
        if args.official_cache:
            added = import_official_cache(args.bundle, instructions, args.official_cache)
            print(f"added {len(added)} contexts from {args.official_cache} to {args.bundle}")
            return 0
        if not args.wan_dir:
            raise ValueError("--wan-dir is required (or --official-cache)")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise ValueError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        t0 = time.monotonic()
        encoder = UMT5TextEncoder.from_wan_dir(args.wan_dir, device, args.dtype)
        print(f"umT5 loaded on {device} ({args.dtype}) in {time.monotonic() - t0:.1f} s")

        def progress(done: int, total: int, instruction: str, per: float) -> None:
            print(f"[{done}/{total}] {per:.2f} s/instruction  {instruction[:60]!r}", flush=True)

        report = encode_into_bundle(args.bundle, instructions, encoder, batch_size=args.batch_size,
                                    overwrite=args.overwrite, progress=progress)
    except (ValueError, FileNotFoundError, BundleError, UMT5LoadError) as exc:
        print(f"lightwam encode-text: error: {exc}", file=sys.stderr)
        return 2
    for ins in report.skipped:
        print(f"skipped (already in the bundle; --overwrite re-encodes): {ins!r}")
    for ins in report.truncated:
        print(f"warning: {ins!r} fills all {encoder.max_length} tokens; anything past that is cut (as in training)")
    print(f"added {len(report.added)} contexts to {args.bundle}: {report.seconds_per_instruction:.3f} s/instruction, "
          f"{_peak_memory(device)}")
    return 0
