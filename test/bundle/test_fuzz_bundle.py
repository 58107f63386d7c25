"""Fuzz tests of the bundle loader and the checkpoint reader of `lightwam convert`.

Mutants are made from valid inputs -- the tiny demo bundle's manifest.json and an official-format
run made from that bundle (test/support/official_run.py) -- by seeded random edits: truncation,
flipped bytes, a value of another JSON type, a deeply nested or very long value, a deleted key.
Every mutant must load or be refused with the loader's own error (BundleError; ConvertError or
BundleError for convert, both of which `lightwam convert` turns into one line and exit 2); any other
exception is a bug. Each mutant runs under a time bound, and all of them in a child process whose
address space is capped at a few GiB above what it had after warming up, so a mutant that makes a
loader allocate in proportion to a corrupt number fails instead of swapping the machine.

Seeds are fixed, so a failure is reproducible from the seed and mutant index it reports. A longer
run (docs/bad-files.md, "Fuzz tests"):

    LIGHTWAM_FUZZ_ITERATIONS=5000 LIGHTWAM_FUZZ_SEED=7 .venv/bin/python -m pytest -q test/bundle/test_fuzz_bundle.py

LIGHTWAM_FUZZ_ITERATIONS is the number of manifest mutants (default 200); a quarter as many
checkpoint mutants are made (default 50).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bounded_child import run_bounded

ITERATIONS = int(os.environ.get("LIGHTWAM_FUZZ_ITERATIONS", "200"))
SEED = int(os.environ.get("LIGHTWAM_FUZZ_SEED", "0"))
MUTANT_SECONDS = 30  # a bound on work per mutant (they take milliseconds), not a speed
HEADROOM_MIB = 3072  # address space a mutant may add to the warmed-up child's
# An error message quotes at most a bounded part of the input. The longest legitimate ones list
# tensors that disagree with the config (40 names per kind); a value quoted whole could be megabytes.
MESSAGE_CHARS = 16_000


# -- mutations of manifest.json ------------------------------------------------------------------------


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a value in a parsed JSON document."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _other_value(rng: random.Random, old: Any) -> Any:
    choices: list[Any] = ["", "x", "dit.safetensors", 0, -1, 1, 2**31, 2**63, 10**30, 0.5, -1e308, float("inf"),
                          float("nan"), True, False, None, [], [1, 2], ["a"], {}, {"a": 1}, {"file": "x"}]
    value = rng.choice(choices)
    while type(value) is type(old) and value == old:
        value = rng.choice(choices)
    return value


NEST_TOKEN = "__lightwam_fuzz_nest__"


def mutate_manifest(text: str, rng: random.Random) -> tuple[str, bytes]:
    """(what was done, the mutant manifest's bytes)."""
    kind = rng.choice(["truncate", "flip", "retype", "retype", "nest", "grow", "delete"])
    raw = text.encode()
    if kind == "truncate":
        at = rng.randrange(len(raw))
        return f"truncate at byte {at}", raw[:at]
    if kind == "flip":
        data = bytearray(raw)
        spots = [rng.randrange(len(data)) for _ in range(rng.randint(1, 8))]
        for at in spots:
            data[at] ^= rng.randint(1, 255)
        return f"flip bytes {spots}", bytes(data)
    doc = json.loads(text)
    paths = [p for p in _paths(doc) if p]
    path = rng.choice(paths)
    old = doc
    for key in path:
        old = old[key]
    if kind == "retype":
        new = _other_value(rng, old)
        return f"retype {list(path)} to {new!r}", json.dumps(_set(doc, path, new)).encode()
    if kind == "grow":
        n = rng.choice([1000, 20000, 60000])
        new = {f"k{i}": "0" * 64 for i in range(n)} if rng.random() < 0.5 else list(range(n))
        return f"grow {list(path)} to {n} entries", json.dumps(_set(doc, path, new)).encode()
    if kind == "nest":
        depth = rng.choice([33, 200, 5000, 200_000])
        opener, closer = ("[", "]") if rng.random() < 0.5 else ('{"a":', "}")
        marked = json.dumps(_set(doc, path, NEST_TOKEN))
        nested = opener * depth + "1" + closer * depth
        return f"nest {list(path)} {depth} deep", marked.replace(json.dumps(NEST_TOKEN), nested, 1).encode()
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return f"delete {list(path)}", json.dumps(doc).encode()


# -- mutations of a checkpoint ---------------------------------------------------------------------


def mutate_checkpoint(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Truncation or flipped bytes, mostly in the first and last KB where the pickle and the zip
    directory are: a flip in tensor data only changes a weight, which convert cannot and need not see."""
    if rng.random() < 0.3:
        at = rng.randrange(len(raw))
        return f"truncate at byte {at}", raw[:at]
    data = bytearray(raw)
    spots = []
    for _ in range(rng.randint(1, 6)):
        region = rng.random()
        if region < 0.45:
            at = rng.randrange(min(2048, len(data)))
        elif region < 0.9:
            at = len(data) - 1 - rng.randrange(min(1024, len(data)))
        else:
            at = rng.randrange(len(data))
        data[at] ^= rng.randint(1, 255)
        spots.append(at)
    return f"flip bytes {spots}", bytes(data)


# -- the child process: warm up, cap memory, run every mutant ------------------------------------------


class MutantTimeout(Exception):
    """Raised by SIGALRM in the child when a mutant runs past MUTANT_SECONDS."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise MutantTimeout(f"over {MUTANT_SECONDS} s")


Make = Callable[[int], tuple[str, Callable[[], None]]]


def _run_mutants(kind: str, count: int, make: Make, allowed: tuple[type, ...]) -> None:
    from bounded_child import report

    signal.signal(signal.SIGALRM, _on_alarm)
    for i in range(count):
        what, run = make(i)
        t0 = time.monotonic()
        signal.alarm(MUTANT_SECONDS + 5)
        outcome, detail, chars = "ok", "", 0
        try:
            run()
        except allowed as exc:
            outcome, detail, chars = type(exc).__name__, str(exc)[:300], len(str(exc))
        except BaseException as exc:  # noqa: BLE001 - any other exception (MemoryError and the alarm too) is the finding
            outcome = f"UNEXPECTED {type(exc).__name__}"
            detail = "".join(traceback.format_exception(exc))[-3000:]
        finally:
            signal.alarm(0)
        report(kind=kind, index=i, mutation=what, outcome=outcome, detail=detail, chars=chars,
               seconds=round(time.monotonic() - t0, 3))


def manifest_mutants(bundle: Path, work: Path, seed: int) -> Make:
    """Makes mutant i of the bundle's manifest and the run that loads it, after a warm-up load."""
    from lightwam_ros.bundle.format import MANIFEST, Bundle

    target = work / "bundle"
    shutil.copytree(bundle, target)
    text = (bundle / MANIFEST).read_text()
    Bundle.load(target).load_contexts()  # warm-up: imports and the first network build happen here

    def make(i: int) -> tuple[str, Callable[[], None]]:
        what, raw = mutate_manifest(text, random.Random(seed * 1_000_003 + i))

        def run() -> None:
            (target / MANIFEST).write_bytes(raw)
            loaded = Bundle.load(target)
            loaded.load_contexts()
            loaded.save_manifest()  # what export-onnx and encode-text do next: write it back
            Bundle.load(target, verify=False)
        return what, run

    return make


def checkpoint_mutants(bundle: Path, work: Path, seed: int) -> Make:
    """Makes mutant i of a zip or legacy checkpoint and the run that converts it, after a warm-up convert."""
    from official_run import backbones, write_official_run

    from lightwam_ros.bundle.convert import ConvertRequest, convert

    specs = backbones(bundle)
    runs = {fmt: write_official_run(bundle, work / fmt, legacy=fmt == "legacy") for fmt in ("zip", "legacy")}
    originals = {fmt: paths["ckpt"].read_bytes() for fmt, paths in runs.items()}
    convert(ConvertRequest(out=work / "warm_up", **runs["zip"]), specs)

    def make(i: int) -> tuple[str, Callable[[], None]]:
        fmt = ("zip", "legacy")[i % 2]
        what, raw = mutate_checkpoint(originals[fmt], random.Random(seed * 1_000_003 + i))
        paths = dict(runs[fmt], ckpt=work / f"mutant_{i}.pt")

        def run() -> None:
            paths["ckpt"].write_bytes(raw)
            try:
                convert(ConvertRequest(out=work / f"out_{i}", **paths), specs)
            finally:
                paths["ckpt"].unlink()
                shutil.rmtree(work / f"out_{i}", ignore_errors=True)
        return f"{fmt}: {what}", run

    return make


def child_main(bundle: Path, work: Path, counts: dict[str, int], seed: int) -> None:
    """Both warm-ups first, then the memory cap, then every mutant: the cap is relative to a process
    that has imported torch and built the network once, so it bounds only what a mutant adds."""
    from bounded_child import cap_memory

    from lightwam_ros.bundle.convert import ConvertError
    from lightwam_ros.bundle.errors import BundleError

    makers = {"manifests": manifest_mutants(bundle, work / "manifests", seed),
              "checkpoints": checkpoint_mutants(bundle, work / "checkpoints", seed)}
    cap_memory(HEADROOM_MIB)
    _run_mutants("manifests", counts["manifests"], makers["manifests"], (BundleError,))
    _run_mutants("checkpoints", counts["checkpoints"], makers["checkpoints"], (ConvertError, BundleError))


# -- the tests -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_results(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Both fuzz runs in one child process, which imports torch and warms up once for both."""
    counts = {"manifests": ITERATIONS, "checkpoints": max(1, ITERATIONS // 4)}
    script = f"import runpy; runpy.run_path({str(Path(__file__))!r}, run_name='__main__')"
    lines = run_bounded(script, [str(tiny_bundle), str(tmp_path_factory.mktemp("fuzz")), json.dumps(counts),
                                 str(SEED)], timeout_s=180 + 2 * MUTANT_SECONDS + sum(counts.values()) * 5)
    results = {kind: [r for r in lines if r["kind"] == kind] for kind in counts}
    for kind, count in counts.items():
        assert len(results[kind]) == count
    return results


def _check(results: list[dict]) -> set[str]:
    bad = [r for r in results if r["outcome"].startswith("UNEXPECTED") or r["seconds"] > MUTANT_SECONDS
           or r["chars"] > MESSAGE_CHARS]
    assert not bad, (f"seed {SEED}: {len(bad)} of {len(results)} mutants raised another error, ran too long or "
                     f"gave an error message of over {MESSAGE_CHARS} characters; first:\n"
                     + json.dumps(bad[0], indent=1))
    return {r["outcome"] for r in results}


def test_fuzzed_manifests_load_or_raise_bundle_error(fuzz_results: dict[str, list[dict]]) -> None:
    # Both outcomes occur: the mutations reach past the parser and the loader refuses most of them.
    assert _check(fuzz_results["manifests"]) == {"ok", "BundleError"}


def test_fuzzed_checkpoints_convert_or_raise_convert_error(fuzz_results: dict[str, list[dict]]) -> None:
    assert "ConvertError" in _check(fuzz_results["checkpoints"])


if __name__ == "__main__":
    _bundle, _work, _counts, _seed = sys.argv[1:]
    child_main(Path(_bundle), Path(_work), json.loads(_counts), int(_seed))
