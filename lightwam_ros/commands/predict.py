"""`lightwam predict`: one observation from image files -> de-normalized actions .npy (for checks)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.config import Backend
from lightwam_ros.model.dtypes import DTYPES, dtype_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle directory")
    parser.add_argument("--image", action="append", default=[], required=True, metavar="CAMERA=PATH",
                        help="image file (PNG/JPEG) for a bundle camera; one per camera")
    parser.add_argument("--state", required=True, metavar="V1,V2,...",
                        help="joint state in robot units, comma-separated, in the bundle's state order")
    parser.add_argument("--instruction", required=True, help="instruction (must have a context in the bundle)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--backend", default="torch", choices=[k.value for k in Backend])
    parser.add_argument("--steps", type=int, help="chunk rows to compute (default: the model horizon)")
    parser.add_argument("--out", required=True, type=Path, help="output .npy, float32 [steps, action_dim]")


def read_image(path: str, camera: str) -> np.ndarray:
    """uint8 HxWx3 RGB from a PNG/JPEG file (OpenCV decodes BGR)."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"--image {camera}={path}: cannot read the file as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def parse_images(specs: list[str], cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    images: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--image {spec!r}: expected CAMERA=PATH")
        if name not in cameras:
            raise ValueError(f"--image {spec!r}: unknown camera {name!r}; bundle cameras: {list(cameras)}")
        if name in images:
            raise ValueError(f"--image: camera {name!r} given twice")
        images[name] = read_image(path, name)
    missing = [c for c in cameras if c not in images]
    if missing:
        raise ValueError(f"--image: missing camera {', '.join(repr(m) for m in missing)} "
                         f"(bundle cameras: {list(cameras)})")
    return images


def parse_state(text: str) -> np.ndarray:
    try:
        return np.asarray([float(v) for v in text.split(",") if v.strip()], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"--state {text!r}: not a comma-separated list of numbers ({exc})") from None


def run(args: argparse.Namespace) -> int:
    from lightwam_ros.inference.pipeline import PolicyInputError, PolicyPipeline
    from lightwam_ros.text.contexts import UnknownInstructionError

    try:
        pipe = PolicyPipeline.from_bundle(args.bundle, backend=args.backend, device=args.device, dtype=args.dtype,
                                          steps=args.steps)
    except (BundleError, ValueError, OSError) as exc:
        print(f"lightwam predict: error: {exc}", file=sys.stderr)
        return 2
    with pipe:
        try:
            images = parse_images(args.image, pipe.cameras)
            state = parse_state(args.state)
            chunk = pipe.predict(images, state, args.instruction)
        except UnknownInstructionError as exc:
            print(f"lightwam predict: error: --instruction: {exc}", file=sys.stderr)
            return 2
        except (PolicyInputError, ValueError, OSError) as exc:
            print(f"lightwam predict: error: {exc}", file=sys.stderr)
            return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, chunk.actions)
    emb = pipe.embodiment
    print(f"wrote {args.out}: actions float32 {list(chunk.actions.shape)} (rows 0..{chunk.executable_steps - 1} "
          f"trained, dt {chunk.dt_ns / 1e6:g} ms), backend {pipe.backend.name} {pipe.device} "
          f"{dtype_name(pipe.backend.dtype)}")
    width = max(len(n) for n in emb.action_names)
    for i, name in enumerate(emb.action_names):
        print(f"  {name:<{width}}  step0 {chunk.actions[0, i]: .4f}  step{chunk.executable_steps - 1} "
              f"{chunk.actions[chunk.executable_steps - 1, i]: .4f}")
    print("timings ms: " + ", ".join(f"{k} {v:.1f}" for k, v in chunk.timings_ms.items()))
    return 0
