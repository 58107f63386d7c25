"""SafetyFilter: limits, a per-tick change cap, chunk refusal, and holds that never jump.

API
- ``HoldReason`` (enum), ``hold_reason(...) -> HoldReason | None`` -- the node's per-tick gate, in
  priority order.
- ``SafetyFilter(config: SafetyConfig, joint_names)``
- ``check_chunk(actions [n, A]) -> str | None`` -- None if the rows may run, else why refused.
- ``step(target [A], measured=None) -> np.ndarray | None`` -- clamp + cap, becomes the last command;
  ``anchor(measured)`` -- the reference itself becomes the command (a trajectory's start);
  ``track(position)`` -- where the trajectory executor is becomes the command (a handover's start).
- ``hold(reason, measured=None) -> np.ndarray | None`` -- the position to hold (never zeros), to be
  published; ``hold_with(reason, command)`` -- a configured neutral command is published instead;
  ``silent(reason)`` -- nothing is published this tick.
- ``limit_trajectory(points [m, A], dt_ns, control_period_ns, measured=None, first_dt_ns=None) -> np.ndarray | None``
- ``last_commanded``, ``reset()``, ``reconfigure(config)``, ``stats()``

Clamp or refuse: a model output slightly beyond a joint limit is normal near the edge of the
workspace (regression overshoot, limits tighter than the training data) and is clamped. An output
beyond a limit by more than ``refuse_margin * (max - min)``, or any NaN/Inf, means the model, the
normalization statistics or the action/joint mapping is wrong; clamping it would still drive the
joint to its limit at full rate, so the whole chunk is refused and the robot holds. Only the rows
that will execute are checked (the untrained tail of a chunk is never run, so it may be anything).

The cap is relative to the last *commanded* position, not the measured one: a controller lags its
command, and capping against the measured position would let the command run away from it by a
step each tick. A published hold keeps the last command, so the first step after it is capped from
where the robot was told to be. But a tick on which nothing is published (``silent``: dry run, a
joint-trajectory hold after its one hold message, a delta-action hold, inactive) leaves the robot to
whoever else moves it -- a teleoperator, a planner bringing it to a start pose -- so it forgets the
last command: the first step after any silence starts from the measured joint positions (in action
order), like the first step after ``reset()`` (activation). Without a measured position no command
is produced at all -- a filter that does not know where the robot is cannot bound a jump. Targets
or references that are not finite produce no command either (counted as ``non_finite``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import Enum

import numpy as np

from lightwam_ros.config import SafetyConfig
from lightwam_ros.control.scheduler import TickStatus


class HoldReason(Enum):
    """Why the robot holds instead of following the policy, in priority order (hold_reason)."""

    INACTIVE = "inactive"  # lifecycle node not active
    PAUSED = "paused"  # ~/pause called
    STALE_STATE = "stale_state"  # no joint state, or older than joints.max_age
    STALE_CAMERAS = "stale_cameras"  # a camera is dead (no current frame for sync.camera_timeout)
    NO_INSTRUCTION = "no_instruction"  # no instruction received and instruction.default is ""
    CHUNK_REFUSED = "chunk_refused"  # the last chunk failed check_chunk (NaN/Inf, wildly off limits)
    NO_CHUNK = "no_chunk"  # nothing computed yet
    CHUNK_EXHAUSTED = "chunk_exhausted"  # the plan ended before the next chunk arrived
    DRY_RUN = "dry_run"  # dry_run: everything runs, nothing is commanded


_TICK_HOLDS = {TickStatus.REFUSED: HoldReason.CHUNK_REFUSED, TickStatus.EMPTY: HoldReason.NO_CHUNK,
               TickStatus.EXHAUSTED: HoldReason.CHUNK_EXHAUSTED}


def hold_reason(*, active: bool, paused: bool, state_fresh: bool, dead_cameras: Sequence[str],
                have_instruction: bool, tick_status: TickStatus, dry_run: bool) -> HoldReason | None:
    """The single reason the robot must not follow the plan this tick, or None.

    ``tick_status`` is ``ChunkScheduler.tick(now).status``. DRY_RUN means: publish nothing on the
    output (not even a hold), everything else runs. Order: lifecycle and operator first, then inputs
    (a stale input overrides a plan in flight: the plan was computed from a world that may no longer
    hold), then the plan itself, then dry_run.
    """
    if not active:
        return HoldReason.INACTIVE
    if paused:
        return HoldReason.PAUSED
    if not state_fresh:
        return HoldReason.STALE_STATE
    if dead_cameras:
        return HoldReason.STALE_CAMERAS
    if not have_instruction:
        return HoldReason.NO_INSTRUCTION
    if tick_status is not TickStatus.OK:
        return _TICK_HOLDS[tick_status]
    if dry_run:
        return HoldReason.DRY_RUN
    return None


class SafetyFilter:
    """Per-dim limits and rate cap over the commanded positions (see the module doc)."""

    def __init__(self, config: SafetyConfig, joint_names: Sequence[str]):
        self._names = tuple(joint_names)
        self._counts: Counter[str] = Counter()
        self._holds: Counter[HoldReason] = Counter()
        self.reconfigure(config)
        self.reset()

    def reconfigure(self, config: SafetyConfig) -> None:
        if config.dim != len(self._names):
            raise ValueError(f"safety limits have {config.dim} dims but there are {len(self._names)} "
                             f"action names {list(self._names)}")
        self._config = config
        self._lo = np.asarray(config.position_min, dtype=np.float64)
        self._hi = np.asarray(config.position_max, dtype=np.float64)
        self._cap = np.asarray(config.max_step, dtype=np.float64)
        margin = config.refuse_margin * (self._hi - self._lo)
        self._refuse_lo, self._refuse_hi = self._lo - margin, self._hi + margin

    def reset(self) -> None:
        """Forget the last command (on activation: the robot may have been moved meanwhile)."""
        self._last: np.ndarray | None = None

    @property
    def config(self) -> SafetyConfig:
        return self._config

    @property
    def last_commanded(self) -> np.ndarray | None:
        return None if self._last is None else self._last.copy()

    def _vector(self, x: np.ndarray | Sequence[float], what: str) -> np.ndarray:
        v = np.asarray(x, dtype=np.float64)
        if v.shape != (len(self._names),):
            raise ValueError(f"{what} must have shape ({len(self._names)},), got {v.shape}")
        return v

    def check_chunk(self, actions: np.ndarray) -> str | None:
        """None if every row may run; otherwise why the chunk is refused (names the dim).
        Pass only the rows that will execute."""
        reason = self._refusal(np.asarray(actions, dtype=np.float64))
        if reason is not None:
            self._counts["refused"] += 1
        return reason

    def _refusal(self, a: np.ndarray) -> str | None:
        if a.ndim != 2 or a.shape[1] != len(self._names):
            return f"chunk shape {a.shape} does not match {len(self._names)} action dims"
        bad = ~np.isfinite(a)
        if bad.any():
            k, d = map(int, np.argwhere(bad)[0])
            return f"chunk has non-finite value {a[k, d]} at step {k}, dim {d} ('{self._names[d]}')"
        off = (a < self._refuse_lo) | (a > self._refuse_hi)
        if off.any():
            k, d = map(int, np.argwhere(off)[0])
            return (f"chunk step {k} dim {d} ('{self._names[d]}') = {a[k, d]:.4g} is beyond the limits "
                    f"[{self._lo[d]:.4g}, {self._hi[d]:.4g}] by more than safety.refuse_margin "
                    f"{self._config.refuse_margin} of the range")
        return None

    def _reference(self, measured: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
        if self._last is not None:
            return self._last
        if measured is None:
            return None
        ref = self._vector(measured, "measured")
        if not np.isfinite(ref).all():
            self._counts["non_finite"] += 1
            return None
        return ref

    def step(self, target: np.ndarray, measured: np.ndarray | Sequence[float] | None = None) -> np.ndarray | None:
        """Clamp ``target`` to the limits, move at most max_step from the last command (or from
        ``measured`` if nothing was commanded since reset), record and return it. None (nothing
        commanded) if there is no reference position."""
        t = self._vector(target, "target")
        if not np.isfinite(t).all():
            self._counts["non_finite"] += 1
            return None
        ref = self._reference(measured)
        if ref is None:
            self._counts["no_reference"] += 1
            return None
        clamped = np.clip(t, self._lo, self._hi)
        if (clamped != t).any():
            self._counts["clamped"] += 1
        out = ref + np.clip(clamped - ref, -self._cap, self._cap)
        if (out != clamped).any():
            self._counts["capped"] += 1
        self._last = out
        return out.copy()

    def hold(self, reason: HoldReason, measured: np.ndarray | Sequence[float] | None = None) -> np.ndarray | None:
        """The position to hold: the last command; if nothing was commanded, the measured position
        (which then becomes the last command); else None (command nothing). Never zeros, never
        clamped (clamping a measured position outside the limits would move the robot)."""
        self._holds[reason] += 1
        ref = self._reference(measured)
        if ref is None:
            return None
        self._last = ref.copy()
        return ref.copy()

    def anchor(self, measured: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
        """Take the reference position (the last command, else the measured one) as the command
        for now without moving: what a trajectory published after a silence starts from. None
        without a reference."""
        ref = self._reference(measured)
        if ref is None:
            self._counts["no_reference"] += 1
            return None
        self._last = ref.copy()
        return ref.copy()

    def track(self, position: np.ndarray | Sequence[float]) -> np.ndarray | None:
        """The executor is at ``position`` -- a point on a trajectory this filter limited, where a
        JointTrajectoryController executing it is now -- so that is the last command: the next
        step, and a trajectory sent now, are capped from there. Why not from this tick's step: a
        new plan merged this tick would already have moved the command toward it, by up to
        max_step, and the executor never receives that step. None (nothing recorded) if not finite."""
        v = self._vector(position, "position")
        if not np.isfinite(v).all():
            self._counts["non_finite"] += 1
            return None
        self._last = v.copy()
        return v.copy()

    def hold_with(self, reason: HoldReason, command: np.ndarray | Sequence[float]) -> np.ndarray:
        """A hold that publishes a configured neutral command (delta action spaces): it becomes
        the last command, so the first step after it is capped from it."""
        self._holds[reason] += 1
        self._last = self._vector(command, "hold command").copy()
        return self._last.copy()

    def silent(self, reason: HoldReason) -> None:
        """A hold on which nothing is published: the robot may be moved by someone else meanwhile,
        so the last command is forgotten and the next step starts from the measured position."""
        self._holds[reason] += 1
        self._last = None

    def limit_trajectory(self, points: np.ndarray, dt_ns: int, control_period_ns: int,
                         measured: np.ndarray | Sequence[float] | None = None,
                         first_dt_ns: int | None = None) -> np.ndarray | None:
        """Clamp a trajectory and cap each point's change from the previous one (the first from the
        last command or ``measured``) at max_step * dt / control period, i.e. the same speed bound
        as per-tick streaming. ``first_dt_ns`` (default dt_ns) is the time from the reference to the
        first point: the controller samples the plan from a later start (output.trajectory_start_delay)
        and passes that delay with the plan's value at the start as the first row -- with 0 that row
        is the reference itself. Does not change the last command (the per-tick step() tracks what
        the controller is executing). None without a reference position."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self._names):
            raise ValueError(f"trajectory must be [m, {len(self._names)}], got {p.shape}")
        ref = self._reference(measured)
        if ref is None or not np.isfinite(p).all():
            return None
        first = dt_ns if first_dt_ns is None else first_dt_ns
        if first < 0:
            raise ValueError(f"first_dt_ns must be >= 0, got {first}")
        cap = self._cap * (dt_ns / control_period_ns)
        out = np.empty_like(p)
        prev = ref
        for k, row in enumerate(np.clip(p, self._lo, self._hi)):
            step = cap if k else self._cap * (first / control_period_ns)
            prev = prev + np.clip(row - prev, -step, step)
            out[k] = prev
        return out

    def stats(self) -> dict[str, int]:
        """Cumulative counts: clamped/capped ticks, refused chunks, steps without a reference,
        and holds per HoldReason value ("hold.<reason>")."""
        out = {k: self._counts[k] for k in ("clamped", "capped", "refused", "no_reference", "non_finite")}
        out.update({f"hold.{r.value}": self._holds[r] for r in HoldReason})
        return out
