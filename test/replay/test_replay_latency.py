"""Offline replay with a latency model: no hold at any chunk handover after the first chunk, at
latency 0, at a fixed 40 ms and with a seeded jittered latency; the same seed gives the same report.

The bags are small synthetic ones (demo profile, tiny bundle) with 3 ms stamp jitter, so frame
sets form at irregular times relative to the 50 Hz control ticks. The window starts 77 ms in: the
first frame set then forms just after the first control tick, so the first chunk's measured latency
is the model's (from the bag start, the first chunk is collected by the first tick, measured up to
a tick late, and that one measurement in the scheduler's window of 10 would mask the zero-latency
handover). Before the scheduler's lead counted the tick that merges a chunk, latency 0 held a tick
(chunk_exhausted) at two of the handovers of this window.
"""

from __future__ import annotations

import json

import pytest

from lightwam_ros.cli import main as cli_main
from lightwam_ros.demo.synthetic import DEFAULT_INSTRUCTION, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
from lightwam_ros.replay.options import ReplayOptions
from lightwam_ros.replay.runner import run_replay

WINDOW = {"start_s": 0.077, "duration_s": 1.6}
MS = 1_000_000


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("latency") / "bag"
    write_synthetic_bag(SyntheticBagSpec(height=60, width=80, rate_hz=30.0, seconds=1.8, jitter_ms=3.0,
                                         instructions=(TimedInstruction(DEFAULT_INSTRUCTION),)), path)
    return path


def holds_after_first_chunk(report) -> list[dict]:
    """Hold intervals from the first tick that followed the policy on."""
    intervals = report["holds"]["intervals"]
    first = next(i for i, iv in enumerate(intervals) if iv["hold"] == "none")
    return [iv for iv in intervals[first:] if iv["hold"] != "none"]


def comparable(report: dict) -> dict:
    """The report without what depends on the machine or the output directory (wall-clock times)."""
    out = json.loads(json.dumps(report))
    for key in ("throughput", "latency_ms", "plot"):
        out.pop(key, None)
    out["inference"].pop("wall_ms")
    out["outputs"].pop("bag")
    return out


@pytest.mark.parametrize("latency_ms", [0.0, 40.0])
def test_fixed_latency_never_holds_after_the_first_chunk(tmp_path, tiny_bundle, bag, latency_ms):
    result = run_replay(ReplayOptions(bag=bag, profile="demo", bundle=str(tiny_bundle), out=tmp_path / "out",
                                      latency_ms=latency_ms, plot=False, **WINDOW))
    report = result.report
    assert len(result.chunks) >= 4  # three handovers or more
    assert holds_after_first_chunk(report) == []
    assert set(report["holds"]["by_reason"]) <= {"none", "no_chunk"}
    assert all(r.ready_ns - r.request_ns == round(latency_ms * MS) for r in result.requests)
    assert report["inference"]["latency_model"] == {
        "kind": "fixed", "latency_ms": latency_ms,
        "note": "chunks are merged at the first control tick at or after request + latency"}


def test_jittered_latency_never_holds_and_the_same_seed_gives_the_same_report(tmp_path, tiny_bundle, bag, capsys):
    """100 +- 15 ms, uniform: within the pacing's margin (1.5 x the smallest possible estimate, 85 ms,
    covers the 6 ticks the slowest draw takes to be merged). Once through the API, once through
    `lightwam replay` with the same seed: the same report, wall-clock times aside."""
    api = run_replay(ReplayOptions(bag=bag, profile="demo", bundle=str(tiny_bundle), out=tmp_path / "api",
                                   latency_ms=100.0, latency_jitter_ms=15.0, seed=7, plot=False, **WINDOW))
    drawn = [r.ready_ns - r.request_ns for r in api.requests]
    assert len(drawn) >= 4 and len(set(drawn)) == len(drawn)  # a new draw per request
    assert all(85 * MS <= d <= 115 * MS for d in drawn)
    assert holds_after_first_chunk(api.report) == []
    model = api.report["inference"]["latency_model"]
    assert (model["kind"], model["mean_ms"], model["jitter_ms"], model["range_ms"], model["seed"]) == \
        ("uniform", 100.0, 15.0, [85.0, 115.0], 7)
    assert api.report["inference"]["simulated_latency_ms"]["max"] == pytest.approx(max(drawn) / MS, abs=1e-3)

    rc = cli_main(["replay", "--bag", str(bag), "--profile", "demo", "--bundle", str(tiny_bundle),
                   "--out", str(tmp_path / "cli"), "--latency", "100", "--latency-jitter", "15", "--seed", "7",
                   "--start", str(WINDOW["start_s"]), "--duration", str(WINDOW["duration_s"]), "--no-plot"])
    assert rc == 0
    assert "simulated inference latency: uniform 100 +- 15 ms (seed 7)" in capsys.readouterr().out
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert comparable(cli) == comparable(json.loads(api.report_path.read_text()))
