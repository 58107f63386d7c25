"""`lightwam export-onnx`: the bundle's policy graph to ONNX (inside the bundle), checked against torch."""

from __future__ import annotations

import argparse
import sys

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import Bundle
from lightwam_ros.inference.backends.base import resolve_device
from lightwam_ros.inference.onnx_export import export_onnx
from lightwam_ros.model.dtypes import DTYPES, parse_dtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle directory")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weight/compute dtype of the graph")
    parser.add_argument("--device", default="cpu",
                        help="device to trace and verify on: cpu | cuda | auto (float16/bfloat16 verify best on cuda)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")


def run(args: argparse.Namespace) -> int:
    try:
        bundle = Bundle.load(args.bundle)
        result = export_onnx(bundle, parse_dtype(args.dtype, "--dtype"), resolve_device(args.device),
                             opset=args.opset, verify=not args.no_verify)
    except (BundleError, ValueError, OSError) as exc:
        print(f"lightwam export-onnx: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {result.path} in {result.seconds:.1f} s")
    for name, digest in result.files.items():
        print(f"  {name:<32} {(bundle.path / name).stat().st_size / 2**20:10.1f} MB  sha256 {digest[:16]}...")
    if result.max_abs_diff is None:
        print(f"max abs diff vs torch: {result.verified_with}")
    else:
        print(f"max abs diff vs torch: {result.max_abs_diff:.3e} ({result.verified_with}, normalized actions)")
    return 0
