"""Native torch backend: eager by default, optional torch.compile and CUDA-graph replay on GPU.

- LoRA is merged into the base weights by default (docs/model.md, "LoRA merge": exact algebra, one bf16 rounding of W',
  ~5.5 % fewer FLOPs and 300 fewer kernel launches). `merge_lora=False` runs the unmerged reference math.
- Stage timings (vae, dit, expert) come from CUDA events on GPU, so measuring them never adds a host
  synchronisation to the control loop; on CPU they are wall-clock.
- CUDA graphs: batch 1 and the canvas size are fixed per bundle, so the whole forward pass is captured
  once on static input/output buffers and replayed; each call only copies the three inputs in and the
  chunk out. Capture needs a warm-up on a side stream (lazy cuBLAS/cuDNN init must not happen inside
  the capture) and is only attempted on CUDA. If capture fails the backend says so and runs eagerly.
- Concurrency: eager infer() is re-entrant (inference mode, no module state written after loading;
  on CUDA each calling thread runs on its own current stream, see PolicyPipeline). The captured
  graph owns ONE set of static buffers, and a torch.compile'd function may recompile on a new
  thread (compilation is not thread-safe), so graph replays and compiled calls are serialized by a
  lock and max_concurrency is 1 for them. Per-worker graphs would need one capture (and one
  activation memory pool) per worker: not worth it while overlap needs eager mode anyway.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.inference.backends.base import PolicyBackend, PolicyIO
from lightwam_ros.model.derived import DerivedConstantsModule
from lightwam_ros.model.dtypes import dtype_name
from lightwam_ros.model.policy import LightWAMPolicy

if TYPE_CHECKING:
    from lightwam_ros.bundle.format import Bundle

log = logging.getLogger(__name__)

STAGES = ("vae", "dit", "expert")


def load_policy(bundle: Bundle, device: torch.device, dtype: torch.dtype, merge_lora: bool = True) -> LightWAMPolicy:
    """LightWAMPolicy with the bundle's weights on `device` in `dtype` (LoRA merged unless told not to).

    Built on the meta device, materialised on the target device, then filled one tensor at a time
    straight from the safetensors files: peak memory is the model plus one tensor (a state dict loaded
    up front would double the weights, and bench would report that transient as the peak).
    LoRA is merged after loading, with float32 accumulation (dit.py).
    """
    cfg = bundle.model_config
    with torch.device("meta"):
        policy = LightWAMPolicy(cfg)
    if bundle.lora_merged:
        policy.merge_lora()  # drop the LoRA modules: the bundle's base weights already contain them
    policy = policy.to_empty(device=device).to(dtype)
    targets = policy.state_dict()  # persistent tensors only, sharing storage with the module
    seen: set[str] = set()
    with torch.no_grad():
        for part, info in bundle.weights.items():
            path = bundle.path / info["file"]
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    name = f"{part}.{key}"
                    dst = targets.get(name)
                    src = f.get_tensor(key)
                    if dst is None or dst.shape != src.shape:
                        raise BundleError(f"{path}: tensor {key} {list(src.shape)} does not fit the model "
                                          f"({'no such parameter' if dst is None else list(dst.shape)})")
                    dst.copy_(src)  # cast and host->device copy in one
                    seen.add(name)
    missing = sorted(set(targets) - seen)
    if missing:
        raise BundleError(f"bundle {bundle.path}: no weights for {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    for module in policy.modules():  # t_mod, RoPE tables, latent stats, step positions from the new weights
        if isinstance(module, DerivedConstantsModule):
            module.refresh_constants()
    if merge_lora and not bundle.lora_merged:
        policy.merge_lora()
    policy.eval().requires_grad_(False)
    return policy


class TorchBackend(PolicyBackend):
    """LightWAMPolicy in torch on cpu/cuda in float32/bfloat16/float16.

    Options: merge_lora (default True), compile (torch.compile each stage), cuda_graphs (capture the
    whole pass; CUDA only), compile_mode (torch.compile mode, default "default").
    """

    name = "torch"

    def __init__(self, bundle: Bundle, device: torch.device, dtype: torch.dtype, steps: int | None = None, *,
                 merge_lora: bool = True, compile: bool = False, cuda_graphs: bool = False,
                 compile_mode: str = "default") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.dtype = dtype
        self.io = PolicyIO.from_bundle(bundle, steps)
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, got device {self.device}")
        self.merge_lora = merge_lora
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        t0 = time.perf_counter()
        self.policy = load_policy(bundle, self.device, dtype, merge_lora)
        log.info("torch backend: %s %s, LoRA %s, loaded in %.1f s", self.device, dtype_name(dtype),
                 "merged" if (merge_lora or bundle.lora_merged) else "unmerged", time.perf_counter() - t0)
        steps_ = self.io.steps
        p = self.policy
        self._stages: dict[str, Callable[..., Any]] = {
            "vae": p.encode_image,
            "dit": lambda proprio, context, latent: p.backbone(latent, p.build_context(proprio, context)),
            "expert": lambda adapted: p.head(adapted, steps_),
        }
        if compile:
            self._stages = {k: torch.compile(fn, mode=compile_mode, fullgraph=True, dynamic=False)
                            for k, fn in self._stages.items()}
        # (graph, static inputs, static output) once captured
        self._graph: tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor] | None = None
        self._cuda = self.device.type == "cuda"
        self._serial = threading.Lock()  # one graph replay / compiled call at a time (module doc)

    @property
    def graph_captured(self) -> bool:
        """A CUDA graph was captured at warm-up (cuda_graphs=True): inference replays it."""
        return self._graph is not None

    @property
    def max_concurrency(self) -> int:
        """1 with CUDA graphs or torch.compile (serialized, see the module doc), else the base rule."""
        if self.cuda_graphs or self.compile:
            return 1
        return super().max_concurrency

    # -- one pass ----------------------------------------------------------------------------------

    def _forward(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        latent = self._stages["vae"](canvas)
        adapted = self._stages["dit"](proprio, context, latent)
        return self._stages["expert"](adapted)

    def _forward_timed(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self._cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            ev[0].record()
            latent = self._stages["vae"](canvas)
            ev[1].record()
            adapted = self._stages["dit"](proprio, context, latent)
            ev[2].record()
            out = self._stages["expert"](adapted)
            ev[3].record()
            ev[3].synchronize()
            self.last_timings_ms = {s: ev[i].elapsed_time(ev[i + 1]) for i, s in enumerate(STAGES)}
            return out
        t = [time.perf_counter()]
        latent = self._stages["vae"](canvas)
        t.append(time.perf_counter())
        adapted = self._stages["dit"](proprio, context, latent)
        t.append(time.perf_counter())
        out = self._stages["expert"](adapted)
        t.append(time.perf_counter())
        self.last_timings_ms = {s: 1e3 * (t[i + 1] - t[i]) for i, s in enumerate(STAGES)}
        return out

    @torch.inference_mode()
    def infer(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> np.ndarray:
        self.io.check(canvas, proprio, context)
        canvas, proprio, context = (t.to(self.device, non_blocking=True) for t in (canvas, proprio, context))
        if self._graph is not None:
            with self._serial:
                return self._replay(canvas, proprio, context)
        with self._serial if self.compile else contextlib.nullcontext():
            out = self._forward_timed(canvas, proprio, context)
            return out[0].to("cpu").numpy()

    def _replay(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> np.ndarray:
        graph, static_in, static_out = self._graph
        for dst, src in zip(static_in, (canvas, proprio, context)):
            dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        out = static_out.to("cpu")  # synchronises: the buffers are free for the next replay (lock held)
        self.last_timings_ms = {"policy": start.elapsed_time(end)}  # one graph: no stage boundaries
        return out[0].numpy()

    # -- warm-up and graph capture -----------------------------------------------------------------

    def warmup(self, runs: int = 2) -> None:
        """Run eagerly (compiles when compile=True), then capture the CUDA graph if requested."""
        super().warmup(runs)
        if self.cuda_graphs and self._graph is None:
            self._capture()

    @torch.inference_mode()
    def _capture(self) -> None:
        static_in = tuple(t.clone() for t in self.io.example_inputs(self.device))
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # lazy library init happens here, not inside the capture
            for _ in range(3):
                self._forward(*static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = self._forward(*static_in)
        except RuntimeError as exc:
            log.warning("torch backend: CUDA graph capture failed (%s); running without CUDA graphs", exc)
            self.cuda_graphs = False
            return
        graph.replay()
        torch.cuda.synchronize(self.device)
        self._graph = (graph, static_in, static_out)
        log.info("torch backend: CUDA graph captured (static canvas %s, %d steps)", self.io.canvas_hw, self.io.steps)

    def close(self) -> None:
        self._graph = None
        self.policy = None  # type: ignore[assignment]
        if self._cuda:
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(lora="merged" if self.merge_lora else "unmerged", compile=self.compile, cuda_graphs=self.cuda_graphs)
        return d
