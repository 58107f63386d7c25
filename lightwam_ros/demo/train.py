"""Train the tiny demo model on the joystick scene (`lightwam demo-bundle --size tiny --trained`).

Why: a model with a signal lets replay measure open-loop error and smoothness, and lets the tests
catch a preprocessing mistake in the node path (demo/reach_scene.py). It is trained the way Light-WAM
is, at tiny size:
- the VAE and the DiT base weights stay frozen (the demo's random initialisation stands in for the
  pretrained Wan2.1 weights); LoRA, the residual adapters, the action expert and the proprio encoder
  are trained (the official trainable set);
- plain MSE on normalised actions over the supervised prefix (``trained_steps``), later steps unused;
- the input canvas is built by the node's own Preprocessor from camera images rendered at the bag's
  size, so training and deployment see the same pixels.

Because the VAE is frozen, every training canvas is encoded once up front; the steps then run the DiT
and the expert only. Deterministic: one seed fixes the episodes, the sample times, the
initialisation and the batch order, and the thread count is pinned while training.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lightwam_ros.bundle.format import Bundle, Embodiment, is_lora_key
from lightwam_ros.inference.layouts import Preprocessor
from lightwam_ros.model.canvas_layout import Cell, Layout
from lightwam_ros.model.policy import LightWAMPolicy

from .reach_scene import REACH_CAMERAS, TRAINING_SEED_BASE, ReachEpisode, offset_decay
from .tiny_bundle import (
    DEMO_ACTION_RATE_HZ,
    DEMO_TRAINED_STEPS,
    demo_contexts,
    demo_embodiment,
    demo_model_config,
    demo_state_dict,
)

log = logging.getLogger(__name__)

# The trained demo runs on a quarter-size canvas of the RoboTwin arrangement (cam_high on top, the
# wrists side by side below): 120 video tokens instead of 480, so training fits in minutes on a CPU.
TRAINED_LAYOUT = Layout(
    name="demo_small_3cam",
    canvas_hw=(192, 160),
    cells=(Cell("cam_high", 0, 0, 128, 160), Cell("cam_left_wrist", 128, 0, 64, 80),
           Cell("cam_right_wrist", 128, 80, 64, 80)),
)
SCENE_VERSION = 1  # bump when reach_scene changes what a seed renders or how joints move
# The trained bundle ships with the package (models/<this>, 2 MB): the demo's and the tests' model.
# Regenerate it with `lightwam demo-bundle --size tiny --trained --out models/demo_tiny_trained`.
TRAINED_BUNDLE_NAME = "demo_tiny_trained"


def trained_bundle_path() -> Path:
    """The shipped trained bundle (installed share/ or the source tree's models/)."""
    from lightwam_ros.config.profiles import resolve_bundle_path

    return resolve_bundle_path(TRAINED_BUNDLE_NAME)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines the trained bundle (recorded in its manifest under source.demo)."""

    seed: int = 0
    episodes: int = 40
    episode_seconds: float = 12.0
    samples_per_episode: int = 20
    image_hw: tuple[int, int] = (240, 320)  # camera images as the synthetic bags record them
    steps: int = 1000
    batch: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    threads: int = 2
    scene_version: int = SCENE_VERSION
    validation_episodes: int = 4
    state_offset_std: float = 0.3  # augmentation: start states moved by N(0, this x std) per joint

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_hw"] = list(self.image_hw)
        return d


@dataclass
class Dataset:
    """Encoded canvases with the recorded state and the chunk that followed, in robot units."""

    latents: torch.Tensor  # [N, z, h, w]
    state: torch.Tensor  # [N, 14]
    future: torch.Tensor  # [N, horizon, 14]: joints at t + k / action_rate_hz


@dataclass
class TrainingReport:
    config: TrainingConfig
    seconds: float
    losses: list[float] = field(default_factory=list)
    validation: dict = field(default_factory=dict)


def trained_embodiment() -> Embodiment:
    base = demo_embodiment(DEMO_ACTION_RATE_HZ)
    return Embodiment(layout=TRAINED_LAYOUT, action_names=base.action_names, state_names=base.state_names,
                      normalization=base.normalization, trained_steps=DEMO_TRAINED_STEPS,
                      action_rate_hz=DEMO_ACTION_RATE_HZ)


def episode(seed: int, seconds: float) -> ReachEpisode:
    return ReachEpisode(seed=seed, seconds=seconds)


def _sample(ep: ReachEpisode, times: np.ndarray, image_hw: tuple[int, int], horizon: int, dt: float,
            pre: Preprocessor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    canvases = []
    for t in times:
        images = {cam: ep.render(i, float(t), *image_hw) for i, cam in enumerate(REACH_CAMERAS)}
        canvases.append(pre(images))
    state = ep.joints(times)  # [n, 14]
    future = ep.joints(times[:, None] + dt * np.arange(horizon)[None, :])  # [n, H, 14]
    return torch.cat(canvases), state, future


@torch.no_grad()
def build_dataset(model: LightWAMPolicy, cfg: TrainingConfig, seeds: list[int], horizon: int,
                  rng: np.random.Generator) -> Dataset:
    pre = Preprocessor(trained_embodiment().layout)
    dt = 1.0 / DEMO_ACTION_RATE_HZ
    lat, states, futures = [], [], []
    for s in seeds:
        ep = episode(s, cfg.episode_seconds + horizon * dt)
        times = np.sort(rng.uniform(0.0, cfg.episode_seconds, size=cfg.samples_per_episode))
        canvas, state, future = _sample(ep, times, cfg.image_hw, horizon, dt, pre)
        lat.append(torch.cat([model.encode_image(c) for c in canvas.split(16)]))
        states.append(torch.from_numpy(state).float())
        futures.append(torch.from_numpy(future).float())
    return Dataset(torch.cat(lat), torch.cat(states), torch.cat(futures))


class Normalised:
    """z-score with the bundle's statistics, clamped to [-5, 5] like the node's Normalizer."""

    def __init__(self) -> None:
        stats = trained_embodiment().normalization
        self.mean = torch.tensor(stats["state"]["mean"], dtype=torch.float32)
        self.std = torch.tensor(stats["state"]["std"], dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / (self.std + 1e-8)).clamp(-5.0, 5.0)


def trainable(name: str) -> bool:
    """The official trainable set: LoRA, adapters, action expert, proprio encoder."""
    if name.startswith(("expert.", "proprio_encoder.")):
        return True
    return name.startswith("dit.") and (is_lora_key(name.removeprefix("dit.")) or ".adapter" in name
                                       or "wam_adapter" in name)


def train(cfg: TrainingConfig = TrainingConfig(),
          progress: Callable[[int, float], None] | None = None) -> tuple[LightWAMPolicy, TrainingReport]:
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        mcfg = demo_model_config("tiny")
        model = LightWAMPolicy(mcfg)
        model.load_state_dict(demo_state_dict("tiny", seed=cfg.seed))
        names = [n for n, _ in model.named_parameters() if trainable(n)]
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        rng = np.random.default_rng([cfg.seed, 1])
        first = TRAINING_SEED_BASE + 1000 * cfg.seed
        train_seeds = [first + i for i in range(cfg.episodes)]
        val_seeds = [first + cfg.episodes + i for i in range(cfg.validation_episodes)]
        model.eval()
        data = build_dataset(model, cfg, train_seeds, mcfg.horizon, rng)
        val = build_dataset(model, cfg, val_seeds, mcfg.horizon, rng)
        log.info("encoded %d training and %d validation canvases in %.1f s", len(data.latents),
                 len(val.latents), time.perf_counter() - t_start)
        context = demo_contexts(mcfg, cfg.seed, torch.float32)
        contexts = torch.stack(list(context.values()))  # [I, L, D]: any instruction drives the same task
        params = [p for n, p in model.named_parameters() if n in names]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        k = DEMO_TRAINED_STEPS
        norm = Normalised()
        decay = torch.from_numpy(offset_decay(np.arange(k) / DEMO_ACTION_RATE_HZ)).float().view(1, k, 1)
        gen = torch.Generator().manual_seed(cfg.seed)
        report = TrainingReport(cfg, 0.0)
        model.train()
        for step in range(cfg.steps):
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.randint(len(data.latents), (cfg.batch,), generator=gen)
            ctx_idx = torch.randint(len(contexts), (cfg.batch,), generator=gen)
            # Another start state for the same view: the displacement decays on its own (offset_decay).
            offset = cfg.state_offset_std * norm.std * torch.randn((cfg.batch, 14), generator=gen)
            state = data.state[idx] + offset
            target = norm(data.future[idx, :k] + offset.unsqueeze(1) * decay)
            ctx = model.build_context(norm(state), contexts[ctx_idx])
            pred = model.head(model.backbone(data.latents[idx], ctx), k)
            loss = torch.mean((pred - target) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            report.losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, report.losses[-1])
        model.eval()
        report.validation = evaluate(model, val, contexts[:1], k)
        report.seconds = time.perf_counter() - t_start
        return model, report
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def evaluate(model: LightWAMPolicy, data: Dataset, context: torch.Tensor, steps: int) -> dict:
    """Normalised-unit MAE over the supervised prefix on recorded states: model vs holding still."""
    norm = Normalised()
    preds = []
    for i in range(0, len(data.latents), 32):
        sl = slice(i, i + 32)
        n = len(data.state[sl])
        ctx = model.build_context(norm(data.state[sl]), context.expand(n, -1, -1))
        preds.append(model.head(model.backbone(data.latents[sl], ctx), steps))
    pred = torch.cat(preds)
    target = norm(data.future[:, :steps])
    hold = norm(data.state).unsqueeze(1)
    mae = float((pred - target).abs().mean())
    hold_mae = float((hold - target).abs().mean())
    return {"mae": mae, "hold_mae": hold_mae, "ratio": mae / hold_mae}


def write_trained_bundle(out: str | Path, cfg: TrainingConfig = TrainingConfig(),
                         progress: Callable[[int, float], None] | None = None) -> tuple[Bundle, TrainingReport]:
    model, report = train(cfg, progress)
    mcfg = model.cfg
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in state.items():
        part, key = name.split(".", 1)
        weights.setdefault(part, {})[key] = t
    source = {"demo": {"size": "tiny", "seed": int(cfg.seed), "trained": cfg.to_dict(),
                       "validation": report.validation}}
    bundle = Bundle.write(out, mcfg, trained_embodiment(), weights, demo_contexts(mcfg, cfg.seed, torch.float32),
                          source=source)
    return bundle, report
