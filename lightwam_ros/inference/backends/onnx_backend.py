"""ONNX Runtime backend: the exported policy graph of a bundle (`lightwam export-onnx`).

Providers in order of preference, as available in the installed onnxruntime: TensorRT -> CUDA -> CPU
on a GPU device, CPU alone on the CPU. On the GPU the inputs never leave the device: the canvas the
Preprocessor built on the GPU is copied into static device buffers that are bound once to the session
(IO binding by torch data_ptr), and the output is bound to a static device tensor. Static addresses are
also what TensorRT engines and ORT CUDA graphs need. On the CPU, numpy arrays go through session.run.

Concurrency: InferenceSession.run / run_with_iobinding are thread-safe, but an IoBinding and its
bound buffers are per call, so each calling thread gets its own binding + buffers (created on its
first call, keyed by thread id, all released by close()). Whether two runs really overlap on the GPU
is up to ONNX Runtime (the CUDA EP may serialize them on the session's compute stream); the host
side (copies, launches, synchronisation) still overlaps.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightwam_ros.inference.backends.base import PolicyBackend, PolicyIO
from lightwam_ros.model.dtypes import dtype_name

if TYPE_CHECKING:
    from lightwam_ros.bundle.format import Bundle

log = logging.getLogger(__name__)

INPUT_NAMES = ("canvas", "proprio", "context")
OUTPUT_NAME = "actions"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def trt_cache_dir(onnx_sha256: str) -> Path:
    """TensorRT engines are built per GPU/TRT version and take minutes: cache them outside the bundle
    (which may be read-only), keyed by the ONNX file's hash so a new export never reuses a stale engine."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lightwam_ros" / "tensorrt" / onnx_sha256[:16]


def select_providers(device: torch.device, dtype: torch.dtype, onnx_sha256: str,
                     allowed: tuple[str, ...] | None = None) -> list[tuple[str, dict[str, Any]]]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if device.type == "cpu":
        return [("CPUExecutionProvider", {})]
    wanted = [p for p in GPU_PROVIDERS if p in available and (allowed is None or p in allowed)]
    if not any(p in wanted for p in GPU_PROVIDERS[:2]):
        raise ValueError(
            f"backend onnx, device {device}: onnxruntime {ort.__version__} has no GPU provider "
            f"(available: {sorted(available)}{'' if allowed is None else f', allowed: {list(allowed)}'}); "
            "install onnxruntime-gpu or use device cpu"
        )
    dev_id = device.index if device.index is not None else torch.cuda.current_device()
    out: list[tuple[str, dict[str, Any]]] = []
    for p in wanted:
        if p == "TensorrtExecutionProvider":
            cache = trt_cache_dir(onnx_sha256)
            cache.mkdir(parents=True, exist_ok=True)
            out.append((p, {"device_id": dev_id, "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                            "trt_timing_cache_path": str(cache),
                            # The graph's dtype decides the precision; fp16 kernels only for an fp16 graph.
                            "trt_fp16_enable": dtype == torch.float16}))
        elif p == "CUDAExecutionProvider":
            out.append((p, {"device_id": dev_id}))
        else:
            out.append((p, {}))
    return out


@dataclass(frozen=True)
class _Binding:
    """One thread's IO binding and the static device buffers bound to it."""

    binding: Any  # onnxruntime.IOBinding
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    output: torch.Tensor


class OnnxBackend(PolicyBackend):
    """The bundle's ONNX export for `dtype` in ONNX Runtime.

    Options: providers (restrict to these provider names, e.g. ("CUDAExecutionProvider",) to skip
    TensorRT), intra_op_threads (CPU threads; 0 = ORT default).
    """

    name = "onnx"

    def __init__(self, bundle: Bundle, device: torch.device, dtype: torch.dtype, steps: int | None = None, *,
                 providers: tuple[str, ...] | None = None, intra_op_threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        self.device = torch.device(device)
        self.dtype = dtype
        self.io = PolicyIO.from_bundle(bundle, steps)
        entry = bundle.onnx.get(dtype_name(dtype))
        if entry is None:
            have = sorted(bundle.onnx) or "none"
            raise ValueError(
                f"backend onnx: bundle {bundle.path} has no ONNX export for dtype {dtype_name(dtype)} (has: {have}); "
                f"run `lightwam export-onnx --bundle {bundle.path} --dtype {dtype_name(dtype)}`"
            )
        self.graph_steps = int(entry["steps"])
        if self.io.steps > self.graph_steps:
            raise ValueError(f"steps {self.io.steps} exceed the {self.graph_steps} steps of {entry['file']}")
        path = bundle.path / entry["file"]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: per-node constant-folding notices (float16 on CPU) are noise
        if intra_op_threads:
            so.intra_op_num_threads = int(intra_op_threads)
        self.providers = select_providers(self.device, dtype, bundle.files[entry["file"]], providers)
        t0 = time.perf_counter()
        self.session = ort.InferenceSession(str(path), so, providers=self.providers)
        self.active_providers = self.session.get_providers()
        log.info("onnx backend: %s on %s, providers %s, loaded in %.1f s", entry["file"], self.device,
                 self.active_providers, time.perf_counter() - t0)
        names = [i.name for i in self.session.get_inputs()]
        if tuple(names) != INPUT_NAMES:
            raise ValueError(f"{path}: graph inputs {names}, expected {list(INPUT_NAMES)}")
        self._gpu = self.device.type == "cuda"
        self._bindings: dict[int, _Binding] = {}  # thread id -> that thread's binding (module doc)
        self._bindings_lock = threading.Lock()
        if self._gpu:
            self._thread_binding()  # the constructing thread's (warm-up) binding, allocated now

    def _thread_binding(self) -> _Binding:
        """The calling thread's binding; a thread id reused after its thread ended reuses the binding,
        which is safe because the old thread can no longer use it."""
        tid = threading.get_ident()
        with self._bindings_lock:
            b = self._bindings.get(tid)
            if b is not None:
                return b
        io = self.io
        dev_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
        inputs = (torch.zeros((1, 3, *io.canvas_hw), device=self.device),
                  torch.zeros((1, io.proprio_dim), device=self.device),
                  torch.zeros((1, io.text_len, io.text_dim), device=self.device))
        output = torch.zeros((1, self.graph_steps, io.action_dim), device=self.device)
        torch.cuda.current_stream(self.device).synchronize()  # zero-fills done before ORT ever reads them
        binding = self.session.io_binding()
        for name, t in zip(INPUT_NAMES, inputs):
            binding.bind_input(name, "cuda", dev_id, np.float32, tuple(t.shape), t.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", dev_id, np.float32, tuple(output.shape), output.data_ptr())
        b = _Binding(binding, inputs, output)
        with self._bindings_lock:
            self._bindings[tid] = b
        return b

    def infer(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> np.ndarray:
        self.io.check(canvas, proprio, context)
        t0 = time.perf_counter()
        if self._gpu:
            b = self._thread_binding()
            for dst, src in zip(b.inputs, (canvas, proprio, context)):
                dst.copy_(src, non_blocking=True)  # any device/dtype -> the bound float32 buffer
            # ORT runs on its own stream: the copies must be complete before it reads the buffers.
            # run_with_iobinding synchronises ORT's stream before returning, so the output is ready after it.
            torch.cuda.current_stream(self.device).synchronize()
            self.session.run_with_iobinding(b.binding)
            out = b.output[0, : self.io.steps].to("cpu").numpy()
        else:
            feeds = {n: t.detach().to("cpu", torch.float32).contiguous().numpy()
                     for n, t in zip(INPUT_NAMES, (canvas, proprio, context))}
            out = self.session.run([OUTPUT_NAME], feeds)[0][0, : self.io.steps]
        self.last_timings_ms = {"policy": 1e3 * (time.perf_counter() - t0)}
        return np.ascontiguousarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
        with self._bindings_lock:
            self._bindings.clear()
        if self._gpu:
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["providers"] = list(self.active_providers)
        return d
