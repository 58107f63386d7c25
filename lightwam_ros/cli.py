"""The `lightwam` command: thin subcommands over library functions (DESIGN.md §5).

Each subcommand lives in lightwam_ros/commands/<name>.py and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this module only dispatches, so
`lightwam --help` stays fast (modules are imported when their subcommand is parsed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module under lightwam_ros.commands, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("convert", "official checkpoint (.pt + config.yaml + dataset_stats.json + VAE) -> bundle"),
    "predict": ("predict", "one observation from image files -> de-normalized actions .npy"),
    "export-onnx": ("export_onnx", "export the policy graph of a bundle to ONNX and check it against torch"),
    "demo-bundle": ("demo_bundle", "write a bundle with deterministic random weights (tiny or full size)"),
    "bench": ("bench", "per-stage latency and peak memory of a bundle on a backend/device/dtype"),
    "encode-text": ("encode_text", "encode instructions with umT5-XXL and add their contexts to a bundle"),
    "make-bag": ("make_bag", "write a deterministic synthetic multi-camera rosbag2 (MCAP or sqlite3)"),
    "replay": ("replay", "replay a rosbag2 through the policy, offline or live; report and output bag"),
    "demo": ("demo", "the embedded demo: demo bundle + synthetic bag -> live node over DDS -> summary"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightwam", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
    return parser


def _subcommand_of(argv: list[str]) -> str | None:
    """The first positional word that names a subcommand (options such as -v may precede it)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    command = _subcommand_of(argv)
    module = None
    if command is not None:
        # Only the chosen subcommand's module is imported (torch, rclpy, ... load lazily), and its
        # arguments are registered before parsing so that `lightwam <sub> --help` lists them.
        module = importlib.import_module(f"lightwam_ros.commands.{SUBCOMMANDS[command][0]}")
        module.add_arguments(parser._subparsers._group_actions[0].choices[command])  # noqa: SLF001
    args = parser.parse_args(argv)
    if module is None:  # argparse has already rejected an unknown subcommand
        parser.error("a subcommand is required")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
