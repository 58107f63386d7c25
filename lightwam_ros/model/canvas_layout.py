"""Canvas layouts: where each camera goes on the one tiled frame the model was trained on.

Pure data, in the model package because a layout is part of what the network was trained to see
(docs/model.md, "Canvas layout"): the bundle stores it (bundle.json), the converter picks it from
the training configuration, and inference/layouts.py's Preprocessor builds the canvas from it. A
profile can declare its own with ``Layout.from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

CANVAS_MULTIPLE = 16  # VAE spatial factor 8 x DiT patch 2
MAX_CANVAS_SIDE = 8192  # pixels: 512 patches a side; a layout from a file is refused beyond it


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
        if len(self.canvas_hw) != 2 or not (0 < h <= MAX_CANVAS_SIDE and 0 < w <= MAX_CANVAS_SIDE) \
                or h % CANVAS_MULTIPLE or w % CANVAS_MULTIPLE:
            raise ValueError(
                f"layout {self.name!r}: canvas_hw must be [height, width], positive multiples of "
                f"{CANVAS_MULTIPLE} up to {MAX_CANVAS_SIDE}, got {list(self.canvas_hw)}"
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
