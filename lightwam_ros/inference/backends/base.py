"""The policy backend interface: canvas + proprio + context in, normalized action chunk out.

One small interface (openpi `base_policy.py` style) with one class per runtime; everything around it
(preprocessing, text lookup, de-normalisation, timing of the whole pipeline) lives in pipeline.py.
A backend owns loading, device selection, warm-up and the per-stage timings of its own work.
"""

from __future__ import annotations

import importlib
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightwam_ros.config import Backend
from lightwam_ros.model.dtypes import dtype_name

if TYPE_CHECKING:
    from lightwam_ros.bundle.format import Bundle

log = logging.getLogger(__name__)


# Most inference requests that may usefully overlap on one GPU (config chunk.max_inflight allows 1..4).
MAX_CONCURRENCY = 4

# kind -> (module, class): variants as data; modules are imported only when used. The kinds are the
# `backend` parameter's values (config.Backend), so the node, the CLI and this table cannot disagree.
_BACKENDS: dict[Backend, tuple[str, str]] = {
    Backend.TORCH: ("lightwam_ros.inference.backends.torch_backend", "TorchBackend"),
    Backend.ONNX: ("lightwam_ros.inference.backends.onnx_backend", "OnnxBackend"),
}


@dataclass(frozen=True)
class PolicyIO:
    """Static shapes of one inference call (batch 1), from the bundle."""

    canvas_hw: tuple[int, int]
    proprio_dim: int
    text_len: int
    text_dim: int
    steps: int  # chunk rows produced
    action_dim: int

    @classmethod
    def from_bundle(cls, bundle: Bundle, steps: int | None = None) -> PolicyIO:
        cfg = bundle.model_config
        steps = cfg.horizon if steps is None else int(steps)
        if not 0 < steps <= cfg.horizon:
            raise ValueError(f"steps must be in 1..{cfg.horizon} (the model horizon), got {steps}")
        return cls(tuple(bundle.embodiment.layout.canvas_hw), cfg.proprio_dim, cfg.text_len, cfg.text_dim,
                   steps, cfg.action_dim)

    def example_inputs(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deterministic non-trivial inputs (for warm-up, export and graph capture)."""
        g = torch.Generator().manual_seed(0)
        h, w = self.canvas_hw
        canvas = torch.rand((1, 3, h, w), generator=g) * 2 - 1
        proprio = torch.randn((1, self.proprio_dim), generator=g)
        context = torch.randn((1, self.text_len, self.text_dim), generator=g) * 0.3
        return canvas.to(device), proprio.to(device), context.to(device)

    def check(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> None:
        """Shapes must match exactly: backends use static shapes (export, CUDA graphs)."""
        want = {"canvas": (1, 3, *self.canvas_hw), "proprio": (1, self.proprio_dim),
                "context": (1, self.text_len, self.text_dim)}
        for name, t in (("canvas", canvas), ("proprio", proprio), ("context", context)):
            if tuple(t.shape) != want[name]:
                raise ValueError(f"backend input {name}: shape {list(t.shape)}, expected {list(want[name])}")


class PolicyBackend(ABC):
    """Runs LightWAMPolicy on one device/dtype.

    infer() takes torch tensors (float32, already on `device` when they come from the Preprocessor) and
    returns the normalized chunk as float32 numpy [steps, A]. `last_timings_ms` holds the stages this
    backend can separate (torch: vae/dit/expert; onnx: policy), measured for the last infer() call
    made by the calling thread.

    Concurrency: infer() may be called from several threads at once (the node runs up to
    chunk.max_inflight requests); each backend keeps no per-call state outside the calling thread
    (timings are thread-local, device buffers are per thread or behind a lock). ``max_concurrency``
    says how many calls can overlap usefully, which is not the same as safely: every backend is safe
    for any number of threads.
    """

    name: str
    device: torch.device
    dtype: torch.dtype
    io: PolicyIO

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def last_timings_ms(self) -> dict[str, float]:
        """Stage timings of the calling thread's last infer() (thread-local: concurrent calls never
        see each other's numbers)."""
        return getattr(self._local, "timings_ms", {})

    @last_timings_ms.setter
    def last_timings_ms(self, timings: dict[str, float]) -> None:
        self._local.timings_ms = timings

    @property
    def max_concurrency(self) -> int:
        """How many infer() calls may usefully run at once (1..MAX_CONCURRENCY).

        1 on the CPU: the intra-op thread pool already uses every core for one call, so a second call
        only competes for the same cores and both take about twice as long -- the overlap adds latency
        without adding throughput. On a GPU, batch-1 inference is launch-bound and leaves the device
        mostly idle, so requests on separate streams overlap (MAX_CONCURRENCY); backends that replay
        one set of static buffers (CUDA graphs) lower this to 1."""
        return MAX_CONCURRENCY if self.device.type == "cuda" else 1

    @abstractmethod
    def infer(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> np.ndarray:
        """canvas [1,3,H,W] in [-1,1], proprio [1,P] normalized+clamped, context [1,L,D] -> [steps, A]."""

    def warmup(self, runs: int = 2) -> None:
        """Run on example inputs so lazy init (kernels, allocator, TensorRT engines) is not paid live."""
        inputs = self.io.example_inputs(self.device)
        for _ in range(max(1, runs)):
            self.infer(*inputs)

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release device memory; the backend must not be used afterwards."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": str(self.device), "dtype": dtype_name(self.dtype)}

    def __enter__(self) -> PolicyBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda[:N]' must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: {device!r} is not a device (expected auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"device: {device!r} is not supported (expected auto, cpu, cuda or cuda:N)")
    return dev


def open_backend(kind: str | Backend, bundle: Bundle, device: torch.device, dtype: torch.dtype,
                 steps: int | None = None, **options: Any) -> PolicyBackend:
    """Construct the backend of the given kind; options are backend specific (see each class)."""
    try:
        kind = Backend(kind)
    except ValueError:
        known = [k.value for k in Backend]
        raise ValueError(f"backend: unknown backend {kind!r}; expected one of {known}") from None
    module, cls = _BACKENDS[kind]
    backend_cls = getattr(importlib.import_module(module), cls)
    return backend_cls(bundle, device=device, dtype=dtype, steps=steps, **options)
