"""One observation -> one de-normalized action chunk: the path shared by the node, replay, predict and bench.

    images --Preprocessor--> canvas --+
    state  --Normalizer----> proprio -+--> PolicyBackend --> normalized chunk --Normalizer--> ActionChunk
    instruction --TextContexts--> context -+

Everything the robot must not get wrong on a per-call basis is checked here and reported by name
(missing camera, wrong state length, NaN state, unknown instruction) as a PolicyInputError or the
text module's UnknownInstructionError, so the caller can hold the robot and say why.

Concurrency: predict() may run in several threads at once (the node's InferencePool runs up to
chunk.max_inflight requests). Per-call state stays in locals; the shared caches (instruction
contexts, recent canvases) are behind a lock; backends are thread-safe (backends/base.py). On CUDA
each calling thread runs its whole request -- upload, preprocessing, model, download -- on its own
CUDA stream, so two requests overlap on the GPU instead of queueing on the default stream; the
final device->host copy synchronises only that stream. ``max_concurrency`` says how many calls
overlap usefully (1 on the CPU: see PolicyBackend.max_concurrency).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightwam_ros.bundle.format import Bundle
from lightwam_ros.config import Backend
from lightwam_ros.inference.backends.base import PolicyBackend, open_backend, resolve_device
from lightwam_ros.inference.layouts import Preprocessor, canvas_to_uint8
from lightwam_ros.model.dtypes import parse_dtype
from lightwam_ros.text.contexts import TextContexts
from lightwam_ros.types import ActionChunk, FrameSet

FLOAT32_MAX = float(np.finfo(np.float32).max)  # a state value beyond it is refused (proprio_tensor)

log = logging.getLogger(__name__)

# Used only when neither the bundle nor the caller gives the chunk step rate (official checkpoints do not
# record it); 50 Hz is the ALOHA/RoboTwin control rate. A warning says so.
FALLBACK_ACTION_RATE_HZ = 50.0
# Recent model inputs kept by observation stamp for the debug image (one per request that may be in
# flight, so the image published with a chunk is that chunk's input even when requests overlap).
CANVAS_HISTORY = 4


class PolicyInputError(ValueError):
    """An observation the policy cannot use (missing camera, bad state); the message names the input."""


class PolicyPipeline:
    """Preprocess + backend + de-normalization for one bundle; build with from_bundle()."""

    def __init__(self, bundle: Bundle, backend: PolicyBackend, contexts: TextContexts,
                 action_rate_hz: float | None = None, sync_stages: bool = False) -> None:
        self.bundle = bundle
        self.backend = backend
        self.contexts = contexts
        self.embodiment = bundle.embodiment
        self.normalizer = bundle.embodiment.normalizer
        self.cameras = tuple(bundle.embodiment.cameras)
        self.steps = backend.io.steps
        self.preprocessor = Preprocessor(bundle.embodiment.layout, backend.device)
        rate = action_rate_hz if action_rate_hz is not None else bundle.embodiment.action_rate_hz
        if rate is None:
            log.warning("bundle %s records no action_rate_hz; assuming %.0f Hz chunk steps",
                        bundle.path, FALLBACK_ACTION_RATE_HZ)
            rate = FALLBACK_ACTION_RATE_HZ
        if not rate > 0:
            raise ValueError(f"action_rate_hz must be > 0, got {rate}")
        self.action_rate_hz = float(rate)
        self.dt_ns = int(round(1e9 / self.action_rate_hz))
        # Per-call host<->device synchronisation after preprocessing, for exact per-stage numbers (bench).
        # Off in the node: the final device->host copy of the chunk synchronises anyway.
        self.sync_stages = sync_stages
        self._lock = threading.Lock()  # guards the two caches below (predict runs in several threads)
        self._context_cache: dict[str, torch.Tensor] = {}
        self._canvases: OrderedDict[int, torch.Tensor] = OrderedDict()  # stamp_ns -> canvas, newest last
        self._local = threading.local()  # per-thread CUDA stream

    @classmethod
    def from_bundle(cls, path: str | Path | Bundle, backend: str | Backend = "torch", device: str = "auto",
                    dtype: str = "float32", steps: int | None = None, *, verify: bool = True,
                    text_cache_dir: str | Path | None = None, action_rate_hz: float | None = None,
                    sync_stages: bool = False, **backend_options: Any) -> PolicyPipeline:
        """Load (and verify) a bundle and open a backend on it.

        device: auto | cpu | cuda | cuda:N. dtype: float32 | bfloat16 | float16; on the CPU it is forced to
        float32 with a warning (CPU half-precision kernels are slow or missing in ONNX Runtime).
        backend_options go to the backend class (torch: merge_lora, compile, cuda_graphs; onnx: providers).
        """
        bundle = path if isinstance(path, Bundle) else Bundle.load(path, verify=verify)
        dev = resolve_device(device)
        torch_dtype = parse_dtype(dtype, "dtype")
        if dev.type == "cpu" and torch_dtype != torch.float32:
            log.warning("dtype %s requested on the CPU: using float32", dtype)
            torch_dtype = torch.float32
        be = open_backend(backend, bundle, dev, torch_dtype, steps, **backend_options)
        contexts = TextContexts(bundle, cache_dir=text_cache_dir, verify=False)  # the bundle check hashed it
        return cls(bundle, be, contexts, action_rate_hz=action_rate_hz, sync_stages=sync_stages)

    # -- queries -----------------------------------------------------------------------------------

    @property
    def known_instructions(self) -> list[str]:
        return self.contexts.instructions

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def max_concurrency(self) -> int:
        """How many predict() calls may usefully overlap (the backend's max_concurrency): the node
        sizes its inference pool as min(chunk.max_inflight, this)."""
        return self.backend.max_concurrency

    @property
    def last_canvas(self) -> np.ndarray | None:
        """The last finished request's model input as uint8 HxWx3 RGB (debug image topic), or None."""
        with self._lock:
            canvas = next(reversed(self._canvases.values()), None)
        return None if canvas is None else canvas_to_uint8(canvas)

    def canvas_for(self, stamp_ns: int) -> np.ndarray | None:
        """The model input of the request for observation ``stamp_ns`` (uint8 HxWx3 RGB), if it is
        among the last CANVAS_HISTORY finished ones: with overlapping requests the last canvas may
        belong to another chunk than the one being published."""
        with self._lock:
            canvas = self._canvases.get(int(stamp_ns))
        return None if canvas is None else canvas_to_uint8(canvas)

    def _remember_canvas(self, stamp_ns: int, canvas: torch.Tensor) -> None:
        with self._lock:
            self._canvases.pop(stamp_ns, None)
            self._canvases[stamp_ns] = canvas
            while len(self._canvases) > CANVAS_HISTORY:
                self._canvases.popitem(last=False)

    # -- inference ---------------------------------------------------------------------------------

    def context_tensor(self, instruction: str) -> torch.Tensor:
        """[1, text_len, text_dim] float32 on the device; UnknownInstructionError lists the known ones."""
        with self._lock:
            ctx = self._context_cache.get(instruction)
        if ctx is None:
            ctx = self.contexts.get(instruction).to(self.device, torch.float32).unsqueeze(0)
            if self.device.type == "cuda":  # complete before another thread's stream reads the cached copy
                torch.cuda.current_stream(self.device).synchronize()
            with self._lock:
                ctx = self._context_cache.setdefault(instruction, ctx)
        return ctx

    def proprio_tensor(self, state: Any) -> torch.Tensor:
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape[0] != self.embodiment.state_dim:
            raise PolicyInputError(
                f"state has {s.shape[0]} values, bundle expects {self.embodiment.state_dim} "
                f"({', '.join(self.embodiment.state_names)})"
            )
        # float32 is what the normalizer computes in: a finite float64 beyond its range (1e308) would
        # enter the model as inf, clamped to the edge of the normalized range -- a plausible-looking
        # input from a broken one. The node holds on such a joint state (control/joint_input.py).
        bad = [self.embodiment.state_names[i] for i in np.flatnonzero(~(np.abs(s) <= FLOAT32_MAX))]
        if bad:
            raise PolicyInputError(f"state is NaN/Inf or beyond float32 for {bad}")
        p = np.asarray(self.normalizer.normalize_state(s), dtype=np.float32).reshape(1, -1)
        return torch.from_numpy(p).to(self.device)

    def check_images(self, images: Mapping[str, np.ndarray]) -> None:
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise PolicyInputError(
                f"missing image for camera {', '.join(repr(m) for m in missing)} "
                f"(bundle cameras: {list(self.cameras)}; got {sorted(images)})"
            )
        for cam in self.cameras:
            img = images[cam]
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                desc = f"{img.dtype} {list(img.shape)}" if isinstance(img, np.ndarray) else type(img).__name__
                raise PolicyInputError(f"image of camera {cam!r} must be uint8 HxWx3 RGB, got {desc}")

    def neutral_state(self) -> np.ndarray:
        """The dataset's average state (mean, else the middle of min/max or q01/q99): a safe dummy input."""
        stats = self.embodiment.normalization["state"]
        if "mean" in stats:
            return np.asarray(stats["mean"], dtype=np.float64)
        lo, hi = ("min", "max") if "min" in stats else ("q01", "q99")
        return (np.asarray(stats[lo], dtype=np.float64) + np.asarray(stats[hi], dtype=np.float64)) / 2

    def _sync(self) -> None:
        if self.sync_stages and self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # this request's stream only

    @contextlib.contextmanager
    def _thread_stream(self) -> Iterator[None]:
        """On CUDA: run the block on the calling thread's own stream (created on first use)."""
        if self.device.type != "cuda":
            yield
            return
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))  # weights and caches are ready
            self._local.stream = stream
        with torch.cuda.stream(stream):
            yield

    @torch.inference_mode()
    def predict(self, images: Mapping[str, np.ndarray], state: Any, instruction: str, stamp_ns: int = 0) -> ActionChunk:
        """images: camera -> uint8 HxWx3 RGB (any size); state: robot units in the bundle's state order.
        Thread-safe (module doc)."""
        t0 = time.perf_counter()
        self.check_images(images)
        with self._thread_stream():
            return self._predict(images, state, self.context_tensor(instruction), int(stamp_ns), t0)

    def _predict(self, images: Mapping[str, np.ndarray], state: Any, context: torch.Tensor, stamp_ns: int,
                 t0: float) -> ActionChunk:
        proprio = self.proprio_tensor(state)
        canvas = self.preprocessor({c: images[c] for c in self.cameras})
        self._sync()
        t1 = time.perf_counter()
        normalized = self.backend.infer(canvas, proprio, context)
        t2 = time.perf_counter()
        actions = np.asarray(self.normalizer.denormalize_actions(normalized), dtype=np.float32)
        if not np.isfinite(actions).all():
            log.error("policy produced NaN/Inf actions")
        t3 = time.perf_counter()
        self._remember_canvas(stamp_ns, canvas)
        timings = {"preprocess": 1e3 * (t1 - t0), **self.backend.last_timings_ms,
                   "infer": 1e3 * (t2 - t1), "postprocess": 1e3 * (t3 - t2), "total": 1e3 * (t3 - t0)}
        return ActionChunk(actions=actions, stamp_ns=stamp_ns, dt_ns=self.dt_ns,
                           trained_steps=self.embodiment.trained_steps, timings_ms=timings)

    def predict_frames(self, frames: FrameSet, instruction: str | None = None) -> ActionChunk:
        """predict() on a synchronized FrameSet (its instruction unless one is given)."""
        ins = instruction if instruction is not None else frames.instruction
        if ins is None:
            raise PolicyInputError("no instruction for this observation")
        if frames.state is None:
            raise PolicyInputError("no joint state for this observation")
        return self.predict(frames.images, frames.state, ins, frames.stamp_ns)

    def warmup(self, runs: int = 2) -> float:
        """Run the whole pipeline on a neutral observation; returns the last latency in ms.

        Uses the first known instruction's context (zeros if the bundle has none yet), so the warm-up
        also covers the context upload and works before any instruction was added.
        """
        h, w = self.embodiment.layout.canvas_hw
        images = {c: np.full((h, w, 3), 128, np.uint8) for c in self.cameras}
        self.backend.warmup(1)  # lazy init, compilation, CUDA graph capture, TensorRT engine build
        known = self.known_instructions
        context = self.context_tensor(known[0]) if known else torch.zeros(
            (1, self.backend.io.text_len, self.backend.io.text_dim), device=self.device)
        total = math.nan
        with torch.inference_mode():
            for _ in range(max(1, runs)):
                total = self._predict(images, self.neutral_state(), context, 0, time.perf_counter()).timings_ms["total"]
        return total

    def close(self) -> None:
        with self._lock:
            self._context_cache.clear()
            self._canvases.clear()
        self.backend.close()

    def __enter__(self) -> PolicyPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
