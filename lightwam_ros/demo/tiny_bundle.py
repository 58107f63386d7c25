"""A bundle with the real architecture and deterministic random weights (`lightwam demo-bundle`).

Used by the tests, the embedded demo and GPU benchmarks when no trained checkpoint is at hand. The
weights are not trained, so the actions mean nothing, but every code path runs exactly as with a real
checkpoint:
- each tensor is drawn from its own torch generator seeded by (seed, tensor name), so a tensor does not
  depend on the order or on the other tensors, and the same seed always gives the same bundle;
- LoRA and adapter up-projections are non-zero (training initialises them to zero), so a backend that
  dropped them or merged them wrongly would change the output;
- scales keep activations O(1): fan-in scaled weights, norm weights near 1, small biases;
- tensors are generated and written one at a time, so the full-size bundle (about 1.6 B parameters
  with the unmerged LoRA, bf16) is written on a CPU with about 1 GB of RAM.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from lightwam_ros.bundle.format import Bundle, Embodiment, expected_shapes, is_lora_key
from lightwam_ros.bundle.safetensors_io import LazyTensor
from lightwam_ros.model.canvas_layout import LAYOUTS
from lightwam_ros.model.config import MODEL_SIZES, ModelConfig

from .reach_scene import JOINT_MEAN, JOINT_STD

log = logging.getLogger(__name__)

DEMO_LAYOUT = "robotwin_3cam"
DEMO_TRAINED_STEPS = 24
DEMO_ACTION_RATE_HZ = 50.0
DEMO_DTYPES = {"tiny": torch.float32, "full": torch.bfloat16}

_ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
DEMO_JOINT_NAMES: tuple[str, ...] = tuple(f"{side}_{j}" for side in ("left", "right") for j in _ARM)

# instruction -> number of real tokens (rows past it are zero padding, like a umT5 context)
DEMO_INSTRUCTIONS: dict[str, int] = {
    "pick up the red block": 7,
    "place the cup on the coaster": 8,
    "hand the block over to the other arm": 10,
    "stack the green block on the blue block": 10,
}


def demo_model_config(size: str) -> ModelConfig:
    if size not in MODEL_SIZES:
        raise ValueError(f"--size: unknown size {size!r}; expected one of {sorted(MODEL_SIZES)}")
    cfg = MODEL_SIZES[size]
    if cfg.action_dim != len(DEMO_JOINT_NAMES) or cfg.proprio_dim != len(DEMO_JOINT_NAMES) or cfg.horizon != 32:
        raise ValueError(f"MODEL_SIZES[{size!r}] must have action_dim = proprio_dim = 14 and horizon 32 for the demo")
    return cfg


def demo_embodiment(action_rate_hz: float = DEMO_ACTION_RATE_HZ) -> Embodiment:
    mean = list(JOINT_MEAN)
    std = list(JOINT_STD)
    lo = [0.0 if n.endswith("gripper") else m - 3 * s for n, m, s in zip(DEMO_JOINT_NAMES, mean, std)]
    hi = [1.0 if n.endswith("gripper") else m + 3 * s for n, m, s in zip(DEMO_JOINT_NAMES, mean, std)]
    stats = {"mean": mean, "std": std, "min": lo, "max": hi}
    return Embodiment(
        layout=LAYOUTS[DEMO_LAYOUT],
        action_names=DEMO_JOINT_NAMES,
        state_names=DEMO_JOINT_NAMES,
        normalization={"mode": "z-score", "action": dict(stats), "state": dict(stats)},
        trained_steps=DEMO_TRAINED_STEPS,
        action_rate_hz=float(action_rate_hz),
    )


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63))


def init_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One demo tensor (float32), a pure function of (name, shape, seed)."""
    g = _generator(seed, name)
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "modulation":  # per-block shift/scale/gate offsets around the t=0 modulation
        return 0.1 * z
    if leaf == "query_tokens":
        return z
    if leaf == "query_merge_logits":
        return 0.5 * z
    if leaf == "gamma" or (leaf == "weight" and len(shape) == 1):  # LayerNorm / RMSNorm scales
        return 1.0 + 0.1 * z
    if leaf.endswith("bias"):
        return 0.02 * z
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    gain = 1.0
    if ".up_proj." in name or name.endswith(".up_proj.weight"):
        # LoRA up (scaled by alpha/rank = 2 downstream) and adapter up: clearly non-zero, still a correction.
        gain = 0.25 if is_lora_key(name) else 0.5
    return z * (gain / math.sqrt(fan_in))


def demo_weights(cfg: ModelConfig, seed: int, dtype: torch.dtype) -> dict[str, dict[str, LazyTensor]]:
    """part -> {official name: LazyTensor} for every tensor LightWAMPolicy(cfg) loads."""
    out: dict[str, dict[str, LazyTensor]] = {}
    for part, shapes in expected_shapes(cfg, lora_merged=False).items():
        out[part] = {
            name: LazyTensor(shape, dtype, (lambda n=f"{part}.{name}", s=shape: init_tensor(n, s, seed).to(dtype)))
            for name, shape in shapes.items()
        }
    return out


def demo_state_dict(size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The demo weights as a LightWAMPolicy state dict (for tests; the full size needs ~6 GB in float32)."""
    cfg = demo_model_config(size)
    weights = demo_weights(cfg, seed, dtype)
    return {f"{part}.{k}": t.materialize() for part, ts in weights.items() for k, t in ts.items()}


def demo_contexts(cfg: ModelConfig, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Deterministic contexts with umT5-like padding: rows past the instruction's token count are zero."""
    out: dict[str, torch.Tensor] = {}
    for ins, n_tokens in DEMO_INSTRUCTIONS.items():
        ctx = 0.3 * torch.randn((cfg.text_len, cfg.text_dim), generator=_generator(seed, "context:" + ins))
        ctx[min(n_tokens, cfg.text_len):] = 0.0
        out[ins] = ctx.to(dtype)
    return out


def write_demo_bundle(out: str | Path, size: str = "tiny", seed: int = 0,
                      action_rate_hz: float = DEMO_ACTION_RATE_HZ) -> Bundle:
    """Write the demo bundle of the given size to `out` and return it (verified).

    action_rate_hz: the time between chunk steps the bundle declares (the weights do not depend on
    it). Tests that run a node on the wall clock use a slower rate, so that a chunk outlasts the
    inference latency of a slow or busy CPU; everything else keeps the 50 Hz default.
    """
    if not (action_rate_hz > 0 and math.isfinite(action_rate_hz)):
        raise ValueError(f"action_rate_hz must be > 0, got {action_rate_hz}")
    cfg = demo_model_config(size)
    dtype = DEMO_DTYPES[size]
    weights: Mapping[str, Mapping[str, LazyTensor]] = demo_weights(cfg, seed, dtype)
    log.info("demo bundle %s: size %s, seed %d, %s, %d parameters", out, size, seed, dtype,
             sum(math.prod(t.shape) for ts in weights.values() for t in ts.values()))
    return Bundle.write(out, cfg, demo_embodiment(action_rate_hz), weights, demo_contexts(cfg, seed, dtype),
                        source={"demo": {"size": size, "seed": int(seed)}})
