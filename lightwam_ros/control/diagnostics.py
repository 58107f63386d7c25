"""Diagnostics aggregation: counters and samples from the pipeline -> status dicts (no ROS types).

API
- ``Level`` (IntEnum, = diagnostic_msgs/DiagnosticStatus levels)
- ``LatencyWindow(size)``: ``add(ms)``, ``summary() -> dict`` (n, p50, p90, p99, max in ms)
- ``DiagnosticsInput`` -- one snapshot of the node's state, built by the caller each publish.
- ``Diagnostics(node_name, camera_names, now_ns)``:
  ``record_chunk(outcome, timings_ms)`` per chunk, ``statuses(now_ns, inp) -> list[dict]`` per publish.
- Status dict: ``{"name", "level": Level, "message", "hardware_id", "values": {key: value}}``;
  ``outputs.diagnostic_array`` turns a list of them into a DiagnosticArray.

Four statuses, named "<node>: cameras | sync | inference | control", so a robot_monitor groups them:
- cameras: per-camera arrival rate over the last publish period and silence; ERROR if any is dead.
- sync: sets emitted and their rate, last spread, drops by reason (cumulative and in this period);
  WARN when frames were dropped this period for a reason that means a clock, latency or wiring
  problem (future, backwards, duplicate, stale, unknown camera; not the routine evicted/expired).
- inference: backend/device/dtype, chunk outcomes, latency percentiles per stage; WARN if the
  latency makes a gapless command impossible (ChunkScheduler.keeps_up) or chunks expire, saying
  what to change (latency_advice: with the chunk geometry it names the numbers, e.g. "inference
  515 ms > 460 ms usable in a 24-step chunk (480 ms at 50 Hz): every chunk will expire ...").
- control: hold reason, queue depth (plan steps ahead), safety counters; level by HOLD_LEVELS, or
  ERROR with the controller's message when it reports a persistent fault (``DiagnosticsInput.fault``:
  e.g. chunk.refusal_error_count refused chunks in a row).
Rates are differences of cumulative counters between two ``statuses`` calls, so nothing is counted
twice and the aggregator needs no callbacks on the hot path.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from lightwam_ros.control.latency_advice import ChunkTiming, LatencyAdvice, advise, remedies
from lightwam_ros.control.safety import HoldReason
from lightwam_ros.control.scheduler import ChunkOutcome
from lightwam_ros.control.sync import DropReason, SyncStats


class Level(IntEnum):
    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


# Intentional holds are OK; waiting on something is WARN; a broken input or model is ERROR. A refused
# chunk is WARN: the controller asks again and one bad chunk may be a glitch; when refusals persist it
# reports a fault (DiagnosticsInput.fault) and the status is ERROR, saying what to check.
HOLD_LEVELS: dict[HoldReason | None, Level] = {
    None: Level.OK,
    HoldReason.INACTIVE: Level.OK,
    HoldReason.PAUSED: Level.OK,
    HoldReason.DRY_RUN: Level.OK,
    HoldReason.NO_CHUNK: Level.WARN,
    HoldReason.CHUNK_EXHAUSTED: Level.WARN,
    HoldReason.NO_INSTRUCTION: Level.WARN,
    HoldReason.STALE_STATE: Level.ERROR,
    HoldReason.STALE_CAMERAS: Level.ERROR,
    HoldReason.CHUNK_REFUSED: Level.WARN,
}
# EVICTED and EXPIRED are routine (unmatched frames of a faster camera leave one way or the other).
_PROBLEM_DROPS = (DropReason.FUTURE, DropReason.BACKWARDS, DropReason.DUPLICATE, DropReason.STALE,
                  DropReason.UNKNOWN_CAMERA)


def status(name: str, level: Level, message: str, values: Mapping[str, Any],
           hardware_id: str = "") -> dict[str, Any]:
    return {"name": name, "level": Level(level), "message": message, "hardware_id": hardware_id,
            "values": dict(values)}


class LatencyWindow:
    """The last ``size`` samples in ms; percentiles by linear interpolation (numpy default)."""

    def __init__(self, size: int = 200):
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._samples.append(float(ms))

    def __len__(self) -> int:
        return len(self._samples)

    def summary(self) -> dict[str, float]:
        if not self._samples:
            return {"n": 0}
        a = np.fromiter(self._samples, dtype=np.float64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return {"n": len(a), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(a.max())}


@dataclass(frozen=True)
class DiagnosticsInput:
    """What the node knows at publish time (all plain values)."""

    sync: SyncStats
    dead_cameras: Sequence[str]
    silence_ns: Mapping[str, int]  # FrameSync.silence_ns(now)
    hold: HoldReason | None  # this tick's hold_reason
    queue_steps: int  # ChunkScheduler.remaining_steps(now)
    safety: Mapping[str, int]  # SafetyFilter.stats()
    backend: str
    device: str
    dtype: str
    expected_latency_ns: int | None = None  # ChunkScheduler.expected_latency_ns
    keeps_up: bool | None = None  # ChunkScheduler.keeps_up(expected latency, steps, dt, age, max_inflight)
    # The chunk's geometry, when known: the inference message then names the numbers and what to
    # change (latency_advice.advise); without it the message is the same verdict in general terms.
    chunk_steps: int | None = None  # chunk.steps_limit(trained_steps)
    dt_ns: int | None = None  # the bundle's action period
    max_inflight: int | None = None  # requests in flight at once (after the backend's cap)
    state_age_ns: int | None = None  # now - last joint state stamp
    instruction: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # added to the control status values
    # A fault the controller judged persistent (the model's output refused chunk.refusal_error_count
    # times in a row): the control status is ERROR with this message, whatever the hold's level.
    fault: str | None = None


class Diagnostics:
    """Stateful aggregator; see the module doc."""

    def __init__(self, node_name: str, camera_names: Sequence[str], now_ns: int, window: int = 200):
        self._node = node_name
        self._cameras = tuple(camera_names)
        self._latency: dict[str, LatencyWindow] = {}
        self._window = window
        self._outcomes: Counter[ChunkOutcome] = Counter()
        self._prev_ns = now_ns
        self._prev_sync: SyncStats | None = None
        self._prev_outcomes: Counter[ChunkOutcome] = Counter()

    def record_chunk(self, outcome: ChunkOutcome, timings_ms: Mapping[str, float]) -> None:
        """Count a chunk's merge outcome and its per-stage timings (ActionChunk.timings_ms)."""
        self._outcomes[outcome] += 1
        for stage, ms in timings_ms.items():
            self._latency.setdefault(stage, LatencyWindow(self._window)).add(ms)

    def latency(self, stage: str = "total") -> dict[str, float]:
        w = self._latency.get(stage)
        return w.summary() if w is not None else {"n": 0}

    def statuses(self, now_ns: int, inp: DiagnosticsInput) -> list[dict[str, Any]]:
        """Build the four statuses; rates cover the time since the previous call."""
        period_s = max(now_ns - self._prev_ns, 1) / 1e9
        prev = self._prev_sync
        d_arr = {c: inp.sync.arrivals.get(c, 0) - (prev.arrivals.get(c, 0) if prev else 0) for c in self._cameras}
        d_drop = {r: inp.sync.drops.get(r, 0) - (prev.drops.get(r, 0) if prev else 0) for r in DropReason}
        d_sets = inp.sync.sets_emitted - (prev.sets_emitted if prev else 0)
        d_out = {o: self._outcomes[o] - self._prev_outcomes[o] for o in ChunkOutcome}
        self._prev_ns, self._prev_sync, self._prev_outcomes = now_ns, inp.sync, Counter(self._outcomes)
        n = self._node

        cam_values: dict[str, Any] = {}
        for c in self._cameras:
            cam_values[f"{c}.rate_hz"] = d_arr[c] / period_s
            cam_values[f"{c}.silent_s"] = inp.silence_ns.get(c, 0) / 1e9
            cam_values[f"{c}.queue"] = inp.sync.queue_depths.get(c, 0)
        if inp.dead_cameras:
            cams = status(f"{n}: cameras", Level.ERROR, "dead: " + ", ".join(
                f"{c} (no current frame for {inp.silence_ns.get(c, 0) / 1e9:.2f} s)" for c in inp.dead_cameras),
                cam_values)
        else:
            cams = status(f"{n}: cameras", Level.OK, "all cameras alive", cam_values)

        sync_values: dict[str, Any] = {"sets_emitted": inp.sync.sets_emitted, "set_rate_hz": d_sets / period_s,
                                       "sets_formed": inp.sync.sets_formed, "clock_resets": inp.sync.clock_resets}
        if inp.sync.spread_ns is not None:
            sync_values["last_spread_ms"] = inp.sync.spread_ns / 1e6
        for r in DropReason:
            sync_values[f"drops.{r.value}"] = inp.sync.drops.get(r, 0)
        problems = [f"{d_drop[r]} {r.value}" for r in _PROBLEM_DROPS if d_drop[r] > 0]
        sync = status(f"{n}: sync", Level.WARN if problems else Level.OK,
                      ("dropped " + ", ".join(problems)) if problems else f"{d_sets} sets", sync_values)

        inf_values: dict[str, Any] = {"backend": inp.backend, "device": inp.device, "dtype": inp.dtype}
        for o in ChunkOutcome:
            inf_values[f"chunks.{o.value}"] = self._outcomes[o]
        if inp.expected_latency_ns is not None:
            inf_values["request_to_chunk_ms"] = inp.expected_latency_ns / 1e6
        for stage in sorted(self._latency):
            for k, v in self.latency(stage).items():
                inf_values[f"{stage}_ms.{k}" if k != "n" else f"{stage}.n"] = v
        total = self.latency("total")
        msg = f"{inp.backend} on {inp.device} ({inp.dtype})"
        if total["n"]:
            msg += f", total p50 {total['p50']:.1f} ms p99 {total['p99']:.1f} ms"
        level = Level.OK
        advice = _latency_advice(inp)
        if advice is not None and advice.too_slow:
            level, msg = Level.WARN, msg + "; " + advice.message
        elif inp.keeps_up is False:
            fixes = remedies(inp.backend, inp.device)
            level, msg = Level.WARN, msg + ("; too slow for a gapless command ((1 + 1/max_inflight) x latency > "
                                            "chunk)" + ("; try " + " / ".join(fixes) if fixes else ""))
        if d_out[ChunkOutcome.EXPIRED] > 0:
            level, msg = Level.WARN, msg + f"; {d_out[ChunkOutcome.EXPIRED]} chunks expired on arrival"
        inference = status(f"{n}: inference", level, msg, inf_values)

        ctl_values: dict[str, Any] = {"hold": inp.hold.value if inp.hold else "none",
                                      "queue_steps": inp.queue_steps}
        if inp.state_age_ns is not None:
            ctl_values["state_age_s"] = inp.state_age_ns / 1e9
        if inp.instruction is not None:
            ctl_values["instruction"] = inp.instruction
        ctl_values.update({f"safety.{k}": v for k, v in inp.safety.items()})
        ctl_values.update(inp.extra)
        ctl_msg = "following the policy" if inp.hold is None else f"holding: {inp.hold.value}"
        if inp.fault:
            control = status(f"{n}: control", Level.ERROR, f"{ctl_msg}; {inp.fault}", ctl_values)
        else:
            control = status(f"{n}: control", HOLD_LEVELS[inp.hold], ctl_msg, ctl_values)
        return [cams, sync, inference, control]


def _latency_advice(inp: DiagnosticsInput) -> LatencyAdvice | None:
    """The latency verdict for the expected request-to-chunk latency, when the chunk geometry is known."""
    if inp.expected_latency_ns is None or not inp.chunk_steps or not inp.dt_ns:
        return None
    timing = ChunkTiming(inp.chunk_steps, inp.dt_ns, max(1, inp.max_inflight or 1))
    return advise(inp.expected_latency_ns / 1e6, timing, inp.backend, inp.device)
