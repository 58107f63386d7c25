"""Layouts and the Preprocessor against the official processor chain and exact cell placement.

test/data/golden_preprocess.safetensors was produced (scratch script, not in this repo: it imports
the official code and torchvision 0.28) by running the official chain on the ``pattern`` images below:
LightWAMProcessor val_transforms (official ToTensor, torchvision ``Resize([240, 320])`` or
``Resize([224, 224])``), then ``RobotVideoDataset._finalize_video_tensor`` (torchvision
``functional.resize`` to 256x320 / 128x160 bilinear antialias and tiling for "robotwin", side-by-side
for "horizontal"), the official ResizeSmallestSideAspectPreserving / CenterCrop (no-ops at the
canvas size) and Normalize(0.5, 0.5). It stores every third pixel (rows 1::3, cols 2::3) and the
per-channel sums of the full canvas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lightwam_ros.inference.layouts import Preprocessor, canvas_to_uint8
from lightwam_ros.model.canvas_layout import LAYOUTS, Cell, Layout

pytestmark = pytest.mark.numeric

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_preprocess.safetensors"


def pattern(h: int, w: int, seed: int) -> np.ndarray:
    """Deterministic high-frequency RGB test image (same function as the golden generator)."""
    i = np.arange(h, dtype=np.int64)[:, None, None]
    j = np.arange(w, dtype=np.int64)[None, :, None]
    c = np.arange(3, dtype=np.int64)[None, None, :]
    v = (i * (7 + seed) + j * (13 + 2 * seed) + c * 101 + ((i * j) // (3 + seed)) * 17) % 256
    return v.astype(np.uint8)


@pytest.mark.parametrize("name,size,seeds",
                         [("robotwin_3cam", (480, 640), (0, 1, 2)), ("libero_2cam", (256, 256), (3, 4))])
def test_canvas_matches_the_official_processor(name: str, size: tuple[int, int], seeds: tuple[int, ...]) -> None:
    golden = load_file(str(GOLDEN))
    layout = LAYOUTS[name]
    images = {cam: pattern(*size, s) for cam, s in zip(layout.cameras, seeds)}
    canvas = Preprocessor(layout)(images)
    assert canvas.shape == (1, 3, *layout.canvas_hw) and canvas.dtype == torch.float32
    # The golden came from another CPU's resize kernels: pixels on [-1, 1] within ~8 float32 rounding steps
    # (1e-6); the float64 channel sums of 123k pixels within 1e-2 (1e-7 of each pixel on average).
    torch.testing.assert_close(canvas[:, :, 1::3, 2::3], golden[f"{name}.canvas_sub"], rtol=0, atol=1e-6)
    torch.testing.assert_close(canvas.double().sum(dim=(0, 2, 3)), golden[f"{name}.channel_sum"], rtol=0, atol=1e-2)


def solid(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def test_robotwin_cell_placement_and_value_range() -> None:
    layout = LAYOUTS["robotwin_3cam"]
    images = {  # any input size works; each camera has its own
        "cam_high": solid(480, 640, (255, 0, 0)),
        "cam_left_wrist": solid(720, 1280, (0, 255, 0)),
        "cam_right_wrist": solid(100, 90, (0, 0, 255)),
    }
    canvas = Preprocessor(layout)(images)[0]
    expect = torch.empty(3, 384, 320)
    expect[:, :256] = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)
    expect[:, 256:, :160] = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1)
    expect[:, 256:, 160:] = torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1)
    torch.testing.assert_close(canvas, expect, rtol=0, atol=1e-6)
    # Bilinear weights sum to 1 only up to float32 rounding; like torchvision there is no clamp.
    assert float(canvas.min()) >= -1.0 - 1e-6 and float(canvas.max()) <= 1.0 + 1e-6
    img = canvas_to_uint8(canvas.unsqueeze(0))
    assert img.shape == (384, 320, 3) and img.dtype == np.uint8
    assert (img[0, 0].tolist() == [255, 0, 0] and img[300, 10].tolist() == [0, 255, 0]
            and img[383, 319].tolist() == [0, 0, 255])


def test_libero_side_by_side_and_rotation() -> None:
    base = LAYOUTS["libero_2cam"]
    gradient = np.zeros((224, 224, 3), dtype=np.uint8)
    gradient[:112] = 200  # bright top half
    canvas = Preprocessor(base)({"image": gradient, "wrist_image": solid(224, 224, (0, 0, 0))})
    assert canvas.shape == (1, 3, 224, 448)
    assert torch.all(canvas[0, :, :112, :224] > 0) and torch.all(canvas[0, :, 112:, :224] == -1)
    assert torch.all(canvas[0, :, :, 224:] == -1)
    rotated = Layout.from_dict({**base.to_dict(), "name": "libero_sim",
                                "cells": [{**c.to_dict(), "rotate_180": True} for c in base.cells]})
    flipped = Preprocessor(rotated)({"image": gradient, "wrist_image": solid(224, 224, (0, 0, 0))})
    assert torch.all(flipped[0, :, 112:, :224] > 0) and torch.all(flipped[0, :, :112, :224] == -1)


def test_layout_round_trip_and_validation() -> None:
    for layout in LAYOUTS.values():
        assert Layout.from_dict(layout.to_dict()) == layout
    assert LAYOUTS["robotwin_3cam"].cameras == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    with pytest.raises(ValueError, match="multiples of 16"):
        Layout("bad", (100, 320), (Cell("a", 0, 0, 100, 320),))
    with pytest.raises(ValueError, match="overlap"):
        Layout("bad", (64, 64), (Cell("a", 0, 0, 64, 40), Cell("b", 0, 32, 64, 32)))
    with pytest.raises(ValueError, match="does not fit"):
        Layout("bad", (64, 64), (Cell("a", 0, 0, 64, 80),))
    with pytest.raises(ValueError, match="unknown camera 'z'"):
        Layout("bad", (64, 64), (Cell("a", 0, 0, 64, 64),), {"z": (10, 10)})
    with pytest.raises(ValueError, match="unknown keys"):
        Layout.from_dict({**LAYOUTS["libero_2cam"].to_dict(), "fps": 10})


def test_bad_images_name_the_camera() -> None:
    pre = Preprocessor(LAYOUTS["libero_2cam"])
    with pytest.raises(KeyError, match="wrist_image"):
        pre({"image": solid(10, 10, (0, 0, 0))})
    with pytest.raises(ValueError, match="camera 'image'"):
        pre({"image": np.zeros((10, 10, 4), np.uint8), "wrist_image": solid(10, 10, (0, 0, 0))})
    with pytest.raises(ValueError, match="camera 'image'"):
        pre({"image": np.zeros((10, 10, 3), np.float32), "wrist_image": solid(10, 10, (0, 0, 0))})
