"""layouts.halve_uint8 (the Preprocessor's CPU path for an exact 2x first resize) against torch's
float bilinear-antialias resize, computed independently in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightwam_ros.inference.layouts import Preprocessor, halve_uint8
from lightwam_ros.model.canvas_layout import LAYOUTS, Layout

# The bounds below are rounding bounds, not measurements: IEEE add/multiply/divide round correctly on
# every CPU, only the order of the float32 chain's sums may differ between kernels.
pytestmark = pytest.mark.numeric


def reference(img: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).to(dtype) / 255.0
    h, w = img.shape[0] // 2, img.shape[1] // 2
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


@pytest.mark.parametrize("h,w", [(480, 640), (2, 2), (2, 8), (6, 4), (36, 50)])
def test_halve_is_the_exact_resize_rounded_once(h, w):
    img = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = halve_uint8(torch.from_numpy(img))
    assert out.shape == (1, 3, h // 2, w // 2) and out.dtype == torch.float32 and out.is_contiguous()
    exact = reference(img, torch.float64)
    # rounded once from the exact value: within half an ulp of float32 on [0, 1] (2**-25 below 1)
    assert float((out.double() - exact).abs().max()) <= 2.0 ** -25
    # and within float rounding of the float32 chain the training code ran (a few steps of 1.2e-7 at 1)
    assert float((out - reference(img, torch.float32)).abs().max()) <= 2.5e-7


def test_halve_extremes_and_non_contiguous_input():
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[::2] = 255  # max sums everywhere: no int16 overflow, white stays 1, black 0
    out = halve_uint8(torch.from_numpy(img))
    torch.testing.assert_close(out, reference(img, torch.float64).float(), rtol=0, atol=2.0 ** -25)
    wide = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    view = torch.from_numpy(wide)[:, 2:10]  # rows not contiguous
    assert not view.is_contiguous()
    torch.testing.assert_close(halve_uint8(view), reference(np.ascontiguousarray(wide[:, 2:10]), torch.float64).float(),
                               rtol=0, atol=2.0 ** -25)


def test_preprocessor_fast_path_matches_float_chain_with_rotation():
    base = LAYOUTS["robotwin_3cam"].to_dict()
    base["cells"][1]["rotate_180"] = True
    layout = Layout.from_dict(base)
    rng = np.random.default_rng(7)
    images = {c: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for c in layout.cameras}
    canvas = Preprocessor(layout)(images)
    expect = torch.zeros_like(canvas)
    for cell in layout.cells:
        img = images[cell.camera][::-1, ::-1] if cell.rotate_180 else images[cell.camera]
        x = reference(np.ascontiguousarray(img), torch.float32)
        x = F.interpolate(x, size=(cell.height, cell.width), mode="bilinear", align_corners=False, antialias=True)
        expect[:, :, cell.row:cell.row + cell.height, cell.col:cell.col + cell.width] = x * 2 - 1
    # two resizes (sums of a few taps) in float32 on [-1, 1]: 1e-6 is ~8 rounding steps; a wrong cell or
    # a missed rotation is O(1)
    torch.testing.assert_close(canvas, expect, rtol=0, atol=1e-6)
