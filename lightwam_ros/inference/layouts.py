"""The Preprocessor: camera images -> the model's [-1, 1] canvas (the layouts themselves, as data,
are model/canvas_layout.py).

Light-WAM sees all cameras as one tiled RGB frame (docs/model.md, "Canvas layout"). Training
built it with float [0, 1] tensors: ``ToTensor`` (uint8 / 255), ``torchvision.transforms.Resize`` of
each camera to the data-config shape, a second resize of each camera to its cell, tiling, and
``Normalize(0.5, 0.5)``. Every resize is bilinear with antialias on float tensors, which torchvision
implements as ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``; the
Preprocessor runs that same chain with torch on the backend's device, uploading the uint8 bytes once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from lightwam_ros.model.canvas_layout import Layout


def resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """torchvision's float-tensor Resize: bilinear, antialias, align_corners False; same size is a no-op."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False, antialias=True)


def halve_uint8(img: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, C] (H, W even) -> float32 [1, C, H/2, W/2]: ``resize(ToTensor(img), (H/2, W/2))``
    computed exactly, then rounded once.

    Why: it is the first resize of every 480x640 camera (to the 240x320 data-config shape) and, as a
    float resize, the largest host cost per frame set on a CPU. For a factor of exactly 2 the
    antialiased bilinear (triangle) filter is fixed: output k takes inputs 2k-1, 2k, 2k+1, 2k+2 with
    weights 1, 3, 3, 1 (/ 8); a tap outside the image is dropped and the rest renormalized (/ 7, or / 6
    for a single output), as torch does. On the uint8 values those sums are integers (at most
    64 * 255, exact in int16), so the only rounding is the final division: the result is within half
    an ulp of the exact resize, differs from the float chain by its rounding only (<= 1.2e-7 on
    [0, 1]), and takes about a third of its time on one core. Used on the CPU only: on a GPU one
    interpolate kernel costs the host less than these launches.

    Rows: pairs (2k, 2k+1) are contiguous, so 3 (r[2k] + r[2k+1]) + r[2k-1] + r[2k+2] runs on whole
    rows. Columns: [1, 3, 3, 1] = [1, 1] * [1, 1] * [1, 1], so two contiguous shifted sums over a
    zero-padded row (the zero pixel is the dropped tap) leave one strided pair sum per output.
    """
    h, w, c = img.shape
    x = img.to(torch.int16).contiguous()
    rows = x.view(h // 2, 2, w * c)  # row pairs, each row flattened with its channels
    r0, r1 = rows[:, 0], rows[:, 1]
    padded = torch.zeros((h // 2, (w + 2) * c), dtype=torch.int16, device=img.device)  # a zero pixel each side
    v = padded[:, c:-c]
    torch.add(r0, r1, out=v).mul_(3)
    v[1:] += r1[:-1]  # row 2k-1
    v[:-1] += r0[1:]  # row 2k+2
    y = padded[:, c:] + padded[:, :-c]  # y[j] = v[j-1] + v[j]            (pixel j)
    z = y[:, c:] + y[:, :-c]  # z[j] = v[j-1] + 2 v[j] + v[j+1]
    pairs = z.view(h // 2, w // 2, 2, c)  # out[k] = z[2k] + z[2k+1]
    out = torch.empty((c, h // 2, w // 2), dtype=torch.int16, device=img.device)  # planar: what resize wants
    torch.add(pairs[:, :, 0], pairs[:, :, 1], out=out.permute(1, 2, 0))
    return out.float().div_(_halve_norm(h // 2, w // 2, img.device)).unsqueeze(0)


@functools.lru_cache(maxsize=8)
def _halve_norm(h: int, w: int, device: torch.device) -> torch.Tensor:
    """255 * (sum of the in-image tap weights) per output pixel of halve_uint8, [h, w] float32."""
    def taps(n: int) -> torch.Tensor:
        t = torch.full((n,), 8.0, device=device)
        t[0] -= 1
        t[-1] -= 1
        return t

    return taps(h)[:, None] * taps(w)[None, :] * 255.0


class Preprocessor:
    """Mapping camera -> uint8 HxWx3 RGB (any size) -> float32 canvas [1, 3, H, W] in [-1, 1] on ``device``."""

    def __init__(self, layout: Layout, device: str | torch.device = "cpu"):
        self.layout = layout
        self.device = torch.device(device)

    def __call__(self, images: Mapping[str, np.ndarray]) -> torch.Tensor:
        h, w = self.layout.canvas_hw
        canvas = torch.zeros((1, 3, h, w), dtype=torch.float32, device=self.device)
        for cell in self.layout.cells:
            x = self._upload(cell.camera, images)  # (1, 3, h0, w0) uint8 on device
            if cell.rotate_180:
                x = x.flip(-2, -1)
            pre = self.layout.pre_resize_hw.get(cell.camera)
            h0, w0 = x.shape[-2:]
            if pre is not None and self.device.type == "cpu" and (2 * pre[0], 2 * pre[1]) == (h0, w0):
                x = halve_uint8(x[0].permute(1, 2, 0))  # ToTensor + data-config resize, exact
            else:
                x = x.float() / 255.0  # ToTensor
                if pre is not None:
                    x = resize(x, pre)  # data-config shape
            x = resize(x, (cell.height, cell.width))  # cell shape
            canvas[:, :, cell.row:cell.row + cell.height, cell.col:cell.col + cell.width] = x
        return canvas.sub_(0.5).div_(0.5)  # Normalize(mean=0.5, std=0.5)

    def _upload(self, camera: str, images: Mapping[str, np.ndarray]) -> torch.Tensor:
        if camera not in images:
            raise KeyError(f"camera {camera!r} missing from the frame set (layout {self.layout.name!r} "
                           f"needs {list(self.layout.cameras)}, got {sorted(images)})")
        img = images[camera]
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"camera {camera!r}: expected a uint8 HxWx3 RGB array, got {desc}")
        t = torch.from_numpy(np.ascontiguousarray(img)).to(self.device, non_blocking=True)  # the one upload
        return t.permute(2, 0, 1).unsqueeze(0)


def canvas_to_uint8(canvas: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] (or [3, H, W]) canvas in [-1, 1] -> uint8 HxWx3 RGB for the debug image."""
    x = canvas.detach()
    if x.dim() == 4:
        x = x[0]
    x = ((x.float() * 0.5 + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().cpu().numpy()
