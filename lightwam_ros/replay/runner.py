"""Rosbag replay through the policy node, offline or live, with a report, an output bag and a plot.

    lightwam replay --bag DIR --profile YAML --bundle DIR --out DIR [--mode offline|live] ...

Both modes run the node's own code -- lightwam_ros.ros.node.PolicyNode with its FrameSync, image
decoding, PolicyPipeline, ChunkScheduler, SafetyFilter and message builders -- and record what it
publishes (~/action_chunk, the output topic, ~/debug/canvas, /diagnostics) into OUT/outputs (MCAP):

- offline (replay_offline.py): the node's callbacks are called in bag order on the bag clock
  (record times), no data goes over DDS, and inference is simulated with a fixed, deterministic
  latency on the bag clock (default 0 = instantaneous: the chunk is merged at the next control tick
  after the request). Deterministic: the same bag, profile and bundle give the same chunks.
- live (replay_live.py): the bag's inputs are published over real DDS as raw CDR with their original
  timing (scaled by --rate) and a simulated /clock, to a PolicyNode running in its own process
  with use_sim_time, exactly as `ros2 bag play --clock` would feed a robot's node.

OUT/report.json says what happened (frame sets formed / used / dropped and why, holds, chunks,
latency percentiles, open-loop error against the recorded joint states or commands) and
OUT/plot.png shows predicted chunks against the recording.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from lightwam_ros.config import NODE_NAME, OutputMode, PolicyConfig, SyncConfig, from_params
from lightwam_ros.control.sync import FrameSync
from lightwam_ros.replay.bags import (
    BagError,
    BagInfo,
    BagMessage,
    BagReader,
    BagWriter,
    find_topic,
    header_stamp_from_cdr,
    read_bag_info,
    resolve_name,
)
from lightwam_ros.replay.metrics import (
    JOINT_STATE,
    ReferenceTrack,
    command_track,
    json_safe,
    latency_summary,
    open_loop_error,
    percentiles,
    plot_replay,
    reference_track,
)
from lightwam_ros.types import ActionChunk

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
OUTPUT_BAG = "outputs"
REPORT = "report.json"
PLOT = "plot.png"


class ReplayMode(str, Enum):
    OFFLINE = "offline"
    LIVE = "live"


class ReplayError(RuntimeError):
    """Replay cannot run as asked; the message names the bag, topic, parameter or option."""


@dataclass(frozen=True)
class ReplayOptions:
    """One replay run (the `lightwam replay` arguments)."""

    bag: Path
    profile: str  # profile name or YAML path (config.resolve_profile)
    out: Path  # output directory: outputs/ (bag), report.json, plot.png
    bundle: str | None = None  # overrides the profile's `bundle`
    mode: ReplayMode = ReplayMode.OFFLINE
    rate: float = 1.0  # live: bag seconds per wall second
    start_s: float = 0.0  # window start, seconds after the bag's first message
    duration_s: float | None = None  # window length (None: to the end)
    latency_ms: float = 0.0  # offline: simulated inference latency on the bag clock (deterministic)
    namespace: str = "/"  # node namespace (relative profile topics resolve under it)
    reference_topic: str | None = None  # open-loop reference (default: the profile's joints.state_topic)
    keep_frames: bool = False  # offline: keep every inference request's images in the result (tests)
    tail_s: float = 1.0  # live: bag seconds the clock keeps running after the last message
    plot: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "bag", Path(self.bag))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "mode", ReplayMode(self.mode))
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ReplayError(f"--rate must be > 0, got {self.rate}")
        if self.start_s < 0:
            raise ReplayError(f"--start must be >= 0 s, got {self.start_s}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ReplayError(f"--duration must be > 0 s, got {self.duration_s}")
        if not (self.latency_ms >= 0 and math.isfinite(self.latency_ms)):
            raise ReplayError(f"--latency must be >= 0 ms, got {self.latency_ms}")
        if self.tail_s < 0:
            raise ReplayError(f"tail_s must be >= 0, got {self.tail_s}")

    @property
    def output_bag(self) -> Path:
        return self.out / OUTPUT_BAG


# --- inputs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputTopics:
    """Which bag topics feed which node input, and the name the node subscribes under."""

    cameras: dict[str, str]  # bag topic -> camera name (profile cameras.names)
    node_topic: dict[str, str]  # bag topic -> resolved topic the node subscribes to
    joint_states: str  # bag topic
    instruction: str | None  # bag topic (None: the bag has none; instruction.default applies)
    msgtype: dict[str, str]  # bag topic -> message type

    @property
    def topics(self) -> list[str]:
        return list(self.node_topic)


def map_inputs(info: BagInfo, cfg: PolicyConfig, namespace: str = "/") -> InputTopics:
    """Find the bag topic of every node input (errors name the profile parameter and list the bag's)."""
    cameras, node_topic, msgtype = {}, {}, {}
    for name, topic in zip(cfg.cameras.names, cfg.cameras.topics):
        bag_topic = find_topic(info, topic, IMAGE, namespace, what=f"cameras.topics ({name})")
        cameras[bag_topic] = name
        node_topic[bag_topic] = resolve_name(topic, namespace)
        msgtype[bag_topic] = IMAGE
    joints = find_topic(info, cfg.joints.state_topic, JOINT_STATE, namespace, what="joints.state_topic")
    node_topic[joints] = resolve_name(cfg.joints.state_topic, namespace)
    msgtype[joints] = JOINT_STATE
    try:
        instruction = find_topic(info, cfg.instruction.topic, STRING, namespace, what="instruction.topic")
        node_topic[instruction] = resolve_name(cfg.instruction.topic, namespace)
        msgtype[instruction] = STRING
    except BagError as exc:
        if not cfg.instruction.default:
            raise ReplayError(f"{exc}; and instruction.default is empty, so the node would never act") from None
        log.warning("%s; using instruction.default %r", exc, cfg.instruction.default)
        instruction = None
    return InputTopics(cameras, node_topic, joints, instruction, msgtype)


def replay_window(info: BagInfo, start_s: float, duration_s: float | None) -> tuple[int, int]:
    """[start_ns, stop_ns) on the bag clock for --start/--duration."""
    start = info.start_ns + round(start_s * 1e9)
    if start > info.end_ns:
        raise ReplayError(f"--start {start_s} s is past the end of bag {info.path} ({info.duration_s:.2f} s long)")
    stop = info.end_ns + 1 if duration_s is None else min(info.end_ns + 1, start + round(duration_s * 1e9))
    return start, stop


def input_stream(reader: BagReader, inputs: InputTopics, start_ns: int,
                 stop_ns: int) -> Iterator[tuple[int, BagMessage]]:
    """(delivery time, message) of every input in [start, stop), in record order.

    Latched topics (the instruction, anything recorded transient-local) deliver their last message
    from before the window at its start: a node subscribing then would receive it, and without it
    a window starting mid-bag would have no instruction.
    """
    latched = [t for t in inputs.topics
               if t == inputs.instruction or reader.info.topics[t].transient_local]
    if start_ns > reader.info.start_ns and latched:
        last: dict[str, BagMessage] = {}
        for m in reader.messages(latched, None, start_ns):
            last[m.topic] = m
        for m in sorted(last.values(), key=lambda m: m.log_ns):
            yield start_ns, m
    for m in reader.messages(inputs.topics, start_ns, stop_ns):
        yield m.log_ns, m


class FrameSetCounter:
    """How many camera sets the recording offers: the profile's FrameSync (same slop and queue)
    fed with the header stamps at their record times, without the staleness gate.

    This is the denominator for "frame sets used": what a node with zero latency could form.
    """

    def __init__(self, cameras: Mapping[str, str], config: SyncConfig, now_ns: int) -> None:
        self._cameras = dict(cameras)
        no_age = replace(config, max_age_ns=10**18, camera_timeout_ns=10**18)
        self._sync = FrameSync(list(dict.fromkeys(self._cameras.values())), no_age, now_ns)
        self.frames: dict[str, int] = {c: 0 for c in self._cameras.values()}

    def add(self, msg: BagMessage, now_ns: int) -> None:
        camera = self._cameras.get(msg.topic)
        if camera is not None:
            self.frames[camera] += 1
            self._sync.add(camera, header_stamp_from_cdr(msg.raw), None, now_ns)

    @property
    def sets(self) -> int:
        return self._sync.stats().sets_formed


# --- outputs ----------------------------------------------------------------------------------
def msgtype_of(msg_or_cls: Any) -> str:
    """rclpy message (or class) -> 'pkg/msg/Name'."""
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


class OutputRecorder:
    """The output bag: serialized messages the node published, at their bag-clock times."""

    def __init__(self, path: Path) -> None:
        self.writer = BagWriter(path, storage="mcap", version=9)
        self.path = path

    def write(self, topic: str, msgtype: str, t_ns: int, raw: bytes) -> None:
        self.writer.add_topic(topic, msgtype)
        self.writer.write_raw(topic, t_ns, raw)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.writer.counts)

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class OutputTopics:
    """Resolved names of what the node publishes."""

    action_chunk: str
    output: str | None
    canvas: str
    diagnostics: str = "/diagnostics"


def output_topics(cfg: PolicyConfig, namespace: str = "/") -> OutputTopics:
    out = None if cfg.output.mode is OutputMode.NONE else resolve_name(cfg.output.topic, namespace)
    return OutputTopics(resolve_name("~/action_chunk", namespace, NODE_NAME), out,
                        resolve_name("~/debug/canvas", namespace, NODE_NAME))


# --- run --------------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    """What a replay produced; ``report`` is what report.json holds."""

    report: dict[str, Any]
    out: Path
    output_bag: Path
    report_path: Path
    plot_path: Path | None
    chunks: list[ActionChunk]  # as published on ~/action_chunk (executable rows), in order
    requests: list[Any] = field(default_factory=list)  # offline: InferenceRecord per inference
    ticks: list[Any] = field(default_factory=list)  # offline: TickRecord per control tick


def node_plan(options: ReplayOptions) -> tuple[Any, PolicyConfig]:
    """The node's launch plan (profile + bundle override + namespace) and its validated config."""
    from lightwam_ros.config import ConfigError
    from lightwam_ros.ros.launch_config import LaunchConfigError, plan_from_arguments

    args = {"robot": str(options.profile), "namespace": options.namespace}
    if options.bundle:
        args["bundle"] = str(Path(options.bundle).expanduser().resolve())
    try:
        plan = plan_from_arguments(args)
        cfg = from_params(plan.parameters)
    except (ConfigError, LaunchConfigError) as exc:
        raise ReplayError(f"--profile {options.profile}: {exc}") from None
    return plan, cfg


def run_replay(options: ReplayOptions) -> ReplayResult:
    """Replay ``options.bag`` through the node in ``options.mode``; write outputs, report and plot."""
    plan, cfg = node_plan(options)
    if options.output_bag.exists():
        raise ReplayError(f"--out {options.out}: {options.output_bag} already exists; choose a new directory")
    options.out.mkdir(parents=True, exist_ok=True)
    info = read_bag_info(options.bag)
    inputs = map_inputs(info, cfg, options.namespace)
    start_ns, stop_ns = replay_window(info, options.start_s, options.duration_s)
    topics = output_topics(cfg, options.namespace)
    recorder = OutputRecorder(options.output_bag)
    try:
        if options.mode is ReplayMode.OFFLINE:
            from lightwam_ros.replay.offline import run_offline

            mode_report, extras = run_offline(options, plan, cfg, inputs, topics, recorder, start_ns, stop_ns)
        else:
            from lightwam_ros.replay.live import run_live

            mode_report, extras = run_live(options, plan, cfg, inputs, topics, recorder, start_ns, stop_ns)
    finally:
        recorder.close()
    return finish_report(options, cfg, info, inputs, topics, start_ns, stop_ns, mode_report, extras)


# --- report -----------------------------------------------------------------------------------
def recorded_chunks(output_bag: Path, topic: str, trained_steps: int | None = None) -> list[tuple[int, ActionChunk]]:
    """(publish time, chunk) of every ~/action_chunk message in the output bag."""
    from rclpy.serialization import deserialize_message
    from trajectory_msgs.msg import JointTrajectory

    from lightwam_ros.ros.outputs import action_chunk_from_msg

    out = []
    with BagReader(output_bag) as reader:
        if topic not in reader.info.topics:
            return []
        for m in reader.messages([topic]):
            stamp, dt, actions, _ = action_chunk_from_msg(deserialize_message(m.raw, JointTrajectory))
            if dt is None or len(actions) == 0:
                continue
            n = len(actions)
            out.append((m.log_ns, ActionChunk(actions=actions, stamp_ns=stamp, dt_ns=dt,
                                               trained_steps=min(n, trained_steps or n))))
    return out


def _reference(options: ReplayOptions, cfg: PolicyConfig, info: BagInfo, inputs: InputTopics,
               start_ns: int, stop_ns: int, horizon_ns: int) -> tuple[ReferenceTrack | None, str | None]:
    """The recorded track to score against, or (None, why not)."""
    names = cfg.output.joint_names
    if options.reference_topic:
        topic = resolve_name(options.reference_topic, options.namespace)
        if topic not in info.topics:
            topic = find_topic(info, options.reference_topic, None, options.namespace, what="--reference")
    else:
        topic = inputs.joint_states
    with BagReader(options.bag) as reader:
        try:
            track = reference_track(reader, topic, names, start_ns, stop_ns + horizon_ns)
        except ValueError as exc:
            return None, str(exc)
    missing = [n for n, col in zip(names, track.positions.T) if not np.isfinite(col).any()]
    if len(track) == 0:
        return None, f"reference topic {topic} has no messages in the replay window"
    if len(missing) == len(names):
        return None, (f"reference topic {topic} records none of the action dims {list(names)} "
                      "(output.joint_names); open-loop error needs joint-space actions")
    return track, None


def finish_report(options: ReplayOptions, cfg: PolicyConfig, info: BagInfo, inputs: InputTopics,
                  topics: OutputTopics, start_ns: int, stop_ns: int, mode_report: dict[str, Any],
                  extras: dict[str, Any]) -> ReplayResult:
    """Scores the recorded chunks, draws the plot and writes report.json."""
    published = recorded_chunks(options.output_bag, topics.action_chunk)
    chunks = [c for _, c in published]
    horizon = max((c.dt_ns * c.horizon for c in chunks), default=0)
    track, why = _reference(options, cfg, info, inputs, start_ns, stop_ns, horizon)
    commands = None
    with BagReader(options.output_bag) as out_reader:
        counts = {t: i.count for t, i in out_reader.info.topics.items()}
        if topics.output and topics.output in out_reader.info.topics:
            cmd = command_track(out_reader, topics.output, cfg.output.joint_names)
            commands = (cmd.times_ns, cmd.positions)
    ages = [(t - c.stamp_ns) / 1e6 for t, c in published]
    report: dict[str, Any] = {
        "mode": options.mode.value,
        "bag": str(options.bag),
        "bag_storage": info.storage,
        "bag_version": info.version,
        "profile": str(options.profile),
        "bundle": cfg.bundle,
        "window": {"start_s": (start_ns - info.start_ns) / 1e9, "duration_s": (stop_ns - start_ns) / 1e9,
                   "start_ns": start_ns, "stop_ns": stop_ns},
        "inputs": {"cameras": {inputs.cameras[t]: t for t in inputs.cameras},
                   "joint_states": inputs.joint_states, "instruction": inputs.instruction},
        **mode_report,
        "chunks": {
            "published": len(chunks),
            "steps_published": chunks[0].horizon if chunks else 0,
            "observation_to_publish_ms": percentiles(ages),
            "stamps_ns": [c.stamp_ns for c in chunks],
        },
        "outputs": {"bag": str(options.output_bag), "topics": counts},
    }
    timed = extras.get("timed_chunks") or []
    if timed:
        report["latency_ms"] = latency_summary(timed)
    if track is not None and chunks:
        report["open_loop_error"] = open_loop_error(chunks, track)
    else:
        report["open_loop_error"] = {"available": False,
                                     "reason": why or "no chunks were published"}
    plot_path = None
    if options.plot:
        plot_path = plot_replay(options.out / PLOT, cfg.output.joint_names, chunks, track, commands,
                                origin_ns=info.start_ns,
                                title=f"{options.bag.name}: {options.mode.value} replay, {len(chunks)} chunks")
        report["plot"] = str(plot_path)
    report_path = options.out / REPORT
    report_path.write_text(json.dumps(json_safe(report), indent=2))
    return ReplayResult(report=report, out=options.out, output_bag=options.output_bag, report_path=report_path,
                        plot_path=plot_path, chunks=chunks, requests=extras.get("requests", []),
                        ticks=extras.get("ticks", []))
