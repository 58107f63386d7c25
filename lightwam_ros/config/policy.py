"""The frozen configs the node runs on, one per concern, built from flat parameter values.

API
- ``from_params(params: Mapping[str, Any]) -> PolicyConfig`` -- flat dotted names -> validated
  config; raises ``ConfigError`` whose message (and ``.parameter``) names the parameter.
- ``PolicyConfig`` and its parts: ``CameraConfig``, ``SyncConfig``, ``JointConfig``,
  ``InstructionConfig``, ``ChunkConfig``, ``OutputConfig``, ``SafetyConfig``, ``TextConfig``,
  ``RealtimeConfig``.
- ``instruction_problem(text) -> str`` -- why an instruction can never be used ("" if it can); the
  node applies it to instructions from the topic, InstructionConfig to instruction.default.

Each config validates itself in ``__post_init__`` and names the parameter, so a config built in
python (tests, replay, the control simulators) meets the same rules as one built from parameters.
Times are seconds in the parameters (ROS convention, REP 103) and integer nanoseconds in the configs
(sync and scheduling decisions are exact).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lightwam_ros.config.parameters import (
    JPEG_DECODES,
    MAX_INSTRUCTION_CHARS,
    MAX_JOINT_NAMES,
    PARAMETERS,
    SPECS,
    ActionSpace,
    Backend,
    ConfigError,
    DType,
    MergeMode,
    OutputMode,
    TextEncoder,
    _checked_value,
    _is_ros_builtin,
    _unknown,
)

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_TOPIC_RE = re.compile(r"^~?/?[A-Za-z_{][A-Za-z0-9_{}]*(/[A-Za-z_{][A-Za-z0-9_{}]*)*$")


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


TRANSPORTS = ("raw", "compressed")
COMPRESSED_SUFFIX = "/compressed"  # image_transport's name of a base topic's compressed stream


@dataclass(frozen=True)
class CameraConfig:
    names: tuple[str, ...]  # bundle layout camera names
    topics: tuple[str, ...]  # one image topic per camera, same order (the base topic when compressed)
    transports: tuple[str, ...] = ()  # "raw" | "compressed" per camera; empty = all raw
    jpeg_decode: str = "full"  # "reduced": JPEG at half size where the layout halves the camera

    def __post_init__(self) -> None:
        if self.jpeg_decode not in JPEG_DECODES:
            raise ConfigError("cameras.jpeg_decode", f"{self.jpeg_decode!r} is not a JPEG decode mode; expected "
                                                     f"one of {', '.join(JPEG_DECODES)}")
        if not self.transports:
            object.__setattr__(self, "transports", ("raw",) * len(self.names))
        if len(self.transports) != len(self.names):
            raise ConfigError("cameras.transports", f"has {len(self.transports)} entries but cameras.names has "
                                                    f"{len(self.names)} cameras; give one per camera, or none "
                                                    "for all raw")
        for t in self.transports:
            if t not in TRANSPORTS:
                raise ConfigError("cameras.transports", f"{t!r} is not a transport; expected one of "
                                                        f"{', '.join(TRANSPORTS)}")
        if not self.names:
            raise ConfigError("cameras.names", "at least one camera is required")
        _check_unique("cameras.names", self.names)
        if len(self.topics) != len(self.names):
            raise ConfigError("cameras.topics", f"has {len(self.topics)} topics but cameras.names has "
                                                f"{len(self.names)} cameras; give one topic per camera")
        for t in self.topics:
            _check_topic("cameras.topics", t)
        _check_unique("cameras.topics", self.topics)
        _check_unique("cameras.topics (with cameras.transports)", [self.subscribed_topic(c) for c in self.names])

    @property
    def topic_of(self) -> dict[str, str]:
        return dict(zip(self.names, self.topics))

    def compressed(self, camera: str) -> bool:
        return self.transports[self.names.index(camera)] == "compressed"

    def subscribed_topic(self, camera: str) -> str:
        """The topic the node subscribes to for ``camera``: its topic, or <topic>/compressed."""
        topic = self.topic_of[camera]
        return topic + COMPRESSED_SUFFIX if self.compressed(camera) else topic


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
    # After consecutive refused chunks the controller waits before asking again (doubling from one
    # chunk period up to this; 0 = never waits), so a bad model is not run back to back forever.
    refusal_backoff_max_ns: int = 5_000_000_000
    refusal_error_count: int = 3  # consecutive refusals that make the control status ERROR
    # ensemble merge: weight exp(-ensemble_decay * age in action steps from the oldest covering chunk)
    ensemble_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.blend_steps < 0:
            raise ConfigError("chunk.blend_steps", f"must be >= 0, got {self.blend_steps}")
        if self.execute_steps < 0:
            raise ConfigError("chunk.execute_steps", f"must be >= 0, got {self.execute_steps}")
        if not (self.latency_margin >= 0 and math.isfinite(self.latency_margin)):
            raise ConfigError("chunk.latency_margin", f"must be >= 0, got {self.latency_margin}")
        if not 1 <= self.max_inflight <= 4:
            raise ConfigError("chunk.max_inflight", f"must be in [1, 4], got {self.max_inflight}")
        if self.refusal_backoff_max_ns < 0:
            raise ConfigError("chunk.refusal_backoff_max", f"must be >= 0 s, got {self.refusal_backoff_max_ns / 1e9} s")
        if self.refusal_error_count < 1:
            raise ConfigError("chunk.refusal_error_count", f"must be >= 1, got {self.refusal_error_count}")
        if not (math.isfinite(self.ensemble_decay) and abs(self.ensemble_decay) <= 10):
            raise ConfigError("chunk.ensemble_decay", f"must be in [-10, 10], got {self.ensemble_decay}")

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
    trajectory_start_delay_ns: int = 0  # JointTrajectory header.stamp = now + this (0: stamp 0, on arrival)

    def __post_init__(self) -> None:
        _check_topic("output.topic", self.topic)
        _check_unique("output.joint_names", self.joint_names)
        if self.trajectory_steps < 0:
            raise ConfigError("output.trajectory_steps", f"must be >= 0, got {self.trajectory_steps}")
        if self.trajectory_start_delay_ns < 0:
            raise ConfigError("output.trajectory_start_delay",
                              f"must be >= 0 s, got {self.trajectory_start_delay_ns / 1e9} s")
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
        cameras=CameraConfig(tuple(p["cameras.names"]), tuple(p["cameras.topics"]), tuple(p["cameras.transports"]),
                             p["cameras.jpeg_decode"]),
        sync=SyncConfig(_s_to_ns(p["sync.slop"]), p["sync.queue_size"], _s_to_ns(p["sync.max_age"]),
                        _s_to_ns(p["sync.camera_timeout"])),
        joints=JointConfig(p["joints.state_topic"], joint_names, _s_to_ns(p["joints.max_age"]),
                           _s_to_ns(p["joints.future_tolerance"])),
        instruction=InstructionConfig(p["instruction.topic"], p["instruction.default"]),
        chunk=ChunkConfig(MergeMode(p["chunk.merge"]), p["chunk.blend_steps"], p["chunk.execute_steps"],
                          p["chunk.latency_margin"], p["chunk.max_inflight"],
                          _s_to_ns(p["chunk.refusal_backoff_max"]), p["chunk.refusal_error_count"],
                          ensemble_decay=p["chunk.ensemble_decay"]),
        output=OutputConfig(OutputMode(p["output.mode"]), p["output.topic"],
                            tuple(p["output.joint_names"]) or joint_names, p["output.send_velocities"],
                            p["output.trajectory_steps"], ActionSpace(p["output.action_space"]),
                            tuple(p["output.hold_command"]), _s_to_ns(p["output.trajectory_start_delay"])),
        safety=SafetyConfig(tuple(p["safety.position_min"]), tuple(p["safety.position_max"]),
                            tuple(p["safety.max_step"]), p["safety.refuse_margin"]),
        canvas_rate_hz=p["debug.canvas_rate_hz"], diagnostics_rate_hz=p["diagnostics.rate_hz"],
        text=TextConfig(TextEncoder(p["text.encoder"]), p["text.device"], p["text.wan_dir"],
                        p["text.cache_dir"]),
        params=MappingProxyType(p),
        realtime=RealtimeConfig(p["control.realtime_priority"], p["control.switch_interval"]),
    )
