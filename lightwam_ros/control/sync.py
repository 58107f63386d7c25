"""FrameSync: approximate-time matching of N camera streams, plus staleness and liveness.

API
- ``FrameSync(camera_names, config: SyncConfig, now_ns)``
- ``add(camera, stamp_ns, image, now_ns) -> FrameSet | None`` -- offer one frame; returns a fresh
  synchronized set when this frame completes one (state/instruction left None for the caller).
- ``prune(now_ns) -> int`` -- drop queued frames too old to ever be part of a fresh set.
- ``dead_cameras(now_ns) -> list[str]``, ``silence_ns(now_ns) -> dict[str, int]``
- ``stats() -> SyncStats`` -- sets formed/emitted, drops by DropReason, arrivals, queue depths.
- ``reconfigure(config)``, ``reset(now_ns)``
- ``FUTURE_TOLERANCE_NS``, ``DropReason``

Matching is message_filters' ApproximateTimeSynchronizer, exactly (docs/design.md, "Camera
synchronization"): per camera a map stamp -> frame holding at most ``queue_size`` distinct stamps (the
oldest is evicted); on each
arrival every other camera's candidates are its stamps within ``slop`` of the new stamp
(|delta| <= slop, inclusive), nearest first (ties: older first); if a camera has none nothing is
emitted; otherwise the first combination in camera order (candidates nearest-first, the new frame
fixed) whose spread max - min is strictly below ``slop`` is emitted once and its frames removed.
(A candidate at exactly |delta| == slop can never be emitted -- with the new frame it spans slop --
so the inclusive bound is kept only for fidelity.)

What this adds on top, and why:
- Stamp hygiene per camera: a stamp equal to (DUPLICATE) or older than (BACKWARDS) the camera's
  last accepted stamp, or more than FUTURE_TOLERANCE_NS ahead of ``now`` (FUTURE: a camera clock not
  synchronized with the host makes staleness meaningless) is rejected and counted. message_filters
  would overwrite duplicates and accept reordering; a policy should never see time run backwards.
- Staleness gate: a matched set whose newest stamp is more than ``max_age`` before ``now`` is removed
  like an emitted set but returned as None and counted as STALE.
- Expiry ("a dead camera is never waited on"): a queued frame with stamp <= now - max_age - slop
  can only ever be part of a stale set (any set holding it has newest < stamp + slop), so it is
  dropped (EXPIRED) on every ``add``/``prune``. When one camera dies, the others' queues therefore
  hold only the last max_age + slop of frames instead of keeping partial sets around, memory is
  bounded, and when the camera returns only fresh frames can match. (Deviation from plain
  ApproximateTimeSynchronizer, which would keep the frames until evicted and could later emit an
  old set once the dead input revives.) The robot-side consequence -- hold -- is the caller's:
  ``dead_cameras`` lists cameras silent for >= camera_timeout (never heard = silent since
  construction/reset).
- A jump of ``now`` backwards by more than FUTURE_TOLERANCE_NS (bag loop, sim clock reset) resets
  all queues and per-camera stamps, otherwise every later frame would be rejected as BACKWARDS.
- Bounded matching work: the combinations are searched depth first in the same (lexicographic,
  nearest-first) order as the plain product, pruning a partial combination as soon as its spread
  reaches slop (adding stamps never shrinks a spread), so the first valid combination found is the
  one the product would give. Adversarial stamps can still make that search large (every camera
  with queue_size candidates all within slop of the new frame but not of each other), so it stops
  after MATCH_BUDGET visited partial combinations: the frame then forms no set on this arrival
  (counted as MATCH_LIMIT) and may still match when a later frame arrives. Normal streams visit a
  handful.

All times are integer nanoseconds on ONE clock: the clock the header stamps live on (the node's ROS
clock, which is the system wall clock on a robot and /clock in replay). Liveness uses arrival times
on that clock, so a replay at any speed behaves as it did live.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from lightwam_ros.config import SyncConfig
from lightwam_ros.types import FrameSet

FUTURE_TOLERANCE_NS = 1_000_000_000  # stamps further ahead of now than this are rejected
MATCH_BUDGET = 4096  # partial combinations visited per arrival at most (see the module doc)


class DropReason(Enum):
    """Why a frame (or, for STALE, a matched set) was not used."""

    UNKNOWN_CAMERA = "unknown_camera"  # frame for a camera name this sync does not know
    DUPLICATE = "duplicate"  # same stamp as the camera's last accepted frame
    BACKWARDS = "backwards"  # older than the camera's last accepted frame
    FUTURE = "future"  # more than FUTURE_TOLERANCE_NS ahead of now
    EVICTED = "evicted"  # pushed out of a full per-camera queue
    EXPIRED = "expired"  # too old to ever be part of a fresh set
    STALE = "stale"  # a matched set older than max_age (counted once per set)
    MATCH_LIMIT = "match_limit"  # the combination search hit MATCH_BUDGET (adversarial stamps)


@dataclass(frozen=True)
class SyncStats:
    """Cumulative counters (diagnostics compute rates from differences)."""

    sets_formed: int  # matched sets, fresh or stale
    sets_emitted: int  # fresh sets returned by add()
    drops: dict[DropReason, int]
    arrivals: dict[str, int]  # frames offered per camera, accepted or not
    queue_depths: dict[str, int]
    clock_resets: int
    last_set_stamp_ns: int | None  # stamp of the newest emitted set
    spread_ns: int | None  # spread of the newest emitted set


@dataclass
class _Camera:
    queue: dict[int, Any] = field(default_factory=dict)  # stamp -> image, insertion = stamp order
    last_stamp: int | None = None
    last_arrival: int | None = None  # arrival time of the last *current* frame (liveness)


class FrameSync:
    """N-camera approximate-time synchronizer with staleness, expiry and liveness (see module doc)."""

    def __init__(self, camera_names: Sequence[str], config: SyncConfig, now_ns: int):
        if not camera_names:
            raise ValueError("FrameSync needs at least one camera")
        if len(set(camera_names)) != len(camera_names):
            raise ValueError(f"FrameSync camera names must be unique, got {list(camera_names)}")
        self._names = tuple(camera_names)
        self._config = config
        self._drops: Counter[DropReason] = Counter()
        self._sets_formed = 0
        self._sets_emitted = 0
        self._clock_resets = 0
        self._arrivals: Counter[str] = Counter()
        self._last_set: FrameSet | None = None
        self.reset(now_ns)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def config(self) -> SyncConfig:
        return self._config

    def reset(self, now_ns: int) -> None:
        """Forget all frames, last stamps and arrival times; liveness restarts counting at now_ns.
        Counters are kept (they are cumulative for diagnostics)."""
        self._cams = {n: _Camera() for n in self._names}
        self._start_ns = now_ns
        self._last_now = now_ns

    def reconfigure(self, config: SyncConfig) -> None:
        """Apply new sync parameters; queues beyond the new queue_size lose their oldest frames."""
        self._config = config
        for cam in self._cams.values():
            self._evict(cam)

    # -- frames ---------------------------------------------------------------------------------

    def add(self, camera: str, stamp_ns: int, image: np.ndarray, now_ns: int) -> FrameSet | None:
        """Offer one frame. Returns the fresh FrameSet this frame completed, else None."""
        self._observe_clock(now_ns)
        cam = self._cams.get(camera)
        if cam is None:
            self._drops[DropReason.UNKNOWN_CAMERA] += 1
            return None
        self._arrivals[camera] += 1
        stamp_ns = int(stamp_ns)
        if stamp_ns > now_ns + FUTURE_TOLERANCE_NS:
            self._drops[DropReason.FUTURE] += 1
            return None
        if cam.last_stamp is not None and stamp_ns <= cam.last_stamp:
            self._drops[DropReason.DUPLICATE if stamp_ns == cam.last_stamp else DropReason.BACKWARDS] += 1
            return None
        cam.last_stamp = stamp_ns
        if now_ns - stamp_ns <= self._config.max_age_ns:
            # Liveness counts current frames only: a frame taken late from a backlog (a starved
            # executor, a transport catching up) shows nothing about the camera now, and letting it
            # re-arm a dead camera would end a stale_cameras hold on an old view.
            cam.last_arrival = now_ns
        cam.queue[stamp_ns] = image
        self._evict(cam)
        self.prune(now_ns)
        if stamp_ns not in cam.queue:  # expired on arrival
            return None
        return self._match(self._names.index(camera), stamp_ns, now_ns)

    def prune(self, now_ns: int) -> int:
        """Drop frames with stamp <= now - max_age - slop (they can only form stale sets)."""
        limit = now_ns - self._config.max_age_ns - self._config.slop_ns
        dropped = 0
        for cam in self._cams.values():
            old = [s for s in cam.queue if s <= limit]
            for s in old:
                del cam.queue[s]
            dropped += len(old)
        self._drops[DropReason.EXPIRED] += dropped
        return dropped

    def _observe_clock(self, now_ns: int) -> None:
        if now_ns < self._last_now - FUTURE_TOLERANCE_NS:
            self._clock_resets += 1
            self.reset(now_ns)
        self._last_now = max(self._last_now, now_ns)

    def _evict(self, cam: _Camera) -> None:
        while len(cam.queue) > self._config.queue_size:
            del cam.queue[next(iter(cam.queue))]  # oldest: stamps are accepted in increasing order
            self._drops[DropReason.EVICTED] += 1

    def _match(self, index: int, stamp_ns: int, now_ns: int) -> FrameSet | None:
        slop = self._config.slop_ns
        candidates: list[list[int]] = []
        for j, name in enumerate(self._names):
            if j == index:
                continue
            near = [(abs(s - stamp_ns), s) for s in self._cams[name].queue if abs(s - stamp_ns) <= slop]
            if not near:
                return None
            near.sort(key=lambda d: d[0])  # stable: equal deltas keep queue (older-first) order
            candidates.append([s for _, s in near])
        found = first_combination(candidates, stamp_ns, slop)
        if found is None:
            return None
        if found is _BUDGET_SPENT:
            self._drops[DropReason.MATCH_LIMIT] += 1
            return None
        stamps = list(found)
        stamps.insert(index, stamp_ns)
        newest, oldest = max(stamps), min(stamps)
        images = {n: self._cams[n].queue.pop(s) for n, s in zip(self._names, stamps)}
        self._sets_formed += 1
        if now_ns - newest > self._config.max_age_ns:
            self._drops[DropReason.STALE] += 1
            return None
        self._sets_emitted += 1
        self._last_set = FrameSet(images=images, stamp_ns=newest, spread_ns=newest - oldest)
        return self._last_set

    # -- liveness and counters --------------------------------------------------------------------

    def silence_ns(self, now_ns: int) -> dict[str, int]:
        """Per camera: time since its last current frame (stamped within sync.max_age of its
        arrival) arrived; since construction/reset if never."""
        return {n: now_ns - (c.last_arrival if c.last_arrival is not None else self._start_ns)
                for n, c in self._cams.items()}

    def dead_cameras(self, now_ns: int) -> list[str]:
        """Cameras without a current frame for >= camera_timeout (silent, or delivering only
        frames older than sync.max_age, or future/backwards stamps), in camera order. The caller
        must hold the robot."""
        timeout = self._config.camera_timeout_ns
        return [n for n, s in self.silence_ns(now_ns).items() if s >= timeout]

    def stats(self) -> SyncStats:
        last = self._last_set
        return SyncStats(
            sets_formed=self._sets_formed, sets_emitted=self._sets_emitted,
            drops={r: self._drops[r] for r in DropReason},
            arrivals={n: self._arrivals[n] for n in self._names},
            queue_depths={n: len(c.queue) for n, c in self._cams.items()},
            clock_resets=self._clock_resets,
            last_set_stamp_ns=None if last is None else last.stamp_ns,
            spread_ns=None if last is None else last.spread_ns,
        )


_BUDGET_SPENT: tuple[int, ...] = tuple([-1])  # sentinel (identity): the search stopped at MATCH_BUDGET


def first_combination(candidates: list[list[int]], fixed: int, slop: int) -> tuple[int, ...] | None:
    """The first combination (one stamp per list, lists in order, each list in its order) whose
    spread together with ``fixed`` is strictly below ``slop``, as itertools.product would meet it;
    None if there is none, _BUDGET_SPENT if MATCH_BUDGET partial combinations were visited first."""
    visits = 0
    chosen: list[int] = []

    def search(depth: int, lo: int, hi: int) -> bool | None:
        nonlocal visits
        if depth == len(candidates):
            return True
        for s in candidates[depth]:
            visits += 1
            if visits > MATCH_BUDGET:
                return None
            nlo, nhi = min(lo, s), max(hi, s)
            if nhi - nlo >= slop:
                continue
            chosen.append(s)
            found = search(depth + 1, nlo, nhi)
            if found is None or found:
                return found
            chosen.pop()
        return False

    found = search(0, fixed, fixed)
    if found is None:
        return _BUDGET_SPENT
    return tuple(chosen) if found else None
