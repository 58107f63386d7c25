"""Robot profile schema: the ROS parameter table as data, validated into frozen configs.

API
- ``PARAMETERS: tuple[ParamSpec, ...]``, ``SPECS: Mapping[str, ParamSpec]`` -- the parameter table
  (docs/parameters.md, generated from it), one place; node.py declares ROS parameters from it.
- ``declarations() -> list[Declaration]`` -- per parameter: rclpy type name, default (None = declare
  by type only), description, constraint text, float/int range, in plain python.
- ``from_params(params: Mapping[str, Any]) -> PolicyConfig`` -- flat dotted names -> validated
  config; raises ``ConfigError`` whose message (and ``.parameter``) names the parameter.
- ``load_profile(name_or_path, node_name="lightwam_policy") -> (node_name, flat dict)`` -- read a
  ``<node>: ros__parameters:`` / ``/**:`` YAML (bare name -> config/<name>.yaml).
- ``BundleInfo`` + ``validate_against_bundle(config, info) -> list[str]`` (warnings; raises
  ``ConfigError`` on a mismatch).
- ``apply_updates(config, changes, bundle=None) -> UpdateResult`` -- runtime parameter changes;
  read-only parameters are refused with the reason.
- ``resolve_bundle_path(value) -> Path``.

Why a table and not a class per parameter: node.py, replay and the docs all need the same names,
defaults, ranges and descriptions; keeping them as data means one source of truth and a generic
declaration loop in the node. Times are seconds in the parameters (ROS convention, REP 103) and
integer nanoseconds in the configs (sync and scheduling decisions are exact).
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

NODE_NAME = "lightwam_policy"
# Input bounds (docs: safety): no message may cost the control thread more than these allow.
MAX_INSTRUCTION_CHARS = 4096  # umT5 keeps 512 tokens (a few thousand characters of English)
MAX_JOINT_NAMES = 1024  # a JointState with more names is refused before any per-name work
PACKAGE = "lightwam_ros"


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
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_TOPIC_RE = re.compile(r"^~?/?[A-Za-z_{][A-Za-z0-9_{}]*(/[A-Za-z_{][A-Za-z0-9_{}]*)*$")

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
    ParamSpec("output.send_velocities", _B, False, "finite-difference velocities in the trajectory "
              "(last = 0)", runtime=True),
    ParamSpec("output.trajectory_steps", _I, 0, "points per JointTrajectory (0 = the remaining plan)",
              range=(0, 100000), runtime=True),
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
    ParamSpec("diagnostics.rate_hz", _D, 1.0, "/diagnostics publish rate [Hz]", range=(0.0, 100.0),
              positive=True),
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
# Frozen configs (one per concern). Each validates itself and names the parameter.
# ---------------------------------------------------------------------------------------------

def _s_to_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _check_topic(param: str, topic: str) -> None:
    if not _TOPIC_RE.match(topic) or "//" in topic:
        raise ConfigError(param, f"{topic!r} is not a valid ROS topic name "
                                 "(letters, digits, '_' and '/' separators; optional leading '~' or '/')")


def _check_unique(param: str, names: Sequence[str]) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ConfigError(param, f"{n!r} appears twice")
        if not n:
            raise ConfigError(param, "contains an empty name")
        seen.add(n)


@dataclass(frozen=True)
class CameraConfig:
    names: tuple[str, ...]  # bundle layout camera names
    topics: tuple[str, ...]  # one image topic per camera, same order

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("cameras.names", "at least one camera is required")
        _check_unique("cameras.names", self.names)
        if len(self.topics) != len(self.names):
            raise ConfigError("cameras.topics", f"has {len(self.topics)} topics but cameras.names has "
                                                f"{len(self.names)} cameras; give one topic per camera")
        for t in self.topics:
            _check_topic("cameras.topics", t)
        _check_unique("cameras.topics", self.topics)

    @property
    def topic_of(self) -> dict[str, str]:
        return dict(zip(self.names, self.topics))


@dataclass(frozen=True)
class SyncConfig:
    slop_ns: int = 20_000_000  # a set's stamp spread must be strictly below this
    queue_size: int = 10  # distinct stamps kept per camera
    max_age_ns: int = 250_000_000  # a set with now - stamp above this is dropped ("stale")
    camera_timeout_ns: int = 500_000_000  # a camera silent this long is dead

    def __post_init__(self) -> None:
        for param, v in (("sync.slop", self.slop_ns), ("sync.max_age", self.max_age_ns),
                         ("sync.camera_timeout", self.camera_timeout_ns)):
            if v <= 0:
                raise ConfigError(param, f"must be > 0 s, got {v / 1e9} s")
        if self.queue_size < 1:
            raise ConfigError("sync.queue_size", f"must be >= 1, got {self.queue_size}")


@dataclass(frozen=True)
class JointConfig:
    state_topic: str
    names: tuple[str, ...]  # proprio state order (the bundle's state order)
    max_age_ns: int = 250_000_000
    future_tolerance_ns: int = 50_000_000  # a stamp further ahead of now is refused

    def __post_init__(self) -> None:
        _check_topic("joints.state_topic", self.state_topic)
        if not self.names:
            raise ConfigError("joints.names", "at least one joint name is required")
        if len(self.names) > MAX_JOINT_NAMES:
            raise ConfigError("joints.names", f"has {len(self.names)} names; at most {MAX_JOINT_NAMES}")
        _check_unique("joints.names", self.names)
        if self.max_age_ns <= 0:
            raise ConfigError("joints.max_age", f"must be > 0 s, got {self.max_age_ns / 1e9} s")
        if self.future_tolerance_ns < 0:
            raise ConfigError("joints.future_tolerance", f"must be >= 0 s, got {self.future_tolerance_ns / 1e9} s")

    def age_ok(self, age_ns: int) -> bool:
        """A joint state of this age (now - stamp) may be used: not older than max_age and not
        further in the future than future_tolerance (a stamp from a clock running ahead would
        otherwise stay "fresh" long after its publisher died)."""
        return -self.future_tolerance_ns <= age_ns <= self.max_age_ns


@dataclass(frozen=True)
class InstructionConfig:
    topic: str = "instruction"
    default: str = ""  # used until an instruction arrives ("" = none: the robot holds)

    def __post_init__(self) -> None:
        _check_topic("instruction.topic", self.topic)
        why = instruction_problem(self.default)
        if why:
            raise ConfigError("instruction.default", why)


def instruction_problem(text: str) -> str:
    """Why an instruction text can never be used ("" if it can): longer than MAX_INSTRUCTION_CHARS
    (the text encoder keeps 512 tokens; a longer text would be cut and would cost every lookup
    time), or not encodable as UTF-8 (a lone surrogate: the context key is a hash of the UTF-8 bytes)."""
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f"is {len(text)} characters long; at most {MAX_INSTRUCTION_CHARS} are accepted"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid UTF-8 text ({exc.reason} at character {exc.start})"
    return ""


@dataclass(frozen=True)
class ChunkConfig:
    merge: MergeMode = MergeMode.BLEND
    blend_steps: int = 4  # crossfade length in action steps (0 behaves as replace)
    execute_steps: int = 0  # 0 = the chunk's trained_steps
    latency_margin: float = 0.5
    max_inflight: int = 2  # overlapping inference requests (1 = one at a time)

    def __post_init__(self) -> None:
        if self.blend_steps < 0:
            raise ConfigError("chunk.blend_steps", f"must be >= 0, got {self.blend_steps}")
        if self.execute_steps < 0:
            raise ConfigError("chunk.execute_steps", f"must be >= 0, got {self.execute_steps}")
        if not (self.latency_margin >= 0 and math.isfinite(self.latency_margin)):
            raise ConfigError("chunk.latency_margin", f"must be >= 0, got {self.latency_margin}")
        if not 1 <= self.max_inflight <= 4:
            raise ConfigError("chunk.max_inflight", f"must be in [1, 4], got {self.max_inflight}")

    def steps_limit(self, trained_steps: int) -> int:
        """Steps of a chunk that may run: execute_steps, but never more than trained_steps."""
        return trained_steps if self.execute_steps == 0 else min(self.execute_steps, trained_steps)


@dataclass(frozen=True)
class OutputConfig:
    mode: OutputMode = OutputMode.JOINT_TRAJECTORY
    topic: str = "joint_trajectory"
    joint_names: tuple[str, ...] = ()  # resolved: never empty after from_params
    send_velocities: bool = False
    trajectory_steps: int = 0  # 0 = the whole remaining plan
    action_space: ActionSpace = ActionSpace.POSITION
    hold_command: tuple[float, ...] = ()  # delta only: neutral command while holding (() = none)

    def __post_init__(self) -> None:
        _check_topic("output.topic", self.topic)
        _check_unique("output.joint_names", self.joint_names)
        if self.trajectory_steps < 0:
            raise ConfigError("output.trajectory_steps", f"must be >= 0, got {self.trajectory_steps}")
        if self.action_space is ActionSpace.DELTA and self.mode is OutputMode.JOINT_TRAJECTORY:
            raise ConfigError("output.action_space", "delta actions cannot be sent as a JointTrajectory "
                                                     "(its points are positions); use output.mode forward")
        if self.hold_command:
            if self.action_space is not ActionSpace.DELTA:
                raise ConfigError("output.hold_command", "is only for output.action_space delta (a position "
                                                         "hold repeats the last command)")
            if len(self.hold_command) != len(self.joint_names):
                raise ConfigError("output.hold_command", f"has {len(self.hold_command)} values for "
                                                         f"{len(self.joint_names)} action dims")

    @property
    def holds_by_repeating(self) -> bool:
        """Position actions: holding = commanding the last position again."""
        return self.action_space is ActionSpace.POSITION


@dataclass(frozen=True)
class SafetyConfig:
    position_min: tuple[float, ...]
    position_max: tuple[float, ...]
    max_step: tuple[float, ...]  # per control tick
    refuse_margin: float = 0.25  # fraction of (max - min)

    def __post_init__(self) -> None:
        n = len(self.position_min)
        if n == 0:
            raise ConfigError("safety.position_min", "needs one value per action dim")
        for param, arr in (("safety.position_max", self.position_max), ("safety.max_step", self.max_step)):
            if len(arr) != n:
                raise ConfigError(param, f"has {len(arr)} values but safety.position_min has {n}; "
                                         "give one value per action dim")
        for param, arr in (("safety.position_min", self.position_min),
                           ("safety.position_max", self.position_max), ("safety.max_step", self.max_step)):
            for i, v in enumerate(arr):
                if not math.isfinite(v):
                    raise ConfigError(param, f"value {i} is {v}; limits must be finite")
        for i, (lo, hi) in enumerate(zip(self.position_min, self.position_max)):
            if lo > hi:
                raise ConfigError("safety.position_max", f"dim {i}: max {hi} is below min {lo}")
        for i, v in enumerate(self.max_step):
            if v <= 0:
                raise ConfigError("safety.max_step", f"dim {i}: must be > 0, got {v}")
        if not (self.refuse_margin >= 0 and math.isfinite(self.refuse_margin)):
            raise ConfigError("safety.refuse_margin", f"must be >= 0, got {self.refuse_margin}")

    @property
    def dim(self) -> int:
        return len(self.position_min)


@dataclass(frozen=True)
class TextConfig:
    encoder: TextEncoder = TextEncoder.NONE
    device: str = "cpu"
    wan_dir: str = ""
    cache_dir: str = ""

    def __post_init__(self) -> None:
        if not _DEVICE_RE.match(self.device) or self.device == "auto":
            raise ConfigError("text.device", f"{self.device!r} is not one of cpu, cuda, cuda:N")
        if self.encoder is TextEncoder.UMT5 and not self.wan_dir:
            raise ConfigError("text.wan_dir", "is required when text.encoder is 'umt5' "
                                              "(the Wan2.1-T2V-1.3B directory with the tokenizer and T5)")


@dataclass(frozen=True)
class RealtimeConfig:
    """control.realtime_priority / control.switch_interval (lightwam_ros.ros.realtime applies them)."""

    priority: int = 0  # SCHED_FIFO priority of the executor thread, 0 = off
    switch_interval_s: float = 0.0  # 0 = leave python's default

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 99:
            raise ConfigError("control.realtime_priority", f"must be in [0, 99], got {self.priority}")
        if not 0.0 <= self.switch_interval_s <= 0.1:
            raise ConfigError("control.switch_interval", f"must be in [0, 0.1] s, got {self.switch_interval_s}")


@dataclass(frozen=True)
class PolicyConfig:
    """The whole node configuration. ``params`` keeps the flat, type-checked parameter values it was
    built from (unset parameters at their defaults) so runtime updates can be re-validated as a whole."""

    bundle: str
    backend: Backend
    device: str
    dtype: DType
    control_rate_hz: float
    dry_run: bool
    cameras: CameraConfig
    sync: SyncConfig
    joints: JointConfig
    instruction: InstructionConfig
    chunk: ChunkConfig
    output: OutputConfig
    safety: SafetyConfig
    canvas_rate_hz: float  # debug.canvas_rate_hz (0 = off)
    diagnostics_rate_hz: float
    text: TextConfig
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    realtime: RealtimeConfig = RealtimeConfig()

    def __post_init__(self) -> None:
        if not self.bundle:
            raise ConfigError("bundle", "is required (path to a bundle directory)")
        if not _DEVICE_RE.match(self.device):
            raise ConfigError("device", f"{self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if not 0 < self.control_rate_hz <= 1000:
            raise ConfigError("control_rate_hz", f"must be in (0, 1000], got {self.control_rate_hz}")
        if self.output.mode is not OutputMode.NONE and len(self.output.joint_names) != self.safety.dim:
            src = "output.joint_names" if self.params.get("output.joint_names") else \
                "output.joint_names (defaults to joints.names)"
            raise ConfigError("output.joint_names", f"{src} has {len(self.output.joint_names)} names but "
                                                    f"the safety limits have {self.safety.dim} action dims")
        for i, v in enumerate(self.output.hold_command):
            lo, hi = self.safety.position_min[i], self.safety.position_max[i]
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ConfigError("output.hold_command", f"value {i} = {v} is outside the limits [{lo}, {hi}]")

    @property
    def control_period_ns(self) -> int:
        return int(round(1e9 / self.control_rate_hz))


# ---------------------------------------------------------------------------------------------
# Flat params -> PolicyConfig
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


def from_params(params: Mapping[str, Any]) -> PolicyConfig:
    """Build a validated PolicyConfig from flat dotted parameter names.

    Unknown names are errors (typos in a profile must not pass silently), except rclpy's own
    (use_sim_time, qos_overrides.*). Missing or None values take the table default.
    """
    for name in params:
        if name not in SPECS and not _is_ros_builtin(name):
            raise _unknown(name)
    p = {s.name: _checked_value(s, params.get(s.name)) for s in PARAMETERS}
    joint_names = tuple(p["joints.names"])
    return PolicyConfig(
        bundle=p["bundle"], backend=Backend(p["backend"]), device=p["device"], dtype=DType(p["dtype"]),
        control_rate_hz=p["control_rate_hz"], dry_run=p["dry_run"],
        cameras=CameraConfig(tuple(p["cameras.names"]), tuple(p["cameras.topics"])),
        sync=SyncConfig(_s_to_ns(p["sync.slop"]), p["sync.queue_size"], _s_to_ns(p["sync.max_age"]),
                        _s_to_ns(p["sync.camera_timeout"])),
        joints=JointConfig(p["joints.state_topic"], joint_names, _s_to_ns(p["joints.max_age"]),
                           _s_to_ns(p["joints.future_tolerance"])),
        instruction=InstructionConfig(p["instruction.topic"], p["instruction.default"]),
        chunk=ChunkConfig(MergeMode(p["chunk.merge"]), p["chunk.blend_steps"], p["chunk.execute_steps"],
                          p["chunk.latency_margin"], p["chunk.max_inflight"]),
        output=OutputConfig(OutputMode(p["output.mode"]), p["output.topic"],
                            tuple(p["output.joint_names"]) or joint_names, p["output.send_velocities"],
                            p["output.trajectory_steps"], ActionSpace(p["output.action_space"]),
                            tuple(p["output.hold_command"])),
        safety=SafetyConfig(tuple(p["safety.position_min"]), tuple(p["safety.position_max"]),
                            tuple(p["safety.max_step"]), p["safety.refuse_margin"]),
        canvas_rate_hz=p["debug.canvas_rate_hz"], diagnostics_rate_hz=p["diagnostics.rate_hz"],
        text=TextConfig(TextEncoder(p["text.encoder"]), p["text.device"], p["text.wan_dir"],
                        p["text.cache_dir"]),
        params=MappingProxyType(p),
        realtime=RealtimeConfig(p["control.realtime_priority"], p["control.switch_interval"]),
    )


# ---------------------------------------------------------------------------------------------
# Profiles (YAML)
# ---------------------------------------------------------------------------------------------

def profile_dirs() -> list[Path]:
    """Where bare profile names are looked up: the source tree's config/, the installed share dir
    (sys.prefix/share/lightwam_ros/config), and ament_index's share dir when importable."""
    dirs = [Path(__file__).resolve().parents[2] / "config",
            Path(sys.prefix) / "share" / PACKAGE / "config"]
    try:
        from ament_index_python.packages import get_package_share_directory
        dirs.append(Path(get_package_share_directory(PACKAGE)) / "config")
    except Exception:  # noqa: BLE001 - not installed with ament (pip/source checkout): skip it
        pass
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def resolve_profile(name_or_path: str | Path) -> Path:
    """A path (has a '/' or ends in .yaml/.yml) is used as is; a bare name -> <dir>/<name>.yaml."""
    s = str(name_or_path)
    if "/" in s or s.endswith((".yaml", ".yml")):
        path = Path(s).expanduser()
        if not path.is_file():
            raise ConfigError("robot", f"profile file {path} does not exist")
        return path
    dirs = profile_dirs()
    for d in dirs:
        if (d / f"{s}.yaml").is_file():
            return d / f"{s}.yaml"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError("robot", f"no profile named {s!r} in {', '.join(map(str, dirs))}; "
                               f"known profiles: {', '.join(known) or 'none'}")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def load_profile(name_or_path: str | Path, node_name: str = NODE_NAME) -> tuple[str, dict[str, Any]]:
    """Read a profile YAML -> (node name, flat dotted parameters).

    Accepts the rcl parameter-file forms: ``<node>: ros__parameters: {...}`` (also ``/<node>`` and
    ``/ns/<node>``) and ``/**: ros__parameters:``. Wildcard entries apply first and node entries
    override them, as rcl does. If the file names exactly one node, that is the node name returned;
    with several, the one named ``node_name`` is used. Values are type-checked with rclpy's rules
    (an integer where a double is expected is an error, because the node would reject it at launch)
    and unknown names are errors naming the file.
    """
    import yaml

    path = resolve_profile(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("robot", f"{path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError("robot", f"{path}: expected '<node>: ros__parameters:' at the top level")

    wildcard: dict[str, Any] = {}
    nodes: dict[str, dict[str, Any]] = {}

    def collect(key: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise ConfigError("robot", f"{path}: entry {key!r} must map to 'ros__parameters:'")
        if "ros__parameters" in value:
            params = value["ros__parameters"] or {}
            if not isinstance(params, dict):
                raise ConfigError("robot", f"{path}: {key}.ros__parameters must be a mapping")
            flat: dict[str, Any] = {}
            _flatten("", params, flat)
            name = key.strip("/")
            if name in ("**", "*") or name.endswith("/**"):
                wildcard.update(flat)
            else:
                nodes.setdefault(name.rsplit("/", 1)[-1], {}).update(flat)
        else:  # nested namespace form: ns: node: ros__parameters
            for k, v in value.items():
                collect(f"{key}/{k}", v)

    for k, v in doc.items():
        collect(str(k), v)
    if not wildcard and not nodes:
        raise ConfigError("robot", f"{path}: no 'ros__parameters' section found")
    if len(nodes) == 1:
        node_name = next(iter(nodes))
    elif len(nodes) > 1 and node_name not in nodes:
        raise ConfigError("robot", f"{path} has parameters for {sorted(nodes)} but none for {node_name!r}")
    flat = {**wildcard, **nodes.get(node_name, {})}
    for name, value in flat.items():
        if name in SPECS:
            if value is not None:
                _coerce(SPECS[name], value, strict=True)
        elif not _is_ros_builtin(name):
            err = _unknown(name)
            raise ConfigError(name, f"{str(err).split(': ', 1)[1]} in {path}")
    return node_name, flat


def resolve_bundle_path(value: str | Path) -> Path:
    """bundle parameter -> an existing directory. Relative paths try <share>/models (installed),
    <source tree>/models, then the working directory."""
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [
        *(d.parent / "models" / p for d in profile_dirs()[1:]),  # <share>/models: pip and colcon installs
        Path(__file__).resolve().parents[2] / "models" / p,
        Path.cwd() / p,
    ]
    for c in candidates:
        if c.is_dir():
            return c
    raise ConfigError("bundle", f"bundle directory {str(value)!r} not found (tried "
                                f"{', '.join(str(c) for c in candidates)})")


# ---------------------------------------------------------------------------------------------
# Cross-checks with the loaded bundle, and runtime updates
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleInfo:
    """What the configuration must agree with, read from the bundle manifest's embodiment."""

    cameras: tuple[str, ...]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    trained_steps: int
    action_rate_hz: float | None = None

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> BundleInfo:
        """From a bundle manifest.json dict (its "embodiment" section)."""
        emb = manifest["embodiment"]
        rate = emb.get("action_rate_hz")
        return cls(tuple(emb["cameras"]), tuple(emb["state_names"]), tuple(emb["action_names"]),
                   int(emb["trained_steps"]), None if rate is None else float(rate))


def validate_against_bundle(config: PolicyConfig, bundle: BundleInfo) -> list[str]:
    """Raise ConfigError naming the parameter that disagrees with the bundle; return warnings."""
    if set(config.cameras.names) != set(bundle.cameras):
        missing = [c for c in bundle.cameras if c not in config.cameras.names]
        extra = [c for c in config.cameras.names if c not in bundle.cameras]
        raise ConfigError("cameras.names", f"the bundle's layout needs cameras {list(bundle.cameras)}; "
                                           f"missing {missing}, unknown {extra}")
    if len(config.joints.names) != len(bundle.state_names):
        raise ConfigError("joints.names", f"has {len(config.joints.names)} joints but the bundle's state "
                                          f"has {len(bundle.state_names)} dims {list(bundle.state_names)}")
    a = bundle.action_dim
    for param, n in (("safety.position_min", len(config.safety.position_min)),
                     ("safety.position_max", len(config.safety.position_max)),
                     ("safety.max_step", len(config.safety.max_step))):
        if n != a:
            raise ConfigError(param, f"has {n} values but the bundle has {a} action dims {list(bundle.action_names)}")
    # output.joint_names needs no check here: from_params ties it to the safety dim checked above.
    if config.chunk.execute_steps > bundle.trained_steps:
        raise ConfigError("chunk.execute_steps", f"{config.chunk.execute_steps} exceeds the bundle's "
                                                 f"trained_steps {bundle.trained_steps}; later steps were "
                                                 "never supervised")
    if bundle.action_rate_hz is None:
        raise ConfigError("bundle", f"{config.bundle!r} records no action_rate_hz, so the time between "
                                    "its action steps is unknown and the robot could run them at the wrong "
                                    "speed; convert it again with `lightwam convert --action-rate-hz <Hz>` "
                                    "(the rate its training data was recorded at)")
    warnings = [*_name_mismatch("joints.names", config.joints.names, bundle.state_names, "state"),
                *_name_mismatch("output.joint_names", config.output.joint_names, bundle.action_names, "action")]
    if config.control_rate_hz < bundle.action_rate_hz:
        warnings.append(f"control_rate_hz {config.control_rate_hz} is below the bundle's action rate "
                        f"{bundle.action_rate_hz} Hz: intermediate actions are skipped")
    return warnings


_PLACEHOLDER_NAME = re.compile(r"^(action|state)_\d+$")  # what convert writes when names are unknown


def _name_mismatch(param: str, configured: Sequence[str], trained: Sequence[str], part: str) -> list[str]:
    """Compare the profile's names with the bundle's, position by position (the model's dim k is
    the bundle's name k). A name present in both lists at different positions means the profile
    lists the dims in another order than the model: every dim would be mislabelled, so that is an
    error. Different names altogether (the robot names its joints otherwise than the converter
    guessed) only warn, with the mapping. Placeholder names (action_0, ...) say nothing."""
    if list(configured) == list(trained) or all(_PLACEHOLDER_NAME.match(n) for n in trained):
        return []
    where = {n: i for i, n in enumerate(trained)}
    moved = [(n, i, where[n]) for i, n in enumerate(configured) if n in where and where[n] != i]
    if moved:
        n, i, j = moved[0]
        raise ConfigError(param, f"lists '{n}' as {part} dim {i} but the bundle's model has it as dim {j} "
                                 f"(bundle {part} order: {list(trained)}); list the names in the bundle's order")
    pairs = ", ".join(f"{t}->{c}" for t, c in zip(trained, configured) if t != c)
    return [f"{param} differ from the bundle's {part} names; dims are mapped by position: {pairs}"]


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of a runtime parameter change: the new config, or why it was refused."""

    config: PolicyConfig | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.config is not None


def apply_updates(current: PolicyConfig, changes: Mapping[str, Any],
                  bundle: BundleInfo | None = None) -> UpdateResult:
    """Validate a change set against the running config, all or nothing.

    Parameters outside RUNTIME_PARAMETERS (bundle, backend, device, dtype, topics, names, rates of
    timers, output mode, text encoder) are refused while configured, unless the value is unchanged:
    they shape publishers, subscriptions, timers or the loaded model, which a running node cannot
    swap safely. The merged parameter set is then re-validated (and checked against the bundle when
    given), so e.g. safety arrays must keep the action dim. Map ``reason`` to
    SetParametersResult(successful=False, reason=...).
    """
    for name, value in changes.items():
        if _is_ros_builtin(name):
            continue
        if name not in SPECS:
            return UpdateResult(None, str(_unknown(name)))
        if name not in RUNTIME_PARAMETERS:
            try:
                unchanged = _checked_value(SPECS[name], value) == current.params.get(name)
            except ConfigError:
                unchanged = False
            if not unchanged:
                return UpdateResult(None, f"parameter '{name}': read-only while the node is configured "
                                          "(deactivate, clean up and configure again to change it)")
    merged = {**current.params, **{k: v for k, v in changes.items() if not _is_ros_builtin(k)}}
    try:
        cfg = from_params(merged)
        if bundle is not None:
            validate_against_bundle(cfg, bundle)
    except ConfigError as e:
        return UpdateResult(None, str(e))
    return UpdateResult(cfg)
