"""StateFusionActionExpert: adapted tokens of the adapter layers -> action chunk [B, steps, A].

Mirrors the official ``src/lightwam/models/wan22/state_fusion_action_expert.py`` as Light-WAM is
configured (docs/model.md, "State-fusion action expert"): learned-query pooling (legacy ``merge_dim=None`` path),
feature source "adapted" only, per-layer compressors, fused projection, residual MLP trunk, a sinusoidal
step-position embedding and the output head. Parameter names are the official ones
(``layer_poolers.{i}.adapted.attn.in_proj_weight`` ...). Every LayerNorm uses eps 1e-5 (torch default).

The steps never interact: step k is a function of the fused state and position k only, so asking for
the first k steps returns exactly the first k rows of the full horizon.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .derived import DerivedConstantsModule
from .dit import attention, sinusoidal_embedding_1d

FEATURE_SOURCE = "adapted"  # feature_sources [adapted] in every shipped config


class PoolingAttention(nn.Module):
    """nn.MultiheadAttention (batch_first, packed in_proj, need_weights=False) written out.

    Same parameter names and math as torch's: q/k/v = packed in_proj, per-head SDPA with scale
    1/sqrt(head_dim), out_proj. Written out so the export sees plain matmuls and SDPA.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        wq, wk, wv = self.in_proj_weight.chunk(3, dim=0)
        bq, bk, bv = self.in_proj_bias.chunk(3, dim=0)
        q = F.linear(query, wq, bq)  # (B, Q, dim)
        k = F.linear(key_value, wk, bk)  # (B, S, dim)
        v = F.linear(key_value, wv, bv)  # (B, S, dim)
        return self.out_proj(attention(q, k, v, self.num_heads))  # (B, Q, dim)


class LearnedQueryPooler(nn.Module):
    """Q learned queries attend to LayerNorm'ed tokens; a softmax over the query slots merges them."""

    def __init__(self, dim: int, num_queries: int, num_heads: int, eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model.expert.num_pool_heads ({num_heads}) must divide model.dim ({dim})")
        self.token_norm = nn.LayerNorm(dim, eps=eps)
        self.query_tokens = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.attn = PoolingAttention(dim, num_heads)
        self.query_merge_logits = nn.Parameter(torch.zeros(num_queries))
        self.output_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.token_norm(tokens)  # (B, S, dim)
        query = self.query_tokens.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, Q, dim)
        pooled = self.attn(query, kv)  # (B, Q, dim)
        weights = F.softmax(self.query_merge_logits, dim=0).to(pooled.dtype)  # (Q,)
        pooled = (pooled * weights.view(1, -1, 1)).sum(dim=1)  # (B, dim)
        return self.output_norm(pooled)


class ResidualMLPBlock(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class LayerFusionCompressor(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=eps)
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class StateFusionActionExpert(DerivedConstantsModule):
    """Adapted tokens [B, S, dim] per adapter layer -> normalised actions [B, steps, action_dim].

    Derived constant ``step_pos`` (cfg.horizon, step_pos_dim): the cos-first sinusoid of positions
    0..H-1, positions taken in the module dtype (as upstream: ``arange(..., dtype=state.dtype)``),
    computed in float64 and cast once to the module dtype.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e = cfg.expert
        self.cfg = cfg
        num_layers = len(cfg.adapter_layers)
        self.layer_poolers = nn.ModuleList(
            [nn.ModuleDict({FEATURE_SOURCE: LearnedQueryPooler(cfg.dim, e.num_queries, e.num_pool_heads, e.eps)})
             for _ in range(num_layers)]
        )
        self.layer_compressors = nn.ModuleList(
            [LayerFusionCompressor(cfg.dim, e.per_layer_dim, e.eps) for _ in range(num_layers)]
        )
        self.fused_norm = nn.LayerNorm(e.per_layer_dim * num_layers, eps=e.eps)
        self.fused_proj = nn.Linear(e.per_layer_dim * num_layers, e.trunk_dim)
        self.trunk = nn.ModuleList([ResidualMLPBlock(e.trunk_dim, e.eps) for _ in range(e.num_trunk_blocks)])
        self.step_pos_proj = nn.Sequential(
            nn.LayerNorm(e.step_pos_dim, eps=e.eps),
            nn.Linear(e.step_pos_dim, e.trunk_dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(e.trunk_dim, e.trunk_dim),
        )
        self.output_norm = nn.LayerNorm(e.trunk_dim, eps=e.eps)
        self.output = nn.Sequential(
            nn.Linear(e.trunk_dim, e.trunk_dim), nn.GELU(approximate="tanh"), nn.Linear(e.trunk_dim, cfg.action_dim)
        )
        self.register_buffer("step_pos", torch.empty(0), persistent=False)
        self.refresh_constants()

    @torch.no_grad()
    def refresh_constants(self) -> None:
        ref = self.fused_proj.weight
        positions = torch.arange(self.cfg.horizon).to(ref.dtype).to(torch.float64)  # rounded like upstream
        table = sinusoidal_embedding_1d(self.cfg.expert.step_pos_dim, positions)  # (H, step_pos_dim) float64
        self.step_pos = table.to(device=ref.device, dtype=ref.dtype)

    def forward(self, layer_tokens: list[torch.Tensor], steps: int | None = None) -> torch.Tensor:
        steps = self.cfg.horizon if steps is None else steps
        if not 1 <= steps <= self.cfg.horizon:
            raise ValueError(f"steps must be in [1, {self.cfg.horizon}] (the model horizon), got {steps}")
        if len(layer_tokens) != len(self.layer_compressors):
            raise ValueError(f"expected {len(self.layer_compressors)} adapter layers, got {len(layer_tokens)}")
        compressed = [
            compressor(poolers[FEATURE_SOURCE](tokens))  # (B, per_layer_dim)
            for tokens, poolers, compressor in zip(layer_tokens, self.layer_poolers, self.layer_compressors)
        ]
        state = self.fused_proj(self.fused_norm(torch.cat(compressed, dim=-1)))  # (B, trunk_dim)
        for block in self.trunk:
            state = block(state)
        step_tokens = state.unsqueeze(1) + self.step_pos_proj(self.step_pos[:steps]).unsqueeze(0)  # (B, steps, trunk)
        return self.output(self.output_norm(step_tokens))  # (B, steps, action_dim)
