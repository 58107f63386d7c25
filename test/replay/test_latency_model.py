"""Latency models of offline replay (replay/latency.py), their options, and the bench JSON they read.

Pure: no model runs and no bag is read (the replays with each model are test_replay_latency.py).
"""

from __future__ import annotations

import json

import pytest

from lightwam_ros.inference.bench import BenchResult, StageStats, write_json
from lightwam_ros.replay.latency import (
    FixedLatency,
    SampledLatency,
    UniformLatency,
    latency_model,
    read_samples,
)
from lightwam_ros.replay.options import ReplayError, ReplayOptions

MS = 1_000_000


def draws(model, n=200) -> list[int]:
    return [model.next_ns() for _ in range(n)]


def test_fixed_is_the_same_every_request():
    assert draws(FixedLatency(40.0), 5) == [40 * MS] * 5
    assert FixedLatency.of_ns(40_000_001).next_ns() == 40_000_001  # exact, no round trip through ms
    assert FixedLatency(0.0).describe()["kind"] == "fixed"


def test_uniform_is_seeded_bounded_and_centred():
    a, b, c = UniformLatency(100.0, 30.0, seed=1), UniformLatency(100.0, 30.0, seed=1), UniformLatency(100.0, 30.0, 2)
    da, db, dc = draws(a), draws(b), draws(c)
    assert da == db and da != dc
    assert all(70 * MS <= d <= 130 * MS for d in da + dc)
    assert sum(da) / len(da) == pytest.approx(100 * MS, rel=0.05)
    assert max(da) - min(da) > 50 * MS  # the whole range is visited, not a narrow core
    # random.Random(seed).random() is the one sequence the standard library keeps across versions:
    # the first draw of seed 1 is 70 + 60 * 0.13436424411240122 ms
    assert UniformLatency(100.0, 30.0, seed=1).next_ns() == round((70 + 60 * 0.13436424411240122) * MS)
    assert UniformLatency(100.0, 30.0, 5).nominal_ms == 100.0


def test_samples_draw_only_measured_values_seeded():
    samples = [50.0, 60.0, 61.5, 200.0]
    a, b = SampledLatency(samples, seed=3, source="f"), SampledLatency(samples, seed=3, source="f")
    da = draws(a)
    assert da == draws(b) and da != draws(SampledLatency(samples, seed=4))
    assert set(da) == {round(x * MS) for x in samples}  # each value, and nothing else
    d = a.describe()
    assert (d["kind"], d["file"], d["samples"], d["seed"]) == ("samples", "f", 4, 3)
    assert d["samples_ms"]["min"] == 50.0 and d["samples_ms"]["max"] == 200.0 and d["samples_ms"]["p50"] == 60.0
    assert a.nominal_ms == 61.5  # the median (upper for an even count)


def _bench_result(totals: list[float]) -> BenchResult:
    return BenchResult(setup={"bundle": "b", "backend": "torch", "device_name": "cpu", "torch": "x"},
                       stages=[StageStats.of("total", totals)], memory_mb={}, runs=len(totals), warmup=0,
                       load_s=0.0, warmup_s=0.0, samples_ms={"dit": [1.0] * len(totals), "total": totals})


def test_latency_file_reads_what_bench_json_writes(tmp_path):
    write_json(_bench_result([101.0, 99.5, 130.25]), tmp_path / "bench.json")
    assert read_samples(tmp_path / "bench.json") == [101.0, 99.5, 130.25]  # the totals, not a stage's
    model = latency_model(latency_file=tmp_path / "bench.json", seed=1)
    assert isinstance(model, SampledLatency) and model.describe()["file"] == str(tmp_path / "bench.json")
    (tmp_path / "list.json").write_text("[12, 13.5]")
    assert read_samples(tmp_path / "list.json") == [12, 13.5]


def test_latency_file_errors_say_what_is_wrong(tmp_path):
    old = _bench_result([1.0]).to_dict()
    del old["samples_ms"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ReplayError, match=r"without per-run samples \(samples_ms.total\); run `lightwam bench"):
        read_samples(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ReplayError, match="not JSON"):
        read_samples(tmp_path / "bad.json")
    with pytest.raises(ReplayError, match="cannot read it"):
        read_samples(tmp_path / "missing.json")
    (tmp_path / "neg.json").write_text("[10, -1]")
    with pytest.raises(ReplayError, match=r"finite numbers >= 0 ms, got \[-1\]"):
        latency_model(latency_file=tmp_path / "neg.json")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ReplayError, match="no latency samples"):
        latency_model(latency_file=tmp_path / "empty.json")


def test_the_options_pick_the_model():
    assert isinstance(latency_model(40.0), FixedLatency)
    assert isinstance(latency_model(40.0, 10.0, seed=2), UniformLatency)
    base = {"bag": "b", "profile": "demo", "out": "o"}
    with pytest.raises(ReplayError, match=r"--latency-jitter must be in \[0, --latency\]"):
        ReplayOptions(**base, latency_ms=20.0, latency_jitter_ms=30.0)
    with pytest.raises(ReplayError, match="--latency-file draws every latency from the file"):
        ReplayOptions(**base, latency_ms=20.0, latency_file="bench.json")
    assert ReplayOptions(**base, latency_file="bench.json", seed=4).latency_file.name == "bench.json"
