"""The `lightwam` command: thin subcommands over library functions (docs/design.md, "The lightwam command").

Each subcommand lives in lightwam_ros/commands/<name>.py and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this module only dispatches, so
`lightwam --help` stays fast (modules are imported when their subcommand is parsed).

Values that start with a minus (`--state -0.1,0.2`, `--start -1e-3`) are accepted by every
subcommand: see `join_negative_values`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Iterable, Sequence

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


class OptionRecorder(argparse.ArgumentParser):
    """An ArgumentParser that keeps the options added to it, and its subcommand parsers by name:
    argparse has no public listing of either, and join_negative_values needs both."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.options: list[argparse.Action] = []  # before super().__init__, which adds -h/--help
        self.subcommands: dict[str, OptionRecorder] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: object, **kwargs: object) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.options.append(action)
        return action


def build_parser() -> OptionRecorder:
    parser = OptionRecorder(prog="lightwam", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OptionRecorder)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        parser.subcommands[name] = sp
    return parser


# A word that is a number or a list/range of numbers with a leading minus: -1, -.5, -0.1,0.2, -1e-3,
# -2:3, -inf. No option of the CLI looks like that (they all start with a letter after the dashes).
_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf\b|nan\b)", re.IGNORECASE)


def _single_value_options(parsers: Iterable[OptionRecorder]) -> tuple[set[str], set[str]]:
    """(option strings that take exactly one value, every option string) of the given parsers."""
    takes_value: set[str] = set()
    every: set[str] = set()
    for parser in parsers:
        for action in parser.options:
            every.update(action.option_strings)
            if action.option_strings and action.nargs in (None, "?"):
                takes_value.update(action.option_strings)
    return takes_value, every


def join_negative_values(argv: Sequence[str], parsers: Iterable[OptionRecorder]) -> list[str]:
    """Rewrite `--opt -0.1,0.2` as `--opt=-0.1,0.2` for the one-value options of `parsers`.

    argparse reads a word that starts with '-' as an option, unless the word is one plain negative
    number (`-1`, `-0.5`): `--state -0.1,0.2,...`, `--latency -1e-3` or `--start -2:3` then fail with
    "expected one argument", although no option can look like that. Joining option and value with
    '=' is argparse's own unambiguous form. Only words after an option that takes one value and that
    start with a minus followed by a digit (or `.digit`, `inf`, `nan`) are joined; argparse's
    unambiguous abbreviations (`--sta`) count as the option; nothing after `--` is touched.
    """
    takes_value, every = _single_value_options(parsers)

    def option_of(word: str) -> str | None:
        if word in every:
            return word
        if word.startswith("--") and "=" not in word:  # an abbreviation, when argparse accepts it
            matches = [o for o in every if o.startswith(word)]
            return matches[0] if len(matches) == 1 else None
        return None

    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            out.extend(argv[i:])
            break
        if (i + 1 < len(argv) and option_of(word) in takes_value
                and _NEGATIVE_VALUE.match(argv[i + 1])):
            out.append(f"{word}={argv[i + 1]}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def _subcommand_of(argv: list[str]) -> str | None:
    """The first positional word that names a subcommand (options such as -v may precede it)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, object]:
    """Parse a `lightwam` command line; return (arguments, the subcommand's module).

    Exits through argparse (status 2, message on stderr) on a bad command line, as `--help` does.
    """
    parser = build_parser()
    command = _subcommand_of(argv)
    module = None
    parsers = [parser]
    if command is not None:
        # Only the chosen subcommand's module is imported (torch, rclpy, ... load lazily), and its
        # arguments are registered before parsing so that `lightwam <sub> --help` lists them.
        module = importlib.import_module(f"lightwam_ros.commands.{SUBCOMMANDS[command][0]}")
        sub = parser.subcommands[command]
        module.add_arguments(sub)
        parsers.append(sub)
    args = parser.parse_args(join_negative_values(argv, parsers))
    if module is None:  # argparse has already rejected an unknown subcommand
        parser.error("a subcommand is required")
    return args, module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, module = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
