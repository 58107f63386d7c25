"""Seam and motion metrics (replay/metrics.py) on hand-made tick sequences, and the derivation of
chunk merges recorded per tick (replay/offline.py chunk_merges).

The sequences are built so the expected figures are known in closed form: a linear ramp has the
same step everywhere (seam ratio exactly 1), a quadratic has constant acceleration (jerk 0), and
the holds and merges are placed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lightwam_ros.config import from_params
from lightwam_ros.replay.metrics import (
    command_deltas,
    derivatives,
    first_execution_ages_ms,
    following_after,
    motion_report,
    motion_summary_lines,
    seam_jumps,
)
from lightwam_ros.replay.offline import chunk_merges
from lightwam_ros.types import ActionChunk

PERIOD = 20_000_000  # 50 Hz
NAMES = ("a", "b", "c")


def grid(n: int, t0: int = 1_000_000_000) -> np.ndarray:
    return t0 + PERIOD * np.arange(n, dtype=np.int64)


def ramp(n: int) -> np.ndarray:
    """a rises 0.01 per tick, b falls 0.02 per tick, c never moves."""
    k = np.arange(n, dtype=np.float64)
    return np.stack([0.01 * k, -0.02 * k, np.full(n, 0.3)], axis=1)


def test_a_smooth_ramp_has_seam_ratio_one_and_a_still_joint_has_none():
    n = 100
    t, c = grid(n), ramp(n)
    handover = np.zeros(n, bool)
    handover[[10, 30, 50, 70, 90]] = True
    s = seam_jumps(t, c, np.ones(n, bool), handover, PERIOD, NAMES)
    assert s["handovers"] == 5 and s["scored"] == 5 and s["after_hold"] == 0
    assert s["within_chunk_step"]["count"] == n - 1 - 5
    np.testing.assert_allclose(s["ratio_p99"][:2], [1.0, 1.0], atol=1e-3)
    assert s["ratio_p99"][2] is None  # c never moved within a chunk: no scale to compare with
    np.testing.assert_allclose(s["seam_jump"]["p99"][:2], [0.01, 0.02], atol=1e-9)
    assert s["worst"]["ratio_p99"] == pytest.approx(1.0, abs=1e-3)


def test_an_injected_jump_at_a_handover_shows_up_on_its_joint():
    n = 100
    t, c = grid(n), ramp(n)
    c[50:, 1] += 0.15  # joint b jumps by 0.15 where the chunk at tick 50 takes over
    handover = np.zeros(n, bool)
    handover[[10, 30, 50, 70, 90]] = True
    s = seam_jumps(t, c, np.ones(n, bool), handover, PERIOD, NAMES, origin_ns=int(t[0]))
    assert s["seam_jump"]["max"][1] == pytest.approx(0.13)  # -0.02 step + 0.15 jump
    assert s["within_chunk_step"]["p99"][1] == pytest.approx(0.02)  # the jump is not within a chunk
    assert s["ratio_p99"][1] > 5 and s["ratio_p99"][0] == pytest.approx(1.0, abs=1e-3)
    assert s["worst"]["joint"] == "b"
    top = s["largest"][0]
    assert top["joint"] == "b" and top["bag_time_s"] == pytest.approx(50 * PERIOD / 1e9)
    assert top["relative_to_within_p99"] == pytest.approx(0.13 / 0.02, rel=1e-3)
    # the same jump inside a chunk is a within-chunk step instead, and the seams stay at 1
    handover[50] = False
    s = seam_jumps(t, c, np.ones(n, bool), handover, PERIOD, NAMES)
    assert s["within_chunk_step"]["max"][1] == pytest.approx(0.13)
    assert s["seam_jump"]["max"][1] == pytest.approx(0.02)


def test_holds_gaps_and_silent_ticks_are_not_scored_as_steps():
    n = 40
    t, c = grid(n), ramp(n)
    following = np.ones(n, bool)
    following[15:20] = False  # a hold: the handover at 20 starts from the hold position
    c[15:20] = c[14]
    c[25] = np.nan  # a silent tick: nothing commanded
    t[30:] += PERIOD  # a tick missing from the record (inactive)
    handover = np.zeros(n, bool)
    handover[[20, 26, 30, 35]] = True
    d = command_deltas(t, c, PERIOD)
    assert np.isnan(d[0]).all() and np.isnan(d[25]).all() and np.isnan(d[26]).all() and np.isnan(d[30]).all()
    s = seam_jumps(t, c, following, handover, PERIOD, NAMES)
    # 20: after a hold; 26: after a silent tick; 30: across a gap -> only 35 is a scored seam
    assert s["handovers"] == 4 and s["scored"] == 1 and s["after_hold"] == 3
    assert s["within_chunk_step"]["max"][0] == pytest.approx(0.01)  # the hold's zero steps and jumps excluded


def test_jerk_of_constant_acceleration_is_zero_and_acceleration_exact():
    n = 60
    t = grid(n)
    tau = (t - t[0]) / 1e9
    c = np.stack([0.5 * 2.0 * tau ** 2, 1.0 - 0.5 * 0.8 * tau ** 2 + 0.1 * tau, np.zeros(n)], axis=1)
    vel, acc, jerk = derivatives(t, c, PERIOD)
    assert np.isnan(vel[0]).all() and np.isnan(acc[:2]).all() and np.isnan(jerk[:3]).all()
    np.testing.assert_allclose(acc[2:], np.tile([2.0, -0.8, 0.0], (n - 2, 1)), atol=1e-7)
    np.testing.assert_allclose(jerk[3:], 0.0, atol=1e-4)
    m = motion_report(t, c, np.ones(n, bool), [0], [int(t[0])], PERIOD, NAMES)["executed"]
    assert m["jerk"]["max"][0] == pytest.approx(0.0, abs=1e-3)
    assert m["acceleration"]["p50"][:2] == pytest.approx([2.0, 0.8], abs=1e-4)
    assert m["velocity"]["max"][0] == pytest.approx(2.0 * tau[-1] - 0.5 * 2.0 * 0.02, abs=1e-6)
    # a step in velocity (a kink) is a burst of jerk at exactly that tick
    kink = ramp(n)
    kink[30:, 0] += 0.01 * np.arange(n - 30)
    _, _, j = derivatives(t, kink, PERIOD)
    assert np.nanargmax(np.abs(j[:, 0])) in (31, 32)


def test_following_after_the_first_chunk_counts_from_its_merge():
    following = np.array([False] * 5 + [True] * 10 + [False] * 3 + [True] * 2)
    assert following_after(following, 5) == {"ticks": 15, "following": 12, "fraction": 0.8}
    assert following_after(following, None) == {"ticks": 0, "following": 0, "fraction": None}
    assert following_after(following, 0)["fraction"] == pytest.approx(12 / 20)


def test_observation_to_first_execution_age_per_chunk():
    n = 30
    t = grid(n)
    following = np.ones(n, bool)
    following[10:13] = False  # the chunk merged at 10 first moves the robot at 13
    commanded = np.ones(n, bool)
    stamps = [int(t[2]), int(t[8]), int(t[19]), int(t[18])]
    ages = first_execution_ages_ms(t, following, commanded, [4, 10, 20, 20], stamps)
    assert ages[0] == pytest.approx(2 * PERIOD / 1e6)
    assert ages[1] == pytest.approx(5 * PERIOD / 1e6)
    assert np.isnan(ages[2])  # replaced by a chunk merged at the same tick: never executed
    assert ages[3] == pytest.approx(2 * PERIOD / 1e6)
    r = motion_report(t, ramp(n), following, [4, 10, 20, 20], stamps, PERIOD, NAMES, origin_ns=int(t[0]))
    age = r["observation_to_first_execution_ms"]
    assert age["count"] == 3 and age["never_executed"] == 1 and age["max"] == pytest.approx(100.0)
    # the first merge starts the plan; two merges on one tick are one handover
    assert r["seams"]["handovers"] == 2 and r["chunks_merged"] == 4
    assert r["handover_bag_times_s"] == [pytest.approx(0.2), pytest.approx(0.4)]
    assert r["following_after_first_chunk"] == {"ticks": 26, "following": 23, "fraction": round(23 / 26, 4)}
    lines = motion_summary_lines(r)
    assert "2 handovers" in lines[0] and "23 of 26 ticks" in lines[1] and "|jerk|" in lines[2]
    assert motion_summary_lines({"available": False, "reason": "live"}) == [
        "motion and chunk seams: not available (live)"]


# --- merges derived from inference records ----------------------------------------------------
@dataclass(frozen=True)
class Req:
    request_ns: int
    ready_ns: int
    chunk: ActionChunk | None


@dataclass(frozen=True)
class Tk:
    t_ns: int


def _cfg():
    return from_params({"bundle": "b", "cameras.names": ["head"], "cameras.topics": ["head/image"],
                        "joints.names": list(NAMES), "safety.position_min": [-1.0] * 3,
                        "safety.position_max": [1.0] * 3, "safety.max_step": [0.1] * 3,
                        "chunk.execute_steps": 4})


def _chunk(stamp: int, value: float = 0.0, steps: int = 8) -> ActionChunk:
    return ActionChunk(actions=np.full((steps, 3), value, np.float32), stamp_ns=stamp, dt_ns=PERIOD, trained_steps=6)


def test_chunk_merges_are_the_ticks_that_accepted_chunks():
    @dataclass(frozen=True)
    class Exact:
        t_ns: int
        accepted_stamps_ns: tuple[int, ...] = ()

    ticks = [Exact(1), Exact(2, (7,)), Exact(3), Exact(4, (8, 9))]
    assert chunk_merges(ticks) == [(1, 7), (3, 8), (3, 9)]


def test_the_plot_marks_handovers(tmp_path):
    from lightwam_ros.replay.metrics import plot_replay

    t = grid(50)
    out = plot_replay(tmp_path / "p.png", NAMES, [], None, (t, ramp(50)), origin_ns=int(t[0]),
                      handovers_ns=[int(t[10]), int(t[30])])
    assert out.stat().st_size > 1000


def test_open_loop_error_against_the_hold_still_baseline() -> None:
    """Reference: a rises 0.01 per 20 ms, b falls 0.02, c stands still (ramp). A chunk that predicts
    the ramp exactly scores 0; one that holds its first position scores the baseline itself (ratio
    1); one half-way between scores half. Hand-computed baseline over 4 steps: mean |k x step| over
    k = 0..3 and the three joints = (0.01 + 0.02 + 0) x mean(k) / 3 = 0.03 x 1.5 / 3 = 0.015."""
    from lightwam_ros.replay.metrics import ReferenceKind, ReferenceTrack, open_loop_error

    times = grid(40)
    track = ReferenceTrack("/joint_states", ReferenceKind.JOINT_STATES, NAMES, times, ramp(40))
    stamp = int(times[10])

    def chunk(actions: np.ndarray) -> ActionChunk:
        return ActionChunk(actions=actions.astype(np.float32), stamp_ns=stamp, dt_ns=PERIOD, trained_steps=4)

    exact = ramp(40)[10:14]
    held = np.repeat(ramp(40)[10:11], 4, axis=0)
    for actions, mae, ratio in ((exact, 0.0, 0.0), (held, 0.015, 1.0), ((exact + held) / 2, 0.0075, 0.5)):
        report = open_loop_error([chunk(actions)], track)
        assert report["hold_still_mae"] == pytest.approx(0.015, abs=1e-6)
        assert report["mae"] == pytest.approx(mae, abs=1e-6)
        assert report["mae_vs_hold_still"] == pytest.approx(ratio, abs=1e-4)
