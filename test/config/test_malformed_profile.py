"""Malformed robot profiles are refused by load_profile with one ConfigError naming the file (and the
key where there is one), at once and with bounded memory, and `lightwam replay --profile` exits 2
with that one line.

Before the bounds: a non-UTF-8 file raised UnicodeDecodeError, deep nesting and an alias that
refers to its own mapping RecursionError, an impossible date or a 5000-digit integer ValueError, and
an alias bomb in mappings was expanded by the flattening until MemoryError (~50 s, ~4 GB); a profile
of thousands of parameters was accepted; a value of the wrong type was refused without naming the
file, quoting the whole value.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from bounded_child import run_bounded  # test/support

from lightwam_ros.cli import main as cli_main
from lightwam_ros.config import ConfigError, load_profile
from lightwam_ros.config.profiles import MAX_PROFILE_BYTES, MAX_PROFILE_DEPTH, MAX_PROFILE_PARAMETERS

HEAD = "lightwam_policy:\n  ros__parameters:\n"
WORK_BOUND_S = 30.0  # a bound on work, not a speed: each case takes milliseconds once bounded


def alias_bomb(levels: int = 12, fanout: int = 9) -> str:
    """Billion-laughs in mappings: level i maps `fanout` keys to level i-1, fanout**levels leaves."""
    lines = ["    a0: &a0 {x: 1.0, y: 1.0}"]
    for i in range(1, levels):
        lines.append(f"    a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(fanout)) + "}")
    return HEAD + "\n".join(lines) + "\n"


def deep(depth: int, flow: str) -> str:
    if flow == "list":
        return HEAD + "    x: " + "[" * depth + "]" * depth + "\n"
    if flow == "map":
        return HEAD + "    x: " + "{a: " * depth + "1" + "}" * depth + "\n"
    # block mappings, one more indent per level
    return HEAD + "".join(" " * (4 + 2 * i) + f"k{i}:\n" for i in range(depth)) + " " * (4 + 2 * depth) + "v: 1\n"


CASES: dict[str, tuple[bytes, str]] = {  # name -> (file content, what the message must mention)
    "not_utf8": (HEAD.encode() + b'    bundle: "\xff\xfe"\n', "UTF-8"),
    "deep_flow_lists": (deep(5000, "list").encode(), f"deeper than {MAX_PROFILE_DEPTH}"),
    "deep_flow_maps": (deep(5000, "map").encode(), f"deeper than {MAX_PROFILE_DEPTH}"),
    "deep_block_maps": (deep(400, "block").encode(), "ros__parameters.k0.k1"),
    "self_alias": (b"lightwam_policy:\n  ros__parameters: &p\n    sync: *p\n", "*p"),
    "self_alias_in_list": (HEAD.encode() + b"    cameras: &c {names: [*c]}\n", "*c"),
    "undefined_alias": (HEAD.encode() + b"    bundle: *nowhere\n", "*nowhere"),
    "impossible_date": (HEAD.encode() + b"    bundle: 2001-13-45\n", "bundle"),
    "huge_integer": (HEAD.encode() + b"    chunk:\n      blend_steps: " + b"9" * 5000 + b"\n", "chunk.blend_steps"),
    "bad_float_tag": (HEAD.encode() + b"    control_rate_hz: !!float fifty\n", "control_rate_hz"),
    "wrong_type": (HEAD.encode() + b"    sync:\n      queue_size: [1, [2, [3]]]\n", "sync.queue_size"),
    "huge_wrong_value": (HEAD.encode() + b"    bundle: [" + b", ".join([b"abcdefgh"] * 5000) + b"]\n", "bundle"),
    "unclosed_list": (HEAD.encode() + b"    cameras:\n      names: [a, b\n", "line"),
    "oversized": (HEAD.encode() + b"    bundle: demo\n" + b"#" * (MAX_PROFILE_BYTES + 1) + b"\n", "larger than"),
    "too_many_parameters": ((HEAD + "".join(f"    qos_overrides./t{i}.publisher.depth: 1\n"
                                            for i in range(MAX_PROFILE_PARAMETERS + 1))).encode(),
                            f"more than {MAX_PROFILE_PARAMETERS} parameters"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_profile_is_one_config_error_naming_the_file(tmp_path: Path, case: str) -> None:
    content, fragment = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert time.monotonic() - t0 < WORK_BOUND_S
    assert str(path) in str(err.value) and fragment in str(err.value), str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 1000, str(err.value)


# In a child with its memory capped (test/support/bounded_child.py): the unbounded flattening of the
# bomb needs gigabytes, the bounded loader a few megabytes.
_BOUNDED_LOAD = textwrap.dedent("""
    import sys
    from bounded_child import cap_memory, report
    from lightwam_ros.config import ConfigError, load_profile
    cap_memory(512)
    try:
        load_profile(sys.argv[1])
        report(result="loaded")
    except ConfigError as exc:
        report(result="ConfigError", message=str(exc))
    except BaseException as exc:
        report(result=type(exc).__name__, message=str(exc)[:500])
""")


@pytest.mark.parametrize("fanout", [9, 3])
def test_an_alias_bomb_in_mappings_is_refused_with_bounded_memory(tmp_path: Path, fanout: int) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(levels=12 if fanout == 9 else 20, fanout=fanout))
    t0 = time.monotonic()
    out = run_bounded(_BOUNDED_LOAD, [str(path)], timeout_s=WORK_BOUND_S + 30)[-1]
    assert time.monotonic() - t0 < WORK_BOUND_S + 30  # the child's python and imports start first
    assert out["result"] == "ConfigError", out
    assert str(path) in out["message"] and "alias" in out["message"], out


def test_anchors_and_aliases_within_the_bounds_still_load(tmp_path: Path) -> None:
    """A profile may share a list through an anchor (the same limits for both arms)."""
    path = tmp_path / "shared.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent("""\
        safety:
          position_min: &lim [-1.0, -1.0]
          position_max: [1.0, 1.0]
          max_step: [0.1, 0.1]
        output:
          hold_command: *lim
        sync: &s {slop: 0.02}
        """), "    "))
    _, flat = load_profile(path)
    assert flat["output.hold_command"] == [-1.0, -1.0] and flat["sync.slop"] == 0.02


@pytest.mark.parametrize("case", ["not_utf8", "deep_flow_maps", "self_alias", "unclosed_list"])
def test_lightwam_replay_exits_2_with_one_line_naming_the_profile(tmp_path: Path, case: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(CASES[case][0])
    rc = cli_main(["replay", "--bag", str(tmp_path / "no_bag"), "--profile", str(path), "--out",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and str(path) in err and err.startswith("lightwam replay: error:"), err
