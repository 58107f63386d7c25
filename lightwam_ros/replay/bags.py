"""rosbag2 reading and writing without a ROS installation (the ``rosbags`` library).

Why this module: replay, the synthetic bag writer and the tests all need the same few operations
-- what is in a bag (topics, types, QoS, metadata version, storage), the messages of some topics in
record-time order as raw CDR, decoding a message without rclpy, and writing a bag -- and rosbag2's
own Python API (rosbag2_py) is not installable from a registry (docs/design.md, "ROS 2 from package
registries"). Both storage plugins (MCAP, the default since Iron, and sqlite3, Humble's default) and
metadata versions 8
(Jazzy) and 9 (Kilted) are read and written.

Messages are kept as raw CDR bytes (``BagMessage.raw``) so live replay can publish them unchanged
(``publisher.publish(raw)``) and offline replay can hand them to the same decoder the node uses.

A bag is user input like a profile: every way it can be broken ends in a BagError naming the bag
(and the topic and type where there is one), never in the storage library's own exception. So
metadata.yaml is read within bounds (config.bounded_yaml: MAX_METADATA_*), the message definitions
stored for custom types are bounded in size (MAX_DEFINITION_CHARS each, MAX_DEFINITIONS_CHARS in
all: registering one costs about a millisecond per field), and damaged storage found while reading
stops the reading with a BagError. A single message that does not decode is the caller's to count
and skip (``decode`` raises BagError for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import (
    MessageDefinitionFormat,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from lightwam_ros.config import YamlLimitError, read_bounded_yaml

NS_PER_S = 1_000_000_000
# metadata.yaml: a bag split into thousands of files lists each one (~10 nodes, ~200 bytes apiece)
MAX_METADATA_BYTES = 16 << 20
MAX_METADATA_DEPTH = 32
MAX_METADATA_NODES = 200_000
# Message definitions stored in the bag for types the Kilted store lacks (with every dependency):
# a large real one is ~30 kB; each costs parsing and code generation proportional to its fields.
MAX_DEFINITION_CHARS = 128 << 10
MAX_DEFINITIONS_CHARS = 1 << 20


class BagError(Exception):
    """A bag that cannot be used as asked (missing, unreadable, topic absent); names the bag/topic."""


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag."""

    name: str
    msgtype: str
    count: int
    transient_local: bool  # offered with TRANSIENT_LOCAL durability (latched), e.g. an instruction


@dataclass(frozen=True)
class BagInfo:
    """What a bag holds, from metadata.yaml and the storage file."""

    path: Path
    storage: str  # "mcap" | "sqlite3"
    version: int  # rosbag2 metadata version
    ros_distro: str | None
    start_ns: int  # record time of the first message
    end_ns: int  # record time of the last message
    message_count: int
    topics: dict[str, TopicInfo]

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_S

    def topics_of_type(self, msgtype: str) -> list[str]:
        return sorted(t.name for t in self.topics.values() if t.msgtype == msgtype)


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: topic, type, record (receive) time and the serialized CDR bytes."""

    topic: str
    msgtype: str
    log_ns: int
    raw: bytes


# --- QoS -------------------------------------------------------------------------------------
_INFINITE = QosTime(0x7FFFFFFF, 0xFFFFFFFF)
_ZERO = QosTime(0, 0)


def _qos(durability: QosDurability, reliability: QosReliability, depth: int) -> Qos:
    return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, _ZERO, _ZERO,
               QosLiveliness.AUTOMATIC, _ZERO, False)


def transient_local_qos(depth: int = 1) -> Qos:
    """Latched-topic QoS (reliable, transient local), as an instruction publisher offers it."""
    return _qos(QosDurability.TRANSIENT_LOCAL, QosReliability.RELIABLE, depth)


def reliable_qos(depth: int = 10) -> Qos:
    """Default publisher QoS (reliable, volatile)."""
    return _qos(QosDurability.VOLATILE, QosReliability.RELIABLE, depth)


# --- reading ----------------------------------------------------------------------------------
def _one_line(value: object, limit: int = 200) -> str:
    """An exception's (or value's) text on one line, cut to ``limit`` characters (library messages
    span lines)."""
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _metadata(path: Path) -> dict[str, Any]:
    meta = path / "metadata.yaml"
    if not meta.is_file():
        raise BagError(f"{path}: not a rosbag2 directory (no metadata.yaml)")
    try:
        doc = read_bounded_yaml(meta, max_bytes=MAX_METADATA_BYTES, max_depth=MAX_METADATA_DEPTH,
                                max_nodes=MAX_METADATA_NODES, what="a bag's metadata is rarely over 1 MB")
    except YamlLimitError as exc:
        raise BagError(f"bag {path}: unreadable rosbag2 metadata: {exc}") from None
    info = doc.get("rosbag2_bagfile_information") if isinstance(doc, dict) else None
    if not isinstance(info, dict):
        raise BagError(f"{meta}: unreadable rosbag2 metadata (no 'rosbag2_bagfile_information' mapping)")
    return info


class BagReader:
    """Read a rosbag2 directory: info, messages of chosen topics in record-time order, decoding.

    Use as a context manager. Decoding uses the Kilted type store plus every message definition
    stored in the bag itself, so custom message types of a robot recording decode too.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self._meta = _metadata(self.path)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types; the user needs the bag path
            raise BagError(f"bag {self.path}: cannot open ({_one_line(exc)})") from None
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        try:
            for conn in self._reader.connections:
                if not (isinstance(conn.topic, str) and isinstance(conn.msgtype, str)):
                    raise BagError(f"bag {self.path}: a topic's name or type is not a string "
                                   f"({_one_line(conn.topic, 80)!r}, {_one_line(conn.msgtype, 80)!r})")
            self._register_bag_types()
            self.info = self._build_info()
        except BagError:
            self._reader.close()
            raise
        except Exception as exc:  # noqa: BLE001 - a value of the wrong type that rosbags let through
            self._reader.close()
            raise BagError(f"bag {self.path}: unreadable rosbag2 metadata ({type(exc).__name__}: "
                           f"{_one_line(exc)})") from None

    def _register_bag_types(self) -> None:
        known = set(self._typestore.fielddefs)
        total = 0
        for conn in self._reader.connections:
            if conn.msgtype in known or not conn.msgdef.data:
                continue
            where = f"bag {self.path}: topic {conn.topic}: the message definition of {conn.msgtype} stored in the bag"
            size = len(conn.msgdef.data)
            total += size
            if size > MAX_DEFINITION_CHARS or total > MAX_DEFINITIONS_CHARS:
                raise BagError(f"{where} is {size} characters (at most {MAX_DEFINITION_CHARS} each and "
                               f"{MAX_DEFINITIONS_CHARS} in all)")
            try:
                if conn.msgdef.format is MessageDefinitionFormat.IDL:
                    types = get_types_from_idl(conn.msgdef.data)
                else:
                    types = get_types_from_msg(conn.msgdef.data, conn.msgtype)
                self._typestore.register(types)
            except Exception as exc:  # noqa: BLE001 - parse, conflict and recursion errors: a garbage definition
                raise BagError(f"{where} does not parse: {_one_line(exc)}") from None
            known |= set(types)

    def _build_info(self) -> BagInfo:
        topics: dict[str, TopicInfo] = {}
        for conn in self._reader.connections:
            qos = getattr(conn.ext, "offered_qos_profiles", []) or []
            latched = any(q.durability is QosDurability.TRANSIENT_LOCAL for q in qos)
            prev = topics.get(conn.topic)
            count = conn.msgcount + (prev.count if prev else 0)
            topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count,
                                           latched or bool(prev and prev.transient_local))
        count = self._reader.message_count
        return BagInfo(
            path=self.path,
            storage=str(self._meta.get("storage_identifier", "")),
            version=int(self._meta.get("version", 0)),
            ros_distro=self._meta.get("ros_distro"),
            start_ns=self._reader.start_time if count else 0,
            end_ns=max(self._reader.end_time - 1, self._reader.start_time) if count else 0,
            message_count=count,
            topics=topics,
        )

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all if None) with start_ns <= record time < stop_ns, in record order."""
        wanted = None if topics is None else set(topics)
        if wanted is not None:
            missing = wanted - set(self.info.topics)
            if missing:
                raise BagError(f"bag {self.path} has no topic(s) {sorted(missing)}; it has {sorted(self.info.topics)}")
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        records = self._reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, t_ns, raw = next(records)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - sqlite, MCAP and decompression errors: damaged storage
                raise BagError(f"bag {self.path}: the storage is damaged ({type(exc).__name__}: "
                               f"{_one_line(exc)})") from None
            yield BagMessage(conn.topic, conn.msgtype, int(t_ns), bytes(raw))

    def decode(self, msg: BagMessage) -> Any:
        """Deserialize a message into a rosbags dataclass (field names as in the .msg file).

        Trailing bytes after the message are ignored: rclpy's serialize_message (Kilted) returns
        buffers with up to ~16 bytes past the CDR payload, which rosbags' own size check (3 bytes of
        padding at most) rejects although every field decodes.
        """
        raw = msg.raw
        if len(raw) < 4 or raw[0] != 0 or raw[1] not in (0, 1):
            raise BagError(f"message on {msg.topic}: unsupported CDR encapsulation {raw[:4].hex()}")
        try:
            msgdef = self._typestore.get_msgdef(msg.msgtype)
            func = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
            decoded, _ = func(memoryview(raw)[4:], 0, msgdef.cls, self._typestore)
        except Exception as exc:  # noqa: BLE001 - struct/Unicode/Value/Recursion errors: a corrupt or mistyped message
            raise BagError(f"message on {msg.topic} ({msg.msgtype}) does not decode: {_one_line(exc)}") from None
        return decoded


def read_bag_info(path: str | Path) -> BagInfo:
    """Info of the bag at ``path`` (raises BagError naming the path)."""
    with BagReader(path) as reader:
        return reader.info


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rosbags or rclpy) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_stamp_from_cdr(raw: bytes) -> int:
    """header.stamp of a serialized message whose first field is a std_msgs/Header, in ns.

    Why: counting camera sets or scheduling publication needs only the stamps of thousands of
    images; reading 8 bytes is ~1000x cheaper than deserializing the pixels. Layout: 4-byte CDR
    encapsulation (byte 1: 0 = big endian, 1 = little endian), then Time{int32 sec, uint32 nanosec}.
    """
    if len(raw) < 12:
        raise BagError(f"serialized message of {len(raw)} bytes is too short to hold a header")
    order = "<" if raw[1] & 1 else ">"
    sec, nanosec = np.frombuffer(raw, dtype=np.dtype(f"{order}i4"), count=1, offset=4)[0], \
        np.frombuffer(raw, dtype=np.dtype(f"{order}u4"), count=1, offset=8)[0]
    return int(sec) * NS_PER_S + int(nanosec)


# --- topic names ------------------------------------------------------------------------------
def resolve_name(name: str, namespace: str = "/", node_name: str = "lightwam_policy") -> str:
    """ROS 2 name resolution: absolute stays, ``~/x`` is private to the node, else relative to ns."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        return f"{ns}/{node_name}{name[1:]}" if name != "~" else f"{ns}/{node_name}"
    return f"{ns}/{name}"


def find_topic(info: BagInfo, name: str, msgtype: str | None = None, namespace: str = "/",
               what: str = "topic") -> str:
    """The bag topic a node subscribing to ``name`` in ``namespace`` would receive.

    Exact resolution first; when the bag was recorded under another namespace (a robot's bag
    replayed with a profile that uses relative names), a unique bag topic that ends with the
    relative name and has the right type is accepted. ``what`` names the profile parameter in
    errors (e.g. "joints.state_topic").
    """
    resolved = resolve_name(name, namespace)
    topic = info.topics.get(resolved)
    if topic is not None:
        if msgtype and topic.msgtype != msgtype:
            raise BagError(f"{what} {name!r}: bag topic {resolved} has type {topic.msgtype}, expected {msgtype}")
        return resolved
    rel = name.lstrip("~").lstrip("/")
    candidates = [t.name for t in info.topics.values()
                  if (t.name == "/" + rel or t.name.endswith("/" + rel)) and (msgtype is None or t.msgtype == msgtype)]
    if len(candidates) == 1:
        return candidates[0]
    typed = sorted(info.topics) if msgtype is None else info.topics_of_type(msgtype)
    detail = (f"several match: {sorted(candidates)}" if candidates
              else f"bag topics{' of type ' + msgtype if msgtype else ''}: {typed}")
    raise BagError(f"{what} {name!r} (resolved {resolved}) is not in bag {info.path}; {detail}")


# --- writing ----------------------------------------------------------------------------------
class BagWriter:
    """Write a rosbag2 directory (MCAP or sqlite3, metadata version 8 or 9).

    Topics are declared once with ``add_topic``; messages are written either as rosbags dataclasses
    (``write_message``) or as already-serialized CDR (``write_raw``, used to record what a live
    node published).
    """

    def __init__(self, path: str | Path, storage: str = "mcap", version: int = 9) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output bag {self.path} already exists; choose a new directory")
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"bag storage must be one of {sorted(plugins)}, got {storage!r}")
        if version not in (8, 9):
            raise BagError(f"bag metadata version must be 8 or 9, got {version}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(self.path, version=version, storage_plugin=plugins[storage])
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Qos] = ()) -> None:
        """Declare ``topic`` (idempotent for the same type)."""
        if topic in self._conns:
            if self._types[topic] != msgtype:
                raise BagError(f"topic {topic} already declared with type {self._types[topic]}, not {msgtype}")
            return
        if msgtype not in self.typestore.fielddefs:
            raise BagError(f"topic {topic}: message type {msgtype} is unknown to the rosbags Kilted type store")
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                         offered_qos_profiles=list(qos))
        self._types[topic] = msgtype
        self.counts[topic] = 0

    def write_raw(self, topic: str, log_ns: int, raw: bytes | memoryview) -> None:
        self._writer.write(self._conns[topic], int(log_ns), raw)
        self.counts[topic] += 1

    def write_message(self, topic: str, log_ns: int, msg: Any) -> None:
        self.write_raw(topic, log_ns, self.typestore.serialize_cdr(msg, self._types[topic]))


def copy_messages(reader: BagReader, writer: BagWriter, topics: Iterable[str],
                  start_ns: int | None = None, stop_ns: int | None = None) -> int:
    """Copy the raw messages of ``topics`` into ``writer`` (keeps record times); returns the count."""
    n = 0
    topics = list(topics)
    for t in topics:
        writer.add_topic(t, reader.info.topics[t].msgtype,
                         qos=[transient_local_qos()] if reader.info.topics[t].transient_local else ())
    for msg in reader.messages(topics, start_ns, stop_ns):
        writer.write_raw(msg.topic, msg.log_ns, msg.raw)
        n += 1
    return n


# --- message payloads (rosbags dataclasses) ---------------------------------------------------
_TS = get_typestore(Stores.ROS2_KILTED)


def _header(stamp: int, frame_id: str = "") -> Any:
    Time = _TS.types["builtin_interfaces/msg/Time"]
    Header = _TS.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=stamp // NS_PER_S, nanosec=stamp % NS_PER_S), frame_id=frame_id)


def image_payload(pixels: np.ndarray, encoding: str, step: int, stamp: int, frame_id: str = "") -> Any:
    """sensor_msgs/Image from a contiguous uint8 pixel array already in ``encoding``."""
    Image = _TS.types["sensor_msgs/msg/Image"]
    return Image(header=_header(stamp, frame_id), height=int(pixels.shape[0]), width=int(pixels.shape[1]),
                 encoding=encoding, is_bigendian=0, step=int(step),
                 data=np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1))


def compressed_image_payload(data: bytes, fmt: str, stamp: int, frame_id: str = "") -> Any:
    """sensor_msgs/CompressedImage from encoded bytes and image_transport's format string."""
    CompressedImage = _TS.types["sensor_msgs/msg/CompressedImage"]
    return CompressedImage(header=_header(stamp, frame_id), format=fmt, data=np.frombuffer(data, dtype=np.uint8))


def joint_state_payload(names: Sequence[str], positions: np.ndarray, stamp: int,
                        velocities: np.ndarray | None = None) -> Any:
    """sensor_msgs/JointState with positions (and optionally velocities) in the order of ``names``."""
    JointState = _TS.types["sensor_msgs/msg/JointState"]
    empty = np.zeros(0, np.float64)
    return JointState(header=_header(stamp), name=list(names), position=np.asarray(positions, np.float64),
                      velocity=empty if velocities is None else np.asarray(velocities, np.float64), effort=empty)


def string_payload(text: str) -> Any:
    """std_msgs/String."""
    return _TS.types["std_msgs/msg/String"](data=text)
