"""Deterministic synthetic robot recordings: rendered multi-camera scenes, joint states, instructions.

Why: replay, the demo and the bag tests need rosbags that look like a robot recording (several
cameras at a frame rate with stamp jitter, joint states at a higher rate, an instruction on a
latched topic) without a robot, and that are bit-for-bit reproducible so a test can state what the
node must do at a given time. Everything here is a pure function of a ``SyntheticBagSpec``: the
same spec always writes the same messages (no wall clock, a seeded generator per stream).

Scenes are drawn with OpenCV primitives. Each camera has its own background, colours and object
paths, so a mix-up of cameras (or of channel order) changes the observation and therefore the
predicted chunk -- which is what the encoding and dropout tests rely on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from .reach_scene import REACH_CAMERAS, TRAINING_SEED_BASE, ReachEpisode

# ALOHA / RoboTwin dual-arm order: per arm 6 joints + gripper, left arm first (REP 144 style names).
ALOHA_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{side}_{joint}"
    for side in ("left", "right")
    for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
)
DEMO_CAMERAS: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")
DEMO_NAMESPACE = "/demo"
# A realistic epoch for header stamps (2023-11-14T22:13:20Z): stamps far from 0 catch code that
# mixes float seconds and nanoseconds (float64 seconds lose sub-microsecond precision here).
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
DEFAULT_INSTRUCTION = "pick up the red block"  # a cached instruction of the demo bundle (demo_bundle.DEMO_INSTRUCTIONS)

IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_MSGTYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_MSGTYPES = (IMAGE_MSGTYPE, COMPRESSED_IMAGE_MSGTYPE)
JOINT_STATE_MSGTYPE = "sensor_msgs/msg/JointState"
STRING_MSGTYPE = "std_msgs/msg/String"


class ImageEncoding(str, Enum):
    """sensor_msgs/Image encodings the synthetic writer (and the node) support."""

    RGB8 = "rgb8"
    BGR8 = "bgr8"
    RGBA8 = "rgba8"
    BGRA8 = "bgra8"
    MONO8 = "mono8"

    @property
    def channels(self) -> int:
        return {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[self.value]


class Compression(str, Enum):
    """How the cameras are recorded: raw Image on <topic>, or image_transport's CompressedImage on
    <topic>/compressed."""

    NONE = "none"
    JPEG = "jpeg"
    PNG = "png"


class StorageFormat(str, Enum):
    """rosbag2 storage plugins (MCAP: default since Iron; sqlite3: Humble's default)."""

    MCAP = "mcap"
    SQLITE3 = "sqlite3"


class JointOrder(str, Enum):
    """Order of names in the recorded JointState (the node must pick joints by name)."""

    BUNDLE = "bundle"
    SHUFFLED = "shuffled"


@dataclass(frozen=True)
class CameraDropout:
    """Camera ``camera`` publishes nothing for bag times t0_s <= t < t1_s (seconds from the start)."""

    camera: str
    t0_s: float
    t1_s: float

    def __post_init__(self) -> None:
        if not 0 <= self.t0_s < self.t1_s:
            raise ValueError(f"CameraDropout for {self.camera!r}: need 0 <= t0 < t1, got {self.t0_s}-{self.t1_s}")

    @classmethod
    def parse(cls, text: str) -> CameraDropout:
        """Parse ``NAME@T0-T1`` (seconds), as given to ``lightwam make-bag --drop-camera``."""
        try:
            name, window = text.rsplit("@", 1)
            t0, t1 = window.split("-", 1)
            return cls(name, float(t0), float(t1))
        except ValueError as exc:
            raise ValueError(f"--drop-camera expects NAME@T0-T1 in seconds (e.g. cam_high@2-3.5), "
                             f"got {text!r}: {exc}") from None

    def covers(self, t_s: float) -> bool:
        return self.t0_s <= t_s < self.t1_s


@dataclass(frozen=True)
class TimedInstruction:
    """Instruction ``text`` published at ``t_s`` seconds from the start of the bag."""

    text: str
    t_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("TimedInstruction.text must not be empty")
        if self.t_s < 0:
            raise ValueError(f"TimedInstruction.t_s must be >= 0, got {self.t_s}")

    @classmethod
    def parse(cls, text: str) -> TimedInstruction:
        """Parse ``TEXT[@T]`` as given to ``lightwam make-bag --instruction`` (T defaults to 0)."""
        body, sep, when = text.rpartition("@")
        if sep:
            try:
                return cls(body, float(when))
            except ValueError:
                pass  # an '@' that is part of the instruction itself
        return cls(text, 0.0)


class Scene(str, Enum):
    """What the cameras show and how the joints move."""

    PATTERNS = "patterns"  # render_scene + joint_positions: rich texture, joints independent of the views
    REACH = "reach"  # demo/reach_scene.py: the joystick task the trained demo model has learned


class JointMotion(str, Enum):
    """How the recorded robot moves."""

    SMOOTH = "smooth"  # joint_positions(t): a smooth trajectory
    STATIC = "static"  # joint_positions(0) throughout: a robot standing still


@dataclass(frozen=True)
class SyntheticBagSpec:
    """Everything that determines a synthetic bag.

    Stamps: camera i's frame n is *recorded* at ``start + n/rate + phase_i`` (phase_i = i * 1 ms,
    cameras are not hardware-triggered together) and its header stamp is the record time plus a
    uniform jitter in [-jitter, +jitter]. Joint states are recorded at ``joint_rate_hz`` with
    header stamp = record time. Instructions are recorded at their times on a transient-local topic.
    """

    cameras: tuple[str, ...] = DEMO_CAMERAS
    height: int = 240
    width: int = 320
    rate_hz: float = 30.0  # camera frame rate
    seconds: float = 10.0
    jitter_ms: float = 2.0  # header stamp jitter around the record time (uniform, +-)
    dropouts: tuple[CameraDropout, ...] = ()
    encoding: ImageEncoding = ImageEncoding.RGB8
    compression: Compression = Compression.NONE  # jpeg / png: CompressedImage on <camera topic>/compressed
    quality: int = 90  # JPEG quality 1..100 (image_transport's jpeg_quality)
    storage: StorageFormat = StorageFormat.MCAP
    version: int = 9  # rosbag2 metadata version (8: Jazzy and older, 9: Kilted)
    joint_order: JointOrder = JointOrder.BUNDLE
    joint_names: tuple[str, ...] = ALOHA_JOINT_NAMES
    joint_rate_hz: float = 100.0
    joint_motion: JointMotion = JointMotion.SMOOTH
    scene: Scene = Scene.PATTERNS
    instructions: tuple[TimedInstruction, ...] = ()
    namespace: str = DEMO_NAMESPACE  # topics: <ns>/<camera>/image_raw, <ns>/joint_states, <ns>/instruction
    start_ns: int = DEFAULT_START_NS
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("SyntheticBagSpec.cameras must name at least one camera")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"SyntheticBagSpec.cameras must be distinct, got {self.cameras}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"SyntheticBagSpec.height/width must be >= 16, got {self.height}x{self.width}")
        if not 0 < self.rate_hz <= 1000:
            raise ValueError(f"SyntheticBagSpec.rate_hz must be in (0, 1000], got {self.rate_hz}")
        if not 0 < self.joint_rate_hz <= 10000:
            raise ValueError(f"SyntheticBagSpec.joint_rate_hz must be in (0, 10000], got {self.joint_rate_hz}")
        if self.seconds <= 0:
            raise ValueError(f"SyntheticBagSpec.seconds must be > 0, got {self.seconds}")
        if self.jitter_ms < 0 or self.jitter_ms * 2e-3 >= 1.0 / self.rate_hz:
            raise ValueError(
                f"SyntheticBagSpec.jitter_ms must be >= 0 and below half a frame period "
                f"({500.0 / self.rate_hz:.1f} ms), got {self.jitter_ms}")
        if self.version not in (8, 9):
            raise ValueError(f"SyntheticBagSpec.version must be 8 or 9, got {self.version}")
        for drop in self.dropouts:
            if drop.camera not in self.cameras:
                raise ValueError(f"SyntheticBagSpec.dropouts: unknown camera {drop.camera!r}, "
                                 f"cameras are {self.cameras}")
        if not self.joint_names:
            raise ValueError("SyntheticBagSpec.joint_names must not be empty")
        times = [i.t_s for i in self.instructions]
        if times != sorted(times):
            raise ValueError("SyntheticBagSpec.instructions must be in time order")
        # Coerce string values given by callers (CLI) into the enums.
        object.__setattr__(self, "encoding", ImageEncoding(self.encoding))
        object.__setattr__(self, "compression", Compression(self.compression))
        if not 1 <= self.quality <= 100:
            raise ValueError(f"SyntheticBagSpec.quality (JPEG quality) must be in [1, 100], got {self.quality}")
        if self.compression is not Compression.NONE and self.encoding is not ImageEncoding.RGB8:
            raise ValueError("SyntheticBagSpec: a compressed camera is recorded from rgb8 pixels; "
                             f"--encoding {self.encoding.value} applies to raw images only")
        object.__setattr__(self, "storage", StorageFormat(self.storage))
        object.__setattr__(self, "joint_order", JointOrder(self.joint_order))
        object.__setattr__(self, "joint_motion", JointMotion(self.joint_motion))
        object.__setattr__(self, "scene", Scene(self.scene))
        if self.scene is Scene.REACH:
            if self.cameras != REACH_CAMERAS:
                raise ValueError(f"SyntheticBagSpec: the reach scene has the cameras {list(REACH_CAMERAS)}, "
                                 f"got {list(self.cameras)}")
            if self.joint_names != ALOHA_JOINT_NAMES:
                raise ValueError("SyntheticBagSpec: the reach scene drives the 14 ALOHA joints "
                                 f"{list(ALOHA_JOINT_NAMES)}")
            if self.seed >= TRAINING_SEED_BASE:
                raise ValueError(f"SyntheticBagSpec.seed: reach-scene seeds from {TRAINING_SEED_BASE} on are the "
                                 f"trained demo model's training episodes; use a lower seed for a held-out bag")

    # --- topics -----------------------------------------------------------------------------
    def camera_topic(self, camera: str) -> str:
        """The camera's base topic (what a profile's cameras.topics names)."""
        return f"{self.namespace.rstrip('/')}/{camera}/image_raw"

    def recorded_camera_topic(self, camera: str) -> str:
        """The topic the camera is recorded on: the base topic, or <base>/compressed."""
        base = self.camera_topic(camera)
        return base if self.compression is Compression.NONE else base + "/compressed"

    @property
    def camera_msgtype(self) -> str:
        return IMAGE_MSGTYPE if self.compression is Compression.NONE else COMPRESSED_IMAGE_MSGTYPE

    @property
    def joint_state_topic(self) -> str:
        return f"{self.namespace.rstrip('/')}/joint_states"

    @property
    def instruction_topic(self) -> str:
        return f"{self.namespace.rstrip('/')}/instruction"

    @property
    def recorded_joint_names(self) -> tuple[str, ...]:
        """Names in the order they appear in the recorded JointState messages."""
        if self.joint_order is JointOrder.BUNDLE:
            return self.joint_names
        perm = np.random.default_rng(self.seed + 7).permutation(len(self.joint_names))
        if len(perm) > 1 and np.all(perm == np.arange(len(perm))):
            perm = np.roll(perm, 1)  # a "shuffle" that changes nothing would make the test vacuous
        return tuple(self.joint_names[i] for i in perm)

    @property
    def end_ns(self) -> int:
        return self.start_ns + round(self.seconds * 1e9)

    @cached_property
    def reach_episode(self) -> ReachEpisode:
        """The reach scene's episode this bag records (``scene: reach``), seeded by ``seed``."""
        return ReachEpisode(seed=self.seed, seconds=self.seconds)

    def joints_at(self, t_s: float) -> np.ndarray:
        """Joint positions in the canonical order at ``t_s`` seconds from the start."""
        if self.joint_motion is JointMotion.STATIC:
            t_s = 0.0
        if self.scene is Scene.REACH:
            return self.reach_episode.joints(t_s)
        return joint_positions(t_s, len(self.joint_names))

    def render(self, camera_index: int, t_s: float) -> np.ndarray:
        """What camera ``camera_index`` records at ``t_s`` (RGB uint8)."""
        if self.scene is Scene.REACH:
            return self.reach_episode.render(camera_index, t_s, self.height, self.width)
        return render_scene(camera_index, t_s, self.height, self.width)


# --- scene content --------------------------------------------------------------------------
def render_scene(camera_index: int, t_s: float, height: int, width: int) -> np.ndarray:
    """The RGB frame (uint8 [H, W, 3]) camera ``camera_index`` sees at ``t_s`` seconds.

    A per-camera gradient background and floor grid, and three objects (disc, box, bar) moving on
    smooth periodic paths whose phases, speeds and colours depend on the camera index, so
    the views differ from each other and change over time.
    """
    rng = np.random.default_rng(1000 + camera_index)  # fixed per camera, independent of t
    base = rng.integers(40, 200, size=3)
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    tint = rng.uniform(-60, 60, size=3).astype(np.float32)
    img = np.clip(base + tint * yy + 0.5 * tint[::-1] * xx, 0, 255).astype(np.uint8)
    img = np.broadcast_to(img, (height, width, 3)).copy()
    # floor grid in the lower half (perspective-free, cheap, gives texture to the VAE)
    step = max(8, width // 10)
    for x in range(int(camera_index * 3) % step, width, step):
        cv2.line(img, (x, height // 2), (x, height - 1), (90, 90, 90), 1)
    for y in range(height // 2, height, max(6, step // 2)):
        cv2.line(img, (0, y), (width - 1, y), (90, 90, 90), 1)
    s = min(height, width)
    colors = rng.integers(0, 256, size=(3, 3))
    speeds = rng.uniform(0.2, 0.6, size=3)
    phases = rng.uniform(0, 2 * math.pi, size=3)
    # disc on a Lissajous path
    cx = width * (0.5 + 0.35 * math.sin(2 * math.pi * speeds[0] * t_s + phases[0]))
    cy = height * (0.5 + 0.3 * math.sin(2 * math.pi * speeds[0] * 1.3 * t_s + phases[0] / 2))
    cv2.circle(img, (int(cx), int(cy)), max(3, s // 8), tuple(int(c) for c in colors[0]), -1, cv2.LINE_AA)
    # box sliding horizontally on the floor
    bx = width * (0.5 + 0.4 * math.sin(2 * math.pi * speeds[1] * t_s + phases[1]))
    by = height * 0.72
    half = max(3, s // 10)
    cv2.rectangle(img, (int(bx) - half, int(by) - half), (int(bx) + half, int(by) + half),
                  tuple(int(c) for c in colors[1]), -1)
    # rotating bar (a "gripper") around the centre
    ang = 2 * math.pi * speeds[2] * t_s + phases[2]
    r = s * 0.3
    p0 = (int(width / 2 - r * math.cos(ang)), int(height / 3 - r * math.sin(ang)))
    p1 = (int(width / 2 + r * math.cos(ang)), int(height / 3 + r * math.sin(ang)))
    cv2.line(img, p0, p1, tuple(int(c) for c in colors[2]), max(2, s // 30), cv2.LINE_AA)
    return img


def encode_image(rgb: np.ndarray, encoding: ImageEncoding | str) -> tuple[np.ndarray, int]:
    """RGB uint8 [H, W, 3] -> (contiguous pixel array in ``encoding``, step in bytes)."""
    enc = ImageEncoding(encoding)
    if enc is ImageEncoding.RGB8:
        out = rgb
    elif enc is ImageEncoding.BGR8:
        out = rgb[..., ::-1]
    elif enc is ImageEncoding.RGBA8:
        out = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    elif enc is ImageEncoding.BGRA8:
        out = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    else:  # MONO8: ITU-R 601 luma, as cv2 (and camera drivers) compute it
        out = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    out = np.ascontiguousarray(out)
    return out, rgb.shape[1] * enc.channels


def decode_reference(pixels: np.ndarray, encoding: ImageEncoding | str) -> np.ndarray:
    """What a correct decoder must return as RGB uint8 [H, W, 3] for pixels in ``encoding``.

    Independent of lightwam_ros.ros.images on purpose: tests compare the node's decoding to this.
    """
    enc = ImageEncoding(encoding)
    if enc is ImageEncoding.MONO8:
        return np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
    arr = pixels[..., :3]
    if enc in (ImageEncoding.BGR8, ImageEncoding.BGRA8):
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr)


def joint_positions(t_s: float, n_joints: int) -> np.ndarray:
    """Smooth joint trajectory (radians; grippers in [0, 1]) at ``t_s`` in the canonical joint order.

    Sums of two sinusoids with incommensurate periods per joint: smooth (C-infinity), bounded well
    inside typical limits (|q| < 0.9 rad), and never periodic over a test-length bag.
    """
    k = np.arange(n_joints, dtype=np.float64)
    q = 0.5 * np.sin(2 * np.pi * (0.11 + 0.017 * k) * t_s + 0.7 * k) \
        + 0.3 * np.sin(2 * np.pi * (0.23 + 0.031 * k) * t_s + 1.3 * k)
    if n_joints == len(ALOHA_JOINT_NAMES):
        grippers = [6, 13]
        q[grippers] = 0.5 + 0.4 * np.sin(2 * np.pi * 0.2 * t_s + k[grippers])
    return q


# --- message stream -------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticMessage:
    """One message of the synthetic recording, before serialization."""

    topic: str
    msgtype: str
    record_ns: int  # bag (receive) time
    stamp_ns: int | None  # header stamp (None for headerless messages)
    payload: dict = field(default_factory=dict)  # message fields (see to_rosbags)


def camera_stamps(spec: SyntheticBagSpec, camera_index: int) -> Iterator[tuple[int, int, float]]:
    """(record_ns, stamp_ns, t_s) of every frame camera ``camera_index`` publishes."""
    camera = spec.cameras[camera_index]
    rng = np.random.default_rng([spec.seed, camera_index])
    period_ns = 1e9 / spec.rate_hz
    phase_ns = camera_index * 1_000_000
    jitter_ns = spec.jitter_ms * 1e6
    n = 0
    while True:
        offset = round(n * period_ns) + phase_ns
        if offset >= round(spec.seconds * 1e9):
            return
        jitter = round(rng.uniform(-jitter_ns, jitter_ns)) if jitter_ns > 0 else 0
        t_s = offset / 1e9
        n += 1
        if any(d.camera == camera and d.covers(t_s) for d in spec.dropouts):
            continue
        yield spec.start_ns + offset, spec.start_ns + offset + jitter, t_s


def iter_messages(spec: SyntheticBagSpec) -> Iterator[SyntheticMessage]:
    """All messages of the recording in record-time order (ties: instruction, joints, cameras)."""
    streams: list[list[SyntheticMessage]] = []
    for ci, camera in enumerate(spec.cameras):
        topic = spec.recorded_camera_topic(camera)
        frames = []
        for record_ns, stamp_ns, t_s in camera_stamps(spec, ci):
            frames.append(SyntheticMessage(topic, spec.camera_msgtype, record_ns, stamp_ns,
                                           {"camera_index": ci, "t_s": t_s, "frame_id": camera}))
        streams.append(frames)
    names = spec.recorded_joint_names
    order = [spec.joint_names.index(n) for n in names]
    joints = []
    period_ns = 1e9 / spec.joint_rate_hz
    n = 0
    while (offset := round(n * period_ns)) < round(spec.seconds * 1e9):
        q = spec.joints_at(offset / 1e9)
        joints.append(SyntheticMessage(spec.joint_state_topic, JOINT_STATE_MSGTYPE, spec.start_ns + offset,
                                       spec.start_ns + offset, {"name": names, "position": q[order]}))
        n += 1
    streams.append(joints)
    streams.append([SyntheticMessage(spec.instruction_topic, STRING_MSGTYPE, spec.start_ns + round(i.t_s * 1e9),
                                     None, {"data": i.text}) for i in spec.instructions])
    rank = {STRING_MSGTYPE: 0, JOINT_STATE_MSGTYPE: 1, IMAGE_MSGTYPE: 2, COMPRESSED_IMAGE_MSGTYPE: 2}
    merged = [m for s in streams for m in s]
    merged.sort(key=lambda m: (m.record_ns, rank[m.msgtype], m.topic))
    yield from merged


def frame_rgb(spec: SyntheticBagSpec, msg: SyntheticMessage) -> np.ndarray:
    """The RGB content of a synthetic camera message (before encoding)."""
    return spec.render(msg.payload["camera_index"], msg.payload["t_s"])


# --- writing ---------------------------------------------------------------------------------
def write_synthetic_bag(spec: SyntheticBagSpec, out_dir: str | Path) -> Path:
    """Write the recording described by ``spec`` as a rosbag2 directory; return its path.

    ``out_dir`` must not exist (rosbag2 refuses to overwrite a bag, and so do we).
    """
    # Imported here so that scene rendering works without the bag stack.
    from lightwam_ros.replay.bags import (
        BagWriter,
        compressed_image_payload,
        image_payload,
        joint_state_payload,
        string_payload,
        transient_local_qos,
    )
    from lightwam_ros.ros.compressed import compressed_format, encode_rgb

    out = Path(out_dir)
    with BagWriter(out, storage=spec.storage.value, version=spec.version) as writer:
        for camera in spec.cameras:
            writer.add_topic(spec.recorded_camera_topic(camera), spec.camera_msgtype)
        writer.add_topic(spec.joint_state_topic, JOINT_STATE_MSGTYPE)
        writer.add_topic(spec.instruction_topic, STRING_MSGTYPE, qos=[transient_local_qos()])
        for msg in iter_messages(spec):
            if msg.msgtype == IMAGE_MSGTYPE:
                pixels, step = encode_image(frame_rgb(spec, msg), spec.encoding)
                data = image_payload(pixels, spec.encoding.value, step, msg.stamp_ns, msg.payload["frame_id"])
            elif msg.msgtype == COMPRESSED_IMAGE_MSGTYPE:
                codec = spec.compression.value
                data = compressed_image_payload(encode_rgb(frame_rgb(spec, msg), codec, spec.quality),
                                                compressed_format(codec), msg.stamp_ns, msg.payload["frame_id"])
            elif msg.msgtype == JOINT_STATE_MSGTYPE:
                data = joint_state_payload(msg.payload["name"], msg.payload["position"], msg.stamp_ns)
            else:
                data = string_payload(msg.payload["data"])
            writer.write_message(msg.topic, msg.record_ns, data)
    return out


def spec_summary(spec: SyntheticBagSpec) -> dict:
    """Plain-data description of a spec (written next to the bag for humans and the demo)."""
    return {
        "cameras": list(spec.cameras),
        "camera_topics": [spec.recorded_camera_topic(c) for c in spec.cameras],
        "compression": spec.compression.value,
        "quality": spec.quality,
        "size_hw": [spec.height, spec.width],
        "rate_hz": spec.rate_hz,
        "seconds": spec.seconds,
        "jitter_ms": spec.jitter_ms,
        "dropouts": [f"{d.camera}@{d.t0_s}-{d.t1_s}" for d in spec.dropouts],
        "encoding": spec.encoding.value,
        "storage": spec.storage.value,
        "version": spec.version,
        "joint_state_topic": spec.joint_state_topic,
        "joint_names": list(spec.joint_names),
        "recorded_joint_names": list(spec.recorded_joint_names),
        "joint_rate_hz": spec.joint_rate_hz,
        "joint_motion": spec.joint_motion.value,
        "scene": spec.scene.value,
        "instruction_topic": spec.instruction_topic,
        "instructions": [{"text": i.text, "t_s": i.t_s} for i in spec.instructions],
        "start_ns": spec.start_ns,
        "seed": spec.seed,
    }


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. 480x640) as given to ``--size``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size expects HxW, e.g. 480x640, got {text!r}") from None
    return h, w


def default_instruction() -> str:
    """The instruction a synthetic bag carries when none is given: one the demo bundle knows."""
    return DEFAULT_INSTRUCTION


def with_defaults(instructions: Sequence[TimedInstruction], default: str) -> tuple[TimedInstruction, ...]:
    """Instructions to record: the given ones, or ``default`` at t=0 when none is given."""
    ordered = sorted(instructions, key=lambda i: i.t_s)  # stable: same-time ones keep their order
    return tuple(ordered) if ordered else (TimedInstruction(default, 0.0),)
