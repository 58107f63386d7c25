"""The replay's inputs and outputs, shared by the runner and both modes (offline.py, live.py):
which bag topic feeds which node input, the input messages in delivery order, how many frame sets
the recording offers, and the output bag the node's publications go into.

Its own module because runner.py calls the modes and the modes need these: kept in runner.py they
made runner <-> offline/live an import circle. No rclpy here: bags are read and written as raw CDR.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lightwam_ros.config import COMPRESSED_SUFFIX, NODE_NAME, OutputMode, PolicyConfig, SyncConfig
from lightwam_ros.control.sync import FrameSync
from lightwam_ros.replay.bags import (
    BagError,
    BagInfo,
    BagMessage,
    BagReader,
    BagWriter,
    find_topic,
    header_stamp_from_cdr,
    resolve_name,
)
from lightwam_ros.replay.metrics import JOINT_STATE
from lightwam_ros.replay.options import ReplayError

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"


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
    for name in cfg.cameras.names:
        topic = cfg.cameras.subscribed_topic(name)
        kind = COMPRESSED_IMAGE if cfg.cameras.compressed(name) else IMAGE
        try:
            bag_topic = find_topic(info, topic, kind, namespace, what=f"cameras.topics ({name})")
        except BagError as exc:
            raise BagError(f"{exc}{_transport_hint(info, cfg, name, namespace)}") from None
        cameras[bag_topic] = name
        node_topic[bag_topic] = resolve_name(topic, namespace)
        msgtype[bag_topic] = kind
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


def _transport_hint(info: BagInfo, cfg: PolicyConfig, camera: str, namespace: str) -> str:
    """When the bag has the camera in the other transport, say which setting would read it."""
    compressed = cfg.cameras.compressed(camera)
    base = cfg.cameras.topic_of[camera]
    other, kind, value = ((base, IMAGE, "raw") if compressed
                          else (base + COMPRESSED_SUFFIX, COMPRESSED_IMAGE, "compressed"))
    try:
        found = find_topic(info, other, kind, namespace)
    except BagError:
        return ""
    return f"; the bag has {found} ({kind}): set cameras.transports to {value} for {camera}"


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
