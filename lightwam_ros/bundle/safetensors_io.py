"""Bundle files at the byte level: streaming safetensors writer, header reader, loader, file sha256.

The bundle format, the converter, the text contexts and the inference backends all read or write
these files. Keeping the byte level in one module that imports nothing above it (only the bundle's
error type) lets each of them use it without importing the others, so no import circle can form
through format.py.

ST_DTYPES maps torch dtypes to the dtype strings the safetensors header uses ("BF16"); the names
users and the manifest use ("bfloat16") are lightwam_ros.model.dtypes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from lightwam_ros.bundle.errors import BundleError

log = logging.getLogger(__name__)

# torch dtype -> safetensors header dtype, and back.
ST_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.int8: "I8", torch.bool: "BOOL",
}
TORCH_DTYPES: dict[str, torch.dtype] = {name: dtype for dtype, name in ST_DTYPES.items()}
# The float header dtypes: the only ones bundle weights may have (Bundle.verify), and the only stored
# context dtypes that new contexts are converted to (text.contexts.add_contexts).
FLOAT_ST_DTYPES: frozenset[str] = frozenset({"F32", "F16", "BF16"})
_PROGRESS_MIN_BYTES = 64 << 20  # files below this size are written/hashed without progress lines
# Bounds on a header read from a file, checked before the safetensors library parses it and before
# anything is done per tensor. The full model's largest header (DiT, about 1000 tensors) is about
# 150 KB; a contexts file with every instruction a manifest may list (16384) has 16384 tensors.
MAX_HEADER_BYTES = 16 << 20
MAX_TENSORS = 65536


# ------------------------------------------------------------------------------------------------
# Progress and hashing


class Progress:
    """Log lines with percent and MB for multi-GB steps (a silent 30 s convert looks hung)."""

    def __init__(self, what: str, total_bytes: int, every_s: float = 2.0) -> None:
        self.what, self.total, self.every_s = what, max(int(total_bytes), 1), every_s
        self.done = 0
        self.enabled = total_bytes >= _PROGRESS_MIN_BYTES
        self._last = time.monotonic()
        self._last_pct = -1

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        now = time.monotonic()
        pct = int(100 * self.done / self.total)
        if now - self._last >= self.every_s or (self.done >= self.total and self._last_pct < 100):
            log.info("%s: %3d%% (%.0f / %.0f MB)", self.what, pct, self.done / 2**20, self.total / 2**20)
            self._last, self._last_pct = now, pct


def _regular_size(path: Path) -> int:
    """Size of `path`, or BundleError unless it is a regular file.

    Checked before opening: opening a FIFO for reading blocks until someone writes to it, and a
    device or directory gives errors that name no file.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path}: not a regular file")
    return st.st_size


def sha256_file(path: Path, chunk: int = 16 << 20) -> str:
    path = Path(path)
    h = hashlib.sha256()
    progress = Progress(f"sha256 {path.name}", _regular_size(path))
    try:
        with open(path, "rb") as f:
            while True:
                data = f.read(chunk)
                if not data:
                    break
                h.update(data)
                progress.update(len(data))
    except OSError as exc:  # EIO from a failing disk or a special file: name the file
        raise BundleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Streaming safetensors writer


@dataclass(frozen=True)
class LazyTensor:
    """A tensor whose shape/dtype are known now and whose data is produced when it is written.

    Lets convert and demo-bundle stream multi-GB weights to disk one tensor at a time instead of
    holding the whole network in memory twice.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]

    def materialize(self) -> torch.Tensor:
        t = self.make()
        if tuple(t.shape) != tuple(self.shape) or t.dtype != self.dtype:
            raise ValueError(f"LazyTensor produced {tuple(t.shape)} {t.dtype}, declared {self.shape} {self.dtype}")
        return t


TensorSource = torch.Tensor | LazyTensor


def shape_dtype(t: TensorSource) -> tuple[tuple[int, ...], torch.dtype]:
    return tuple(int(s) for s in t.shape), t.dtype


def write_safetensors(path: Path, tensors: Mapping[str, TensorSource],
                      metadata: Mapping[str, str] | None = None) -> str:
    """Write a safetensors file tensor by tensor; returns its sha256 (computed while writing).

    Same on-disk format as safetensors.torch.save_file (8-byte LE header length, JSON header padded
    to 8 bytes, raw little-endian data in header order), but it never needs all tensors in memory.
    The file appears atomically (written to a temp name, then renamed).
    """
    path = Path(path)
    names = sorted(tensors)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in names:
        shape, dtype = shape_dtype(tensors[name])
        if dtype not in ST_DTYPES:
            raise ValueError(f"{path.name}: tensor {name!r} has unsupported dtype {dtype}")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    h = hashlib.sha256()
    tmp = path.with_name(path.name + ".partial")
    progress = Progress(f"writing {path.name}", offset)
    try:
        with open(tmp, "wb") as f:
            for chunk in (struct.pack("<Q", len(raw)), raw):
                f.write(chunk)
                h.update(chunk)
            for name in names:
                src = tensors[name]
                t = src.materialize() if isinstance(src, LazyTensor) else src
                t = t.detach().to("cpu").contiguous()
                if t.numel():
                    buf = memoryview(t.reshape(-1).view(torch.uint8).numpy())
                    f.write(buf)
                    h.update(buf)
                progress.update(t.numel() * t.element_size())
                del t
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return h.hexdigest()


def check_safetensors_header(path: Path) -> None:
    """BundleError unless `path` is a regular file whose header length is within MAX_HEADER_BYTES and the file.

    Read here, before the safetensors library parses the header: it accepts headers up to 100 MB and
    builds its index of every tensor first, so a corrupt or hostile length or key count would cost
    memory and time in proportion before any of our checks ran.
    """
    size = _regular_size(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(head) < 8:
        raise BundleError(f"{path}: not a safetensors file ({size} bytes, shorter than the 8-byte header length)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise BundleError(f"{path}: safetensors header of {n} bytes, more than the {MAX_HEADER_BYTES >> 20} MiB "
                          "this package reads")
    if 8 + n > size:
        raise BundleError(f"{path}: truncated ({size} bytes, the header alone says {8 + n})")


def _keys(f: Any, path: Path) -> list[str]:
    keys = list(f.keys())
    if len(keys) > MAX_TENSORS:
        raise BundleError(f"{path}: {len(keys)} tensors, more than the {MAX_TENSORS} this package reads")
    return keys


def read_safetensors_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, safetensors dtype string), without reading the data."""
    check_safetensors_header(path)
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for k in _keys(f, path):
                sl = f.get_slice(k)
                out[k] = (tuple(sl.get_shape()), sl.get_dtype())
    except BundleError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise BundleError(f"{path}: not a readable safetensors file ({exc})") from exc
    return out


def load_safetensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    check_safetensors_header(path)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for k in _keys(f, path):
                out[k] = f.get_tensor(k)
    except BundleError:
        raise
    except Exception as exc:  # as above, plus OSError from a file cut short on disk
        raise BundleError(f"{path}: not a readable safetensors file ({exc})") from exc
    return out
