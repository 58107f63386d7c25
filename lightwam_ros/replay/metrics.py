"""Replay evaluation: what the robot did (recorded) vs what the policy predicts, and the plot.

Why open-loop error is computed this way: in a recording the robot was driven by someone else (a
teleoperator or an earlier policy), so the policy's chunks are never executed; the only honest
comparison is each predicted chunk against what the robot then actually did. Chunk step k is the
command for time stamp + k*dt (types.ActionChunk), so it is compared with the recorded joint
position linearly interpolated at that time, in robot units (rad, gripper units), per joint and per
chunk step. Steps whose time falls outside the recording are left out (NaN), never extrapolated.

The reference is either the measured joint states (``joints.state_topic``, matched by name to the
action dims) or a recorded command topic (a JointTrajectoryController trajectory, or a forward
controller's Float64MultiArray): whichever the bag has and the caller picks. A recorded message
that does not decode is left out of the track and counted (``ReferenceTrack.undecodable``), as the
replay's inputs are: one corrupt message must not cost the whole evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from lightwam_ros.control.joint_input import FLOAT32_MAX
from lightwam_ros.replay.bags import BagError, BagMessage, BagReader, stamp_ns
from lightwam_ros.types import ActionChunk

JOINT_STATE = "sensor_msgs/msg/JointState"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"


class ReferenceKind(Enum):
    """What a reference track was recorded from."""

    JOINT_STATES = "joint_states"  # measured positions (sensor_msgs/JointState)
    JOINT_TRAJECTORY = "joint_trajectory"  # commands sent to a JointTrajectoryController
    FORWARD = "forward"  # per-tick commands to a forward position controller


@dataclass(frozen=True)
class ReferenceTrack:
    """Recorded positions of the action dims over time (NaN where a dim was not recorded)."""

    topic: str
    kind: ReferenceKind
    names: tuple[str, ...]  # action dim names, in action order
    times_ns: np.ndarray  # int64 [N], strictly increasing
    positions: np.ndarray  # float64 [N, A]
    undecodable: int = 0  # recorded messages left out because they do not decode

    def __post_init__(self) -> None:
        if self.times_ns.ndim != 1 or self.positions.shape != (len(self.times_ns), len(self.names)):
            raise ValueError(f"ReferenceTrack {self.topic}: times {self.times_ns.shape} and positions "
                             f"{self.positions.shape} do not match {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.times_ns)

    def at(self, t_ns: np.ndarray) -> np.ndarray:
        """Positions [len(t), A] linearly interpolated at ``t_ns``; NaN outside the recorded span."""
        t = np.asarray(t_ns, dtype=np.int64).reshape(-1)
        out = np.full((len(t), len(self.names)), np.nan)
        if len(self.times_ns) == 0:
            return out
        inside = (t >= self.times_ns[0]) & (t <= self.times_ns[-1])
        # interpolate relative to the first time: float64 of 1.7e18 ns loses sub-microsecond precision
        x = (self.times_ns - self.times_ns[0]).astype(np.float64)
        q = (t[inside] - self.times_ns[0]).astype(np.float64)
        for a in range(len(self.names)):
            col = self.positions[:, a]
            ok = np.isfinite(col)
            if ok.sum() >= 1:
                out[inside, a] = np.interp(q, x[ok], col[ok])
        return out


def _decoded(reader: BagReader, messages: Iterable[BagMessage], skipped: list[int]) -> Iterator[tuple[BagMessage, Any]]:
    """(message, decoded) of each message that decodes; ``skipped[0]`` counts the others."""
    for m in messages:
        try:
            yield m, reader.decode(m)
        except BagError:
            skipped[0] += 1


def _dedupe(times: list[int], rows: list[np.ndarray], names: Sequence[str], topic: str,
            kind: ReferenceKind, undecodable: int = 0) -> ReferenceTrack:
    """Sort by time, keep the last sample of equal times (a later message supersedes)."""
    if not times:
        return ReferenceTrack(topic, kind, tuple(names), np.zeros(0, np.int64), np.zeros((0, len(names))),
                              undecodable)
    t = np.asarray(times, dtype=np.int64)
    p = np.stack(rows).astype(np.float64)
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    keep = np.ones(len(t), bool)
    keep[:-1] = t[1:] != t[:-1]
    return ReferenceTrack(topic, kind, tuple(names), t[keep], p[keep], undecodable)


def joint_state_track(reader: BagReader, topic: str, names: Sequence[str],
                      start_ns: int | None = None, stop_ns: int | None = None) -> ReferenceTrack:
    """Measured positions of ``names`` (by name, any recorded order) at the header stamps
    (record time when a driver left the stamp 0); a value beyond float32 (or NaN/Inf) counts as
    not recorded, as the node takes such a state for stale."""
    times, rows, skipped = [], [], [0]
    for m, msg in _decoded(reader, reader.messages([topic], start_ns, stop_ns), skipped):
        index = {n: i for i, n in enumerate(msg.name)}
        pos = np.asarray(msg.position, dtype=np.float64)
        row = np.array([pos[index[n]] if n in index and index[n] < len(pos) else np.nan for n in names])
        row[~(np.abs(row) <= FLOAT32_MAX)] = np.nan  # the node's rule: beyond float32 is no measurement
        t = stamp_ns(msg.header.stamp)
        times.append(t if t > 0 else m.log_ns)
        rows.append(row)
    return _dedupe(times, rows, names, topic, ReferenceKind.JOINT_STATES, skipped[0])


def command_track(reader: BagReader, topic: str, names: Sequence[str],
                  start_ns: int | None = None, stop_ns: int | None = None) -> ReferenceTrack:
    """Commanded positions from a recorded JointTrajectory or Float64MultiArray topic.

    JointTrajectory (JointTrajectoryController semantics): a message starts at its header stamp
    (record time if 0: "start on arrival"); the controller is then where the previous trajectory
    had it (holding its last point once it ended) and moves from there to the new points at
    start + time_from_start, which replace whatever was planned from that start on.
    Float64MultiArray: one command per message at its record time, dims in action order.
    """
    msgtype = reader.info.topics[topic].msgtype
    skipped = [0]
    if msgtype == FLOAT64_ARRAY:
        times, rows = [], []
        for m, msg in _decoded(reader, reader.messages([topic], start_ns, stop_ns), skipped):
            data = np.asarray(msg.data, dtype=np.float64)
            row = np.full(len(names), np.nan)
            row[:min(len(data), len(names))] = data[:len(names)]
            times.append(m.log_ns)
            rows.append(row)
        return _dedupe(times, rows, names, topic, ReferenceKind.FORWARD, skipped[0])
    if msgtype != JOINT_TRAJECTORY:
        raise ValueError(f"reference topic {topic} has type {msgtype}; expected {JOINT_STATE}, "
                         f"{JOINT_TRAJECTORY} or {FLOAT64_ARRAY}")
    knots: list[tuple[int, np.ndarray]] = []
    for m, msg in _decoded(reader, reader.messages([topic], start_ns, stop_ns), skipped):
        t0 = stamp_ns(msg.header.stamp) or m.log_ns
        index = {n: i for i, n in enumerate(msg.joint_names)}
        if knots:  # the controller is where the old trajectory had it at t0 and bridges from there
            current = _dedupe([k[0] for k in knots], [k[1] for k in knots], names, topic,
                              ReferenceKind.JOINT_TRAJECTORY)
            at_t0 = current.at(np.array([min(max(t0, current.times_ns[0]), current.times_ns[-1])]))[0]
            knots = [k for k in knots if k[0] < t0] + [(t0, at_t0)]  # the new trajectory replaces the rest
        for pt in msg.points:
            pos = np.asarray(pt.positions, dtype=np.float64)
            row = np.array([pos[index[n]] if n in index and index[n] < len(pos) else np.nan for n in names])
            knots.append((t0 + stamp_ns(pt.time_from_start), row))
    return _dedupe([k[0] for k in knots], [k[1] for k in knots], names, topic, ReferenceKind.JOINT_TRAJECTORY,
                   skipped[0])


def reference_track(reader: BagReader, topic: str, names: Sequence[str],
                    start_ns: int | None = None, stop_ns: int | None = None) -> ReferenceTrack:
    """The reference track of ``topic`` by its message type."""
    if reader.info.topics[topic].msgtype == JOINT_STATE:
        return joint_state_track(reader, topic, names, start_ns, stop_ns)
    return command_track(reader, topic, names, start_ns, stop_ns)


# --- metrics ---------------------------------------------------------------------------------
def _nanmean(x: np.ndarray, axis: Any = None) -> Any:
    with np.errstate(invalid="ignore"):
        counts = np.sum(np.isfinite(x), axis=axis)
        sums = np.nansum(x, axis=axis)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _list(x: np.ndarray, digits: int = 6) -> Any:
    """JSON-safe nested list (NaN -> None)."""
    if np.ndim(x) == 0:
        v = float(x)
        return round(v, digits) if np.isfinite(v) else None
    return [_list(v, digits) for v in x]


def prediction_errors(chunks: Sequence[ActionChunk], track: ReferenceTrack, steps: int | None = None) -> np.ndarray:
    """err[c, k, a] = chunk c step k dim a - recorded dim a at stamp_c + k*dt (NaN if unrecorded).

    ``steps``: how many leading steps to score (default: each chunk's executable steps; the
    untrained tail is never executed, so scoring it would measure nothing the robot does).
    """
    if not chunks:
        return np.zeros((0, 0, len(track.names)))
    k_max = steps if steps is not None else min(c.executable_steps for c in chunks)
    err = np.full((len(chunks), k_max, len(track.names)), np.nan)
    for i, c in enumerate(chunks):
        k = min(k_max, c.horizon)
        t = c.stamp_ns + c.dt_ns * np.arange(k, dtype=np.int64)
        err[i, :k] = c.actions[:k, :len(track.names)].astype(np.float64) - track.at(t)
    return err


def hold_still_errors(chunks: Sequence[ActionChunk], track: ReferenceTrack, steps: int) -> np.ndarray:
    """err[c, k, a] of the hold-still baseline: the recorded position at each chunk's observation
    time, repeated over the same steps prediction_errors scores (NaN where unrecorded)."""
    err = np.full((len(chunks), steps, len(track.names)), np.nan)
    for i, c in enumerate(chunks):
        k = min(steps, c.horizon)
        t = c.stamp_ns + c.dt_ns * np.arange(k, dtype=np.int64)
        err[i, :k] = track.at(np.full(1, c.stamp_ns, dtype=np.int64)) - track.at(t)
    return err


def open_loop_error(chunks: Sequence[ActionChunk], track: ReferenceTrack, steps: int | None = None) -> dict:
    """Open-loop error of predicted chunks vs the reference, for report.json.

    mae/rmse per joint (over chunks and steps), mae per chunk step (over chunks and joints), and the
    full per-step x per-joint MAE table, all in robot units; ``hold_still_mae``: the same score for a
    policy that holds the observed position (a model that has learned nothing about the motion
    cannot beat it; ``mae_vs_hold_still`` < 1 says the chunks predict where the robot went).
    """
    err = prediction_errors(chunks, track, steps)
    ab = np.abs(err)
    hold = np.abs(hold_still_errors(chunks, track, err.shape[1] if err.ndim == 3 else 0))
    hold[~np.isfinite(err)] = np.nan  # score the baseline on exactly the predicted entries
    mae = _nanmean(ab)
    hold_mae = _nanmean(hold)
    ratio = float(mae) / float(hold_mae) if np.isfinite(hold_mae) and float(hold_mae) > 0 else np.nan
    scored = np.isfinite(err).any(axis=(1, 2)) if err.size else np.zeros(0, bool)
    return {
        "reference_topic": track.topic,
        "reference_kind": track.kind.value,
        "joint_names": list(track.names),
        "chunks_scored": int(scored.sum()),
        "chunks_total": len(chunks),
        "steps_scored": int(err.shape[1]) if err.ndim == 3 else 0,
        "mae": _list(mae),
        "hold_still_mae": _list(hold_mae),
        "mae_vs_hold_still": _list(np.asarray(ratio)),
        "rmse": _list(np.sqrt(_nanmean(err ** 2))),
        "mae_per_joint": _list(_nanmean(ab, axis=(0, 1))),
        "rmse_per_joint": _list(np.sqrt(_nanmean(err ** 2, axis=(0, 1)))),
        "mae_per_step": _list(_nanmean(ab, axis=(0, 2))),
        "mae_per_step_joint": _list(_nanmean(ab, axis=0)),
    }


def percentiles(values: Iterable[float]) -> dict:
    """p50/p90/p99/max/mean of ``values`` (ms), for report.json; empty -> count 0 only."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"count": 0}
    return {"count": int(v.size), "p50": round(float(np.percentile(v, 50)), 3),
            "p90": round(float(np.percentile(v, 90)), 3), "p99": round(float(np.percentile(v, 99)), 3),
            "max": round(float(v.max()), 3), "mean": round(float(v.mean()), 3)}


def latency_summary(chunks: Sequence[ActionChunk]) -> dict:
    """Per-stage latency percentiles over the chunks' own timings (ActionChunk.timings_ms)."""
    stages: dict[str, list[float]] = {}
    for c in chunks:
        for k, v in c.timings_ms.items():
            stages.setdefault(k, []).append(float(v))
    return {k: percentiles(v) for k, v in stages.items()}


# --- executed motion and chunk seams ----------------------------------------------------------
# Why these exist: with action chunking, what users feel first is the motion where one chunk hands
# over to the next -- each chunk is smooth inside (the model predicts a coherent trajectory), but
# two chunks come from two observations, and the switch can jump. Open-loop error does not see
# that (it scores each chunk alone), so replay measures the executed command itself: the jump at
# each handover against the ordinary step size inside a chunk, and the finite-difference
# derivatives a joint controller and the arm's gearboxes feel. All functions take plain arrays
# (one row per control tick) so they can be checked on hand-made sequences.
#
# Inputs, per control tick i (in time order):
#   times_ns [N]     the tick's time
#   commands [N, A]  the position command executed this tick; NaN rows where nothing was
#                    commanded (a silent hold: the robot was not ours then)
#   following [N]    the tick followed the policy (no hold)
#   handover [N]     a newly accepted chunk was merged into the plan at this tick (the plan the
#                    command came from switched to it)

SEAM_LISTED = 5  # largest seams listed in the report


def consecutive_ticks(times_ns: np.ndarray, period_ns: int) -> np.ndarray:
    """ok[i]: tick i comes one control period after tick i - 1 (ok[0] is False). A difference
    across a gap in the record (ticks missing while the node was inactive) is not a derivative
    of anything the robot executed."""
    t = np.asarray(times_ns, dtype=np.int64)
    ok = np.zeros(len(t), bool)
    if len(t) > 1:
        ok[1:] = np.abs(np.diff(t) - int(period_ns)) * 2 < int(period_ns)
    return ok


def command_deltas(times_ns: np.ndarray, commands: np.ndarray, period_ns: int) -> np.ndarray:
    """d[i] = commands[i] - commands[i - 1] per joint; NaN for the first tick, across gaps and
    wherever either tick commanded nothing."""
    c = np.asarray(commands, dtype=np.float64)
    d = np.full(c.shape, np.nan)
    if len(c) > 1:
        d[1:] = c[1:] - c[:-1]
        d[~consecutive_ticks(times_ns, period_ns)] = np.nan
    return d


def joint_percentiles(values: np.ndarray, qs: Sequence[int] = (50, 90, 99), digits: int = 6) -> dict:
    """Per-joint percentiles (and max) of |values| [N, A] over its finite entries, for report.json:
    {"count": finite rows, "p50": [A], ..., "max": [A]}; a joint with no finite value gets None."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    if v.ndim != 2:
        raise ValueError(f"joint_percentiles needs [N, A], got {v.shape}")
    finite = np.isfinite(v)
    out: dict[str, Any] = {"count": int(finite.any(axis=1).sum())}
    cols = [v[finite[:, a], a] for a in range(v.shape[1])]
    for q in qs:
        out[f"p{q}"] = [_list(np.percentile(x, q), digits) if x.size else None for x in cols]
    out["max"] = [_list(x.max(), digits) if x.size else None for x in cols]
    return out


def seam_jumps(times_ns: np.ndarray, commands: np.ndarray, following: np.ndarray, handover: np.ndarray,
               period_ns: int, names: Sequence[str], origin_ns: int = 0) -> dict:
    """The command jump at chunk handovers vs the step inside a chunk, per joint.

    A step |command[i] - command[i - 1]| is scored only when ticks i - 1 and i are consecutive and
    both followed the policy: the step into a handover tick is a seam jump, every other such step
    is a within-chunk step. A handover onto a tick after a hold (the plan ran dry, a stale input)
    is counted (``after_hold``) but not scored as a seam: that jump starts from the hold position,
    not from the previous chunk. ``ratio_p99`` = seam jump p99 / within-chunk step p99 per joint,
    ~1 when handovers are as smooth as the chunks themselves; None where a joint never moved
    within chunks (no scale to compare with) or there was no scored seam. ``largest`` lists the
    SEAM_LISTED handovers with the largest jump relative to that scale (bag time from
    ``origin_ns``)."""
    following = np.asarray(following, bool)
    handover = np.asarray(handover, bool)
    d = np.abs(command_deltas(times_ns, commands, period_ns))
    scored = np.zeros(len(d), bool)
    if len(d) > 1:
        scored[1:] = following[1:] & following[:-1]
    scored &= np.isfinite(d).all(axis=1)
    seam, within = d[scored & handover], d[scored & ~handover]
    seam_p = joint_percentiles(seam, (50, 99))
    within_p = joint_percentiles(within, (50, 99))
    ratio = [None if s is None or w is None or w <= 0 else round(s / w, 3)
             for s, w in zip(seam_p["p99"], within_p["p99"])]
    worst = max((i for i, r in enumerate(ratio) if r is not None), key=lambda i: ratio[i], default=None)
    scale = np.array([w if w is not None and w > 0 else np.nan for w in within_p["p99"]], dtype=np.float64)
    largest = []
    idx = np.flatnonzero(scored & handover)
    if idx.size and np.isfinite(scale).any():
        with np.errstate(invalid="ignore"):
            rel = d[idx] / scale
        rel = np.where(np.isfinite(rel), rel, -np.inf)
        joint = rel.argmax(axis=1)
        best = rel[np.arange(len(idx)), joint]
        for k in np.argsort(-best, kind="stable")[:SEAM_LISTED]:
            if not np.isfinite(best[k]):
                break
            i, a = int(idx[k]), int(joint[k])
            largest.append({"bag_time_s": round((int(times_ns[i]) - origin_ns) / 1e9, 6), "joint": names[a],
                            "jump": _list(d[i, a]), "relative_to_within_p99": round(float(best[k]), 3)})
    return {
        "joint_names": list(names),
        "handovers": int(handover.sum()),
        "scored": int(len(seam)),
        "after_hold": int((handover & ~scored & following).sum()),
        "seam_jump": seam_p,
        "within_chunk_step": within_p,
        "ratio_p99": ratio,
        "worst": None if worst is None else {"joint": names[worst], "ratio_p99": ratio[worst]},
        "largest": largest,
    }


def derivatives(times_ns: np.ndarray, commands: np.ndarray,
                period_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward finite differences of the commands at the control period: velocity, acceleration
    and jerk [N, A] (units/s, /s^2, /s^3); NaN where a difference would span a gap or a tick
    without a command. Holds count (a hold is zero velocity, and the stop into it is real
    acceleration the robot feels)."""
    dt_s = int(period_ns) / 1e9
    vel = command_deltas(times_ns, commands, period_ns) / dt_s
    acc = np.full(vel.shape, np.nan)
    jerk = np.full(vel.shape, np.nan)
    if len(vel) > 1:  # NaN propagates: a gap breaks every difference that spans it
        acc[1:] = (vel[1:] - vel[:-1]) / dt_s
        jerk[1:] = (acc[1:] - acc[:-1]) / dt_s
    return vel, acc, jerk


def motion_percentiles(times_ns: np.ndarray, commands: np.ndarray, period_ns: int, names: Sequence[str]) -> dict:
    """|velocity|, |acceleration| and |jerk| percentiles per joint of the executed commands."""
    vel, acc, jerk = derivatives(times_ns, commands, period_ns)
    return {"joint_names": list(names), "period_s": int(period_ns) / 1e9,
            "velocity": {"unit": "units/s", **joint_percentiles(vel)},
            "acceleration": {"unit": "units/s^2", **joint_percentiles(acc, digits=4)},
            "jerk": {"unit": "units/s^3", **joint_percentiles(jerk, digits=3)}}


def following_after(following: np.ndarray, first: int | None) -> dict:
    """How many ticks from tick ``first`` (the first chunk's merge) on followed the policy. The
    ticks before the first chunk hold by design (nothing to follow yet), so they would only
    measure how long the first inference took."""
    f = np.asarray(following, bool)
    if first is None or first >= len(f):
        return {"ticks": 0, "following": 0, "fraction": None}
    n, k = len(f) - first, int(f[first:].sum())
    return {"ticks": int(n), "following": k, "fraction": round(k / n, 4)}


def first_execution_ages_ms(times_ns: np.ndarray, following: np.ndarray, commanded: np.ndarray,
                            merge_ticks: Sequence[int], stamps_ns: Sequence[int]) -> np.ndarray:
    """Per merged chunk (in merge order): observation stamp to the first tick that executed its
    plan (the first tick from its merge, before the next chunk's merge, that followed the policy
    with a command), in ms; NaN for a chunk never executed (replaced at the same tick, or held
    throughout). How old the world a command comes from is when it starts moving the robot: the
    inference latency plus the wait for the next control tick plus any hold."""
    t = np.asarray(times_ns, dtype=np.int64)
    ok = np.asarray(following, bool) & np.asarray(commanded, bool)
    m = [int(i) for i in merge_ticks]
    out = np.full(len(m), np.nan)
    for c, (i, stamp) in enumerate(zip(m, stamps_ns)):
        end = m[c + 1] if c + 1 < len(m) else len(t)
        hit = np.flatnonzero(ok[i:end])
        if hit.size:
            out[c] = (int(t[i + hit[0]]) - int(stamp)) / 1e6
    return out


def motion_report(times_ns: np.ndarray, commands: np.ndarray, following: np.ndarray,
                  merge_ticks: Sequence[int], merge_stamps_ns: Sequence[int], period_ns: int,
                  names: Sequence[str], origin_ns: int = 0) -> dict:
    """report.json's ``motion``: seams, derivatives, following share and first-execution age.

    ``merge_ticks`` / ``merge_stamps_ns``: per accepted chunk (in merge order) the index of the tick
    that merged it and its observation stamp. The first merge starts the plan (not a handover);
    each later merge tick is a handover (several chunks merged at one tick: one handover)."""
    t = np.asarray(times_ns, dtype=np.int64)
    c = np.asarray(commands, dtype=np.float64).reshape(len(t), len(names))
    f = np.asarray(following, bool)
    m = [int(i) for i in merge_ticks]
    handover = np.zeros(len(t), bool)
    handover[[i for i in m[1:] if 0 <= i < len(t) and i != m[0]]] = True
    ages = first_execution_ages_ms(t, f, np.isfinite(c).all(axis=1), m, merge_stamps_ns)
    return {
        "available": True,
        "ticks": int(len(t)),
        "chunks_merged": len(m),
        "seams": seam_jumps(t, c, f, handover, period_ns, names, origin_ns),
        "executed": motion_percentiles(t, c, period_ns, names),
        "following_after_first_chunk": following_after(f, m[0] if m else None),
        "observation_to_first_execution_ms": {**percentiles(ages[np.isfinite(ages)]),
                                              "never_executed": int(np.isnan(ages).sum())},
        "handover_bag_times_s": [round((int(t[i]) - origin_ns) / 1e9, 6) for i in np.flatnonzero(handover)],
    }


def _worst(block: dict, key: str, names: Sequence[str]) -> str:
    vals = [(v, n) for v, n in zip(block.get(key) or [], names) if v is not None]
    if not vals:
        return "n/a"
    v, n = max(vals)
    return f"{v:.4g} ({n})"


def motion_summary_lines(motion: Mapping[str, Any]) -> list[str]:
    """The printed-summary lines for report.json's ``motion`` (the worst joint of each figure)."""
    if not motion.get("available"):
        return [f"motion and chunk seams: not available ({motion.get('reason')})"]
    s, e = motion["seams"], motion["executed"]
    names = s["joint_names"]
    fol, age = motion["following_after_first_chunk"], motion["observation_to_first_execution_ms"]
    worst = s["worst"]
    ratio = f"{worst['ratio_p99']:.2f} ({worst['joint']})" if worst else "n/a"
    lines = [f"chunk seams: {s['handovers']} handovers ({s['scored']} between following ticks, "
             f"{s['after_hold']} after a hold); seam jump p99 / within-chunk step p99: worst {ratio}"]
    frac = fol["fraction"]
    lines.append("following the policy after the first chunk: "
                 + (f"{fol['following']} of {fol['ticks']} ticks ({100 * frac:.1f} %)" if frac is not None else "n/a")
                 + (f"; observation to first executed step p50 {age['p50']} ms, p99 {age['p99']} ms"
                    if age.get("count") else ""))
    lines.append("executed command p99 (worst joint): "
                 + ", ".join(f"|{k}| {_worst(e[k], 'p99', names)} {e[k]['unit']}"
                             for k in ("velocity", "acceleration", "jerk")))
    return lines


# --- plot ------------------------------------------------------------------------------------
def plot_replay(path: str | Path, names: Sequence[str], chunks: Sequence[ActionChunk],
                track: ReferenceTrack | None = None,
                commands: tuple[np.ndarray, np.ndarray] | None = None,
                origin_ns: int | None = None, title: str = "",
                handovers_ns: Sequence[int] = ()) -> Path:
    """PNG: per action dim, the recorded track (black), every predicted chunk's executable steps
    (thin coloured segments starting at the observation), the executed commands (dashed) and the
    chunk handovers (thin grey vertical lines: where a jump in the command is a seam).

    ``commands``: (times_ns [N], positions [N, A]) of what the scheduler + safety filter output.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    cols = 2 if n > 4 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 1.8 * rows + 0.6), sharex=True, squeeze=False)
    t0 = origin_ns
    if t0 is None:
        starts = [c.stamp_ns for c in chunks] + ([int(track.times_ns[0])] if track is not None and len(track) else [])
        t0 = min(starts) if starts else 0
    cmap = plt.get_cmap("viridis")
    for a, name in enumerate(names):
        ax = axes[a % rows][a // rows]
        if track is not None and len(track):
            ax.plot((track.times_ns - t0) / 1e9, track.positions[:, a], color="black", lw=1.0,
                    label=f"recorded ({track.kind.value})")
        for i, c in enumerate(chunks):
            k = c.executable_steps
            t = (c.stamp_ns + c.dt_ns * np.arange(k) - t0) / 1e9
            ax.plot(t, c.actions[:k, a], color=cmap(i / max(1, len(chunks) - 1)), lw=0.7, alpha=0.8,
                    label="predicted chunks" if i == 0 else None)
        if commands is not None and len(commands[0]):
            ax.plot((commands[0] - t0) / 1e9, commands[1][:, a], ls="--", color="tab:red", lw=0.8,
                    label="executed command")
        if len(handovers_ns):
            ax.vlines((np.asarray(handovers_ns, dtype=np.int64) - t0) / 1e9, 0, 1, transform=ax.get_xaxis_transform(),
                      colors="0.55", lw=0.5, alpha=0.6, label="chunk handover")
        ax.set_ylabel(name, fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("bag time [s]", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7, ncol=3)
    if title:
        fig.suptitle(title, fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def json_safe(obj: Any) -> Any:
    """Convert numpy scalars/arrays and enums inside ``obj`` for json.dump."""
    if isinstance(obj, Mapping):
        return {str(k.value if isinstance(k, Enum) else k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _list(obj)
    if isinstance(obj, (np.floating, float)):
        return _list(np.float64(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    return obj
