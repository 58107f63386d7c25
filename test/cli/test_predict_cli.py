"""`lightwam predict` end to end on PNG/JPEG files, and its error messages.

The images are random RGB arrays written with OpenCV (which stores BGR), so a CLI that forgot the
BGR -> RGB conversion, or mixed up the cameras, gives different actions than the pipeline fed the
original RGB arrays. The state starts with a negative value, which argparse alone would take for an
option (`--state -0.02,...`: "expected one argument"); the end-to-end run goes through the installed
`lightwam` console script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lightwam_ros import cli
from lightwam_ros.inference.pipeline import PolicyPipeline

REPO = Path(__file__).resolve().parents[2]
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
INSTRUCTION = "pick up the red block"


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(11)
    images, paths = {}, {}
    for cam in CAMERAS:
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        rgb[..., 0] //= 2  # make R and B statistically different, so a channel swap changes the canvas
        images[cam] = rgb
        paths[cam] = d / f"{cam}.png"
        assert cv2.imwrite(str(paths[cam]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return images, paths


STATE = [-0.02, -0.4, 0.7, 0.01, 0.3, -0.02, 0.5, -0.03, -0.5, 0.6, 0.0, 0.4, 0.05, 0.7]


def _args(bundle: Path, paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    args = ["predict", "--bundle", str(bundle), "--state", ",".join(map(str, STATE)),
            "--instruction", INSTRUCTION, "--out", str(out), *extra]
    for cam, p in paths.items():
        args += ["--image", f"{cam}={p}"]
    return args


def test_predict_cli_end_to_end(tiny_bundle: Path, scene, tmp_path: Path) -> None:
    images, paths = scene
    out = tmp_path / "actions.npy"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = Path(sys.executable).parent / "lightwam"  # the console script `make venv` installs
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "lightwam_ros.cli"]
    args = _args(tiny_bundle, paths, out)
    assert args[args.index("--state") + 1].startswith("-0.02,")  # not `--state=...`: the plain form
    proc = subprocess.run([*entry, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "actions float32 [32, 14]" in proc.stdout and "left_waist" in proc.stdout
    actions = np.load(out)
    with PolicyPipeline.from_bundle(tiny_bundle, device="cpu") as pipe:
        expected = pipe.predict(images, np.asarray(STATE), INSTRUCTION).actions
        swapped = pipe.predict({c: im[..., ::-1].copy() for c, im in images.items()}, np.asarray(STATE),
                               INSTRUCTION).actions
    assert actions.dtype == np.float32 and actions.shape == (32, 14)
    np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0)  # PNG is lossless: same input
    assert np.abs(swapped - expected).max() > 1e-3  # the test would notice a BGR/RGB mix-up


def test_predict_cli_jpeg_and_steps(tiny_bundle: Path, scene, tmp_path: Path, capsys) -> None:
    images, _ = scene
    jpgs = {}
    for cam, rgb in images.items():
        jpgs[cam] = tmp_path / f"{cam}.jpg"
        cv2.imwrite(str(jpgs[cam]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "a.npy"
    assert cli.main(_args(tiny_bundle, jpgs, out, "--steps", "24", "--backend", "torch")) == 0
    assert np.load(out).shape == (24, 14)
    assert "timings ms" in capsys.readouterr().out


def test_predict_cli_unknown_instruction_lists_known(tiny_bundle: Path, scene, tmp_path: Path, capsys) -> None:
    _, paths = scene
    args = _args(tiny_bundle, paths, tmp_path / "x.npy")
    args[args.index(INSTRUCTION)] = "juggle three balls"
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "unknown instruction 'juggle three balls'" in err
    for known in ("pick up the red block", "place the cup on the coaster"):
        assert known in err
    assert not (tmp_path / "x.npy").exists()


def test_predict_cli_missing_or_unknown_camera(tiny_bundle: Path, scene, tmp_path: Path, capsys) -> None:
    _, paths = scene
    partial = {c: p for c, p in paths.items() if c != "cam_left_wrist"}
    assert cli.main(_args(tiny_bundle, partial, tmp_path / "x.npy")) == 2
    assert "missing camera 'cam_left_wrist'" in capsys.readouterr().err
    wrong = dict(paths, cam_top=paths["cam_high"])
    assert cli.main(_args(tiny_bundle, wrong, tmp_path / "x.npy")) == 2
    assert "unknown camera 'cam_top'" in capsys.readouterr().err
    unreadable = dict(paths, cam_high=tmp_path / "nope.png")
    assert cli.main(_args(tiny_bundle, unreadable, tmp_path / "x.npy")) == 2
    assert "nope.png: cannot read the file as an image" in capsys.readouterr().err


def test_predict_cli_bad_state(tiny_bundle: Path, scene, tmp_path: Path, capsys) -> None:
    _, paths = scene
    args = _args(tiny_bundle, paths, tmp_path / "x.npy")
    args[args.index("--state") + 1] = "0.1,0.2"
    assert cli.main(args) == 2
    assert "state has 2 values, bundle expects 14" in capsys.readouterr().err
    args[args.index("--state") + 1] = "0.1,abc"
    assert cli.main(args) == 2
    assert "--state '0.1,abc'" in capsys.readouterr().err


def test_predict_cli_refuses_a_state_beyond_float32(tiny_bundle: Path, scene, tmp_path: Path, capsys) -> None:
    """1e308 is finite as a float64 but inf once the model's float32 input holds it: the same
    value the node holds on (a joint state beyond float32 is stale state), not a chunk from a
    clamped input."""
    _, paths = scene
    out = tmp_path / "x.npy"
    args = _args(tiny_bundle, paths, out)
    args[args.index("--state") + 1] = ",".join(map(str, [1e308, *STATE[1:]]))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "beyond float32" in err and "left_waist" in err, err
    assert not out.exists()
