"""The ROS parameter table as data, and the check of one value against its entry.

API
- ``PARAMETERS: tuple[ParamSpec, ...]``, ``SPECS: Mapping[str, ParamSpec]`` -- the parameter table
  (docs/parameters.md, generated from it), one place; node.py declares ROS parameters from it.
  ``RUNTIME_PARAMETERS``: the names that may change while the node is configured.
- ``declarations() -> list[Declaration]`` -- per parameter: rclpy type name, default (None = declare
  by type only), description, constraint text, float/int range, in plain python.
- ``ConfigError`` -- every configuration error; its message (and ``.parameter``) names the parameter.
- The modes as enums (``Backend``, ``DType``, ``MergeMode``, ``OutputMode``, ``ActionSpace``,
  ``TextEncoder``) and ``ParamType``; ``NODE_NAME``; ``ROS_BUILTIN_PREFIXES``; the input bounds
  ``MAX_INSTRUCTION_CHARS`` and ``MAX_JOINT_NAMES``.
- Shared inside the package: ``_checked_value`` / ``_coerce`` (one value against its spec),
  ``_unknown`` (the "did you mean" error), ``_is_ros_builtin``.

Why a table and not a class per parameter: node.py, replay and the docs all need the same names,
defaults, ranges and descriptions; keeping them as data means one source of truth and a generic
declaration loop in the node. The enums live here because the table's choices are their values.
The value checks live here and not with the configs because they need only the table: a profile is
type-checked before any config is built (profiles.py), and a runtime change to a read-only parameter
is compared by its checked value (updates.py).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

NODE_NAME = "lightwam_policy"
# Input bounds (docs: safety): no message may cost the control thread more than these allow.
MAX_INSTRUCTION_CHARS = 4096  # umT5 keeps 512 tokens (a few thousand characters of English)
MAX_JOINT_NAMES = 1024  # a JointState with more names is refused before any per-name work
JPEG_DECODES = ("full", "reduced")  # cameras.jpeg_decode (ros/compressed.py, CompressedDecoder)


class ConfigError(ValueError):
    """A user-caused configuration error; ``parameter`` is the offending parameter name."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"parameter '{parameter}': {message}")
        self.parameter = parameter


# ---------------------------------------------------------------------------------------------
# Enums (modes as types, not strings)
# ---------------------------------------------------------------------------------------------

class Backend(Enum):
    TORCH = "torch"
    ONNX = "onnx"


class DType(Enum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class MergeMode(Enum):
    REPLACE = "replace"  # the new chunk takes over at once (the safety rate cap bounds the seam)
    BLEND = "blend"  # linear crossfade from the chunk in flight over chunk.blend_steps
    ENSEMBLE = "ensemble"  # ACT temporal ensembling: weighted mean of every chunk covering a step


class OutputMode(Enum):
    JOINT_TRAJECTORY = "joint_trajectory"  # trajectory_msgs/JointTrajectory to a JTC, per chunk
    FORWARD = "forward"  # std_msgs/Float64MultiArray per control tick
    NONE = "none"  # publish nothing on output.topic (chunks and diagnostics only)


class ActionSpace(Enum):
    POSITION = "position"  # absolute targets (joint positions): a hold repeats the last target
    DELTA = "delta"  # increments the controller integrates: a hold must send nothing (or a neutral)


class TextEncoder(Enum):
    NONE = "none"  # only instructions whose contexts are cached in the bundle
    UMT5 = "umt5"  # encode unknown instructions online


class ParamType(Enum):
    """Parameter types; the names equal ``rclpy.Parameter.Type`` member names."""

    BOOL = "bool"
    INTEGER = "integer"
    DOUBLE = "double"
    STRING = "string"
    STRING_ARRAY = "string_array"
    DOUBLE_ARRAY = "double_array"


# ---------------------------------------------------------------------------------------------
# The parameter table
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter.

    default: the value used when the parameter is unset (None for required parameters without a
    default). range: inclusive (lo, hi), the ROS descriptor range; from_params applies stricter
    open bounds where the description says so (e.g. a rate must be > 0). runtime: may change while
    the node is configured (apply_updates); all others are read-only once configured.
    """

    name: str
    type: ParamType
    default: Any
    description: str
    required: bool = False
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    positive: bool = False  # strictly > 0 (ROS ranges are inclusive; this closes the lower bound)
    runtime: bool = False


_S, _D, _I, _B = ParamType.STRING, ParamType.DOUBLE, ParamType.INTEGER, ParamType.BOOL
_SA, _DA = ParamType.STRING_ARRAY, ParamType.DOUBLE_ARRAY

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("bundle", _S, "", "bundle directory; a relative path resolves against the package "
              "share/models dir, then the working directory", required=True),
    ParamSpec("backend", _S, "torch", "inference backend", choices=tuple(b.value for b in Backend)),
    ParamSpec("device", _S, "auto", "auto | cpu | cuda | cuda:N"),
    ParamSpec("dtype", _S, "bfloat16", "compute dtype (cpu forces float32 with a warning)",
              choices=tuple(d.value for d in DType)),
    ParamSpec("control_rate_hz", _D, 50.0, "fixed control timer rate [Hz], (0, 1000]",
              range=(0.0, 1000.0), positive=True),
    ParamSpec("dry_run", _B, False, "compute and publish ~/action_chunk but command nothing",
              runtime=True),
    ParamSpec("control.realtime_priority", _I, 0, "SCHED_FIFO priority of the control (executor) "
              "thread, 1..99 (0 = off); needs rtprio in /etc/security/limits.conf or CAP_SYS_NICE (without "
              "it: a warning, normal scheduling)", range=(0, 99)),
    ParamSpec("control.switch_interval", _D, 0.0, "python GIL switch interval [s] (sys.setswitchinterval; "
              "0 = leave python's default, 5 ms): a short one (0.001) lets the control thread in sooner while "
              "inference threads hold the GIL", range=(0.0, 0.1)),
    ParamSpec("cameras.names", _SA, None, "bundle layout camera names, in order", required=True),
    ParamSpec("cameras.topics", _SA, None, "image topic per camera (same length as cameras.names)",
              required=True),
    ParamSpec("cameras.transports", _SA, [], "per camera, in cameras.names order: raw (sensor_msgs/Image on "
              "the topic) or compressed (sensor_msgs/CompressedImage, JPEG or PNG, on <topic>/compressed as "
              "image_transport names it; decoded off the control thread); empty = all raw"),
    ParamSpec("cameras.jpeg_decode", _S, "full", "compressed JPEG frames of a camera whose data-config "
              "shape (the bundle layout's pre_resize_hw) is half the frame's: full = decoded in full and halved "
              "as raw frames are; reduced = decoded at half size by libjpeg (on a CPU backend a third to half "
              "less host time per frame set, but about twice JPEG's change to the actions, see docs/network.md)",
              choices=JPEG_DECODES),
    ParamSpec("sync.slop", _D, 0.02, "max stamp spread of a camera set [s] (spread must be < slop)",
              range=(0.0, 10.0), positive=True, runtime=True),
    ParamSpec("sync.queue_size", _I, 10, "per-camera queue of distinct stamps (also the camera "
              "subscription depth)", range=(1, 1000),
              runtime=True),
    ParamSpec("sync.max_age", _D, 0.25, "a camera set older than this (now - stamp) is never used [s]",
              range=(0.0, 60.0), positive=True, runtime=True),
    ParamSpec("sync.camera_timeout", _D, 0.5, "a camera without a current frame (stamped within "
              "sync.max_age of its arrival) for this long is reported dead and the robot holds [s]",
              range=(0.0, 60.0), positive=True, runtime=True),
    ParamSpec("joints.state_topic", _S, "joint_states", "sensor_msgs/JointState topic"),
    ParamSpec("joints.names", _SA, None, "joint names giving the proprio state, in the bundle's "
              "state order (picked by name from each message)", required=True),
    ParamSpec("joints.max_age", _D, 0.25, "an older joint state makes the robot hold [s]",
              range=(0.0, 60.0), positive=True, runtime=True),
    ParamSpec("joints.future_tolerance", _D, 0.05, "a joint state stamped further ahead of the node's "
              "clock than this is refused (clock skew between hosts) [s]", range=(0.0, 10.0), runtime=True),
    ParamSpec("instruction.topic", _S, "instruction", "std_msgs/String topic, transient-local"),
    ParamSpec("instruction.default", _S, "", "instruction used until the first one arrives on the "
              "topic (an empty one there means stop)", runtime=True),
    ParamSpec("chunk.merge", _S, "blend", "how a new chunk takes over from the one in flight",
              choices=tuple(m.value for m in MergeMode), runtime=True),
    ParamSpec("chunk.blend_steps", _I, 4, "linear crossfade length for blend [steps]",
              range=(0, 1000), runtime=True),
    ParamSpec("chunk.ensemble_decay", _D, 0.01, "ensemble merge: chunk weight exp(-decay * age), age = "
              "how many action steps (dt) newer the chunk's observation is than the oldest chunk covering the "
              "step; > 0 favours older chunks (ACT, 0.01: nearly equal weights), < 0 newer ones [1/step]",
              range=(-10.0, 10.0), runtime=True),
    ParamSpec("chunk.execute_steps", _I, 0, "max steps executed per chunk (0 = the bundle's "
              "trained_steps; never more)", range=(0, 100000), runtime=True),
    ParamSpec("chunk.latency_margin", _D, 0.5, "request the next inference when remaining steps*dt "
              "<= (1 + margin) * expected latency", range=(0.0, 100.0), runtime=True),
    ParamSpec("chunk.max_inflight", _I, 2, "inference requests allowed in flight at once (1 = one at "
              "a time); the node runs min(chunk.max_inflight, the backend's max_concurrency) inference "
              "workers: 1 on the CPU, with CUDA graphs and with torch.compile (a larger value logs a warning "
              "naming the cap used), up to 4 on CUDA eager / ONNX CUDA, where overlapping requests keep the "
              "plan alive when inference takes more than half a chunk",
              range=(1, 4)),
    ParamSpec("chunk.refusal_backoff_max", _D, 5.0, "after consecutive refused chunks, wait before the next "
              "inference request: none after the first refusal, then one chunk period (usable steps x dt), "
              "doubling up to this [s] (0 = no back-off: ask again at once); an accepted chunk ends it; it "
              "never delays the first request after activation, resume, a clock reset or a change of a "
              "safety.* or chunk.* parameter",
              range=(0.0, 3600.0), runtime=True),
    ParamSpec("chunk.refusal_error_count", _I, 3, "consecutive refused chunks after which the control "
              "status is ERROR (the model's output is persistently refused); fewer are WARN",
              range=(1, 1000000), runtime=True),
    ParamSpec("output.mode", _S, "joint_trajectory", "output adapter",
              choices=tuple(m.value for m in OutputMode)),
    ParamSpec("output.topic", _S, "joint_trajectory", "JTC topic or forward controller commands topic"),
    ParamSpec("output.joint_names", _SA, [], "names of the action dims (JointTrajectory.joint_names); "
              "empty = joints.names"),
    ParamSpec("output.action_space", _S, "position", "what an action is: absolute positions (a hold "
              "repeats the last command) or deltas a controller integrates (a hold publishes nothing, "
              "or output.hold_command; forward output only)", choices=tuple(a.value for a in ActionSpace)),
    ParamSpec("output.hold_command", _DA, [], "delta action space only: the neutral command published "
              "each control tick while holding in forward mode ([] = publish nothing)"),
    ParamSpec("output.send_velocities", _B, False, "velocities in the trajectory points, so the JTC "
              "interpolates with cubic splines: central differences of the limited points from where the "
              "trajectory starts (last = 0)", runtime=True),
    ParamSpec("output.trajectory_steps", _I, 0, "points per JointTrajectory (0 = the remaining plan)",
              range=(0, 100000), runtime=True),
    ParamSpec("output.trajectory_start_delay", _D, 0.0, "stamp each JointTrajectory this far in the "
              "future on the node clock (header.stamp = now + delay, points = the plan from then on), so the "
              "JTC reaches its first point at a known time whatever the delivery delay; must exceed that delay "
              "and the JTC must run on the same clock (use_sim_time alike); 0 = header.stamp 0, start on "
              "arrival [s]", range=(0.0, 1.0), runtime=True),
    ParamSpec("safety.position_min", _DA, None, "lower position limit per action dim", required=True,
              runtime=True),
    ParamSpec("safety.position_max", _DA, None, "upper position limit per action dim", required=True,
              runtime=True),
    ParamSpec("safety.max_step", _DA, None, "max change of the command per control tick per action "
              "dim (> 0)", required=True, runtime=True),
    ParamSpec("safety.refuse_margin", _D, 0.25, "a chunk with any executable action beyond a limit by "
              "more than this fraction of (max - min) is refused (smaller excursions are clamped)",
              range=(0.0, 100.0), runtime=True),
    ParamSpec("debug.canvas_rate_hz", _D, 2.0, "~/debug/canvas throttle [Hz] (0 = off)",
              range=(0.0, 1000.0), runtime=True),
    ParamSpec("diagnostics.rate_hz", _D, 1.0, "/diagnostics publish rate [Hz] (at least one report per 100 s)",
              range=(0.01, 100.0), positive=True),
    ParamSpec("text.encoder", _S, "none", "online instruction encoder",
              choices=tuple(t.value for t in TextEncoder)),
    ParamSpec("text.device", _S, "cpu", "cpu | cuda | cuda:N for the online text encoder"),
    ParamSpec("text.wan_dir", _S, "", "Wan2.1-T2V-1.3B dir (tokenizer + T5) for text.encoder=umt5"),
    ParamSpec("text.cache_dir", _S, "", "where new contexts are cached (\"\" = bundle dir)"),
)

SPECS: Mapping[str, ParamSpec] = MappingProxyType({s.name: s for s in PARAMETERS})
RUNTIME_PARAMETERS: frozenset[str] = frozenset(s.name for s in PARAMETERS if s.runtime)
# Parameters every rclpy node has or may receive; accepted in profiles and ignored by from_params.
ROS_BUILTIN_PREFIXES = ("use_sim_time", "start_type_description_service", "qos_overrides.")


def _is_ros_builtin(name: str) -> bool:
    return any(name == p or (p.endswith(".") and name.startswith(p)) for p in ROS_BUILTIN_PREFIXES)


@dataclass(frozen=True)
class Declaration:
    """What node.py needs to declare one parameter (plain python, no rclpy types).

    type_name is an ``rclpy.Parameter.Type`` member name. default None means: declare with the type
    only (``declare_parameter(name, Parameter.Type[type_name], descriptor)``): required parameters
    and empty-list defaults (rclpy would infer ``[]`` as BYTE_ARRAY). Ranges are inclusive.
    """

    name: str
    type_name: str
    default: Any
    description: str
    constraints: str
    float_range: tuple[float, float] | None
    integer_range: tuple[int, int] | None
    read_only_when_configured: bool


def declarations() -> list[Declaration]:
    """One Declaration per parameter, in table order."""
    out = []
    for s in PARAMETERS:
        default = s.default
        if isinstance(default, list) and not default:
            default = None
        parts = []
        if s.required:
            parts.append("required")
        if s.choices:
            parts.append("one of: " + ", ".join(s.choices))
        if s.range is not None:
            lo, hi = s.range
            parts.append(f"{'(' if s.positive else '['}{lo}, {hi}]")
        if not s.runtime:
            parts.append("read-only while configured")
        fr = ir = None
        if s.range is not None and s.type is ParamType.DOUBLE:
            fr = (float(s.range[0]), float(s.range[1]))
        elif s.range is not None and s.type is ParamType.INTEGER:
            ir = (int(s.range[0]), int(s.range[1]))
        out.append(Declaration(s.name, s.type.name, default, s.description, "; ".join(parts), fr, ir,
                               not s.runtime))
    return out


# ---------------------------------------------------------------------------------------------
# One value against its spec (shared by from_params, load_profile and apply_updates)
# ---------------------------------------------------------------------------------------------

def _unknown(name: str) -> ConfigError:
    close = difflib.get_close_matches(name, SPECS.keys(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(name, f"unknown parameter{hint}")


def _coerce(spec: ParamSpec, value: Any, strict: bool) -> Any:
    """Type-check one value. strict=True applies rclpy's rules for YAML values (an integer is not
    a double); strict=False accepts ints for doubles (values built in python)."""
    name, t = spec.name, spec.type

    def num(v: Any, what: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(name, f"{what} must be a number, got {v!r}")
        if strict and isinstance(v, int):
            raise ConfigError(name, f"{what} {v!r} is an integer; ROS needs a double here (write {v}.0)")
        if not math.isfinite(v):
            raise ConfigError(name, f"{what} must be finite, got {v!r}")
        return float(v)

    if t is ParamType.BOOL:
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be true or false, got {value!r}")
        return value
    if t is ParamType.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"must be an integer, got {value!r}")
        return int(value)
    if t is ParamType.DOUBLE:
        return num(value, "value")
    if t is ParamType.STRING:
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string, got {value!r}")
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(name, f"must be a list, got {value!r}")
    if t is ParamType.STRING_ARRAY:
        for v in value:
            if not isinstance(v, str):
                raise ConfigError(name, f"must be a list of strings, got element {v!r}")
        return list(value)
    return [num(v, f"element {i}") for i, v in enumerate(value)]


def _checked_value(spec: ParamSpec, value: Any, strict: bool = False) -> Any:
    """value (None = unset) -> the typed value, default applied, required/range/choices checked."""
    if value is None:
        value = spec.default
    if spec.required and (value is None or value == "" or value == []):
        raise ConfigError(spec.name, f"is required ({spec.description})")
    value = _coerce(spec, value, strict)
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(spec.name, f"{value!r} is not one of {', '.join(spec.choices)}")
    if spec.range is not None:
        lo, hi = spec.range
        if not lo <= value <= hi or (spec.positive and value <= 0):
            raise ConfigError(spec.name, f"{value!r} is outside {'(' if spec.positive else '['}{lo}, {hi}]")
    return value
