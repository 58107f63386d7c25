"""`lightwam make-bag`: write a deterministic synthetic multi-camera rosbag2 (lightwam_ros.demo.synthetic)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from lightwam_ros.demo.synthetic import (
    DEMO_CAMERAS,
    CameraDropout,
    ImageEncoding,
    JointMotion,
    JointOrder,
    Scene,
    StorageFormat,
    SyntheticBagSpec,
    TimedInstruction,
    default_instruction,
    parse_size,
    spec_summary,
    with_defaults,
    write_synthetic_bag,
)
from lightwam_ros.replay.bags import BagError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output bag directory (must not exist)")
    parser.add_argument("--cameras", type=int, default=3,
                        help=f"number of cameras, named {', '.join(DEMO_CAMERAS)}, cam_3, ... (default 3)")
    parser.add_argument("--size", default="240x320", help="image size HxW (default 240x320)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frame rate in Hz (default 30)")
    parser.add_argument("--seconds", type=float, default=10.0, help="bag length in s (default 10)")
    parser.add_argument("--jitter", type=float, default=2.0,
                        help="header stamp jitter in ms, uniform +- around the record time (default 2)")
    parser.add_argument("--drop-camera", action="append", default=[], metavar="NAME@T0-T1",
                        help="camera NAME publishes nothing from T0 to T1 s (repeatable)")
    parser.add_argument("--encoding", default="rgb8", choices=[e.value for e in ImageEncoding])
    parser.add_argument("--compressed", default=None, choices=["jpeg", "png"],
                        help="record the cameras as sensor_msgs/CompressedImage on <topic>/compressed, as "
                             "image_transport does (from rgb8 pixels; profile: cameras.transports compressed)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 with --compressed jpeg "
                                                                "(default 90)")
    parser.add_argument("--storage", default="mcap", choices=[s.value for s in StorageFormat])
    parser.add_argument("--version", type=int, default=9, choices=[8, 9], help="rosbag2 metadata version")
    parser.add_argument("--joint-order", default="bundle", choices=[o.value for o in JointOrder],
                        help="order of names in the recorded JointState (shuffled: node must map by name)")
    parser.add_argument("--joint-motion", default="smooth", choices=[m.value for m in JointMotion],
                        help="smooth: joints follow a smooth trajectory; static: the robot stands still")
    parser.add_argument("--scene", default="patterns", choices=[m.value for m in Scene],
                        help="patterns: textured views, joints independent of them; reach: the joystick task "
                             "the trained demo model learned (3 cameras; seeds below 10000 are held out)")
    parser.add_argument("--joint-rate", type=float, default=100.0, help="joint state rate in Hz (default 100)")
    parser.add_argument("--instruction", action="append", default=[], metavar="TEXT[@T]",
                        help="instruction published at T s (default 0; repeatable). "
                             f"Default: {default_instruction()!r} at 0 s")
    parser.add_argument("--namespace", default="/demo", help="topic namespace (default /demo, as config/demo.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stamp jitter and joint shuffle")


def camera_names(n: int) -> tuple[str, ...]:
    """The first ``n`` demo camera names, then cam_3, cam_4, ..."""
    return tuple(DEMO_CAMERAS[i] if i < len(DEMO_CAMERAS) else f"cam_{i}" for i in range(n))


def run(args: argparse.Namespace) -> int:
    try:
        spec = build_spec(args)
        t0 = time.perf_counter()
        path = write_synthetic_bag(spec, args.out)
    except (ValueError, BagError) as exc:
        print(f"lightwam make-bag: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(spec_summary(spec), indent=2))
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return 0


def build_spec(args: argparse.Namespace) -> SyntheticBagSpec:
    height, width = parse_size(args.size)
    return SyntheticBagSpec(
        cameras=camera_names(args.cameras), height=height, width=width, rate_hz=args.rate,
        seconds=args.seconds, jitter_ms=args.jitter,
        dropouts=tuple(CameraDropout.parse(d) for d in args.drop_camera),
        encoding=args.encoding, compression=args.compressed or "none", quality=args.quality,
        storage=args.storage, version=args.version, joint_order=args.joint_order,
        joint_rate_hz=args.joint_rate, joint_motion=args.joint_motion, scene=args.scene,
        instructions=with_defaults([TimedInstruction.parse(i) for i in args.instruction], default_instruction()),
        namespace=args.namespace, seed=args.seed,
    )
