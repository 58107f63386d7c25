"""A JointTrajectoryController's interpolation, and the knot velocities that make it smooth (pure numpy).

API
- ``Knot(positions [A], velocities [A] | None = None, accelerations [A] | None = None)`` -- one
  waypoint as a JTC sees it (a JointTrajectoryPoint, or the state it starts a trajectory from).
- ``spline_kind(a, b) -> SplineKind`` -- LINEAR, CUBIC or QUINTIC for the segment a -> b.
- ``Segment(start_ns, end_ns, a, b)`` -- that spline between two knots: ``kind``,
  ``at(t_ns) -> (position, velocity, acceleration)`` (each [A]), ``max_speed(samples)``.
- ``sample(times_ns [n], knots, t_ns) -> [A]`` -- the position along knots at those times, each
  segment the JTC's spline (the node's record of where the controller is on what it was sent).
- ``knot_velocities(anchor [A], points [m, A], dt_ns) -> [m, A]`` -- the velocities the node sends.

The spline choice is the one the JointTrajectoryController of ros2_controllers documents for its
``splines`` interpolation (docs/design.md, "JointTrajectoryController conventions"): a segment
whose two ends both carry velocities is a cubic Hermite spline, one whose ends both carry
velocities and accelerations is a quintic, anything else is linear between the positions. The
segment from where the controller is when a trajectory starts to the trajectory's first point is
one such segment too, with the controller's own state (position and, if it has them, velocity and
acceleration) as its first knot.

Why the stand-in needs the splines and not only linear interpolation: with velocities in the
points the executed motion between points is not the straight line, and what a handover does to
the robot -- does the velocity jump where one trajectory takes over from the next -- is only
visible with the spline the controller really runs.

``knot_velocities``: why central differences over the trajectory *with its start*. Point k of a
trajectory is at (k + 1) * dt after the trajectory's start, where the controller is at the
``anchor`` (the position the node's safety filter measured the trajectory's first step from). The
velocity at point k is (p[k+1] - p[k-1]) / (2 dt) with p[-1] = anchor: the second-order estimate of
the plan's velocity at that knot, and the same formula the previous trajectory used for the same
plan instant, so at a handover the first point of the new trajectory carries the velocity the
executing trajectory has there (when the plans agree). A one-sided difference at the first point,
(p[1] - p[0]) / dt, is the velocity half a step later: on an accelerating plan it differs by
acceleration * dt / 2, and a cubic segment forced through it bends. The last point's velocity is 0:
a Jazzy JointTrajectoryController rejects a trajectory ending in motion by default, and the
controller holds the last point anyway. Central differences of points whose steps are capped at
``c`` per dt are at most ``c / dt`` (a step cap is a speed cap), so the velocities obey the same
safety bound as the positions they are computed from -- they must be computed from the *limited*
points, never from the raw plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class SplineKind(Enum):
    LINEAR = "linear"  # positions only: velocity jumps at every knot
    CUBIC = "cubic"  # positions and velocities: velocity continuous at the knots
    QUINTIC = "quintic"  # positions, velocities and accelerations: acceleration continuous too


def _vector(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else np.asarray(x, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class Knot:
    """One waypoint: positions, and velocities / accelerations when given (None: not given)."""

    positions: np.ndarray
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None

    def __post_init__(self) -> None:
        p = _vector(self.positions)
        object.__setattr__(self, "positions", p)
        for name in ("velocities", "accelerations"):
            v = _vector(getattr(self, name))
            if v is not None and v.shape != p.shape:
                raise ValueError(f"knot {name} have {v.size} values for {p.size} positions")
            object.__setattr__(self, name, v)


def spline_kind(a: Knot, b: Knot) -> SplineKind:
    """The spline a JTC interpolates a -> b with: what both ends carry decides."""
    if a.velocities is None or b.velocities is None:
        return SplineKind.LINEAR
    if a.accelerations is None or b.accelerations is None:
        return SplineKind.CUBIC
    return SplineKind.QUINTIC


def _coefficients(kind: SplineKind, a: Knot, b: Knot, t: float) -> np.ndarray:
    """Polynomial coefficients c[i] (of s^i, s = seconds since a) per joint: [degree + 1, A].
    The textbook boundary-value solutions: the polynomial of the lowest degree that meets the
    given positions (and velocities, accelerations) at both ends."""
    pa, pb = a.positions, b.positions
    d = pb - pa
    if t <= 0.0:  # a zero-length segment: it is at its end
        return pb[None].copy()
    if kind is SplineKind.LINEAR:
        return np.stack([pa, d / t])
    va, vb = a.velocities, b.velocities
    if kind is SplineKind.CUBIC:
        return np.stack([pa, va, (3 * d - (2 * va + vb) * t) / t**2, (-2 * d + (va + vb) * t) / t**3])
    aa, ab = a.accelerations, b.accelerations
    return np.stack([
        pa, va, aa / 2,
        (20 * d - (8 * vb + 12 * va) * t - (3 * aa - ab) * t**2) / (2 * t**3),
        (-30 * d + (14 * vb + 16 * va) * t + (3 * aa - 2 * ab) * t**2) / (2 * t**4),
        (12 * d - 6 * (vb + va) * t + (ab - aa) * t**2) / (2 * t**5),
    ])


@dataclass
class Segment:
    """The JTC's spline from knot ``a`` at ``start_ns`` to knot ``b`` at ``end_ns``. Outside that
    interval it is evaluated at the nearer end (what the controller holds)."""

    start_ns: int
    end_ns: int
    a: Knot
    b: Knot
    kind: SplineKind = field(init=False)
    _c: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.end_ns < self.start_ns:
            raise ValueError(f"segment ends ({self.end_ns}) before it starts ({self.start_ns})")
        self.kind = spline_kind(self.a, self.b)
        self._c = _coefficients(self.kind, self.a, self.b, (self.end_ns - self.start_ns) / 1e9)

    def at(self, t_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, velocity, acceleration) at t_ns (each [A]); velocity and acceleration are
        those of the polynomial (a linear segment: its slope, and 0)."""
        s = (min(max(int(t_ns), self.start_ns), self.end_ns) - self.start_ns) / 1e9
        c = self._c
        n = len(c)
        pos = sum(c[i] * s**i for i in range(n))
        vel = sum(i * c[i] * s ** (i - 1) for i in range(1, n)) if n > 1 else np.zeros_like(c[0])
        acc = sum(i * (i - 1) * c[i] * s ** (i - 2) for i in range(2, n)) if n > 2 else np.zeros_like(c[0])
        return np.asarray(pos, dtype=np.float64), np.asarray(vel, dtype=np.float64), \
            np.asarray(acc, dtype=np.float64)

    def max_speed(self, samples: int = 9) -> np.ndarray:
        """Max |velocity| per joint over ``samples`` evenly spaced instants, ends included (a linear
        segment's speed is its slope; a cubic's peaks inside)."""
        ts = np.linspace(self.start_ns, self.end_ns, max(2, samples)).astype(np.int64)
        return np.max(np.abs(np.stack([self.at(int(t))[1] for t in ts])), axis=0)


def sample(times_ns: np.ndarray, knots: list[Knot], t_ns: int) -> np.ndarray:
    """Position at ``t_ns`` along ``knots`` reached at ``times_ns`` (strictly increasing), each segment
    the spline its two knots select; before the first knot its position, after the last the last's."""
    t = np.asarray(times_ns, dtype=np.int64)
    if len(t) != len(knots) or len(t) == 0:
        raise ValueError(f"{len(t)} times for {len(knots)} knots")
    if t_ns <= t[0]:
        return knots[0].positions.copy()
    if t_ns >= t[-1]:
        return knots[-1].positions.copy()
    i = int(np.searchsorted(t, t_ns, side="right")) - 1
    return Segment(int(t[i]), int(t[i + 1]), knots[i], knots[i + 1]).at(t_ns)[0]


def knot_velocities(anchor: np.ndarray, points: np.ndarray, dt_ns: int) -> np.ndarray:
    """Velocities for ``points[k]`` at (k + 1) * dt_ns after a start at ``anchor``: central
    differences over (anchor, points[0], ..., points[m-1]), the last exactly 0 (module doc)."""
    if dt_ns <= 0:
        raise ValueError(f"dt_ns must be > 0, got {dt_ns}")
    p = np.asarray(points, dtype=np.float64)
    a = np.asarray(anchor, dtype=np.float64).reshape(1, -1)
    if p.ndim != 2 or p.shape[1] != a.shape[1]:
        raise ValueError(f"points must be [m, {a.shape[1]}] for an anchor of {a.shape[1]} values, got {p.shape}")
    v = np.zeros_like(p)  # the last row stays 0
    if len(p) >= 2:
        seq = np.vstack([a, p])
        v[:-1] = (seq[2:] - seq[:-2]) / (2 * dt_ns / 1e9)
    return v
