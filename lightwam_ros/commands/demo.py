"""`lightwam demo`: trained demo bundle + synthetic 3-camera bag -> live node over DDS -> summary, plot, bag."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.demo.run import DemoOptions, run_demo, summary_lines
from lightwam_ros.replay.options import ReplayError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="output directory: summary.json, executed_joints.png, replay/outputs (MCAP)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="bundle directory (a random-weights demo bundle is written there when it holds "
                             "none); default: the shipped trained tiny model, copied to <out>/bundle")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic recording (s)")
    parser.add_argument("--mode", choices=("live", "offline"), default="live",
                        help="live: over DDS to a policy_node process (default); offline: no DDS, bag clock")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic scene (held out from training) and of the weights of a "
                             "random bundle written for --bundle")


def run(args: argparse.Namespace) -> int:
    try:
        result = run_demo(DemoOptions(out=args.out, bundle=args.bundle, seconds=args.seconds, mode=args.mode,
                                      seed=args.seed))
    except (BundleError, ReplayError) as exc:  # a broken --bundle: refused while loading or replaying
        print(f"lightwam demo: error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(result.summary):
        print(line)
    if not result.ok:
        print("lightwam demo: the executor stand-in found problems (see above)", file=sys.stderr)
        return 1
    return 0
