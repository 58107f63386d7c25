"""LightWAMPolicy: canvas + proprio + text context -> normalised action chunk, in one pass.

The deployment action path of Light-WAM (``LightWAM.infer_action`` -> ``_predict_state_fusion_action_
from_observation`` in the official lightwam.py; docs/model.md, "Overview: one forward pass"): VAE-encode the canvas,
append the proprio token to the text context, run the DiT at t = 0 with LoRA and adapters, and regress
the chunk with the StateFusionActionExpert from the adapted tokens.

The forward pass is export-friendly: static shapes for a given canvas size, no data-dependent Python
branches, no complex or float64 tensors (RoPE, t_mod and step positions are precomputed buffers).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .dit import WanDiT
from .expert import StateFusionActionExpert
from .vae_encoder import VAEEncoder


class LightWAMPolicy(nn.Module):
    """Submodules (and state_dict prefixes): dit, vae, expert, proprio_encoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vae.z_dim != cfg.in_dim:
            raise ValueError(f"model.vae.z_dim ({cfg.vae.z_dim}) must equal model.in_dim ({cfg.in_dim})")
        self.cfg = cfg
        self.dit = WanDiT(cfg)
        self.vae = VAEEncoder(cfg.vae)
        self.expert = StateFusionActionExpert(cfg)
        self.proprio_encoder = nn.Linear(cfg.proprio_dim, cfg.text_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.proprio_encoder.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proprio_encoder.weight.device

    @property
    def canvas_multiple(self) -> int:
        """Canvas height and width must be multiples of this (VAE factor x patch size): 16 for Wan2.1."""
        return self.vae.downsample_factor * self.cfg.patch_size[1]

    def num_tokens(self, canvas_hw: tuple[int, int]) -> int:
        """Video tokens S for a canvas size: 480 for 384x320, 392 for 224x448."""
        m = self.canvas_multiple
        return (canvas_hw[0] // m) * (canvas_hw[1] // m)

    def merge_lora(self) -> None:
        """Fold the DiT LoRA into the base weights (what production bundles run)."""
        self.dit.merge_lora()

    # The stages, separately callable for per-stage timing; forward() chains them.

    def encode_image(self, canvas: torch.Tensor) -> torch.Tensor:
        """canvas [1, 3, H, W] in [-1, 1] (any float dtype) -> latent [1, z_dim, H/8, W/8] in the module dtype."""
        m = self.canvas_multiple
        if canvas.dim() != 4 or canvas.shape[1] != 3 or canvas.shape[2] % m or canvas.shape[3] % m:
            raise ValueError(f"canvas must be [B, 3, H, W] with H and W multiples of {m}, got {tuple(canvas.shape)}")
        return self.vae(canvas.to(self.dtype))

    def build_context(self, proprio: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """context [1, text_len, text_dim] + proprio [1, P] -> [1, text_len + 1, text_dim] (proprio token last)."""
        if proprio.dim() != 2 or proprio.shape[1] != self.cfg.proprio_dim:
            raise ValueError(f"proprio must be [B, {self.cfg.proprio_dim}], got {tuple(proprio.shape)}")
        if context.dim() != 3 or tuple(context.shape[1:]) != (self.cfg.text_len, self.cfg.text_dim):
            raise ValueError(
                f"context must be [B, {self.cfg.text_len}, {self.cfg.text_dim}], got {tuple(context.shape)}"
            )
        proprio_token = self.proprio_encoder(proprio.to(self.dtype).unsqueeze(1))  # (B, 1, text_dim)
        return torch.cat([context.to(self.dtype), proprio_token], dim=1)  # (B, text_len + 1, text_dim)

    def backbone(self, latent: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """-> adapted tokens [1, S, dim] of each adapter layer."""
        return self.dit(latent, context)

    def head(self, adapted: list[torch.Tensor], steps: int | None = None) -> torch.Tensor:
        """-> normalised actions [1, steps or horizon, action_dim] in float32."""
        return self.expert(adapted, steps).float()

    def forward(
        self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor, steps: int | None = None
    ) -> torch.Tensor:
        """canvas [1, 3, H, W] in [-1, 1]; proprio [1, P] normalised and clamped; context
        [1, text_len, text_dim] with padding rows zeroed (all kept). Inputs of any float dtype are
        cast to the module dtype. Returns normalised actions [1, steps or horizon, A] as float32."""
        latent = self.encode_image(canvas)  # (1, z_dim, H/8, W/8)
        ctx = self.build_context(proprio, context)  # (1, text_len + 1, text_dim)
        return self.head(self.backbone(latent, ctx), steps)  # (1, steps, A)
