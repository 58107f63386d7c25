"""SafetyFilter and hold_reason: clamp, per-tick cap from the last command, refusal, holds."""

from __future__ import annotations

import numpy as np
import pytest

from lightwam_ros.config import SafetyConfig
from lightwam_ros.control.safety import HoldReason, SafetyFilter, hold_reason
from lightwam_ros.control.scheduler import TickStatus

NAMES = ("shoulder", "elbow", "gripper")
CFG = SafetyConfig(position_min=(-1.0, -2.0, 0.0), position_max=(1.0, 2.0, 0.04),
                   max_step=(0.1, 0.5, 0.01), refuse_margin=0.25)


def f() -> SafetyFilter:
    return SafetyFilter(CFG, NAMES)


def test_first_step_capped_from_measured_then_from_last_command():
    s = f()
    out = s.step([5.0, -5.0, 1.0], measured=[0.0, 0.0, 0.0])
    np.testing.assert_allclose(out, [0.1, -0.5, 0.01])
    out = s.step([5.0, -5.0, 1.0], measured=[0.9, 0.9, 0.9])  # measured is ignored once commanded
    np.testing.assert_allclose(out, [0.2, -1.0, 0.02])
    for _ in range(20):
        out = s.step([5.0, -5.0, 1.0])
    np.testing.assert_allclose(out, [1.0, -2.0, 0.04])  # clamped to the limits, never beyond
    np.testing.assert_allclose(s.last_commanded, out)


def test_in_limits_small_change_passes_unchanged():
    s = f()
    s.step([0.0, 0.0, 0.02], measured=[0.0, 0.0, 0.02])
    np.testing.assert_array_equal(s.step([0.05, -0.3, 0.025]), [0.05, -0.3, 0.025])
    assert s.stats()["clamped"] == 0 and s.stats()["capped"] == 0


def test_no_reference_means_no_command():
    s = f()
    assert s.step([0.0, 0.0, 0.0]) is None
    assert s.hold(HoldReason.NO_CHUNK) is None
    assert s.stats()["no_reference"] == 1 and s.last_commanded is None


def test_hold_is_last_command_never_zero_and_no_jump_after():
    s = f()
    s.step([0.5, 1.0, 0.03], measured=[0.5, 1.0, 0.03])
    held = s.hold(HoldReason.STALE_CAMERAS, measured=[0.0, 0.0, 0.0])
    np.testing.assert_array_equal(held, [0.5, 1.0, 0.03])
    np.testing.assert_allclose(s.step([-1.0, -2.0, 0.0]), [0.4, 0.5, 0.02])  # capped from the hold
    assert s.stats()["hold.stale_cameras"] == 1


def test_hold_without_command_uses_measured_unclamped():
    s = f()
    held = s.hold(HoldReason.NO_CHUNK, measured=[1.5, 0.0, 0.0])  # outside the shoulder limit
    np.testing.assert_array_equal(held, [1.5, 0.0, 0.0])
    # then the command walks back into the limits at the capped rate
    np.testing.assert_allclose(s.step([1.0, 0.0, 0.0]), [1.4, 0.0, 0.0])


def test_reset_forgets_last_command():
    s = f()
    s.step([0.5, 0.0, 0.0], measured=[0.5, 0.0, 0.0])
    s.reset()
    assert s.last_commanded is None
    # the robot was moved while inactive: the first step is capped from where it now is
    np.testing.assert_allclose(s.step([0.5, 0.0, 0.0], measured=[-0.5, 0.0, 0.0]), [-0.4, 0.0, 0.0])


def test_check_chunk_accepts_small_excursions_that_step_clamps():
    s = f()
    # shoulder range 2 -> refuse beyond 1 + 0.5; gripper range 0.04 -> beyond 0.04 + 0.01
    ok = np.array([[1.5, 2.0, 0.05], [-1.5, -3.0, -0.01]])
    assert s.check_chunk(ok) is None
    s.step([0, 0, 0], measured=[1.0, 0.0, 0.04])
    np.testing.assert_allclose(s.step(ok[0]), [1.0, 0.5, 0.04])  # clamped (and capped)


@pytest.mark.parametrize("row,fragment", [
    ([np.nan, 0.0, 0.0], "non-finite value nan at step 1, dim 0 ('shoulder')"),
    ([0.0, np.inf, 0.0], "non-finite value inf at step 1, dim 1 ('elbow')"),
    ([1.5001, 0.0, 0.0], "step 1 dim 0 ('shoulder') = 1.5 is beyond the limits [-1, 1]"),
    ([0.0, 0.0, 0.0501], "dim 2 ('gripper')"),
    ([0.0, -3.01, 0.0], "dim 1 ('elbow')"),
])
def test_check_chunk_refuses_non_finite_and_wild_values(row, fragment):
    s = f()
    reason = s.check_chunk(np.array([[0.0, 0.0, 0.0], row]))
    assert reason is not None and fragment in reason
    assert s.stats()["refused"] == 1


def test_check_chunk_shape_and_zero_margin():
    s = f()
    assert "does not match 3 action dims" in s.check_chunk(np.zeros((4, 2)))
    assert s.stats()["refused"] == 1
    strict = SafetyFilter(SafetyConfig(CFG.position_min, CFG.position_max, CFG.max_step, 0.0), NAMES)
    assert strict.check_chunk(np.array([[1.0, 2.0, 0.04]])) is None
    assert strict.check_chunk(np.array([[1.0 + 1e-9, 0.0, 0.0]])) is not None


def test_limit_trajectory_scales_cap_with_point_spacing():
    s = f()
    s.step([0.0, 0.0, 0.0], measured=[0.0, 0.0, 0.0])
    pts = np.array([[1.0, 0.0, 0.0]] * 3 + [[5.0, 0.0, 0.0]])
    # points 40 ms apart, control period 20 ms: 2 ticks per point -> 0.2 per point
    out = s.limit_trajectory(pts, dt_ns=40_000_000, control_period_ns=20_000_000)
    np.testing.assert_allclose(out[:, 0], [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_array_equal(s.last_commanded, [0.0, 0.0, 0.0])  # unchanged
    assert f().limit_trajectory(pts, 40_000_000, 20_000_000) is None
    out = f().limit_trajectory(pts, 20_000_000, 20_000_000, measured=[0.95, 0.0, 0.0])
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 1.0, 1.0])  # clamped


def test_shape_errors_and_reconfigure():
    s = f()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        s.step([0.0, 0.0], measured=[0.0, 0.0])
    with pytest.raises(ValueError, match="2 dims"):
        s.reconfigure(SafetyConfig((0.0, 0.0), (1.0, 1.0), (0.1, 0.1)))
    s.step([0.0, 0.0, 0.0], measured=[0.0, 0.0, 0.0])
    s.reconfigure(SafetyConfig(CFG.position_min, CFG.position_max, (1.0, 1.0, 1.0)))
    np.testing.assert_allclose(s.step([0.9, 0.0, 0.0]), [0.9, 0.0, 0.0])  # new cap, last command kept


GOOD = dict(active=True, paused=False, state_fresh=True, dead_cameras=[], have_instruction=True,
            tick_status=TickStatus.OK, dry_run=False)


@pytest.mark.parametrize("change,expected", [
    ({}, None),
    ({"active": False}, HoldReason.INACTIVE),
    ({"paused": True}, HoldReason.PAUSED),
    ({"state_fresh": False}, HoldReason.STALE_STATE),
    ({"dead_cameras": ["left"]}, HoldReason.STALE_CAMERAS),
    ({"have_instruction": False}, HoldReason.NO_INSTRUCTION),
    ({"tick_status": TickStatus.REFUSED}, HoldReason.CHUNK_REFUSED),
    ({"tick_status": TickStatus.EMPTY}, HoldReason.NO_CHUNK),
    ({"tick_status": TickStatus.EXHAUSTED}, HoldReason.CHUNK_EXHAUSTED),
    ({"dry_run": True}, HoldReason.DRY_RUN),
    ({"active": False, "paused": True, "dead_cameras": ["x"]}, HoldReason.INACTIVE),
    ({"paused": True, "state_fresh": False}, HoldReason.PAUSED),
    ({"dead_cameras": ["x"], "tick_status": TickStatus.OK, "dry_run": True}, HoldReason.STALE_CAMERAS),
    ({"tick_status": TickStatus.EMPTY, "dry_run": True}, HoldReason.NO_CHUNK),
])
def test_hold_reason_priority(change, expected):
    assert hold_reason(**{**GOOD, **change}) is expected
