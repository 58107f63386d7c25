"""StateFusionActionExpert: step independence, pooling == nn.MultiheadAttention, step positions."""

from __future__ import annotations

import math

import pytest
import torch

from lightwam_ros.model.config import MODEL_SIZES
from lightwam_ros.model.expert import LearnedQueryPooler, StateFusionActionExpert

pytestmark = pytest.mark.numeric

TINY = MODEL_SIZES["tiny"]
FP32_EPS = torch.finfo(torch.float32).eps  # 1.2e-7


def random_expert(seed: int = 0) -> StateFusionActionExpert:
    torch.manual_seed(seed)
    expert = StateFusionActionExpert(TINY)
    with torch.no_grad():
        for p in expert.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return expert.eval()


def layer_tokens(seed: int = 0, tokens: int = 20) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, tokens, TINY.dim, generator=g) for _ in TINY.adapter_layers]


def test_requested_steps_are_the_first_rows_of_the_horizon() -> None:
    expert = random_expert()
    feats = layer_tokens()
    with torch.no_grad():
        full = expert(feats)
        assert full.shape == (1, TINY.horizon, TINY.action_dim)
        # Fewer rows can change the kernel's blocking and so the fp32 summation order (measured 4e-7 at
        # k = 1): allow 64 rounding steps of the output's scale (1.3e-5); a step off by one moves 0.3.
        atol = 64 * FP32_EPS * float(full.abs().max())
        for k in (1, 8, 24):
            torch.testing.assert_close(expert(feats, steps=k), full[:, :k], rtol=0, atol=atol)
    assert float((full[:, 0] - full[:, 1]).abs().max()) > 1e-4  # positions really differ


def test_steps_outside_the_horizon_are_refused() -> None:
    expert = random_expert()
    for bad in (0, TINY.horizon + 1):
        with pytest.raises(ValueError, match="steps"):
            expert(layer_tokens(), steps=bad)


def test_pooling_attention_equals_torch_multihead_attention() -> None:
    """The written-out MHA loads nn.MultiheadAttention's state (same names) and computes the same."""
    torch.manual_seed(1)
    pooler = LearnedQueryPooler(TINY.dim, 4, 4, 1e-5)
    mha = torch.nn.MultiheadAttention(TINY.dim, 4, batch_first=True)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    pooler.attn.load_state_dict(mha.state_dict(), strict=True)
    query = torch.randn(1, 4, TINY.dim)
    kv = torch.randn(1, 20, TINY.dim)
    with torch.no_grad():
        expected, _ = mha(query, kv, kv, need_weights=False)
        # torch's fused attention vs the written-out one: the same fp32 sums in other orders (~100 eps)
        torch.testing.assert_close(pooler.attn(query, kv), expected, rtol=1e-5, atol=1e-5)


def test_step_positions_are_the_cos_first_sinusoid() -> None:
    expert = random_expert()
    d = TINY.expert.step_pos_dim
    k, j = 5, 3
    freq = 10000 ** (-j / (d // 2))
    assert expert.step_pos.shape == (TINY.horizon, d)
    assert expert.step_pos[k, j].item() == pytest.approx(math.cos(k * freq), abs=1e-6)
    assert expert.step_pos[k, d // 2 + j].item() == pytest.approx(math.sin(k * freq), abs=1e-6)
    assert expert.to(torch.bfloat16).step_pos.dtype == torch.bfloat16


def test_official_parameter_names() -> None:
    names = set(random_expert().state_dict())
    for key in (
        "layer_poolers.0.adapted.token_norm.weight",
        "layer_poolers.2.adapted.query_tokens",
        "layer_poolers.1.adapted.attn.in_proj_weight",
        "layer_poolers.1.adapted.attn.in_proj_bias",
        "layer_poolers.1.adapted.attn.out_proj.weight",
        "layer_poolers.0.adapted.query_merge_logits",
        "layer_poolers.0.adapted.output_norm.bias",
        "layer_compressors.2.fc2.weight",
        "fused_norm.weight",
        "fused_proj.weight",
        "trunk.0.fc1.weight",
        "step_pos_proj.0.weight",
        "step_pos_proj.3.weight",
        "output_norm.weight",
        "output.2.bias",
    ):
        assert key in names, key
    assert "step_pos" not in names
