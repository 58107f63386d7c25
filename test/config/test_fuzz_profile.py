"""Fuzz test of load_profile: mutants of the shipped profiles load or raise one ConfigError naming the
file, never another exception, within a time bound per file and a memory cap.

The mutants are built from config/*.yaml with a fixed seed: truncation, flipped bytes (non-UTF-8
among them), values replaced by other YAML types and tags, values nested deeply, anchors and
aliases (valid, self-referencing, undefined) and alias bombs, re-indented and duplicated lines --
one to three of these per mutant. They run in a child process whose memory is capped 1 GiB above
what it uses after its imports (test/support/bounded_child.py), so an unbounded expansion is a
reported MemoryError, not a machine out of memory.

LIGHTWAM_FUZZ_ITERATIONS sets the number of mutants (default 300, a few seconds); a longer run,
e.g. LIGHTWAM_FUZZ_ITERATIONS=20000, is described in docs/bad-files.md. LIGHTWAM_FUZZ_SEED changes
the seed (default 15).
"""

from __future__ import annotations

import os
import textwrap

from bounded_child import REPO_ROOT, run_bounded  # test/support

ITERATIONS = int(os.environ.get("LIGHTWAM_FUZZ_ITERATIONS", "300"))
SEED = int(os.environ.get("LIGHTWAM_FUZZ_SEED", "15"))
PER_FILE_BOUND_S = 10.0  # a bound on work, not a speed: a bounded load takes milliseconds

_FUZZ = textwrap.dedent(r'''
    import json, random, re, sys, tempfile, time
    from pathlib import Path
    from bounded_child import cap_memory, report
    from lightwam_ros.config import ConfigError, load_profile

    repo, iterations, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    seeds = [p.read_bytes() for p in sorted((repo / "config").glob("*.yaml"))]
    cap_memory(1024)
    rng = random.Random(seed)
    VALUES = [b"[1, [2, [3]]]", b"{a: 1, b: {c: 2}}", b'"text"', b"1", b"-1", b"1.0", b"true", b"null", b"~",
              b".nan", b"-.inf", b"1e400", b"2001-13-45", b"2001-02-03 04:05:06", b'!!binary "AAAA"', b"!!set {a}",
              b"0x", b"!!float fifty", b"!!int 0b2", b"9" * 5000, b"[]", b"{}", b"''", b"!!str", b"!!python/none ''",
              b"<<: *x", b"? [a]\n: 1", b"|\n  block", b"&a [*a]", b"*nowhere", b"1:2:3", b"0o17", b"+.5"]

    def truncate(b):
        return b[:rng.randrange(len(b) + 1)]

    def flip(b):
        b = bytearray(b)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)

    def value_lines(b):
        return [m for m in re.finditer(rb"^( *[A-Za-z_][\w.]*:)[ \t]*([^\n#]+)", b, re.M) if m.group(2).strip()]

    def retype(b):
        lines = value_lines(b)
        if not lines:
            return b
        m = rng.choice(lines)
        return b[:m.start(2)] + rng.choice(VALUES) + b[m.end(2):]

    def nest(b):
        lines = value_lines(b)
        if not lines:
            return b
        m, depth = rng.choice(lines), rng.choice([2, 10, 31, 33, 200, 5000])
        if rng.random() < 0.5:
            inner = b"[" * depth + m.group(2) + b"]" * depth
        else:
            inner = b"{k: " * depth + m.group(2) + b"}" * depth
        return b[:m.start(2)] + inner + b[m.end(2):]

    def alias(b):
        lines = value_lines(b)
        if len(lines) < 2:
            return b
        a, c = sorted(rng.sample(lines, 2), key=lambda m: m.start())  # a before c: edit c first
        kind = rng.choice(["valid", "alias_first", "undefined", "self"])
        if kind == "undefined":
            return b[:c.start(2)] + b"*ghost" + b[c.end(2):]
        if kind == "self":
            return b[:a.start(2)] + b"&s [1.0, *s]" + b[a.end(2):]
        if kind == "valid":
            b = b[:c.start(2)] + b"*x" + b[c.end(2):]
            return b[:a.start(2)] + b"&x " + b[a.start(2):]
        b = b[:c.start(2)] + b"&x " + b[c.start(2):]
        return b[:a.start(2)] + b"*x" + b[a.end(2):]

    def bomb(b):
        levels, fanout = rng.choice([(12, 9), (20, 3), (6, 6), (30, 2)])
        lines = [b"    bomb0: &b0 {x: 1.0, y: 1.0}"] + [
            b"    bomb%d: &b%d {" % (i, i) + b", ".join(b"k%d: *b%d" % (j, i - 1) for j in range(fanout)) + b"}"
            for i in range(1, levels)]
        return b.replace(b"ros__parameters:\n", b"ros__parameters:\n" + b"\n".join(lines) + b"\n", 1)

    def indent(b):
        lines = b.split(b"\n")
        i = rng.randrange(len(lines))
        lines[i] = b" " * rng.choice([0, 1, 3, 7, 40]) + lines[i].lstrip() if rng.random() < 0.7 else lines[i] + b"\t"
        if rng.random() < 0.3:
            lines.insert(i, lines[i])  # a duplicated key
        return b"\n".join(lines)

    MUTATIONS = [truncate, flip, retype, nest, alias, bomb, indent]
    outcomes = {"loaded": 0, "ConfigError": 0}
    slowest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(iterations):
            data = rng.choice(seeds)
            applied = [rng.choice(MUTATIONS) for _ in range(rng.randint(1, 3))]
            for mutate in applied:
                data = mutate(data)
            path = Path(tmp) / f"mutant_{i}.yaml"
            path.write_bytes(data)
            t0 = time.monotonic()
            try:
                load_profile(path)
                outcome, message = "loaded", ""
            except ConfigError as exc:
                outcome, message = "ConfigError", str(exc)
            except BaseException as exc:  # what the test is looking for
                outcome, message = type(exc).__name__, str(exc)[:300]
            elapsed = time.monotonic() - t0
            slowest = max(slowest, elapsed)
            ok = outcome == "loaded" or (outcome == "ConfigError" and str(path) in message and "\n" not in message)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if not ok:
                report(bad=i, seed=seed, outcome=outcome, message=message, mutations=[m.__name__ for m in applied],
                       head=data[:300].decode("utf-8", "replace"))
    report(outcomes=outcomes, slowest_s=slowest)
''')


def test_profile_mutants_load_or_raise_one_config_error_naming_the_file() -> None:
    results = run_bounded(_FUZZ, [str(REPO_ROOT), str(ITERATIONS), str(SEED)],
                          timeout_s=60 + ITERATIONS * PER_FILE_BOUND_S / 10)
    summary = results[-1]
    bad = [r for r in results if "bad" in r]
    assert not bad, bad[:5]
    assert sum(summary["outcomes"].values()) == ITERATIONS
    assert summary["outcomes"]["ConfigError"] > 0 and summary["outcomes"]["loaded"] > 0, summary  # both kinds seen
    assert summary["slowest_s"] < PER_FILE_BOUND_S, summary
