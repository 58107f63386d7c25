"""The embedded demo: the JTC stand-in's checks on hand-made trajectories, then `lightwam demo` end
to end (tiny bundle, synthetic bag, live replay over DDS into a policy_node process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightwam_ros.demo import DemoOptions, ExecutorLimits, TrajectoryExecutor, run_demo, summary_lines

MS = 1_000_000
NAMES = ("a", "b")


def _executor(b_max: float = 1.0) -> TrajectoryExecutor:
    return TrajectoryExecutor(ExecutorLimits(NAMES, np.array([-1.0, -1.0]), np.array([1.0, b_max]),
                                             np.array([0.1, 0.1]), 20 * MS))


def test_executor_executes_like_a_jtc() -> None:
    ex = _executor()
    assert ex.receive(1000 * MS, NAMES, 0, np.array([20, 40]) * MS, np.array([[0.0, 0.0], [0.1, -0.1]])) == []
    # before/at arrival the first point is where the robot is; then linear to each point in time
    np.testing.assert_allclose(ex.position(1030 * MS), [0.05, -0.05])
    np.testing.assert_allclose(ex.position(2000 * MS), [0.1, -0.1])  # holds the last point
    # a new trajectory at t=1030 ms replaces the rest of the old one, starting from where the robot is
    assert ex.receive(1030 * MS, NAMES, 0, np.array([20]) * MS, np.array([[0.15, -0.05]])) == []
    np.testing.assert_allclose(ex.position(1040 * MS), [0.1, -0.05])
    np.testing.assert_allclose(ex.position(1050 * MS), [0.15, -0.05])
    t, q = ex.executed(1000 * MS, 1060 * MS, 10 * MS)
    np.testing.assert_array_equal(t, np.arange(1000, 1060, 10) * MS)
    np.testing.assert_allclose(q[:, 0], [0.0, 0.0, 0.0, 0.05, 0.1, 0.15])
    assert ex.report.plan_trajectories == 1 and ex.report.hold_trajectories == 1 and not ex.report.violations


@pytest.mark.parametrize("case,expect", [
    ("names", "joint_names"), ("stamp", "header.stamp"), ("times", "strictly increasing"),
    ("limits", "outside"), ("rate", "rate cap"), ("seam", "seam jump"), ("nan", "non-finite"),
])
def test_executor_flags_what_a_jtc_rejects_or_a_robot_feels(case: str, expect: str) -> None:
    ex = _executor(b_max=0.08)
    assert ex.receive(0, NAMES, 0, np.array([20, 40]) * MS, np.array([[0.0, 0.0], [0.05, 0.0]])) == []
    names, stamp, times = NAMES, 0, np.array([20, 40]) * MS
    pos = np.array([[0.05, 0.0], [0.1, 0.0]])
    if case == "names":
        names = ("b", "a")
    elif case == "stamp":
        stamp = 5
    elif case == "times":
        times = np.array([20, 20]) * MS
    elif case == "limits":
        pos = np.array([[0.05, 0.0], [0.1, 0.09]])  # b limit 0.08
    elif case == "rate":
        pos = np.array([[0.05, 0.0], [0.3, 0.0]])  # 0.25 in one 20 ms step, cap 0.1
    elif case == "seam":
        pos = np.array([[0.6, 0.0], [0.6, 0.0]])  # 0.55 from where the robot is, allowed 3 x 0.1
    else:
        pos = np.array([[np.nan, 0.0], [0.1, 0.0]])
    bad = ex.receive(30 * MS, names, stamp, times, pos)
    assert len(bad) == 1 and expect in bad[0], bad
    assert ex.report.violations == bad


def test_lightwam_demo_end_to_end(tiny_bundle, tmp_path: Path) -> None:
    bundle = tmp_path / "demo_tiny"
    shutil.copytree(tiny_bundle, bundle)
    result = run_demo(DemoOptions(out=tmp_path / "out", bundle=bundle, seconds=5.0, mode="live"))
    s = result.summary
    assert result.ok, summary_lines(s)
    assert s["bundle"]["built_now"] is False
    assert s["chunks"]["published"] >= 3 and s["chunks"]["steps"] == 24
    assert s["executor"]["plan_trajectories"] >= 3 and s["executor"]["violations"] == 0
    assert s["frame_sets"]["frame_sets_used"] >= 3
    assert 40.0 <= s["node"]["rate_hz"] <= 52.0, s["node"]
    assert s["node"]["inference_total_ms_p50"] > 0
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(result.summary_path.read_text())["executor"] == s["executor"]
    topics = s["outputs"]["topics"]
    assert topics["/demo/arm_controller/joint_trajectory"] >= 3
    assert topics["/lightwam_policy/action_chunk"] == s["chunks"]["published"]
    # the CLI entry point prints the summary (help only: a second full run would double the test time)
    out = subprocess.run([sys.executable, "-m", "lightwam_ros.cli", "demo", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--seconds" in out.stdout
