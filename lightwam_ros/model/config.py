"""Model dimensions, as data: the same code runs the full Wan2.1-T2V-1.3B model and tiny test models.

Defaults are the effective Light-WAM values (docs/model.md, "Checkpoint conversion"): the Wan2.1-T2V-1.3B
preset overrides the 5B numbers that the official config.yaml still carries.
Serialised into the bundle manifest under "model" (to_dict / from_dict).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

LORA_TARGETS = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "ffn.0", "ffn.2",
)


def check_ints(prefix: str, obj: object, bounds: dict[str, tuple[int, int]]) -> None:
    """Every named field is an int in [lo, hi], or ValueError naming ``prefix.field``.

    Why upper bounds: a manifest is input from a file. The real model is far inside them; a value
    beyond them (a typo, a corrupt or hostile file) would otherwise build loops or shapes sized by
    it -- 100000 layers take minutes to enumerate before anything is checked against the weights.
    """
    for name, (lo, hi) in bounds.items():
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{prefix}.{name} must be an integer in [{lo}, {hi}], got {v!r}")


def check_floats(prefix: str, obj: object, names: tuple[str, ...], positive: tuple[str, ...] = ()) -> None:
    """Every named field is a finite number (> 0 where listed): they scale weights and norms, and a
    string or a list there would only fail when the network is built, far from the manifest."""
    for name in names:
        v = getattr(obj, name)
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or (name in positive and not v > 0)):
            kind = "a finite number > 0" if name in positive else "a finite number"
            raise ValueError(f"{prefix}.{name} must be {kind}, got {str(v)[:80]}")


def check_indices(prefix: str, values: tuple, count: int) -> None:
    """Every entry of a layer list is an int in [0, count)."""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < count:
            raise ValueError(f"{prefix} entries must be integers in [0, {count}), got {v!r}")


VAE_BOUNDS = {"dim": (1, 1024), "z_dim": (1, 256), "num_res_blocks": (1, 16)}
EXPERT_BOUNDS = {"per_layer_dim": (1, 65536), "trunk_dim": (1, 65536), "num_trunk_blocks": (1, 64),
                 "step_pos_dim": (2, 8192), "num_queries": (1, 1024), "num_pool_heads": (1, 256)}
MODEL_BOUNDS = {"dim": (1, 16384), "in_dim": (1, 256), "ffn_dim": (1, 131072), "num_heads": (1, 512),
                "num_layers": (1, 256), "text_dim": (1, 16384), "text_len": (1, 4096), "freq_dim": (2, 8192),
                "lora_rank": (1, 4096), "adapter_dim": (1, 65536), "action_dim": (1, 4096),
                "proprio_dim": (1, 4096), "horizon": (1, 4096)}


@dataclass(frozen=True)
class VAEConfig:
    """Wan2.1 VAE encoder (VideoVAE_ dim=96, z_dim=16)."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(self.dim_mult))
        check_ints("model.vae", self, VAE_BOUNDS)
        if not 1 <= len(self.dim_mult) <= 8:
            raise ValueError(f"model.vae.dim_mult must have 1 to 8 entries, got {len(self.dim_mult)}")
        for v in self.dim_mult:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
                raise ValueError(f"model.vae.dim_mult entries must be integers in [1, 64], got {v!r}")


@dataclass(frozen=True)
class ExpertConfig:
    """StateFusionActionExpert (state_fusion_action_expert_config)."""

    per_layer_dim: int = 4608
    trunk_dim: int = 6144
    num_trunk_blocks: int = 1
    step_pos_dim: int = 256
    num_queries: int = 16  # token_pooling_num_queries
    num_pool_heads: int = 8  # token_pooling_num_heads
    eps: float = 1e-5  # nn.LayerNorm default, used by every expert norm

    def __post_init__(self) -> None:
        check_ints("model.expert", self, EXPERT_BOUNDS)
        check_floats("model.expert", self, ("eps",), positive=("eps",))
        if self.step_pos_dim % 2:
            raise ValueError(f"model.expert.step_pos_dim must be even, got {self.step_pos_dim}")


@dataclass(frozen=True)
class ModelConfig:
    """Every dimension the network needs; nothing is hardcoded in the modules."""

    dim: int = 1536  # DiT hidden width
    in_dim: int = 16  # VAE latent channels
    ffn_dim: int = 8960
    num_heads: int = 12  # head_dim = dim // num_heads = 128
    num_layers: int = 30  # blocks in the checkpoint; only 0..max(adapter_layers) are run
    text_dim: int = 4096  # umT5-XXL width
    text_len: int = 128  # umT5 tokens per instruction (padding rows zeroed, all kept)
    freq_dim: int = 256  # sinusoidal timestep width
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    lora_rank: int = 64
    lora_alpha: float = 128.0
    lora_layers: tuple[int, ...] = tuple(range(30))
    lora_targets: tuple[str, ...] = LORA_TARGETS
    adapter_layers: tuple[int, ...] = (8, 16, 24)
    adapter_dim: int = 256
    adapter_scale: float = 1.0
    action_dim: int = 14
    proprio_dim: int = 14
    horizon: int = 32  # training horizon (num_frames - 1); steps never interact
    vae: VAEConfig = field(default_factory=VAEConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        for name in ("patch_size", "lora_layers", "lora_targets", "adapter_layers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.vae, dict):
            object.__setattr__(self, "vae", VAEConfig(**self.vae))
        if isinstance(self.expert, dict):
            object.__setattr__(self, "expert", ExpertConfig(**self.expert))
        check_ints("model", self, MODEL_BOUNDS)
        check_floats("model", self, ("eps", "lora_alpha", "adapter_scale"), positive=("eps",))
        if len(self.patch_size) != 3 or any(isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 64
                                            for p in self.patch_size):
            raise ValueError(f"model.patch_size must be 3 integers in [1, 64], got {str(self.patch_size)[:80]}")
        check_indices("model.lora_layers", self.lora_layers, self.num_layers)
        check_indices("model.adapter_layers", self.adapter_layers, self.num_layers)
        if self.dim % self.num_heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.num_heads ({self.num_heads})")
        if (self.dim // self.num_heads) % 2:
            raise ValueError("model: head_dim must be even for RoPE")
        if not self.adapter_layers or max(self.adapter_layers) >= self.num_layers:
            raise ValueError(
                f"model.adapter_layers {self.adapter_layers} must be non-empty and < num_layers {self.num_layers}"
            )
        if list(self.adapter_layers) != sorted(set(self.adapter_layers)):
            raise ValueError(f"model.adapter_layers must be strictly increasing, got {self.adapter_layers}")
        bad = set(self.lora_targets) - set(LORA_TARGETS)
        if bad:
            raise ValueError(f"model.lora_targets: unknown targets {sorted(bad)}; known {LORA_TARGETS}")
        for name in ("action_dim", "proprio_dim", "horizon", "lora_rank", "adapter_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be > 0, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    @property
    def run_layers(self) -> int:
        """Blocks actually executed: later blocks cannot change the action.

        docs/model.md, "What is skipped and why"."""
        return max(self.adapter_layers) + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"manifest 'model': unknown keys {sorted(unknown)}")
        return cls(**data)


# Size variants as data (DiT_models style). "tiny" runs well under a second on a CPU.
# tiny uses head_dim 32: the official RoPE split (d - 2*(d//3), d//3, d//3) only runs when d//3 is even.
MODEL_SIZES: dict[str, ModelConfig] = {
    "full": ModelConfig(),
    "tiny": ModelConfig(
        dim=64, ffn_dim=128, num_heads=2, num_layers=5, text_dim=32, freq_dim=32,
        lora_rank=4, lora_alpha=8.0, lora_layers=tuple(range(5)), adapter_layers=(1, 2, 3), adapter_dim=16,
        vae=VAEConfig(dim=8, z_dim=16), expert=ExpertConfig(per_layer_dim=48, trunk_dim=64, step_pos_dim=32,
                                                              num_queries=4, num_pool_heads=4),
    ),
}
