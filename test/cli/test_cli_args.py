"""Option values that start with a minus, for every `lightwam` subcommand (lightwam_ros.cli).

argparse takes a word starting with '-' for an option unless it is one plain negative number, so
`--state -0.1,0.2`, `--latency -1e-3` or `--start -2:3` used to fail with "expected one argument".
The CLI joins such values to their option (`--state=-0.1,0.2`) before parsing, in one place for all
subcommands. The end-to-end run with a negative first state value through the installed `lightwam`
script is test_predict_cli.py::test_predict_cli_end_to_end.
"""

from __future__ import annotations

import pytest

from lightwam_ros import cli


def _toy_parser() -> cli.OptionRecorder:
    p = cli.OptionRecorder(prog="toy")
    p.add_argument("--state")
    p.add_argument("--offset", type=float)
    p.add_argument("--maybe", nargs="?", const="c")
    p.add_argument("--names", nargs="+")
    p.add_argument("--flag", action="store_true")
    p.add_argument("--tag", action="append", default=[])
    return p


@pytest.mark.parametrize("argv,joined", [
    (["--state", "-0.1,0.2"], ["--state=-0.1,0.2"]),
    (["--offset", "-1e-3", "--flag"], ["--offset=-1e-3", "--flag"]),
    (["--offset", "-.5"], ["--offset=-.5"]),
    (["--offset", "-inf"], ["--offset=-inf"]),
    (["--tag", "-2:3", "--tag", "-1"], ["--tag=-2:3", "--tag=-1"]),
    (["--maybe", "-7"], ["--maybe=-7"]),
    (["--sta", "-1,2"], ["--sta=-1,2"]),  # argparse's abbreviation of --state
    (["--state=-1,2"], ["--state=-1,2"]),  # already joined
    (["--flag", "-1"], ["--flag", "-1"]),  # a flag takes no value: left to argparse (an error)
    (["--names", "-1", "-2"], ["--names", "-1", "-2"]),  # several values: not this helper's business
    (["--state", "--flag"], ["--state", "--flag"]),  # a missing value stays an argparse error
    (["--state", "-x"], ["--state", "-x"]),  # not a number: could be a short option
    (["--", "--state", "-1,2"], ["--", "--state", "-1,2"]),  # nothing after --
])
def test_join_negative_values(argv: list[str], joined: list[str]) -> None:
    parser = _toy_parser()
    assert cli.join_negative_values(argv, [parser]) == joined


def test_joined_values_parse_as_typed() -> None:
    parser = _toy_parser()
    args = parser.parse_args(cli.join_negative_values(["--state", "-0.1,0.2", "--offset", "-1e-3", "--flag"],
                                                      [parser]))
    assert args.state == "-0.1,0.2" and args.offset == -0.001 and args.flag


def _one_value_options(command: str) -> list[str]:
    parser = cli.build_parser()
    sub = parser.subcommands[command]
    module = __import__(f"lightwam_ros.commands.{cli.SUBCOMMANDS[command][0]}", fromlist=["add_arguments"])
    module.add_arguments(sub)
    return [a.option_strings[-1] for a in sub.options if a.option_strings and a.nargs in (None, "?")]


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_accepts_values_starting_with_a_minus(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each one-value option of each subcommand, given `-0.5,1` through cli.parse_args (what the
    `lightwam` entry point runs): argparse may still reject the value (a type, a choice) or a missing
    required option, but never because it took the value for an option."""
    options = _one_value_options(command)
    assert options, command
    for option in options:
        try:
            args, _ = cli.parse_args([command, option, "-0.5,1"])
        except SystemExit:
            err = capsys.readouterr().err
            assert "expected one argument" not in err, (option, err)
            assert "unrecognized arguments" not in err, (option, err)
        else:
            assert "-0.5,1" in str(vars(args)), option


def test_predict_state_with_a_negative_first_value_parses() -> None:
    args, module = cli.parse_args(["predict", "--bundle", "b", "--image", "cam_high=x.png", "--state",
                                   "-0.1,0.2,-3", "--instruction", "go", "--out", "a.npy", "--steps", "4"])
    assert args.state == "-0.1,0.2,-3" and module.__name__ == "lightwam_ros.commands.predict"
    assert list(module.parse_state(args.state)) == [-0.1, 0.2, -3.0]
