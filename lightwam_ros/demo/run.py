"""The embedded demo (`lightwam demo`, `make demo`): the whole robot path on a laptop CPU.

    trained tiny bundle --> synthetic 3-camera bag of the scene it learned --> live replay over DDS
        --> PolicyNode (own process)
        --> JointTrajectory --> trajectory-executor stand-in --> summary, plot, output bag

Nothing here is a mock of the node: the replay library (lightwam_ros.replay.runner, live mode) starts the
real `policy_node` with the `demo` profile and publishes the bag over Fast DDS with its original
timing; it records what the node publishes into an MCAP bag. The executor stand-in below then plays
the JointTrajectoryController's part on those trajectories, in arrival order and at their arrival
times: it checks what a JTC would reject or what would make a robot jerk (joint names, a start stamp
whose first point has passed at arrival, non-increasing time_from_start, positions outside the limits,
steps and velocities above the rate cap, seams between successive trajectories) and executes the
commands the way a JTC does (each new trajectory replaces the old one at arrival and bridges from the
state there into point 0; the JTC's spline between points: linear with positions only, cubic with
velocities, quintic with accelerations -- control/jtc_spline.py). At every handover it reports the
velocity jump (and, for trajectories with velocities, how far the first point's velocity is from the
motion it replaces). The executed track is what the plot shows, over the joints the bag recorded:
the shipped model (models/demo_tiny_trained, demo/train.py) has learned the joystick scene the bag
shows (demo/reach_scene.py, a held-out seed), so the commands follow the recorded motion.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightwam_ros.control.jtc_spline import Knot, Segment
from lightwam_ros.control.latency_advice import ChunkTiming, advise

log = logging.getLogger(__name__)

DEMO_PROFILE = "demo"
DEMO_INSTRUCTION = "pick up the red block"
SUMMARY = "summary.json"
EXECUTED_PLOT = "executed_joints.png"
PROFILE_FILE = "profile.yaml"  # the demo profile with the settings chosen for this machine


# ---------------------------------------------------------------------------------------------
# Trajectory-executor stand-in (pure: arrays in, checks and an executed track out)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExecutorLimits:
    """What the executor checks against: the profile's joint names, limits and rate cap."""

    joint_names: tuple[str, ...]
    position_min: np.ndarray  # [A]
    position_max: np.ndarray  # [A]
    max_step: np.ndarray  # [A] per control period
    control_period_ns: int
    # Allowed mismatch, in control periods of motion, between where a new trajectory starts and where
    # the previous one had the robot at arrival: the node caps against its last *command*, which
    # leads the executed position by up to the delivery delay. 4 periods (80 ms at 50 Hz) covers the
    # delivery delays seen on a loaded 2-core machine (3.4 periods once); a real jump (a chunk
    # replacing the plan without the rate cap) is many periods.
    seam_slack_periods: float = 4.0
    tolerance: float = 1e-9
    # Largest velocity jump allowed where a multi-point trajectory takes over, in speed caps
    # (max_step per control period); None: reported, never a violation. Not set by default: with
    # positions only (the demo profile) the JTC interpolates linearly and the velocity jumps at every
    # point, handovers included, by design.
    velocity_jump_limit: float | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> ExecutorLimits:
        """From a PolicyConfig (config.from_params)."""
        return cls(tuple(cfg.output.joint_names), np.asarray(cfg.safety.position_min, float),
                   np.asarray(cfg.safety.position_max, float), np.asarray(cfg.safety.max_step, float),
                   cfg.control_period_ns)

    @property
    def speed_cap(self) -> np.ndarray:
        """[A] the rate cap as a speed (units/s): max_step per control period."""
        return self.max_step / (self.control_period_ns / 1e9)


@dataclass(frozen=True)
class Switch:
    """One trajectory taking over from the motion in progress: how much the velocity jumps there
    (max over joints, in speed caps), and for a trajectory with velocities how far its first point's
    velocity is from the velocity the replaced motion had at that point's time (None when that
    time is in the replaced trajectory's last segment or after it, where it only comes to rest)."""

    arrival_ns: int
    points: int
    kind: str  # the spline of the bridge segment from the state at arrival into point 0
    velocity_jump: float
    first_velocity_mismatch: float | None


@dataclass
class ExecutorReport:
    trajectories: int = 0  # messages received
    plan_trajectories: int = 0  # with more than one point
    hold_trajectories: int = 0  # one point: the node holding
    points: int = 0
    violations: list[str] = field(default_factory=list)
    max_seam_jump_periods: float = 0.0  # max over seams of |p0 - q(arrival)| / max_step, in periods
    max_point_step_ratio: float = 0.0  # max |p[k+1] - p[k]| / (max_step * dt / period)
    max_point_velocity_ratio: float = 0.0  # max |velocity of a point| / speed cap
    max_spline_speed_ratio: float = 0.0  # max speed of any segment received (bridge included) / speed cap
    switches: list[Switch] = field(default_factory=list)  # every trajectory received while one was executed

    def plan_switches(self) -> list[Switch]:
        """Handovers between plans: a hold (one point) is a stop, its velocity drop is the point."""
        return [w for w in self.switches if w.points > 1]

    def to_dict(self) -> dict[str, Any]:
        plans = self.plan_switches()
        mismatch = [w.first_velocity_mismatch for w in plans if w.first_velocity_mismatch is not None]
        return {"trajectories": self.trajectories, "plan_trajectories": self.plan_trajectories,
                "hold_trajectories": self.hold_trajectories, "points": self.points,
                "violations": len(self.violations), "first_violations": self.violations[:10],
                "max_seam_jump_periods": round(self.max_seam_jump_periods, 4),
                "max_point_step_ratio": round(self.max_point_step_ratio, 4),
                "max_point_velocity_ratio": round(self.max_point_velocity_ratio, 4),
                "max_spline_speed_ratio": round(self.max_spline_speed_ratio, 4),
                "handovers": len(plans),
                "max_velocity_jump": round(max((w.velocity_jump for w in plans), default=0.0), 4),
                "max_first_velocity_mismatch": round(max(mismatch), 4) if mismatch else None}


class TrajectoryExecutor:
    """Stand-in for a ros2_control JointTrajectoryController (see the module doc).

    Execution is the JTC's ``splines`` interpolation (control/jtc_spline.py): each new trajectory
    replaces the executing one when it arrives, starting from the state it was commanding there
    (position, velocity, acceleration) -- the JTC with ``open_loop_control`` (Humble) or
    ``interpolate_from_desired_state`` (Jazzy and later), or one whose robot reports velocities and
    tracks its command -- with the spline the point's fields select into point 0 at start +
    time_from_start, start being header.stamp, or the arrival when the stamp is 0. A stamp in the
    future does not delay the takeover (those releases replace at once and bridge to the first point);
    one whose first point has already passed at arrival would start mid-trajectory, and one that ends
    before arrival is rejected: both are violations. After the last point the robot holds it."""

    def __init__(self, limits: ExecutorLimits):
        self.limits = limits
        self.report = ExecutorReport()
        self._starts: list[int] = []  # executed pieces: start times (ns), strictly increasing;
        self._segments: list[Segment] = []  # each runs until the next one starts, the last then holds

    def _piece(self, t_ns: int, left: bool) -> int:
        """Index of the piece executing at t_ns (``left``: just before it), -1 before the first."""
        return (bisect.bisect_left if left else bisect.bisect_right)(self._starts, t_ns) - 1

    def state(self, t_ns: int, left: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(position, velocity, acceleration) commanded at t_ns (``left``: the limit from before,
        what was being executed up to an instant where a new piece starts); None before the first
        trajectory. Before the first piece: its start; after the last one ends: its end, at rest."""
        if not self._segments:
            return None
        i = max(0, self._piece(t_ns, left))
        seg = self._segments[i]
        if i == len(self._segments) - 1 and t_ns >= seg.end_ns:
            rest = np.zeros_like(seg.b.positions)
            return seg.b.positions.copy(), rest, rest.copy()
        return seg.at(t_ns)

    def position(self, t_ns: int) -> np.ndarray | None:
        """Executed position at t_ns (None before the first trajectory)."""
        s = self.state(t_ns)
        return None if s is None else s[0]

    def velocity(self, t_ns: int) -> np.ndarray | None:
        """Executed velocity at t_ns (units/s; None before the first trajectory)."""
        s = self.state(t_ns)
        return None if s is None else s[1]

    def receive(self, arrival_ns: int, joint_names: Sequence[str], stamp_ns: int, times_ns: np.ndarray,
                positions: np.ndarray, measured: np.ndarray | None = None,
                velocities: np.ndarray | None = None, accelerations: np.ndarray | None = None) -> list[str]:
        """Check one JointTrajectory and execute it from arrival_ns; returns this message's violations.

        ``measured``: the joint positions the node was last given (in output order). After a hold
        the node starts a trajectory from the measured position -- nobody commanded the robot
        meanwhile, so that is where it is. On a robot the measured and the executed positions are
        the same; in the demo the joint states come from the recorded bag (open loop), not from
        this stand-in, so a seam counts as continuous with either of them.
        ``velocities`` / ``accelerations`` [n, A]: the points' fields when the message has them."""
        lim, tol = self.limits, self.limits.tolerance
        rep = self.report
        rep.trajectories += 1
        n = len(times_ns)
        rep.points += n
        if n > 1:
            rep.plan_trajectories += 1
        elif n == 1:
            rep.hold_trajectories += 1
        where = f"trajectory {rep.trajectories} (t={arrival_ns / 1e9:.3f} s)"
        bad: list[str] = []
        if tuple(joint_names) != lim.joint_names:
            bad.append(f"{where}: joint_names {list(joint_names)} != {list(lim.joint_names)}")
        p = np.asarray(positions, dtype=np.float64)
        if n == 0:
            bad.append(f"{where}: no points")
        elif p.shape != (n, len(lim.joint_names)):
            bad.append(f"{where}: positions shape {p.shape}, expected ({n}, {len(lim.joint_names)})")
        derivatives = {}
        for name, d in (("velocities", velocities), ("accelerations", accelerations)):
            if d is not None:
                d = np.asarray(d, dtype=np.float64)
                if d.shape != p.shape or not np.isfinite(d).all():
                    bad.append(f"{where}: {name} shape {d.shape} or values do not match the positions {p.shape}")
                derivatives[name] = d
        if bad:
            rep.violations += bad
            return bad
        t = np.asarray(times_ns, dtype=np.int64)
        start = stamp_ns if stamp_ns != 0 else arrival_ns
        if stamp_ns != 0 and start + t[-1] < arrival_ns:
            bad.append(f"{where}: header.stamp {stamp_ns / 1e9:.3f} s: the trajectory ends before it arrives "
                       "(a JTC rejects it)")
        elif stamp_ns != 0 and start + t[0] <= arrival_ns:
            bad.append(f"{where}: header.stamp {stamp_ns / 1e9:.3f} s: the first point was due "
                       f"{(arrival_ns - start - t[0]) / 1e6:.1f} ms before arrival (the JTC starts mid-trajectory)")
        times_ok = t[0] > 0 and bool(np.all(np.diff(t) > 0))
        if not times_ok:
            bad.append(f"{where}: time_from_start not strictly increasing from > 0: {(t[:4] / 1e9).tolist()}...")
        if not np.isfinite(p).all():
            bad.append(f"{where}: non-finite positions")
        else:
            below, above = p < lim.position_min - tol, p > lim.position_max + tol
            if below.any() or above.any():
                k, d = map(int, np.argwhere(below | above)[0])
                bad.append(f"{where}: point {k} joint '{lim.joint_names[d]}' = {p[k, d]:.4f} outside "
                           f"[{lim.position_min[d]:.4f}, {lim.position_max[d]:.4f}]")
            if n > 1 and times_ok:
                dt = np.diff(t)[:, None]
                ratio = np.abs(np.diff(p, axis=0)) / (lim.max_step * dt / lim.control_period_ns)
                rep.max_point_step_ratio = max(rep.max_point_step_ratio, float(ratio.max()))
                if ratio.max() > 1 + 1e-6:
                    k, d = map(int, np.unravel_index(int(np.argmax(ratio)), ratio.shape))
                    bad.append(f"{where}: step {k}->{k + 1} of joint '{lim.joint_names[d]}' is "
                               f"{ratio[k, d]:.2f} x the rate cap")
            if "velocities" in derivatives:
                ratio = np.abs(derivatives["velocities"]) / lim.speed_cap
                rep.max_point_velocity_ratio = max(rep.max_point_velocity_ratio, float(ratio.max()))
                if ratio.max() > 1 + 1e-6:
                    k, d = map(int, np.unravel_index(int(np.argmax(ratio)), ratio.shape))
                    bad.append(f"{where}: velocity of joint '{lim.joint_names[d]}' at point {k} is "
                               f"{ratio[k, d]:.2f} x the rate cap")
            here = self.position(arrival_ns)
            if here is not None:
                periods = float(np.max(np.abs(p[0] - here) / lim.max_step))
                if measured is not None:
                    periods = min(periods, float(np.max(np.abs(p[0] - measured) / lim.max_step)))
                rep.max_seam_jump_periods = max(rep.max_seam_jump_periods, periods)
                allowed = (start + t[0] - arrival_ns) / lim.control_period_ns + lim.seam_slack_periods
                if periods > allowed + 1e-6:
                    bad.append(f"{where}: seam jump of {periods:.2f} periods of max_step into point 0 "
                               f"(allowed {allowed:.2f})")
        if not bad:
            knots = [Knot(p[k], derivatives["velocities"][k] if "velocities" in derivatives else None,
                          derivatives["accelerations"][k] if "accelerations" in derivatives else None)
                     for k in range(n)]
            bad += self._execute(where, arrival_ns, start + t, knots)
        rep.violations += bad
        return bad

    def _execute(self, where: str, arrival_ns: int, at_ns: np.ndarray, knots: list[Knot]) -> list[str]:
        """Replace the motion from arrival on (the JTC's switch); record the switch; returns the
        velocity-jump violation if one is configured and exceeded."""
        lim = self.limits
        before = self.state(arrival_ns, left=True)
        if before is None:  # nothing executed yet: the robot is at the first point, at rest
            rest = np.zeros_like(knots[0].positions)
            before = (knots[0].positions.copy(), rest, rest.copy())
        mismatch = None
        # What the replaced motion would have had at point 0's time -- unless that is in its last
        # segment or past it, where it only decelerates to its final point at rest.
        if knots[0].velocities is not None and self._segments and at_ns[0] <= self._segments[-1].start_ns:
            old = self.state(int(at_ns[0]))
            mismatch = float(np.max(np.abs(knots[0].velocities - old[1]) / lim.speed_cap))
        keep = self._piece(arrival_ns, left=True) + 1  # pieces that started before the arrival
        del self._starts[keep:], self._segments[keep:]
        first = Knot(*before)
        new = [Segment(arrival_ns, int(at_ns[0]), first, knots[0])]
        new += [Segment(int(at_ns[k]), int(at_ns[k + 1]), knots[k], knots[k + 1]) for k in range(len(knots) - 1)]
        for seg in new:
            self._starts.append(seg.start_ns)
            self._segments.append(seg)
            ratio = float(np.max(seg.max_speed() / lim.speed_cap))
            self.report.max_spline_speed_ratio = max(self.report.max_spline_speed_ratio, ratio)
        bad: list[str] = []
        if keep:  # a switch: the velocity right after the takeover against the one just before it
            jump = float(np.max(np.abs(new[0].at(arrival_ns)[1] - before[1]) / lim.speed_cap))
            self.report.switches.append(Switch(arrival_ns, len(knots), new[0].kind.value, jump, mismatch))
            if len(knots) > 1 and lim.velocity_jump_limit is not None and jump > lim.velocity_jump_limit + 1e-9:
                bad.append(f"{where}: the velocity jumps by {jump:.2f} speed caps where it takes over "
                           f"({new[0].kind.value} into point 0; allowed {lim.velocity_jump_limit:.2f})")
        return bad

    def executed(self, start_ns: int, stop_ns: int, period_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The executed track sampled every period_ns in [start_ns, stop_ns): (times [N], positions [N, A])."""
        if not self._segments:
            return np.zeros(0, np.int64), np.zeros((0, len(self.limits.joint_names)))
        first = max(start_ns, self._starts[0])
        times = np.arange(first, stop_ns, period_ns, dtype=np.int64)
        return times, np.stack([self.position(int(x)) for x in times]) if len(times) else \
            np.zeros((0, len(self.limits.joint_names)))


def read_joint_states(bag: Path, topic: str, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(stamps [N], positions [N, len(names)]) of a bag's JointState topic, by name, in stamp order."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    from lightwam_ros.replay.bags import BagReader
    from lightwam_ros.ros.images import time_to_ns

    stamps, rows = [], []
    with BagReader(bag) as reader:
        if topic in reader.info.topics:
            for m in reader.messages([topic]):
                msg = deserialize_message(m.raw, JointState)
                where = dict(zip(msg.name, msg.position))
                if all(n in where for n in names):
                    stamps.append(time_to_ns(msg.header.stamp))
                    rows.append([where[n] for n in names])
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    return (np.asarray(stamps, dtype=np.int64)[order],
            np.asarray(rows, dtype=np.float64).reshape(len(stamps), len(names))[order])


def execute_recorded(output_bag: Path, topic: str, limits: ExecutorLimits,
                     joint_states: tuple[np.ndarray, np.ndarray] | None = None) -> TrajectoryExecutor:
    """Feed the trajectories the node published (recorded at their arrival times) to the executor;
    ``joint_states`` (read_joint_states of the input bag) give the measured position at each arrival."""
    from rclpy.serialization import deserialize_message
    from trajectory_msgs.msg import JointTrajectory

    from lightwam_ros.replay.bags import BagReader
    from lightwam_ros.ros.images import time_to_ns
    from lightwam_ros.ros.outputs import duration_to_ns

    executor = TrajectoryExecutor(limits)
    with BagReader(output_bag) as reader:
        if topic not in reader.info.topics:
            return executor
        for m in reader.messages([topic]):
            msg = deserialize_message(m.raw, JointTrajectory)
            times = np.array([duration_to_ns(pt.time_from_start) for pt in msg.points], dtype=np.int64)
            positions = np.array([list(pt.positions) for pt in msg.points], dtype=np.float64)
            measured = None
            if joint_states is not None and len(joint_states[0]):
                k = int(np.searchsorted(joint_states[0], m.log_ns, side="right")) - 1
                measured = joint_states[1][k] if k >= 0 else None
            fields = {}
            for name in ("velocities", "accelerations"):  # a field given for every point (else: not given)
                rows = [list(getattr(pt, name)) for pt in msg.points]
                if rows and all(rows):
                    fields[name] = np.array(rows, dtype=np.float64)
            executor.receive(m.log_ns, list(msg.joint_names), time_to_ns(msg.header.stamp), times,
                             positions.reshape(len(times), -1), measured, **fields)
    return executor


def following_after_first_chunk(samples: Sequence[tuple[int, Mapping[str, str], Mapping[str, str]]],
                                end_ns: int | None = None) -> dict[str, Any]:
    """How many control ticks followed the policy once the first chunk was accepted.

    samples: (receive time, control status values, inference status values) of each /diagnostics
    message, in order. The window runs from the first message that counts an accepted chunk to the
    last one received at or before end_ns (the end of the recording: after it the inputs stop and
    the node holds on purpose). Every tick that is not a hold counted by the safety filter
    ("safety.hold.<reason>") followed the policy. Resolution: one diagnostics period at the start.
    """
    def holds(v: Mapping[str, str]) -> int:
        return sum(int(float(x)) for k, x in v.items() if k.startswith("safety.hold."))

    window = [(t, c, i) for t, c, i in samples if "ticks" in c and (end_ns is None or t <= end_ns)]
    first = next((k for k, (_, _, i) in enumerate(window) if float(i.get("chunks.accepted", 0)) >= 1), None)
    if first is None or first == len(window) - 1:
        return {"ticks": 0, "following": 0, "fraction": 0.0}
    (_, c0, _), (_, c1, _) = window[first], window[-1]
    ticks = int(float(c1["ticks"])) - int(float(c0["ticks"]))
    held = holds(c1) - holds(c0)
    following = max(0, ticks - held)
    return {"ticks": ticks, "following": following, "fraction": round(following / ticks, 4) if ticks else 0.0}


def node_statistics(output_bag: Path, topic: str = "/diagnostics", end_ns: int | None = None) -> dict[str, Any]:
    """From the node's own /diagnostics: control rate achieved (ticks per second of node clock),
    wall-clock tick-period jitter, inference latency percentiles (inference status), and the share
    of control ticks that followed the policy after the first chunk (following_after_first_chunk)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import deserialize_message

    from lightwam_ros.replay.bags import BagReader

    control: list[tuple[int, dict[str, str]]] = []
    inference: dict[str, str] = {}
    samples: list[tuple[int, dict[str, str], dict[str, str]]] = []
    with BagReader(output_bag) as reader:
        if topic not in reader.info.topics:
            return {"available": False}
        for m in reader.messages([topic]):
            ctl: dict[str, str] = {}
            for s in deserialize_message(m.raw, DiagnosticArray).status:
                values = {kv.key: kv.value for kv in s.values}
                if s.name.endswith(": control"):
                    control.append((m.log_ns, values))
                    ctl = values
                elif s.name.endswith(": inference"):
                    inference = values
            if ctl:
                samples.append((m.log_ns, ctl, inference))
    control = [(t, v) for t, v in control if v.get("lifecycle") == "active" and "ticks" in v]
    out: dict[str, Any] = {"available": len(control) >= 2}
    out["after_first_chunk"] = following_after_first_chunk(
        [(t, c, i) for t, c, i in samples if c.get("lifecycle") == "active"], end_ns)
    if out["available"]:
        (t0, v0), (t1, v1) = control[0], control[-1]
        out["rate_hz"] = (int(v1["ticks"]) - int(v0["ticks"])) / ((t1 - t0) / 1e9)
        for key in ("mean", "std", "p99", "max"):
            if f"tick_period_ms.{key}" in v1:
                out[f"tick_period_ms_{key}"] = float(v1[f"tick_period_ms.{key}"])
    for key in ("p50", "p90", "p99", "max"):
        if f"total_ms.{key}" in inference:
            out[f"inference_total_ms_{key}"] = float(inference[f"total_ms.{key}"])
    return out


def plot_executed(path: Path, names: Sequence[str], times_ns: np.ndarray, positions: np.ndarray,
                  arrivals_ns: Sequence[int], origin_ns: int, limits: ExecutorLimits, title: str,
                  recorded: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """One panel per joint: the executed command, the recorded joints (grey; what the robot did when
    the bag was made), trajectory arrivals as ticks, limits dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 1.6 * rows + 1), sharex=True, squeeze=False)
    t = (times_ns - origin_ns) / 1e9
    arr = (np.asarray(arrivals_ns, dtype=np.int64) - origin_ns) / 1e9
    rec_t = None if recorded is None else (np.asarray(recorded[0], dtype=np.int64) - origin_ns) / 1e9
    for i, name in enumerate(names):
        ax = axes[i % rows][i // rows]
        if rec_t is not None and len(rec_t):
            ax.plot(rec_t, recorded[1][:, i], lw=2.0, color="0.75", label="recorded")
        if len(t):
            ax.plot(t, positions[:, i], lw=1.2, color="tab:blue", label="executed")
            lo, hi = np.nanmin(positions[:, i]), np.nanmax(positions[:, i])
            if rec_t is not None and len(rec_t):
                lo, hi = min(lo, recorded[1][:, i].min()), max(hi, recorded[1][:, i].max())
            pad = max(0.05, 0.1 * (hi - lo))
            ax.set_ylim(max(lo - pad, limits.position_min[i] - pad), min(hi + pad, limits.position_max[i] + pad))
        for lim in (limits.position_min[i], limits.position_max[i]):
            ax.axhline(lim, ls="--", lw=0.6, color="tab:red")
        if len(arr):
            ax.plot(arr, np.full(len(arr), ax.get_ylim()[0]), "|", color="tab:gray", ms=4)
        ax.set_ylabel(name, fontsize=7, rotation=0, ha="right")
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("s (node clock, from the start of the bag)", fontsize=7)
    if recorded is not None:
        axes[0][0].legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Settings for this machine: measured before the node starts (the bundle does not matter here)
# ---------------------------------------------------------------------------------------------

# The latency measured below, with nothing else of the demo running, can grow in the live run: the
# replay process (bag playback, /clock, the recorder) and the node's executor share the CPU with
# inference. On a busy 2-core machine the node's p50 was 0.7x to 1.75x the latency measured alone
# (torch: 1.75x), so the choice plans for twice the measured latency. The control rate stays the
# bundle's action rate: a chunk lasts its steps times the action period whatever the control rate,
# so lowering it would not let a slow model keep up (latency_advice).
LIVE_LOAD_FACTOR = 2.0
# Share of the gapless budget the planned latency may use: the latency in the live run spreads
# (p90/p50 up to 1.3 measured under load, and a CI run saw the p50 at 1.95x the latency measured
# alone), so a plan that exactly fills the budget lets every slower inference expire its chunk.
RATE_HEADROOM = 0.6
# Several torch threads are chosen only when clearly faster: the replay and the node's executor need
# CPU too, and on 2 cores a second inference thread measured alone competes with them in the run.
THREADS_ADVANTAGE = 1.25
# Slowest playback the demo picks by itself (an 8 s bag then takes 80 s).
MIN_RATE = 0.1
MEASURE_RUNS = 5
BACKENDS = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Candidate:
    """One way to run inference on this CPU: a backend and torch's intra-op thread count (the
    node's OMP_NUM_THREADS; on a busy machine one thread is often faster than all cores, because
    threads that wait for a preempted sibling waste their time slices)."""

    backend: str
    threads: int

    @property
    def label(self) -> str:
        if self.backend != "torch":  # ONNX Runtime sizes its own thread pool; torch only preprocesses
            return self.backend
        return f"{self.backend} ({self.threads} thread{'s' if self.threads > 1 else ''})"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs the node with, and why (printed, and kept in summary.json)."""

    backend: str
    threads: int
    rate: float  # playback rate: bag seconds per wall second (the node runs on the bag clock)
    latency_ms: float | None  # measured p50 of the chosen candidate, alone on this machine
    expected_ms: float | None  # what the live run is planned for (latency_ms * LIVE_LOAD_FACTOR)
    measured_ms: dict[str, float]  # candidate label -> measured p50
    verdict: str  # latency_advice.Verdict at real time for expected_ms
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "torch_threads": self.threads, "playback_rate": self.rate,
                "latency_ms": self.latency_ms, "expected_live_latency_ms": self.expected_ms,
                "measured_ms": dict(self.measured_ms), "verdict": self.verdict, "reasons": list(self.reasons)}


def _round_down(x: float, step: float = 0.05) -> float:
    return math.floor(x / step + 1e-9) * step


def choose_settings(measured: Mapping[Candidate, float], timing: ChunkTiming, *, rate: float | None = None,
                    load_factor: float = LIVE_LOAD_FACTOR, min_rate: float = MIN_RATE) -> DemoSettings:
    """Pick the fastest measured candidate and a playback rate at which its latency fits a chunk.

    timing: latency_advice.ChunkTiming of the node's chunks. Real time (rate 1) when the expected
    live latency keeps the command gapless; otherwise the bag is played slower, so that on the
    node's clock (the bag clock) inference takes rate x its wall time and fits the gapless budget.
    Everything else runs as on a robot at that clock; the reasons say what a robot would need.
    Pure: the measurements come in, nothing is run here.
    """
    if not measured:
        raise ValueError("no inference candidate could be measured")
    best = min(measured, key=lambda c: measured[c] * (THREADS_ADVANTAGE if c.threads > 1 else 1.0))  # ties: first
    latency = float(measured[best])
    expected = latency * load_factor
    others = ", ".join(f"{c.label} {ms:.0f} ms" for c, ms in measured.items() if c != best)
    reasons = [f"inference: {best.label}, {latency:.0f} ms here" + (f" (measured too: {others})" if others else "")]
    advice = advise(expected, timing, best.backend, "cpu")
    budget_ms = timing.gapless_budget_ns / 1e6
    if rate is not None:
        chosen = float(rate)
        reasons.append(f"playback rate {chosen:g} (given)")
    elif expected <= RATE_HEADROOM * budget_ms:
        chosen = 1.0
        reasons.append(f"real time: {expected:.0f} ms expected in the live run ({load_factor:g} x, the replay "
                       f"shares the CPU) fits {advice.message.split(' fits ', 1)[-1]}")
    else:
        chosen = max(min_rate, min(1.0, _round_down(RATE_HEADROOM * budget_ms / expected)))
        reasons.append(f"{expected:.0f} ms expected in the live run ({load_factor:g} x, the replay shares the CPU) "
                       f"is more than {RATE_HEADROOM:.0%} of the {budget_ms:.0f} ms a {timing.steps}-step chunk allows "
                       f"with one inference at a time, so the bag plays at {chosen:g}x real time: on the node's (bag) "
                       f"clock inference then takes {chosen * expected:.0f} ms. A robot at real time would need: "
                       + " / ".join(advice.remedies or ("faster inference (a GPU)",)))
        if chosen * expected > budget_ms:
            reasons.append(f"even at {chosen:g}x inference does not fit; expect holds between chunks")
    return DemoSettings(best.backend, best.threads, chosen, round(latency, 1), round(expected, 1),
                        {c.label: round(ms, 1) for c, ms in measured.items()}, advice.verdict.value, tuple(reasons))


def ensure_onnx(bundle: Path) -> str | None:
    """Add the float32 ONNX export to the bundle unless it has one; None when it is there, else why not."""
    try:
        import onnxruntime  # noqa: F401
        import torch

        from lightwam_ros.bundle.format import Bundle

        if "float32" in Bundle.load(bundle, verify=False).onnx:
            return None
        from lightwam_ros.inference.onnx_export import export_onnx

        log.info("adding the ONNX export to %s (once; ONNX Runtime is often faster than torch on a CPU)", bundle)
        export_onnx(bundle, dtype=torch.float32, device="cpu")
        return None
    except Exception as exc:  # noqa: BLE001 - no onnxruntime/onnxscript, read-only bundle: torch only
        return f"no ONNX export ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"


def measure_candidates(bundle: Path, candidates: Sequence[Candidate], steps: int | None = None,
                       runs: int = MEASURE_RUNS) -> dict[Candidate, float]:
    """p50 of `runs` whole-pipeline inferences (after one warm-up) per candidate, in this process.
    A candidate already 3x slower than the best so far is not run to the end (on a busy machine one
    such run can take seconds, and it cannot win)."""
    import torch

    from lightwam_ros.inference.pipeline import PolicyPipeline

    out: dict[Candidate, float] = {}
    threads0 = torch.get_num_threads()
    for c in candidates:
        try:
            torch.set_num_threads(c.threads)
            with PolicyPipeline.from_bundle(bundle, backend=c.backend, device="cpu", dtype="float32",
                                            steps=steps) as pipe:
                pipe.warmup(1)
                h, w = pipe.embodiment.layout.canvas_hw
                images = {cam: np.full((h, w, 3), 128, np.uint8) for cam in pipe.cameras}
                instruction = pipe.known_instructions[0]
                times: list[float] = []
                best = min(out.values(), default=math.inf)
                for _ in range(runs):
                    t0 = time.perf_counter()
                    pipe.predict(images, pipe.neutral_state(), instruction, 0)
                    times.append(1e3 * (time.perf_counter() - t0))
                    if min(times) > 3 * best:
                        break
            out[c] = float(np.median(times))
            log.info("measured %s: p50 %.1f ms (%s)", c.label, out[c], ", ".join(f"{t:.0f}" for t in times))
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is simply not chosen
            log.warning("cannot run %s here: %s", c.label, exc)
        finally:
            torch.set_num_threads(threads0)
    return out


def demo_candidates(backend: str, onnx_ok: bool, cpu_threads: int, env_threads: str | None) -> list[Candidate]:
    """torch with one thread and with all (unless OMP_NUM_THREADS fixes it), and onnx if available."""
    if env_threads and env_threads.isdigit() and int(env_threads) > 0:
        counts = [int(env_threads)]
    else:
        counts = sorted({1, max(1, cpu_threads)})
    out: list[Candidate] = []
    if backend in ("auto", "onnx") and onnx_ok:
        out.append(Candidate("onnx", counts[0]))
    if backend in ("auto", "torch") or not out:
        out += [Candidate("torch", n) for n in counts]
    return out


def pick_settings(options: DemoOptions, timing: ChunkTiming) -> DemoSettings:
    """Measure this machine and choose (backend, threads, playback rate); logs what and why."""
    import torch

    onnx_note = ensure_onnx(options.bundle) if options.backend in ("auto", "onnx") else "not wanted (--backend)"
    if onnx_note:
        log.info("onnx backend unavailable: %s", onnx_note)
    candidates = demo_candidates(options.backend, onnx_note is None, torch.get_num_threads(),
                                 os.environ.get("OMP_NUM_THREADS"))
    settings = choose_settings(measure_candidates(options.bundle, candidates, timing.steps), timing,
                               rate=options.rate)
    for r in settings.reasons:
        log.info("demo settings: %s", r)
    return settings


def paced_rate(bundle: Path, timing: ChunkTiming, backend: str = "torch", threads: int = 1,
               runs: int = 3) -> float:
    """The playback rate choose_settings picks for one backend on this machine, now: for live runs
    (tests, benchmarks) that must see inference fit a chunk on the node's clock at any CPU speed.
    Start the node with OMP_NUM_THREADS=threads so that it runs what was measured."""
    return choose_settings(measure_candidates(bundle, [Candidate(backend, threads)], timing.steps, runs),
                           timing).rate


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the node process the replay starts (it inherits os.environ)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_profile(base: str, out: Path, overrides: Mapping[str, Any]) -> Path:
    """The base profile with `overrides` (flat dotted names) applied, as a file the replay can load."""
    import yaml

    from lightwam_ros.config import resolve_profile

    doc = yaml.safe_load(resolve_profile(base).read_text())
    (node, body), = doc.items()
    for name, value in overrides.items():
        *parents, leaf = name.split(".")
        d = body["ros__parameters"]
        for key in parents:
            d = d.setdefault(key, {})
        d[leaf] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# written by `lightwam demo`: profile {base!r} with the settings it chose for this machine\n"
                   + yaml.safe_dump({node: body}, sort_keys=False))
    return out


# ---------------------------------------------------------------------------------------------
# The demo run
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoOptions:
    """`lightwam demo` arguments."""

    out: Path = Path("out/demo")  # summary.json, executed_joints.png, input_bag/, replay/ (outputs MCAP)
    # None: the shipped trained model, copied to <out>/bundle (the ONNX export the demo adds goes
    # there, never into the package). A path: used as is; a random-weights bundle is written there
    # when it holds none.
    bundle: Path | None = None
    seconds: float = 8.0  # length of the synthetic recording
    image_hw: tuple[int, int] = (240, 320)  # synthetic camera resolution (HxW)
    camera_hz: float = 30.0
    mode: str = "live"  # live: over DDS to a node process; offline: node callbacks on the bag clock
    seed: int = 0
    backend: str = "auto"  # live: auto = the fastest measured here (onnx / torch), or torch | onnx
    rate: float | None = None  # live playback rate; None = chosen from the measured latency

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "bundle", None if self.bundle is None else Path(self.bundle))
        if not self.seconds > 0:
            raise ValueError(f"--seconds must be > 0, got {self.seconds}")
        if self.mode not in ("live", "offline"):
            raise ValueError(f"--mode must be live or offline, got {self.mode!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.rate is not None and not (0 < self.rate <= 10 and math.isfinite(self.rate)):
            raise ValueError(f"--rate must be in (0, 10], got {self.rate}")


@dataclass
class DemoResult:
    summary: dict[str, Any]
    summary_path: Path
    plot_path: Path
    output_bag: Path

    @property
    def ok(self) -> bool:
        return self.summary["executor"]["violations"] == 0 and self.summary["executor"]["plan_trajectories"] > 0


def ensure_bundle(path: Path, seed: int = 0) -> bool:
    """Write the tiny demo bundle to `path` unless one is there; True if it was written."""
    if (path / "manifest.json").is_file():
        return False
    from lightwam_ros.demo.tiny_bundle import write_demo_bundle

    if path.exists():
        raise FileExistsError(f"--bundle {path} exists but holds no manifest.json; remove it or pick another path")
    log.info("writing the tiny demo bundle to %s", path)
    write_demo_bundle(path, size="tiny", seed=seed)
    return True


def copy_trained_bundle(out: Path) -> Path:
    """The shipped trained bundle, copied to ``out`` (refreshed when the shipped one changed)."""
    from lightwam_ros.demo.train import trained_bundle_path

    shipped = trained_bundle_path()
    manifest = shipped / "manifest.json"
    if (out / ".shipped_manifest.json").is_file() and \
            (out / ".shipped_manifest.json").read_bytes() == manifest.read_bytes():
        return out  # the copy of this version, maybe with the ONNX export added
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(shipped, out)
    shutil.copyfile(manifest, out / ".shipped_manifest.json")
    return out


def _fresh_out_dir(out: Path) -> None:
    """Remove the outputs of a previous demo run (only the names this demo writes)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("input_bag", "replay"):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in (SUMMARY, EXECUTED_PLOT, PROFILE_FILE):
        (out / name).unlink(missing_ok=True)


def run_demo(options: DemoOptions) -> DemoResult:
    from lightwam_ros.config import from_params, load_profile
    from lightwam_ros.demo.synthetic import Scene, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
    from lightwam_ros.replay.options import ReplayOptions
    from lightwam_ros.replay.runner import run_replay

    _fresh_out_dir(options.out)
    if options.bundle is None:
        bundle, built = copy_trained_bundle(options.out / "bundle"), False
    else:
        bundle, built = options.bundle, ensure_bundle(options.bundle, options.seed)
    options = dataclasses.replace(options, bundle=bundle)
    spec = SyntheticBagSpec(seconds=options.seconds, height=options.image_hw[0], width=options.image_hw[1],
                            rate_hz=options.camera_hz, instructions=(TimedInstruction(DEMO_INSTRUCTION, 0.0),),
                            scene=Scene.REACH, seed=options.seed)
    bag = write_synthetic_bag(spec, options.out / "input_bag")
    _, params = load_profile(DEMO_PROFILE)
    cfg = from_params({**params, "bundle": str(options.bundle)})
    profile, rate, env, settings = DEMO_PROFILE, 1.0, {}, None
    if options.mode == "live":  # offline runs on the bag clock with simulated latency: nothing to adapt
        settings = pick_settings(options, demo_chunk_timing(options.bundle, cfg))
        profile = str(write_profile(DEMO_PROFILE, options.out / PROFILE_FILE, {"backend": settings.backend}))
        rate, env = settings.rate, {"OMP_NUM_THREADS": str(settings.threads)}
    with _environment(env):
        replay = run_replay(ReplayOptions(bag=bag, profile=profile, out=options.out / "replay",
                                          bundle=str(options.bundle.resolve()), mode=options.mode, rate=rate))
    limits = ExecutorLimits.from_config(cfg)
    recorded = read_joint_states(bag, cfg.joints.state_topic, cfg.output.joint_names)
    executor = execute_recorded(replay.output_bag, cfg.output.topic, limits, recorded)
    times, positions = executor.executed(spec.start_ns, spec.end_ns, cfg.control_period_ns)
    arrivals = _arrival_times(replay.output_bag, cfg.output.topic)
    plot = plot_executed(options.out / EXECUTED_PLOT, cfg.output.joint_names, times, positions, arrivals,
                         spec.start_ns, limits,
                         f"lightwam demo ({options.mode}): commands executed by a JTC stand-in, "
                         f"{executor.report.plan_trajectories} trajectories", recorded=recorded)
    r = replay.report
    summary = {
        "mode": options.mode,
        "bundle": {"path": str(options.bundle), "built_now": built},
        "input_bag": {"path": str(bag), "seconds": options.seconds, "cameras": list(spec.cameras),
                      "size_hw": list(options.image_hw), "camera_hz": options.camera_hz},
        "frame_sets": r.get("delivery") or r.get("frame_sets"),
        "chunks": {"published": r["chunks"]["published"], "steps": r["chunks"]["steps_published"]},
        "latency_ms": r.get("latency_ms", {}),
        "settings": settings.to_dict() if settings else {"backend": cfg.backend.value, "playback_rate": None},
        "node": node_statistics(replay.output_bag, end_ns=spec.end_ns),
        "executor": executor.report.to_dict(),
        "outputs": {"bag": str(replay.output_bag), "topics": r["outputs"]["topics"],
                    "replay_report": str(replay.report_path), "replay_plot": str(replay.plot_path),
                    "executed_plot": str(plot)},
    }
    summary_path = options.out / SUMMARY
    summary_path.write_text(json.dumps(summary, indent=2, default=_json_default))
    return DemoResult(summary, summary_path, plot, replay.output_bag)


def demo_chunk_timing(bundle: Path, cfg: Any) -> ChunkTiming:
    """The node's chunk geometry for this bundle and profile (steps used, action period, requests in
    flight: one on a CPU, where inference does not overlap)."""
    from lightwam_ros.bundle.format import Bundle

    b = Bundle.load(bundle, verify=False)
    emb = b.embodiment
    steps = min(cfg.chunk.steps_limit(int(emb.trained_steps)), b.model_config.horizon)
    rate_hz = emb.action_rate_hz or cfg.control_rate_hz
    return ChunkTiming(steps, int(round(1e9 / rate_hz)), 1)


def _arrival_times(output_bag: Path, topic: str) -> list[int]:
    from lightwam_ros.replay.bags import BagReader

    with BagReader(output_bag) as reader:
        if topic not in reader.info.topics:
            return []
        return [m.log_ns for m in reader.messages([topic])]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The human-readable summary `lightwam demo` prints."""
    fs = summary.get("frame_sets") or {}
    lat = (summary.get("latency_ms") or {}).get("total") or {}
    node = summary["node"]
    ex = summary["executor"]
    settings = summary.get("settings") or {}
    lines = [f"lightwam demo ({summary['mode']}): {summary['input_bag']['seconds']:.0f} s synthetic bag, "
             f"{len(summary['input_bag']['cameras'])} cameras at {summary['input_bag']['camera_hz']:g} Hz"]
    if settings.get("reasons"):
        rate = settings["playback_rate"]
        lines.append(f"settings: backend {settings['backend']}, torch threads {settings['torch_threads']}, "
                     f"playback {'real time' if rate == 1 else f'{rate:g}x real time'}")
        lines += [f"  why: {r}" for r in settings["reasons"]]
    if fs:
        lines.append("frame sets: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in fs.items()
                                                if isinstance(v, (int, float))))
    lines.append(f"chunks: {summary['chunks']['published']} published ({summary['chunks']['steps']} steps each)")
    if lat.get("count"):
        lines.append(f"inference latency: p50 {lat['p50']} ms, p90 {lat['p90']} ms")
    elif "inference_total_ms_p50" in node:
        lines.append(f"inference latency (node diagnostics): p50 {node['inference_total_ms_p50']:.1f} ms, "
                     f"p90 {node['inference_total_ms_p90']:.1f} ms")
    if node.get("available"):
        # p99, not std/max: under use_sim_time the clock pauses while the replay starts, one long period
        jitter = (f"; wall-clock tick period mean {node['tick_period_ms_mean']:.1f} ms, p99 "
                  f"{node['tick_period_ms_p99']:.1f} ms") if "tick_period_ms_p99" in node else ""
        lines.append(f"control rate achieved: {node['rate_hz']:.1f} Hz (node clock){jitter}")
    after = node.get("after_first_chunk") or {}
    if after.get("ticks"):
        rest = "; the rest held between chunks" if after["following"] < after["ticks"] else ""
        lines.append(f"following the policy on {after['following']} of {after['ticks']} control ticks after the "
                     f"first chunk ({100 * after['fraction']:.0f} %){rest}")
    lines.append(f"executor stand-in: {ex['plan_trajectories']} trajectories + {ex['hold_trajectories']} holds, "
                 f"{ex['violations']} violations, max seam {ex['max_seam_jump_periods']:.2f} periods of max_step")
    if ex.get("handovers"):
        lines.append(f"  handovers: {ex['handovers']}, max velocity jump {ex['max_velocity_jump']:.2f} speed caps"
                     + ("" if ex.get("max_first_velocity_mismatch") is None else
                        f", first-point velocity off the replaced motion by at most "
                        f"{ex['max_first_velocity_mismatch']:.2f}"))
    for v in ex["first_violations"]:
        lines.append(f"  violation: {v}")
    out = summary["outputs"]
    lines.append(f"wrote {out['executed_plot']}, {out['bag']} (MCAP), {out['replay_report']}")
    return lines
