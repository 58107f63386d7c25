"""Message builders for the output adapters (no rclpy node APIs: plain message classes).

API
- ``joint_trajectory(joint_names, positions [m, A], dt_ns, velocities [m, A] | None = None, stamp_ns=0)
  -> JointTrajectory`` -- for a JointTrajectoryController: point k at time_from_start (k+1)*dt after
  header.stamp (0: start on arrival).
- ``forward_command(position [A]) -> Float64MultiArray`` -- one control tick for a forward controller.
- ``action_chunk_msg(chunk, joint_names) -> JointTrajectory`` -- the raw chunk on ~/action_chunk.
- ``action_chunk_from_msg(msg) -> (stamp_ns, dt_ns | None, actions float32 [n, A], joint_names)``
- ``diagnostic_array(statuses, stamp_ns) -> DiagnosticArray`` -- from diagnostics.py status dicts.
- ``debug_canvas(canvas uint8 [H, W, 3], stamp_ns, frame_id="") -> Image`` (rgb8)
- ``ns_to_duration(ns) -> Duration``, ``duration_to_ns(d) -> int`` (stamps: images.ns_to_time/time_to_ns)

JointTrajectory for a JTC (docs/design.md, "JointTrajectoryController conventions"): stamp 0 means
"start on arrival", a non-zero stamp (output.trajectory_start_delay) is the start on the node clock;
point k at (k+1)*dt lets the controller bridge from the current state into the first point; times
strictly increase. Velocities (optional) turn on cubic interpolation; the controller computes them
(control/jtc_spline.knot_velocities: from the limited points and where the trajectory starts, which
only it knows), and this builder only checks them: one per point and joint, finite, the last 0 (a
Jazzy JTC rejects a trajectory that ends in motion by default).

~/action_chunk is a trajectory_msgs/JointTrajectory, not a Float32MultiArray, because the chunk is
meaningless without its observation stamp and a MultiArray has no header: header.stamp = the
observation stamp, joint_names = the action dims, point k = action k at time_from_start k*dt (so
point 0 is the action for the observation instant and stamp + time_from_start is each action's
absolute time). Only the supervised rows (chunk.executable_steps) are published: the untrained tail
is never executed and has no meaning. Values are the de-normalized model output before scheduling
and safety. Do not route it to a controller: its stamp is in the past by design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lightwam_ros.ros.images import ns_to_time, rgb_to_image, time_to_ns
from lightwam_ros.types import ActionChunk


def ns_to_duration(ns: int) -> Duration:
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


def duration_to_ns(d: Duration) -> int:
    return int(d.sec) * 1_000_000_000 + int(d.nanosec)


def _positions(positions: np.ndarray, joint_names: Sequence[str]) -> np.ndarray:
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(joint_names):
        raise ValueError(f"positions must be [m, {len(joint_names)}] for joints {list(joint_names)}, "
                         f"got {p.shape}")
    return p


def _trajectory(joint_names: Sequence[str], p: np.ndarray, times_ns: Sequence[int],
                velocities: np.ndarray | None, stamp_ns: int) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.joint_names = list(joint_names)
    points = []
    for k, t in enumerate(times_ns):
        pt = JointTrajectoryPoint()
        pt.positions = p[k].tolist()
        if velocities is not None:
            pt.velocities = velocities[k].tolist()
        pt.time_from_start = ns_to_duration(t)
        points.append(pt)
    msg.points = points
    return msg


def joint_trajectory(joint_names: Sequence[str], positions: np.ndarray, dt_ns: int,
                     velocities: np.ndarray | None = None, stamp_ns: int = 0) -> JointTrajectory:
    """JTC trajectory: point k at time_from_start (k+1)*dt_ns after header.stamp ``stamp_ns``
    (0: start on arrival), with ``velocities`` [m, A] when given (see module doc)."""
    if dt_ns <= 0:
        raise ValueError(f"dt_ns must be > 0, got {dt_ns}")
    if stamp_ns < 0:
        raise ValueError(f"stamp_ns must be >= 0 (0: start on arrival), got {stamp_ns}")
    p = _positions(positions, joint_names)
    if len(p) == 0:
        raise ValueError("a JointTrajectory for a controller needs at least one point")
    v = None
    if velocities is not None:
        v = np.asarray(velocities, dtype=np.float64)
        if v.shape != p.shape:
            raise ValueError(f"velocities must have the positions' shape {p.shape}, got {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("velocities must be finite")
        if np.any(v[-1] != 0.0):
            raise ValueError(f"the last point's velocities must be 0 (a JTC may reject a trajectory that ends "
                             f"in motion), got {v[-1].tolist()}")
    return _trajectory(joint_names, p, [(k + 1) * dt_ns for k in range(len(p))], v, stamp_ns)


def forward_command(position: np.ndarray) -> Float64MultiArray:
    """One command for a forward controller (<controller>/commands), in action-dim order."""
    msg = Float64MultiArray()
    msg.data = np.asarray(position, dtype=np.float64).ravel().tolist()
    return msg


def action_chunk_msg(chunk: ActionChunk, joint_names: Sequence[str]) -> JointTrajectory:
    """The raw chunk for ~/action_chunk: header.stamp = observation stamp, point k at k*dt."""
    n = chunk.executable_steps
    p = _positions(chunk.actions[:n], joint_names)
    return _trajectory(joint_names, p, [k * chunk.dt_ns for k in range(n)], None, chunk.stamp_ns)


def action_chunk_from_msg(msg: JointTrajectory) -> tuple[int, int | None, np.ndarray, list[str]]:
    """Inverse of action_chunk_msg: (stamp_ns, dt_ns or None for a single point, float32 [n, A],
    joint_names). Used by replay to record and score chunks."""
    a = len(msg.joint_names)
    actions = np.array([list(pt.positions) for pt in msg.points], dtype=np.float32).reshape(len(msg.points), a)
    dt = duration_to_ns(msg.points[1].time_from_start) - duration_to_ns(msg.points[0].time_from_start) \
        if len(msg.points) >= 2 else None
    return time_to_ns(msg.header.stamp), dt, actions, list(msg.joint_names)


def _value_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def diagnostic_array(statuses: Sequence[Mapping[str, Any]], stamp_ns: int) -> DiagnosticArray:
    """diagnostics.py status dicts -> DiagnosticArray (values become KeyValue strings)."""
    msg = DiagnosticArray()
    msg.header.stamp = ns_to_time(stamp_ns)
    out = []
    for s in statuses:
        st = DiagnosticStatus()
        st.level = int(s["level"]).to_bytes(1, "little")
        st.name = s["name"]
        st.message = s["message"]
        st.hardware_id = s.get("hardware_id", "")
        st.values = [KeyValue(key=str(k), value=_value_str(v)) for k, v in s.get("values", {}).items()]
        out.append(st)
    msg.status = out
    return msg


def debug_canvas(canvas: np.ndarray, stamp_ns: int, frame_id: str = "") -> Image:
    """The tiled model-input canvas (uint8 [H, W, 3] RGB) as an rgb8 Image stamped with the
    observation it was built from."""
    return rgb_to_image(canvas, stamp_ns, frame_id)
