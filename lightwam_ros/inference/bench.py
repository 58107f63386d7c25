"""Per-stage latency and peak memory of a bundle on one backend/device/dtype (`lightwam bench`).

Runs the same PolicyPipeline as the node on a deterministic synthetic observation (camera-sized
random images, the dataset-mean state, the bundle's first instruction), after warm-up, and reports
median / p90 per stage (and, in the JSON, every run's time per stage: ``samples_ms``, which
`lightwam replay --latency-file` draws offline replay's latencies from). On the GPU every stage
boundary is synchronised (pipeline sync_stages, CUDA events inside the torch backend), so a
stage's number is its own work, not a neighbour's queue.
Performance claims in docs come from here, never from timed unit tests (docs/design.md, "Conventions").
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightwam_ros.inference.pipeline import PolicyPipeline

log = logging.getLogger(__name__)

STAGE_ORDER = ("preprocess", "vae", "dit", "expert", "policy", "infer", "postprocess", "total")


@dataclass(frozen=True)
class BenchConfig:
    """Arguments of `lightwam bench`."""

    bundle: Path
    backend: str = "torch"  # torch | onnx
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 | float16 (cpu forces float32)
    runs: int = 50  # timed runs after warm-up
    warmup: int = 5
    compile: bool = False  # torch: torch.compile each stage
    cuda_graphs: bool = False  # torch: capture the whole pass in a CUDA graph (GPU only)
    merge_lora: bool = True  # torch: fold LoRA into the base weights (production default)
    steps: int | None = None  # chunk rows (default: the model horizon)
    camera_hw: tuple[int, int] = (480, 640)  # synthetic camera image size (RoboTwin/real robot raw size)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle", Path(self.bundle))
        if self.runs < 1:
            raise ValueError(f"--runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.backend != "torch" and (self.compile or self.cuda_graphs or not self.merge_lora):
            raise ValueError("--compile, --cuda-graphs and --no-merge-lora apply to --backend torch only")


@dataclass(frozen=True)
class StageStats:
    stage: str
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, stage: str, values: list[float]) -> StageStats:
        a = np.asarray(values, dtype=np.float64)
        return cls(stage, float(np.median(a)), float(np.percentile(a, 90)), float(a.mean()), float(a.min()),
                   float(a.max()))


@dataclass(frozen=True)
class BenchResult:
    setup: dict[str, Any]  # backend description, bundle, device name, versions
    stages: list[StageStats]
    memory_mb: dict[str, float]
    runs: int
    warmup: int
    load_s: float
    warmup_s: float
    notes: list[str] = field(default_factory=list)
    # every timed run's ms per stage, in run order: the distribution, not only its summary, so
    # offline replay can draw request latencies from what this machine measured (replay/latency.py)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)

    def stage(self, name: str) -> StageStats:
        return next(s for s in self.stages if s.stage == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        s = self.setup
        opts = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("bundle", "device_name", "torch", "backend"))
        lines = [
            f"bundle {s['bundle']}",
            f"backend {s['backend']} ({opts})",
            f"device {s['device_name']}; torch {s['torch']}",
            f"{self.runs} timed runs after {self.warmup} warm-up; load {self.load_s:.2f} s, "
            f"warm-up {self.warmup_s:.2f} s",
            "",
            f"{'stage':<12}{'median ms':>11}{'p90 ms':>10}{'mean ms':>10}{'min ms':>10}{'max ms':>10}",
        ]
        for st in self.stages:
            lines.append(f"{st.stage:<12}{st.median_ms:>11.2f}{st.p90_ms:>10.2f}{st.mean_ms:>10.2f}"
                         f"{st.min_ms:>10.2f}{st.max_ms:>10.2f}")
        lines.append("")
        lines += [f"{k}: {v:.1f} MB" for k, v in self.memory_mb.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def synthetic_observation(pipe: PolicyPipeline, camera_hw: tuple[int, int], seed: int) -> tuple[dict, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (*camera_hw, 3), dtype=np.uint8) for c in pipe.cameras}
    state = pipe.neutral_state()
    if not pipe.known_instructions:
        raise ValueError(f"bundle {pipe.bundle.path} has no instructions; add one with `lightwam encode-text`")
    return images, state, pipe.known_instructions[0]


def _rss_mb() -> tuple[float, float]:
    """(current RSS, process peak RSS) in MB; /proc on Linux, psutil if available elsewhere."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        current = psutil.Process().memory_info().rss / 2**20
    return current, peak


def run_bench(cfg: BenchConfig) -> BenchResult:
    """Load, warm up, time `cfg.runs` predictions, measure memory."""
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    notes: list[str] = []
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        free0, total = torch.cuda.mem_get_info()
    rss_before, _ = _rss_mb()
    t0 = time.perf_counter()
    options: dict[str, Any] = {}
    if cfg.backend == "torch":
        options = {"merge_lora": cfg.merge_lora, "compile": cfg.compile, "cuda_graphs": cfg.cuda_graphs}
    pipe = PolicyPipeline.from_bundle(cfg.bundle, backend=cfg.backend, device=cfg.device, dtype=cfg.dtype,
                                      steps=cfg.steps, sync_stages=True, **options)
    load_s = time.perf_counter() - t0
    try:
        images, state, instruction = synthetic_observation(pipe, cfg.camera_hw, cfg.seed)
        t1 = time.perf_counter()
        pipe.backend.warmup(1)  # compiles / captures the CUDA graph / builds TensorRT engines
        for _ in range(cfg.warmup):
            pipe.predict(images, state, instruction)
        warmup_s = time.perf_counter() - t1
        samples: dict[str, list[float]] = {}
        for _ in range(cfg.runs):
            chunk = pipe.predict(images, state, instruction)
            for k, v in chunk.timings_ms.items():
                samples.setdefault(k, []).append(v)
        if cuda:
            torch.cuda.synchronize()
        memory: dict[str, float] = {}
        if cuda:
            memory["torch peak allocated (max_memory_allocated)"] = torch.cuda.max_memory_allocated() / 2**20
            memory["torch peak reserved"] = torch.cuda.max_memory_reserved() / 2**20
            free1, _ = torch.cuda.mem_get_info()
            memory["device memory in use by the run (all allocators, incl. ONNX Runtime)"] = (free0 - free1) / 2**20
            if cfg.backend == "onnx":
                notes.append("ONNX Runtime allocates outside torch: read the 'all allocators' line")
        rss, peak = _rss_mb()
        memory["host RSS now"] = rss
        memory["host RSS process peak"] = peak
        memory["host RSS added by load + runs"] = rss - rss_before
        stages = [StageStats.of(k, samples[k]) for k in STAGE_ORDER if k in samples]
        stages += [StageStats.of(k, v) for k, v in samples.items() if k not in STAGE_ORDER]
        setup = {"bundle": str(cfg.bundle), **pipe.backend.describe(),
                 "device_name": torch.cuda.get_device_name(pipe.device) if cuda else _cpu_name(),
                 "torch": torch.__version__, "steps": pipe.steps}
        if cfg.backend == "torch" and not cuda:
            setup["threads"] = torch.get_num_threads()
        if cfg.runs < 50:
            notes.append(f"only {cfg.runs} runs: percentiles are rough (use >= 50)")
        return BenchResult(setup, stages, memory, cfg.runs, cfg.warmup, load_s, warmup_s, notes,
                           {k: [round(x, 4) for x in v] for k, v in samples.items()})
    finally:
        pipe.close()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"CPU {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"


def write_json(result: BenchResult, path: Path) -> None:
    Path(path).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
