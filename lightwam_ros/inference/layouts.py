"""Canvas layouts (data) and the Preprocessor: camera images -> the model's [-1, 1] canvas.

Light-WAM sees all cameras as one tiled RGB frame (docs/model.md, "Canvas layout"). Training
built it with float [0, 1] tensors: ``ToTensor`` (uint8 / 255), ``torchvision.transforms.Resize`` of
each camera to the data-config shape, a second resize of each camera to its cell, tiling, and
``Normalize(0.5, 0.5)``. Every resize is bilinear with antialias on float tensors, which torchvision
implements as ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``; the
Preprocessor runs that same chain with torch on the backend's device, uploading the uint8 bytes once.

A layout is data: a profile can declare its own with ``Layout.from_dict``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

CANVAS_MULTIPLE = 16  # VAE spatial factor 8 x DiT patch 2


@dataclass(frozen=True)
class Cell:
    """Where one camera goes on the canvas (pixels, top-left origin)."""

    camera: str
    row: int
    col: int
    height: int
    width: int
    rotate_180: bool = False  # LIBERO's simulator renders upside down; its eval flips [::-1, ::-1]

    def __post_init__(self) -> None:
        if not self.camera:
            raise ValueError("layout.cells[].camera must be a non-empty name")
        if self.row < 0 or self.col < 0 or self.height <= 0 or self.width <= 0:
            raise ValueError(
                f"layout cell {self.camera!r}: row/col must be >= 0 and height/width > 0, got "
                f"row={self.row} col={self.col} height={self.height} width={self.width}"
            )

    def to_dict(self) -> dict:
        return {"camera": self.camera, "row": self.row, "col": self.col, "height": self.height,
                "width": self.width, "rotate_180": self.rotate_180}


@dataclass(frozen=True)
class Layout:
    """A named canvas: its size, one cell per camera (in model order) and optional per-camera pre-resize.

    ``pre_resize_hw[camera]`` is the data-config image shape the training processor resized that
    camera to before tiling (240x320 for RoboTwin); cameras without an entry go straight to their cell.
    """

    name: str
    canvas_hw: tuple[int, int]
    cells: tuple[Cell, ...]
    pre_resize_hw: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "canvas_hw", tuple(int(v) for v in self.canvas_hw))
        object.__setattr__(self, "cells", tuple(c if isinstance(c, Cell) else Cell(**c) for c in self.cells))
        pre = {str(k): tuple(int(v) for v in hw) for k, hw in dict(self.pre_resize_hw).items()}
        object.__setattr__(self, "pre_resize_hw", MappingProxyType(pre))
        if not self.name:
            raise ValueError("layout.name must be non-empty")
        h, w = self.canvas_hw if len(self.canvas_hw) == 2 else (0, 0)
        if len(self.canvas_hw) != 2 or h <= 0 or w <= 0 or h % CANVAS_MULTIPLE or w % CANVAS_MULTIPLE:
            raise ValueError(
                f"layout {self.name!r}: canvas_hw must be [height, width], positive multiples of "
                f"{CANVAS_MULTIPLE}, got {list(self.canvas_hw)}"
            )
        if not self.cells:
            raise ValueError(f"layout {self.name!r}: cells must not be empty")
        names = [c.camera for c in self.cells]
        if len(set(names)) != len(names):
            raise ValueError(f"layout {self.name!r}: camera names in cells must be unique, got {names}")
        for c in self.cells:
            if c.row + c.height > h or c.col + c.width > w:
                raise ValueError(f"layout {self.name!r}: cell {c.camera!r} does not fit in the {h}x{w} canvas")
        for i, a in enumerate(self.cells):
            for b in self.cells[i + 1:]:
                if (a.row < b.row + b.height and b.row < a.row + a.height
                        and a.col < b.col + b.width and b.col < a.col + a.width):
                    raise ValueError(f"layout {self.name!r}: cells {a.camera!r} and {b.camera!r} overlap")
        for cam, hw in pre.items():
            if cam not in names:
                raise ValueError(f"layout {self.name!r}: pre_resize_hw names unknown camera {cam!r}; cameras {names}")
            if len(hw) != 2 or min(hw) <= 0:
                raise ValueError(f"layout {self.name!r}: pre_resize_hw[{cam!r}] must be [height, width] > 0, "
                                 f"got {list(hw)}")

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(c.camera for c in self.cells)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "canvas_hw": list(self.canvas_hw),
            "cells": [c.to_dict() for c in self.cells],
            "pre_resize_hw": {k: list(v) for k, v in self.pre_resize_hw.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Layout:
        unknown = set(data) - {"name", "canvas_hw", "cells", "pre_resize_hw"}
        if unknown:
            raise ValueError(f"layout: unknown keys {sorted(unknown)}")
        missing = {"name", "canvas_hw", "cells"} - set(data)
        if missing:
            raise ValueError(f"layout: missing keys {sorted(missing)}")
        cells = []
        for c in data["cells"]:
            extra = set(c) - {"camera", "row", "col", "height", "width", "rotate_180"}
            if extra:
                raise ValueError(f"layout.cells: unknown keys {sorted(extra)}")
            cells.append(Cell(**c))
        return cls(data["name"], tuple(data["canvas_hw"]), tuple(cells), data.get("pre_resize_hw", {}))


LAYOUTS: dict[str, Layout] = {
    # RoboTwin / real robot (concat_multi_camera "robotwin"): 480x640 -> 240x320 (data config) ->
    # cam_high 256x320 on top (a vertical stretch), wrists 128x160 side by side below.
    "robotwin_3cam": Layout(
        name="robotwin_3cam",
        canvas_hw=(384, 320),
        cells=(
            Cell("cam_high", 0, 0, 256, 320),
            Cell("cam_left_wrist", 256, 0, 128, 160),
            Cell("cam_right_wrist", 256, 160, 128, 160),
        ),
        pre_resize_hw={"cam_high": (240, 320), "cam_left_wrist": (240, 320), "cam_right_wrist": (240, 320)},
    ),
    # LIBERO (concat_multi_camera "horizontal"): each camera to 224x224, agentview left.
    "libero_2cam": Layout(
        name="libero_2cam",
        canvas_hw=(224, 448),
        cells=(Cell("image", 0, 0, 224, 224), Cell("wrist_image", 0, 224, 224, 224)),
        pre_resize_hw={"image": (224, 224), "wrist_image": (224, 224)},
    ),
}


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
