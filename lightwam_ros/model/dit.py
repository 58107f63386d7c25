"""Wan2.1-T2V DiT as Light-WAM runs it for actions: one clean frame (t = 0), LoRA, residual adapters.

Mirrors ``WanVideoDiT`` / ``DiTBlock`` of the official ``src/lightwam/models/wan22/wan_video_dit.py``
(docs/model.md, "DiT blocks and adapters") with the same parameter names, minus the ``mixtures.video.``
prefix. Only what the action path reads is built and run: blocks 0..max(adapter_layers), no head,
no masks (they are all True), no timestep input (t = 0 gives a constant modulation, see t_mod).
Everything runs in the parameters' dtype, like the bf16 eager reference; q/k RMSNorm normalises in
float32 and RoPE rotates in float32 (rope.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .derived import DerivedConstantsModule
from .rope import apply_rope, grid_tables, rope_tables


def sinusoidal_embedding_1d(dim: int, position: torch.Tensor) -> torch.Tensor:
    """[N, dim] float64 [cos | sin] embedding (Wan's ``sinusoidal_embedding_1d`` before its dtype cast)."""
    half = dim // 2
    inv = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=position.device).div(half))
    sinusoid = torch.outer(position.to(torch.float64), inv)
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class LoRALinearAdapter(nn.Module):
    """Low-rank residual of one linear layer: up(down(x)) * alpha / rank (official LoRALinearAdapter)."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float):
        super().__init__()
        self.scale = alpha / rank
        self.down_proj = nn.Linear(in_dim, rank, bias=False)
        self.up_proj = nn.Linear(rank, out_dim, bias=False)
        nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up_proj.weight)  # a fresh LoRA is a no-op, as upstream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_proj(self.down_proj(x)) * self.scale

    @torch.no_grad()
    def merge_into(self, linear: nn.Linear) -> None:
        """W <- W + scale * up @ down, accumulated in float32 then rounded once to W's dtype."""
        delta = self.up_proj.weight.float() @ self.down_proj.weight.float() * self.scale
        linear.weight.copy_((linear.weight.float() + delta).to(linear.weight.dtype))


def _add_lora(base: torch.Tensor, lora: LoRALinearAdapter | None, x: torch.Tensor) -> torch.Tensor:
    return base if lora is None else base + lora(x)


class RMSNorm(nn.Module):
    """RMSNorm over the full q/k width: normalise in float32, cast back, then times the weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head SDPA on [B, L, N*D] tensors, default scale 1/sqrt(D), no mask (all-True upstream)."""
    b, lq, width = q.shape
    d = width // num_heads
    q = q.view(b, lq, num_heads, d).transpose(1, 2)  # (B, N, Lq, D)
    k = k.view(b, k.shape[1], num_heads, d).transpose(1, 2)  # (B, N, Lk, D)
    v = v.view(b, v.shape[1], num_heads, d).transpose(1, 2)  # (B, N, Lk, D)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, N, Lq, D)
    return out.transpose(1, 2).reshape(b, lq, width)  # (B, Lq, N*D)


class _Attention(nn.Module):
    """q/k/v/o projections with optional LoRA and q/k RMSNorm (shared by self- and cross-attention)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)
        self.lora_q: LoRALinearAdapter | None = None
        self.lora_k: LoRALinearAdapter | None = None
        self.lora_v: LoRALinearAdapter | None = None
        self.lora_o: LoRALinearAdapter | None = None

    def configure_lora(self, targets: set[str], dim: int, rank: int, alpha: float) -> None:
        for name in ("q", "k", "v", "o"):
            if name in targets:
                setattr(self, f"lora_{name}", LoRALinearAdapter(dim, dim, rank, alpha))

    def merge_lora(self) -> None:
        for name in ("q", "k", "v", "o"):
            lora = getattr(self, f"lora_{name}")
            if lora is not None:
                lora.merge_into(getattr(self, name))
                setattr(self, f"lora_{name}", None)

    def project_out(self, a: torch.Tensor) -> torch.Tensor:
        return _add_lora(self.o(a), self.lora_o, a)


class SelfAttention(_Attention):
    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(_add_lora(self.q(x), self.lora_q, x))  # (B, S, dim)
        k = self.norm_k(_add_lora(self.k(x), self.lora_k, x))  # (B, S, dim)
        v = _add_lora(self.v(x), self.lora_v, x)  # (B, S, dim)
        q = apply_rope(q, cos, sin, self.num_heads)
        k = apply_rope(k, cos, sin, self.num_heads)
        return self.project_out(attention(q, k, v, self.num_heads))  # (B, S, dim)


class CrossAttention(_Attention):
    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(_add_lora(self.q(x), self.lora_q, x))  # (B, S, dim)
        k = self.norm_k(_add_lora(self.k(ctx), self.lora_k, ctx))  # (B, L, dim)
        v = _add_lora(self.v(ctx), self.lora_v, ctx)  # (B, L, dim)
        return self.project_out(attention(q, k, v, self.num_heads))  # (B, S, dim)


class DiTBlock(nn.Module):
    """Self-attention (modulated, gated, RoPE), cross-attention (affine LN3), modulated gated FFN."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.dim
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps)
        self.norm1 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.ffn_lora_in: LoRALinearAdapter | None = None
        self.ffn_lora_out: LoRALinearAdapter | None = None

    def configure_lora(self, cfg: ModelConfig) -> None:
        targets = set(cfg.lora_targets)
        for prefix, attn in (("self_attn.", self.self_attn), ("cross_attn.", self.cross_attn)):
            attn.configure_lora({t[len(prefix):] for t in targets if t.startswith(prefix)},
                                cfg.dim, cfg.lora_rank, cfg.lora_alpha)
        if "ffn.0" in targets:
            self.ffn_lora_in = LoRALinearAdapter(cfg.dim, cfg.ffn_dim, cfg.lora_rank, cfg.lora_alpha)
        if "ffn.2" in targets:
            self.ffn_lora_out = LoRALinearAdapter(cfg.ffn_dim, cfg.dim, cfg.lora_rank, cfg.lora_alpha)

    def merge_lora(self) -> None:
        self.self_attn.merge_lora()
        self.cross_attn.merge_lora()
        if self.ffn_lora_in is not None:
            self.ffn_lora_in.merge_into(self.ffn[0])
            self.ffn_lora_in = None
        if self.ffn_lora_out is not None:
            self.ffn_lora_out.merge_into(self.ffn[2])
            self.ffn_lora_out = None

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, t_mod: torch.Tensor,
                cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # t_mod is (1, 6, dim): every token has t = 0, so one row serves all S tokens.
        mod = self.modulation + t_mod  # (1, 6, dim)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # each (1, 1, dim)
        x = x + gate_msa * self.self_attn(modulate(self.norm1(x), shift_msa, scale_msa), cos, sin)  # (B, S, dim)
        x = x + self.cross_attn(self.norm3(x), ctx)  # (B, S, dim)
        u = modulate(self.norm2(x), shift_mlp, scale_mlp)  # (B, S, dim)
        h = self.ffn[1](_add_lora(self.ffn[0](u), self.ffn_lora_in, u))  # (B, S, ffn_dim)
        return x + gate_mlp * _add_lora(self.ffn[2](h), self.ffn_lora_out, h)  # (B, S, dim)


class ResidualAdapter(nn.Module):
    """x + scale * up(GELU(down(LN(x)))); its output replaces x in the residual stream."""

    def __init__(self, dim: int, adapter_dim: int, eps: float, scale: float):
        super().__init__()
        self.scale = scale
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.down_proj = nn.Linear(dim, adapter_dim)
        self.act = nn.GELU(approximate="tanh")
        self.up_proj = nn.Linear(adapter_dim, dim)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.up_proj(self.act(self.down_proj(self.norm(x))))
        if self.scale != 1.0:  # config constant; upstream skips the multiply at 1.0
            delta = delta * self.scale
        return x + delta


class WanDiT(DerivedConstantsModule):
    """Backbone up to the last adapter layer; returns the adapted tokens of every adapter layer.

    Derived constants (non-persistent buffers, see derived.py): ``t_mod`` (1, 6, dim) in the
    parameter dtype, computed exactly as upstream (float64 sinusoid of t = 0 cast to the dtype, then
    the time MLP in the dtype), and the float32 RoPE tables ``freqs_cos`` / ``freqs_sin``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.patch_size[0] != 1:
            raise ValueError(f"model.patch_size {cfg.patch_size}: the single-frame path needs a temporal patch of 1")
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.run_layers)])
        for i in cfg.lora_layers:
            if i < cfg.run_layers:
                self.blocks[i].configure_lora(cfg)
        self.wam_adapters = nn.ModuleDict(
            {str(i): ResidualAdapter(dim, cfg.adapter_dim, cfg.eps, cfg.adapter_scale) for i in cfg.adapter_layers}
        )
        self.register_buffer("t_mod", torch.empty(0), persistent=False)
        self.register_buffer("freqs_cos", torch.empty(0), persistent=False)
        self.register_buffer("freqs_sin", torch.empty(0), persistent=False)
        self.refresh_constants()

    @torch.no_grad()
    def refresh_constants(self) -> None:
        """Recompute t_mod and the RoPE tables on the parameters' device (t_mod also in their dtype)."""
        ref = self.time_embedding[0].weight
        t_emb = sinusoidal_embedding_1d(self.cfg.freq_dim, torch.zeros(1, dtype=torch.float64))  # (1, freq_dim)
        t = self.time_embedding(t_emb.to(device=ref.device, dtype=ref.dtype))  # (1, dim)
        self.t_mod = self.time_projection(t).unflatten(1, (6, self.cfg.dim))  # (1, 6, dim)
        cos, sin = rope_tables(self.cfg.head_dim)
        self.freqs_cos = cos.to(ref.device)
        self.freqs_sin = sin.to(ref.device)

    def merge_lora(self) -> None:
        """Fold every LoRA into its base linear (production path: plain linears, fewer kernels)."""
        for block in self.blocks:
            block.merge_lora()

    @property
    def has_lora(self) -> bool:
        return any(name.split(".")[-1].startswith(("lora_", "ffn_lora_")) for name, _ in self.named_modules())

    def patchify(self, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, C, H', W'] latent -> tokens [B, S, dim] in row-major (f, h, w) order, and the grid.

        The Conv3d with kernel = stride = (1, p, p) on one frame is a 2-D conv with the same kernel.
        """
        w = self.patch_embedding.weight[:, :, 0]  # (dim, C, p, p)
        x = F.conv2d(latents, w, self.patch_embedding.bias, stride=self.cfg.patch_size[1:])  # (B, dim, h, w)
        grid = (1, x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid  # (B, S, dim)

    def forward(self, latents: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """latents [B, in_dim, H', W'] (normalised VAE mean), context [B, text_len + 1, text_dim]
        (text tokens then the proprio token) -> adapted tokens [B, S, dim] per adapter layer, in order."""
        x, grid = self.patchify(latents)  # (B, S, dim)
        ctx = self.text_embedding(context)  # (B, L, dim)
        cos, sin = grid_tables(self.freqs_cos, self.freqs_sin, self.cfg.head_dim, grid)  # (S, 1, head_dim/2)
        adapted: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x, ctx, self.t_mod, cos, sin)
            key = str(i)
            if key in self.wam_adapters:
                x = self.wam_adapters[key](x)  # the adapted tokens carry on down the stream
                adapted.append(x)
        return adapted
