"""`lightwam replay --compare-merge` on a short synthetic bag with a reduced grid (one jittered
latency, the three merge modes): every run in its own subdirectory with the merge mode it was asked
for, and the table's figures read from each run's report.json."""

from __future__ import annotations

import json

import pytest

from lightwam_ros.cli import main as cli_main
from lightwam_ros.config.profiles import load_profile
from lightwam_ros.demo.synthetic import DEFAULT_INSTRUCTION, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
from lightwam_ros.replay.compare import MERGE_MODES, row_from_report, run_name, table_lines
from lightwam_ros.replay.options import ReplayError


def test_compare_merge_runs_each_mode_in_its_own_directory(tmp_path, tiny_bundle, capsys):
    spec = SyntheticBagSpec(height=120, width=160, rate_hz=30.0, seconds=1.0, jitter_ms=0.0,
                            instructions=(TimedInstruction(DEFAULT_INSTRUCTION),))  # test_replay_offline's small_spec
    write_synthetic_bag(spec, tmp_path / "bag")
    out = tmp_path / "cmp"
    rc = cli_main(["replay", "--compare-merge", "--bag", str(tmp_path / "bag"), "--profile", "demo",
                   "--bundle", str(tiny_bundle), "--out", str(out), "--compare-latencies", "40",
                   "--compare-jitter", "0.25", "--seed", "3", "--no-plot"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert MERGE_MODES == ("replace", "blend", "ensemble")
    tables = json.loads((out / "compare.json").read_text())
    (rows,) = tables.values()
    assert [(r["merge"], r["latency_ms"], r["jitter_ms"]) for r in rows] == [(m, 40.0, 10.0) for m in MERGE_MODES]
    for r in rows:
        run = out / run_name(r["merge"], 40.0, 10.0)
        assert r["out"] == str(run) and (run / "outputs").is_dir()
        report = json.loads((run / "report.json").read_text())
        # the run replayed a profile that differs only in chunk.merge
        _, params = load_profile(report["profile"])
        _, demo = load_profile("demo")
        assert params == dict(demo, **{"chunk.merge": r["merge"]})
        assert report["inference"]["latency_model"]["kind"] == "uniform"
        assert report["inference"]["latency_model"]["jitter_ms"] == 10.0
        assert report["inference"]["latency_model"]["seed"] == 3
        motion = report["motion"]
        assert r["open_loop_mae"] == report["open_loop_error"]["mae"]
        assert r["mae_vs_hold_still"] == report["open_loop_error"]["mae_vs_hold_still"]
        assert r["seam_ratio_p99"] == motion["seams"]["worst"]["ratio_p99"]
        assert r["jerk_p99"] == max(motion["executed"]["jerk"]["p99"])
        assert r["following"] == motion["following_after_first_chunk"]["fraction"] > 0
        line = (f"| {r['merge']} | 40 +- 10 | {r['open_loop_mae']:.4f} ({r['mae_vs_hold_still']:.3f}) | "
                f"{r['seam_ratio_p99']:.2f} ")
        assert line in printed
    assert (out / "compare.md").read_text().count("| ensemble |") == 1


def test_row_from_report_reads_the_worst_joint_and_handles_missing_motion(tmp_path):
    report = {"open_loop_error": {"mae": 0.5, "mae_vs_hold_still": 0.25},
              "motion": {"available": True,
                         "seams": {"worst": {"joint": "j2", "ratio_p99": 3.5}, "ratio_p99": [1.0, 3.5]},
                         "executed": {"jerk": {"p99": [10.0, None, 30.0]}},
                         "following_after_first_chunk": {"fraction": 0.75}}}
    r = row_from_report("blend", 100.0, 20.0, tmp_path, report)
    assert (r.open_loop_mae, r.mae_vs_hold_still, r.seam_ratio_p99, r.seam_worst_joint, r.jerk_p99,
            r.following) == (0.5, 0.25, 3.5, "j2", 30.0, 0.75)
    assert table_lines([r])[-1] == "| blend | 100 +- 20 | 0.5000 (0.250) | 3.50 (j2) | 30 | 75.0 % |"
    r = row_from_report("ensemble", 0.0, 0.0, tmp_path, {"open_loop_error": {"available": False},
                                                        "motion": {"available": False}})
    assert (r.open_loop_mae, r.seam_ratio_p99, r.jerk_p99, r.following) == (None, None, None, None)
    assert table_lines([r])[-1] == "| ensemble | 0 | n/a | n/a | n/a | n/a |"


def test_compare_merge_refuses_conflicting_latency_flags(tmp_path, capsys):
    rc = cli_main(["replay", "--compare-merge", "--bag", str(tmp_path / "nobag"), "--profile", "demo",
                   "--out", str(tmp_path / "o"), "--latency", "50"])
    assert rc == 2 and "--compare-latencies" in capsys.readouterr().err
    from lightwam_ros.replay.compare import compare_merge

    with pytest.raises(ReplayError, match="fraction"):
        compare_merge([tmp_path / "nobag"], "demo", tmp_path / "o", jitter_fraction=2.0)
