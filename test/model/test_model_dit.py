"""WanDiT: official names and sizes, LoRA merge, derived constants, RoPE against a complex reference."""

from __future__ import annotations

import math

import pytest
import torch

from lightwam_ros.model.config import MODEL_SIZES
from lightwam_ros.model.dit import WanDiT
from lightwam_ros.model.policy import LightWAMPolicy
from lightwam_ros.model.rope import apply_rope, grid_tables, rope_axis_dims, rope_tables

pytestmark = pytest.mark.numeric

TINY = MODEL_SIZES["tiny"]
FULL = MODEL_SIZES["full"]
FP32_EPS = torch.finfo(torch.float32).eps  # 1.2e-7


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_dit(seed: int) -> WanDiT:
    """Tiny DiT with every parameter random (LoRA and adapter up-projections are zero at init)."""
    torch.manual_seed(seed)
    dit = WanDiT(TINY)
    with torch.no_grad():
        for p in dit.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    dit.refresh_constants()
    return dit.eval()


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((1, TINY.in_dim, 8, 10), generator=g)
    context = torch.randn((1, TINY.text_len + 1, TINY.text_dim), generator=g)
    return latents, context


def test_full_size_parameter_counts_match_the_spec() -> None:
    """docs/model.md, "Parameter counts" (derived from the architecture)."""
    with torch.device("meta"):
        policy = LightWAMPolicy(FULL)
    dit = policy.dit
    assert len(dit.blocks) == 25  # blocks 0..24: nothing after the last adapter can change the action
    assert numel(dit.patch_embedding) == 99_840
    assert numel(dit.text_embedding) == 8_653_824
    assert numel(dit.time_embedding) == 2_755_584
    assert numel(dit.time_projection) == 14_164_992
    block = dit.blocks[0]
    lora = sum(p.numel() for n, p in block.named_parameters() if "lora" in n)
    assert numel(block) - lora == 46_440_704
    assert lora == 2_916_352
    assert all(numel(dit.wam_adapters[str(i)]) == 791_296 for i in (8, 16, 24))
    assert numel(policy.expert) == 351_071_806
    assert numel(policy.proprio_encoder) == 61_440
    # 2-D VAE: the used third of each 3x3x3 kernel, no time_conv; conv1 kept whole (32x32).
    assert numel(policy.vae) == 19_307_120 + 16 * 32 + 16


def test_official_parameter_names_and_shapes() -> None:
    with torch.device("meta"):
        sd = WanDiT(FULL).state_dict()
    expected = {
        "patch_embedding.weight": (1536, 16, 1, 2, 2),
        "text_embedding.0.weight": (1536, 4096),
        "text_embedding.2.bias": (1536,),
        "time_embedding.0.weight": (1536, 256),
        "time_projection.1.weight": (9216, 1536),
        "blocks.0.modulation": (1, 6, 1536),
        "blocks.0.self_attn.norm_q.weight": (1536,),
        "blocks.3.cross_attn.k.weight": (1536, 1536),
        "blocks.24.norm3.weight": (1536,),
        "blocks.24.ffn.0.weight": (8960, 1536),
        "blocks.24.ffn.2.weight": (1536, 8960),
        "blocks.0.self_attn.lora_q.down_proj.weight": (64, 1536),
        "blocks.0.cross_attn.lora_o.up_proj.weight": (1536, 64),
        "blocks.7.ffn_lora_in.down_proj.weight": (64, 1536),
        "blocks.7.ffn_lora_in.up_proj.weight": (8960, 64),
        "blocks.7.ffn_lora_out.down_proj.weight": (64, 8960),
        "wam_adapters.8.norm.weight": (1536,),
        "wam_adapters.16.down_proj.weight": (256, 1536),
        "wam_adapters.24.up_proj.bias": (1536,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith(("head.", "blocks.25.")) for k in sd)
    # No derived buffer leaks into the checkpoint key space.
    assert not any(k in sd for k in ("t_mod", "freqs_cos", "freqs_sin"))
    per_block = [k for k in sd if k.startswith("blocks.0.")]
    assert len(per_block) == 27 + 20  # 27 official block tensors + 10 LoRA x (down, up)


def test_merged_lora_equals_unmerged_in_float32() -> None:
    dit = random_dit(0)
    latents, context = inputs()
    with torch.no_grad():
        before = dit(latents, context)
        q = dit.blocks[1].self_attn
        expected_q = q.q.weight.double() + q.lora_q.scale * (q.lora_q.up_proj.weight.double()
                                                             @ q.lora_q.down_proj.weight.double())
        dit.merge_lora()
        after = dit(latents, context)
    assert not dit.has_lora
    assert not any("lora" in k for k in dit.state_dict())
    # W + s * U @ D in float32: rank + 1 = 5 terms at |q| < 1, each step rounding by <= eps = 1.2e-7; 1e-6 allows 8.
    assert TINY.lora_rank + 1 <= 8 and float(expected_q.abs().max()) < 1
    torch.testing.assert_close(dit.blocks[1].self_attn.q.weight.double(), expected_q, rtol=0, atol=1e-6)
    for b, a in zip(before, after):  # merged weights round differently: ~100 fp32 steps (measured 4e-7)
        assert float((a - b).norm() / b.norm()) < 1e-5
    assert float((before[-1]).abs().mean()) > 0.1  # the comparison is not between zeros


def test_lora_is_active_when_unmerged() -> None:
    dit = random_dit(0)
    latents, context = inputs()
    with torch.no_grad():
        with_lora = dit(latents, context)[-1]
        for block in dit.blocks:
            block.self_attn.lora_q = None
        without = dit(latents, context)[-1]
    assert float((with_lora - without).norm() / with_lora.norm()) > 1e-3


def test_t_mod_is_the_time_mlp_of_t0_and_follows_load_and_casts() -> None:
    a, b = random_dit(0), random_dit(1)
    half = TINY.freq_dim // 2
    t0 = torch.cat([torch.ones(1, half), torch.zeros(1, half)], dim=1)  # [cos(0) | sin(0)]
    with torch.no_grad():
        expected = a.time_projection(a.time_embedding(t0)).view(1, 6, TINY.dim)
    torch.testing.assert_close(a.t_mod, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(a.t_mod, b.t_mod)
    b.load_state_dict(a.state_dict())
    # exact by construction: same weights, same kernel, same shapes, same process
    torch.testing.assert_close(b.t_mod, a.t_mod, rtol=0, atol=0)
    # A bf16 round trip recomputes from the (bf16-rounded) weights, in the current dtype.
    c = random_dit(0).to(torch.bfloat16)
    assert c.t_mod.dtype == torch.bfloat16 and c.freqs_cos.dtype == torch.float32
    c = c.float()
    with torch.no_grad():
        expected_c = c.time_projection(c.time_embedding(t0)).view(1, 6, TINY.dim)
    torch.testing.assert_close(c.t_mod, expected_c, rtol=0, atol=0)  # same ops on the same data: exact


def test_rope_split_matches_wan() -> None:
    assert rope_axis_dims(128) == (44, 42, 42)
    assert rope_axis_dims(32) == (12, 10, 10)
    with pytest.raises(ValueError, match="head_dim"):
        rope_axis_dims(15)


def complex_rope_reference(x: torch.Tensor, head_dim: int, grid: tuple[int, int, int], num_heads: int) -> torch.Tensor:
    """Wan's rope_apply written independently: complex128 polar tables, adjacent pairs as complex."""
    def axis(d: int, n: int) -> torch.Tensor:
        freqs = 1.0 / (10000.0 ** (torch.arange(0, d, 2)[: d // 2].double() / d))
        return torch.polar(torch.ones(n, d // 2, dtype=torch.float64), torch.outer(torch.arange(n).double(), freqs))
    f, h, w = grid
    dt, dh, dw = head_dim - 2 * (head_dim // 3), head_dim // 3, head_dim // 3
    table = torch.cat([
        axis(dt, f).view(f, 1, 1, -1).expand(f, h, w, -1),
        axis(dh, h).view(1, h, 1, -1).expand(f, h, w, -1),
        axis(dw, w).view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, 1, -1)
    b, s, _ = x.shape
    xc = torch.view_as_complex(x.double().reshape(b, s, num_heads, -1, 2))
    return torch.view_as_real(xc * table).flatten(2).to(x.dtype)


@pytest.mark.parametrize("head_dim,num_heads,grid", [(32, 2, (1, 4, 5)), (128, 2, (1, 24, 20))])
def test_rope_matches_complex_reference(head_dim: int, num_heads: int, grid: tuple[int, int, int]) -> None:
    s = math.prod(grid)
    x = torch.randn(1, s, num_heads * head_dim, generator=torch.Generator().manual_seed(3))
    cos, sin = rope_tables(head_dim)
    cos_g, sin_g = grid_tables(cos, sin, head_dim, grid)
    ours = apply_rope(x, cos_g, sin_g, num_heads)
    ref = complex_rope_reference(x, head_dim, grid, num_heads)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, x)  # positions > 0 really rotate


def test_patchify_equals_conv3d() -> None:
    dit = random_dit(0)
    latents, _ = inputs()
    tokens, grid = dit.patchify(latents)
    with torch.no_grad():
        ref = dit.patch_embedding(latents.unsqueeze(2))  # (1, dim, 1, 4, 5), the official Conv3d
    assert grid == (1, 4, 5)
    # Conv3d kernel vs our matmul: the same K-term sums, maybe in another order: <= K * eps of the scale.
    k = TINY.in_dim * 4
    torch.testing.assert_close(tokens, ref.flatten(2).transpose(1, 2), rtol=0,
                               atol=k * FP32_EPS * float(ref.abs().max()))
