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

from lightwam_ros.control.latency_advice import ChunkTiming
from lightwam_ros.demo.run import (
    Candidate,
    DemoOptions,
    ExecutorLimits,
    TrajectoryExecutor,
    choose_settings,
    demo_candidates,
    following_after_first_chunk,
    run_demo,
    summary_lines,
    write_profile,
)

MS = 1_000_000
CHUNK = ChunkTiming(24, 20 * MS)  # the demo bundle: 24 steps at 50 Hz, one inference at a time
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


def test_a_seam_after_a_hold_may_start_at_the_measured_position() -> None:
    """The node starts a trajectory after a silent hold from the measured joints; the demo's joint
    states are recorded (open loop), so the stand-in accepts a seam continuous with them."""
    ex = _executor()
    assert ex.receive(0, NAMES, 0, np.array([20]) * MS, np.array([[0.0, 0.0]])) == []  # the hold
    far = np.array([[0.6, 0.0], [0.65, 0.0]])  # 6 periods of max_step from the executed position
    assert ex.receive(500 * MS, NAMES, 0, np.array([20, 40]) * MS, far, measured=np.array([0.55, 0.0])) == []
    ex = _executor()
    assert ex.receive(0, NAMES, 0, np.array([20]) * MS, np.array([[0.0, 0.0]])) == []
    assert any("seam jump" in v for v in ex.receive(500 * MS, NAMES, 0, np.array([20, 40]) * MS, far))


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


# -- the stand-in's JTC splines: velocity continuity at handovers, start stamps -------------------

A_PARABOLA = 1.5  # units/s^2: x(t) = A t^2 / 2, slow enough for the 0.1-per-20-ms cap over 0.5 s


def parabola(t_ns: np.ndarray) -> np.ndarray:
    t = np.asarray(t_ns, dtype=np.float64) / 1e9
    return np.stack([A_PARABOLA * t**2 / 2, -A_PARABOLA * t**2 / 4], axis=-1)


def node_trajectory(start_ns: int, anchor_ns: int, steps: int, velocities: str = "central") -> dict:
    """What the node sends for the parabola: points at start + (k+1)*20 ms sampled from the plan, with
    velocities "central" (from the anchor: jtc_spline.knot_velocities), "one_sided" (the forward
    difference at the first point) or "none"."""
    from lightwam_ros.control.jtc_spline import knot_velocities

    dt = 20 * MS
    times = dt * np.arange(1, steps + 1)
    pos = parabola(anchor_ns + times)
    out = {"times_ns": times, "positions": pos}
    if velocities != "none":
        v = knot_velocities(parabola(anchor_ns), pos, dt)
        if velocities == "one_sided":
            v[0] = (pos[1] - pos[0]) / (dt / 1e9)
        out["velocities"] = v
    return out


@pytest.mark.parametrize("velocities", ["central", "none"])
def test_a_handover_with_consistent_velocities_keeps_the_velocity_and_positions_only_jump(velocities: str) -> None:
    """Trajectory a from t=0, then b taking over at 70 ms (mid-segment) from where a is: with the
    node's velocities the JTC bridges with a cubic from a's state, the velocity does not jump and
    b's first velocity is a's velocity at that instant (Hermite segments reproduce the parabola);
    positions only, the bridge is linear and the velocity jumps, which the stand-in reports (and
    with a limit set, flags)."""
    ex = TrajectoryExecutor(ExecutorLimits(NAMES, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                                           np.array([0.1, 0.1]), 20 * MS, velocity_jump_limit=0.001))
    assert ex.receive(0, NAMES, 0, **node_trajectory(0, 0, 20, velocities)) == []
    bad = ex.receive(70 * MS, NAMES, 0, **node_trajectory(0, 70 * MS, 20, velocities))
    (switch,) = ex.report.switches
    speed_cap = 0.1 / 0.02
    if velocities == "central":
        assert bad == [] and switch.kind == "cubic"
        assert switch.velocity_jump == pytest.approx(0.0, abs=1e-9)
        assert switch.first_velocity_mismatch == pytest.approx(0.0, abs=1e-9)
        for t in np.arange(20, 400, 5) * MS:  # one smooth motion from a's first point: the parabola itself
            np.testing.assert_allclose(ex.position(int(t)), parabola(t), atol=1e-12)
            np.testing.assert_allclose(ex.velocity(int(t)), A_PARABOLA * t / 1e9 * np.array([1.0, -0.5]), atol=1e-9)
    else:
        assert switch.kind == "linear" and switch.first_velocity_mismatch is None
        # a's slope over [60, 80] ms vs the bridge from where a is at 70 ms (halfway) to x(90 ms)
        x = parabola(np.array([60, 80, 90]) * MS)[:, 0]
        jump = ((x[2] - (x[0] + x[1]) / 2) / 0.02 - (x[1] - x[0]) / 0.02) / speed_cap
        assert switch.velocity_jump == pytest.approx(jump, rel=1e-6)
        assert len(bad) == 1 and "velocity jumps by" in bad[0] and "linear into point 0" in bad[0], bad
    d = ex.report.to_dict()
    assert d["handovers"] == 1 and d["max_velocity_jump"] == round(switch.velocity_jump, 4)


def test_an_inconsistent_first_velocity_is_reported_against_the_motion_it_replaces() -> None:
    """The old one-sided first difference: the cubic bridge starts with a's velocity (no jump) but
    aims at a velocity half a step of acceleration off the motion a was executing there."""
    ex = _executor()
    assert ex.receive(0, NAMES, 0, **node_trajectory(0, 0, 20, "central")) == []
    assert ex.receive(60 * MS, NAMES, 0, **node_trajectory(0, 60 * MS, 20, "one_sided")) == []
    (switch,) = ex.report.switches
    assert switch.velocity_jump == pytest.approx(0.0, abs=1e-9)
    assert switch.first_velocity_mismatch == pytest.approx(A_PARABOLA * 0.01 / 5.0, rel=1e-6)


def test_a_hold_is_a_stop_and_not_counted_as_a_handover_jump() -> None:
    ex = _executor()
    assert ex.receive(0, NAMES, 0, **node_trajectory(0, 0, 20, "central")) == []
    here = ex.position(100 * MS)
    assert ex.receive(100 * MS, NAMES, 0, np.array([20 * MS]), here[None]) == []
    assert ex.report.switches[0].points == 1 and ex.report.switches[0].velocity_jump > 0
    assert ex.report.to_dict()["handovers"] == 0 and ex.report.to_dict()["max_velocity_jump"] == 0.0


def test_velocities_above_the_rate_cap_are_flagged() -> None:
    ex = _executor()
    v = np.array([[6.0, 0.0], [0.0, 0.0]])  # cap: 0.1 per 20 ms = 5 units/s
    bad = ex.receive(0, NAMES, 0, np.array([20, 40]) * MS, np.array([[0.0, 0.0], [0.05, 0.0]]), velocities=v)
    assert len(bad) == 1 and "velocity of joint 'a' at point 0 is 1.20 x the rate cap" in bad[0], bad


def test_a_future_stamp_fixes_when_the_first_point_is_reached_and_a_stale_one_is_flagged() -> None:
    """header.stamp = the node's now + delay: the JTC takes the trajectory over on arrival (Humble,
    Jazzy) and reaches point 0 at stamp + time_from_start, whenever the message arrived. A stamp
    whose first point has passed at arrival would start mid-trajectory; one that ends before
    arrival is rejected."""
    for arrival in (1_010 * MS, 1_040 * MS):  # 10 or 40 ms in transit, same stamp: same timing
        ex = _executor()
        assert ex.receive(900 * MS, NAMES, 0, np.array([20]) * MS, np.array([[0.0, 0.0]])) == []
        assert ex.receive(arrival, NAMES, 1_050 * MS, np.array([20, 40]) * MS,
                          np.array([[0.1, 0.0], [0.2, 0.0]])) == []
        np.testing.assert_allclose(ex.position(1_070 * MS), [0.1, 0.0])
        np.testing.assert_allclose(ex.position(1_080 * MS), [0.15, 0.0])
        np.testing.assert_allclose(ex.position(arrival), [0.0, 0.0])  # bridged from where it was
    ex = _executor()
    late = ex.receive(1_075 * MS, NAMES, 1_050 * MS, np.array([20, 40]) * MS, np.array([[0.1, 0.0], [0.2, 0.0]]))
    assert len(late) == 1 and "the first point was due 5.0 ms before arrival" in late[0], late
    gone = ex.receive(1_095 * MS, NAMES, 1_050 * MS, np.array([20, 40]) * MS, np.array([[0.1, 0.0], [0.2, 0.0]]))
    assert len(gone) == 1 and "ends before it arrives" in gone[0], gone


def test_more_torch_threads_only_when_clearly_faster() -> None:
    one, two = Candidate("torch", 1), Candidate("torch", 2)
    assert choose_settings({one: 301.0, two: 285.0}, CHUNK).threads == 1  # 5 % faster alone: not worth it
    assert choose_settings({one: 301.0, two: 150.0}, CHUNK).threads == 2


def test_settings_pick_the_fastest_candidate_and_real_time_when_it_fits() -> None:
    onnx, torch1, torch2 = Candidate("onnx", 1), Candidate("torch", 1), Candidate("torch", 2)
    s = choose_settings({onnx: 34.0, torch1: 98.0, torch2: 120.0}, CHUNK)
    assert (s.backend, s.threads, s.rate) == ("onnx", 1, 1.0)
    assert s.expected_ms == 68.0 and s.verdict == "ok"
    assert "inference: onnx, 34 ms here" in s.reasons[0] and "torch (2 threads) 120 ms" in s.reasons[0]
    assert "real time" in s.reasons[1]
    assert s.to_dict()["measured_ms"] == {"onnx": 34.0, "torch (1 thread)": 98.0, "torch (2 threads)": 120.0}


def test_settings_slow_the_playback_when_inference_does_not_fit_a_chunk() -> None:
    """285 ms per inference, planned as 570 ms in the live run, against 60 % of the 230 ms a 24-step
    chunk allows with one inference at a time -> 0.2x (114 ms on the bag clock); 515 ms -> 0.1x."""
    s = choose_settings({Candidate("torch", 1): 285.0}, CHUNK)
    assert s.rate == pytest.approx(0.2) and s.verdict == "expire"
    assert s.rate * s.expected_ms <= 0.6 * CHUNK.gapless_budget_ns / MS
    assert "0.2x real time" in s.reasons[1] and "backend: onnx" in s.reasons[1]
    assert choose_settings({Candidate("torch", 1): 515.0}, CHUNK).rate == pytest.approx(0.1)
    assert choose_settings({Candidate("torch", 1): 50_000.0}, CHUNK).rate == pytest.approx(0.1)  # floor
    assert choose_settings({Candidate("torch", 1): 515.0}, CHUNK, rate=0.5).rate == 0.5  # given
    with pytest.raises(ValueError):
        choose_settings({}, CHUNK)


def test_candidates() -> None:
    assert demo_candidates("auto", True, 2, None) == [Candidate("onnx", 1), Candidate("torch", 1),
                                                      Candidate("torch", 2)]
    assert demo_candidates("auto", False, 1, None) == [Candidate("torch", 1)]
    assert demo_candidates("onnx", True, 4, "3") == [Candidate("onnx", 3)]  # OMP_NUM_THREADS is kept
    assert demo_candidates("onnx", False, 2, None) == [Candidate("torch", 1), Candidate("torch", 2)]
    assert demo_candidates("torch", True, 2, None) == [Candidate("torch", 1), Candidate("torch", 2)]


def test_written_profile_applies_the_overrides(tmp_path: Path) -> None:
    from lightwam_ros.config import from_params, load_profile

    path = write_profile("demo", tmp_path / "profile.yaml", {"backend": "onnx", "chunk.max_inflight": 1})
    _, params = load_profile(str(path))
    cfg = from_params(params)
    assert cfg.backend.value == "onnx" and cfg.chunk.max_inflight == 1
    _, base = load_profile("demo")
    assert {k: v for k, v in params.items() if k != "backend"} == {k: v for k, v in base.items() if k != "backend"}


def _diag(t: int, ticks: int, accepted: int, **holds: int) -> tuple[int, dict, dict]:
    control = {"ticks": str(ticks), **{f"safety.hold.{k}": str(v) for k, v in holds.items()}}
    return t, control, {"chunks.accepted": str(accepted)}


def test_following_fraction_counts_ticks_after_the_first_chunk() -> None:
    samples = [_diag(0, 0, 0), _diag(100, 5, 0, no_chunk=5), _diag(200, 10, 1, no_chunk=8),
               _diag(300, 15, 2, no_chunk=8, chunk_exhausted=1), _diag(400, 20, 2, no_chunk=8, chunk_exhausted=2),
               _diag(500, 25, 2, no_chunk=8, chunk_exhausted=2, stale_state=5)]  # after the end of the bag
    assert following_after_first_chunk(samples, end_ns=400) == {"ticks": 10, "following": 8, "fraction": 0.8}
    assert following_after_first_chunk(samples)["fraction"] == pytest.approx(8 / 15, abs=1e-4)
    assert following_after_first_chunk(samples[:2])["ticks"] == 0  # no chunk yet


@pytest.mark.slow
def test_lightwam_demo_end_to_end(tiny_bundle, tmp_path: Path) -> None:
    """The demo adapts to this machine (backend threads, playback rate from the measured latency), so
    what is asserted holds at any CPU speed: the robot follows the policy on most control ticks once
    the first chunk is in. torch only: the ONNX export the demo adds to a bundle takes a minute on a
    busy 2-core machine; the choice between backends is tested above on given measurements."""
    bundle = tmp_path / "demo_tiny"
    shutil.copytree(tiny_bundle, bundle)
    result = run_demo(DemoOptions(out=tmp_path / "out", bundle=bundle, seconds=5.0, mode="live", backend="torch"))
    s = result.summary
    assert result.ok, summary_lines(s)
    assert s["bundle"]["built_now"] is False
    assert s["settings"]["backend"] == "torch" and 0.1 <= s["settings"]["playback_rate"] <= 1.0
    assert (tmp_path / "out" / "profile.yaml").is_file()
    assert s["chunks"]["published"] >= 3 and s["chunks"]["steps"] == 24
    assert s["executor"]["plan_trajectories"] >= 3 and s["executor"]["violations"] == 0
    assert s["frame_sets"]["frame_sets_used"] >= 3
    assert 40.0 <= s["node"]["rate_hz"] <= 52.0, s["node"]  # node clock: slowed with the playback
    assert s["node"]["inference_total_ms_p50"] > 0
    after = s["node"]["after_first_chunk"]
    assert after["ticks"] > 100 and after["fraction"] >= 0.6, (after, summary_lines(s))
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(result.summary_path.read_text())["executor"] == s["executor"]
    topics = s["outputs"]["topics"]
    assert topics["/demo/arm_controller/joint_trajectory"] >= 3
    assert topics["/lightwam_policy/action_chunk"] == s["chunks"]["published"]
    # the CLI entry point prints the summary (help only: a second full run would double the test time)
    out = subprocess.run([sys.executable, "-m", "lightwam_ros.cli", "demo", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--seconds" in out.stdout
