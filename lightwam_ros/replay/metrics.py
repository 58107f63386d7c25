"""Replay evaluation: what the robot did (recorded) vs what the policy predicts, and the plot.

Why open-loop error is computed this way: in a recording the robot was driven by someone else (a
teleoperator or an earlier policy), so the policy's chunks are never executed; the only honest
comparison is each predicted chunk against what the robot then actually did. Chunk step k is the
command for time stamp + k*dt (types.ActionChunk), so it is compared with the recorded joint
position linearly interpolated at that time, in robot units (rad, gripper units), per joint and per
chunk step. Steps whose time falls outside the recording are left out (NaN), never extrapolated.

The reference is either the measured joint states (``joints.state_topic``, matched by name to the
action dims) or a recorded command topic (a JointTrajectoryController trajectory, or a forward
controller's Float64MultiArray): whichever the bag has and the caller picks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from lightwam_ros.replay.bags import BagReader, stamp_ns
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


def _dedupe(times: list[int], rows: list[np.ndarray], names: Sequence[str], topic: str,
            kind: ReferenceKind) -> ReferenceTrack:
    """Sort by time, keep the last sample of equal times (a later message supersedes)."""
    if not times:
        return ReferenceTrack(topic, kind, tuple(names), np.zeros(0, np.int64), np.zeros((0, len(names))))
    t = np.asarray(times, dtype=np.int64)
    p = np.stack(rows).astype(np.float64)
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    keep = np.ones(len(t), bool)
    keep[:-1] = t[1:] != t[:-1]
    return ReferenceTrack(topic, kind, tuple(names), t[keep], p[keep])


def joint_state_track(reader: BagReader, topic: str, names: Sequence[str],
                      start_ns: int | None = None, stop_ns: int | None = None) -> ReferenceTrack:
    """Measured positions of ``names`` (by name, any recorded order) at the header stamps
    (record time when a driver left the stamp 0)."""
    times, rows = [], []
    for m in reader.messages([topic], start_ns, stop_ns):
        msg = reader.decode(m)
        index = {n: i for i, n in enumerate(msg.name)}
        pos = np.asarray(msg.position, dtype=np.float64)
        row = np.array([pos[index[n]] if n in index and index[n] < len(pos) else np.nan for n in names])
        t = stamp_ns(msg.header.stamp)
        times.append(t if t > 0 else m.log_ns)
        rows.append(row)
    return _dedupe(times, rows, names, topic, ReferenceKind.JOINT_STATES)


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
    if msgtype == FLOAT64_ARRAY:
        times, rows = [], []
        for m in reader.messages([topic], start_ns, stop_ns):
            data = np.asarray(reader.decode(m).data, dtype=np.float64)
            row = np.full(len(names), np.nan)
            row[:min(len(data), len(names))] = data[:len(names)]
            times.append(m.log_ns)
            rows.append(row)
        return _dedupe(times, rows, names, topic, ReferenceKind.FORWARD)
    if msgtype != JOINT_TRAJECTORY:
        raise ValueError(f"reference topic {topic} has type {msgtype}; expected {JOINT_STATE}, "
                         f"{JOINT_TRAJECTORY} or {FLOAT64_ARRAY}")
    knots: list[tuple[int, np.ndarray]] = []
    for m in reader.messages([topic], start_ns, stop_ns):
        msg = reader.decode(m)
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
    return _dedupe([k[0] for k in knots], [k[1] for k in knots], names, topic, ReferenceKind.JOINT_TRAJECTORY)


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


def open_loop_error(chunks: Sequence[ActionChunk], track: ReferenceTrack, steps: int | None = None) -> dict:
    """Open-loop error of predicted chunks vs the reference, for report.json.

    mae/rmse per joint (over chunks and steps), mae per chunk step (over chunks and joints), and the
    full per-step x per-joint MAE table, all in robot units.
    """
    err = prediction_errors(chunks, track, steps)
    ab = np.abs(err)
    scored = np.isfinite(err).any(axis=(1, 2)) if err.size else np.zeros(0, bool)
    return {
        "reference_topic": track.topic,
        "reference_kind": track.kind.value,
        "joint_names": list(track.names),
        "chunks_scored": int(scored.sum()),
        "chunks_total": len(chunks),
        "steps_scored": int(err.shape[1]) if err.ndim == 3 else 0,
        "mae": _list(_nanmean(ab)),
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


# --- plot ------------------------------------------------------------------------------------
def plot_replay(path: str | Path, names: Sequence[str], chunks: Sequence[ActionChunk],
                track: ReferenceTrack | None = None,
                commands: tuple[np.ndarray, np.ndarray] | None = None,
                origin_ns: int | None = None, title: str = "") -> Path:
    """PNG: per action dim, the recorded track (black), every predicted chunk's executable steps
    (thin coloured segments starting at the observation) and the executed commands (dashed).

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
