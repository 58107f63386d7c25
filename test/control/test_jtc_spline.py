"""control/jtc_spline.py: the JointTrajectoryController's spline choice and segments, and the knot
velocities the node sends (pure numpy: no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from lightwam_ros.control.jtc_spline import Knot, Segment, SplineKind, knot_velocities, sample, spline_kind

MS = 1_000_000
RNG = np.random.default_rng(7)


def knot(vel: bool = False, acc: bool = False, dims: int = 3) -> Knot:
    return Knot(RNG.normal(size=dims), RNG.normal(size=dims) if vel else None, RNG.normal(size=dims) if acc else None)


@pytest.mark.parametrize("a,b,kind", [
    (dict(), dict(), SplineKind.LINEAR),
    (dict(vel=True), dict(), SplineKind.LINEAR),  # both ends must carry velocities
    (dict(), dict(vel=True), SplineKind.LINEAR),  # (a JTC starting from a state without them: linear)
    (dict(vel=True), dict(vel=True), SplineKind.CUBIC),
    (dict(vel=True, acc=True), dict(vel=True), SplineKind.CUBIC),
    (dict(vel=True, acc=True), dict(vel=True, acc=True), SplineKind.QUINTIC),
])
def test_the_fields_both_ends_carry_choose_the_spline(a: dict, b: dict, kind: SplineKind) -> None:
    assert spline_kind(knot(**a), knot(**b)) is kind


@pytest.mark.parametrize("fields", [dict(), dict(vel=True), dict(vel=True, acc=True)])
def test_a_segment_meets_its_knots(fields: dict) -> None:
    """Positions at both knots always; velocities too for a cubic (Hermite) segment; accelerations
    too for a quintic."""
    a, b = knot(**fields), knot(**fields)
    seg = Segment(5_000 * MS, 5_037 * MS, a, b)
    (p0, v0, a0), (p1, v1, a1) = seg.at(seg.start_ns), seg.at(seg.end_ns)
    np.testing.assert_allclose(p0, a.positions, atol=1e-12)
    np.testing.assert_allclose(p1, b.positions, atol=1e-12)
    if fields.get("vel"):
        np.testing.assert_allclose(v0, a.velocities, atol=1e-9)
        np.testing.assert_allclose(v1, b.velocities, atol=1e-9)
    else:  # linear: the slope throughout, no acceleration
        np.testing.assert_allclose(v0, (b.positions - a.positions) / 0.037)
        np.testing.assert_allclose(v1, v0)
        np.testing.assert_array_equal(a0, 0.0)
    if fields.get("acc"):
        np.testing.assert_allclose(a0, a.accelerations, atol=1e-6)
        np.testing.assert_allclose(a1, b.accelerations, atol=1e-6)
    # outside the interval: the nearer end (what the controller holds)
    np.testing.assert_allclose(seg.at(seg.start_ns - MS)[0], a.positions, atol=1e-12)
    np.testing.assert_allclose(seg.at(seg.end_ns + MS)[0], b.positions, atol=1e-12)


def test_a_cubic_segment_reproduces_a_cubic_and_its_velocity_is_continuous_across_knots() -> None:
    """Hermite interpolation with the exact derivatives is exact for polynomials up to degree 3, so
    consecutive cubic segments through samples of one are one smooth curve."""
    c = np.array([0.1, -0.4, 2.0, -3.0])  # x(s) = c0 + c1 s + c2 s^2 + c3 s^3

    def x(s: float) -> np.ndarray:
        return np.array([sum(ci * s**i for i, ci in enumerate(c))])

    def dx(s: float) -> np.ndarray:
        return np.array([sum(i * ci * s ** (i - 1) for i, ci in enumerate(c) if i)])

    knots = [(k * 20 * MS, Knot(x(k * 0.02), dx(k * 0.02))) for k in range(5)]
    segs = [Segment(ta, tb, ka, kb) for (ta, ka), (tb, kb) in zip(knots, knots[1:])]
    for seg in segs:
        for t in np.linspace(seg.start_ns, seg.end_ns, 7).astype(np.int64):
            p, v, _ = seg.at(int(t))
            np.testing.assert_allclose(p, x(t / 1e9), atol=1e-12)
            np.testing.assert_allclose(v, dx(t / 1e9), atol=1e-9)
    for left, right in zip(segs, segs[1:]):
        np.testing.assert_allclose(left.at(left.end_ns)[1], right.at(right.start_ns)[1], atol=1e-9)


def test_linear_segments_jump_in_velocity_at_a_knot_where_cubic_ones_do_not() -> None:
    """Positions only: the velocity changes at each knot of a curved path (the JTC documents linear
    interpolation as discouraged for this reason)."""
    p = [np.array([0.0]), np.array([1.0]), np.array([4.0])]
    lin = [Segment(0, 20 * MS, Knot(p[0]), Knot(p[1])), Segment(20 * MS, 40 * MS, Knot(p[1]), Knot(p[2]))]
    assert abs(lin[1].at(20 * MS)[1][0] - lin[0].at(20 * MS)[1][0]) == pytest.approx(100.0)
    v = knot_velocities(p[0], np.stack(p[1:]), 20 * MS)
    cub = [Segment(0, 20 * MS, Knot(p[0], np.zeros(1)), Knot(p[1], v[0])),
           Segment(20 * MS, 40 * MS, Knot(p[1], v[0]), Knot(p[2], v[1]))]
    assert cub[1].at(20 * MS)[1][0] == pytest.approx(cub[0].at(20 * MS)[1][0])


def test_sample_follows_the_segments_and_holds_the_ends() -> None:
    """The first segment (no velocity at its start: linear), then cubic between knots with velocities."""
    knots = [Knot(np.array([0.0])), Knot(np.array([1.0]), np.array([50.0])), Knot(np.array([2.0]), np.array([0.0]))]
    times = np.array([0, 20, 40]) * MS
    assert sample(times, knots, -5 * MS)[0] == 0.0 and sample(times, knots, 60 * MS)[0] == 2.0
    assert sample(times, knots, 10 * MS)[0] == pytest.approx(0.5)  # linear
    cubic = Segment(20 * MS, 40 * MS, knots[1], knots[2])
    assert sample(times, knots, 30 * MS)[0] == pytest.approx(cubic.at(30 * MS)[0][0])
    assert sample(times, knots, 20 * MS)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="times for"):
        sample(times[:2], knots, 0)


def test_knot_velocities_are_central_differences_from_the_start_and_end_at_rest() -> None:
    anchor = np.array([0.0, 1.0])
    pts = np.array([[0.5, 1.0], [2.0, 0.0], [4.5, 0.5], [5.0, 0.5]])
    v = knot_velocities(anchor, pts, 500 * MS)
    # (p[k+1] - p[k-1]) / (2 * 0.5 s), p[-1] = anchor; the last exactly 0
    np.testing.assert_allclose(v, [[2.0, -1.0], [4.0, -0.5], [3.0, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(knot_velocities(anchor, pts[:1], 500 * MS), [[0.0, 0.0]])


def test_knot_velocities_are_exact_for_a_parabola_and_within_a_step_cap() -> None:
    """Central differences are exact for a quadratic -- the first point included, because the start
    is used; a one-sided first difference is off by half a step of acceleration. Points whose steps
    are capped at c per dt give velocities of at most c / dt."""
    dt = 20 * MS
    t = np.arange(0, 12) * 0.02
    x = (1.5 * t**2 - 0.3 * t)[:, None]
    v = knot_velocities(x[0], x[1:], dt)
    np.testing.assert_allclose(v[:-1, 0], 3.0 * t[1:-1] - 0.3, atol=1e-12)
    one_sided = (x[2, 0] - x[1, 0]) / 0.02
    assert abs(one_sided - (3.0 * t[1] - 0.3)) == pytest.approx(1.5 * 0.02, rel=1e-9)
    cap = 0.05
    steps = RNG.uniform(-cap, cap, size=(200, 4))
    pts = np.cumsum(steps, axis=0)
    vel = knot_velocities(np.zeros(4), pts, dt)
    assert np.all(np.abs(vel) <= cap / 0.02 + 1e-12)


@pytest.mark.parametrize("anchor,points,dt,fragment", [
    (np.zeros(2), np.zeros((3, 3)), 20 * MS, r"\[m, 2\]"),
    (np.zeros(2), np.zeros((3, 2)), 0, "dt_ns"),
])
def test_knot_velocities_errors(anchor: np.ndarray, points: np.ndarray, dt: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        knot_velocities(anchor, points, dt)


def test_knots_and_segments_refuse_mismatched_fields() -> None:
    with pytest.raises(ValueError, match="velocities"):
        Knot(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="before it starts"):
        Segment(10, 5, Knot(np.zeros(1)), Knot(np.zeros(1)))
