"""VAEEncoder (2-D, one frame) against an independent causal-3-D evaluation of the official network.

The reference below is written from the official Encoder3d / CausalConv3d / Resample / AttentionBlock
semantics (wan_video_vae.py; docs/model.md, "VAE encoder (one frame)"): 5-D kernels, F.conv3d after an explicit
zero pad of two frames in front, per-frame stride-2 resample, downsample3d skipping time_conv on the
first chunk, top-level 1x1x1 conv1, mu = first z_dim channels, (mu - mean) * (1 / std).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightwam_ros.model.config import VAEConfig
from lightwam_ros.model.vae_encoder import LATENT_MEAN, LATENT_STD, VAEEncoder

pytestmark = pytest.mark.numeric

CFG = VAEConfig(dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2)
TEMPORAL_DOWNSAMPLE = (False, True, True)  # VideoVAE_ default: stage 0 is downsample2d


def official_weights(cfg: VAEConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random float64 weights with the official names and 5-D shapes (time_conv included)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, kt: int, k: int) -> None:
        shape = (cout, cin, kt, k, k) if kt else (cout, cin, k, k)
        sd[name + ".weight"] = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(cin * k * k)
        sd[name + ".bias"] = 0.1 * torch.randn(cout, generator=g, dtype=torch.float64)

    def gamma(name: str, c: int, images: bool = False) -> None:
        shape = (c, 1, 1) if images else (c, 1, 1, 1)
        sd[name + ".gamma"] = 1 + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)

    def res(prefix: str, cin: int, cout: int) -> None:
        gamma(f"{prefix}.residual.0", cin)
        conv(f"{prefix}.residual.2", cout, cin, 3, 3)
        gamma(f"{prefix}.residual.3", cout)
        conv(f"{prefix}.residual.6", cout, cout, 3, 3)
        if cin != cout:
            conv(f"{prefix}.shortcut", cout, cin, 1, 1)

    dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
    conv("encoder.conv1", dims[0], 3, 3, 3)
    idx = 0
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(cfg.num_res_blocks):
            res(f"encoder.downsamples.{idx}", cin, cout)
            cin, idx = cout, idx + 1
        if i != len(cfg.dim_mult) - 1:
            conv(f"encoder.downsamples.{idx}.resample.1", cout, cout, 0, 3)
            if TEMPORAL_DOWNSAMPLE[i]:
                conv(f"encoder.downsamples.{idx}.time_conv", cout, cout, 3, 1)
            idx += 1
    top = dims[-1]
    res("encoder.middle.0", top, top)
    gamma("encoder.middle.1.norm", top, images=True)
    conv("encoder.middle.1.to_qkv", 3 * top, top, 0, 1)
    conv("encoder.middle.1.proj", top, top, 0, 1)  # non-zero, unlike the constructor's init
    res("encoder.middle.2", top, top)
    gamma("encoder.head.0", top)
    conv("encoder.head.2", 2 * cfg.z_dim, top, 3, 3)
    conv("conv1", 2 * cfg.z_dim, 2 * cfg.z_dim, 1, 1)
    return sd


def causal_3d_reference(sd: dict[str, torch.Tensor], cfg: VAEConfig, image: torch.Tensor) -> torch.Tensor:
    """Evaluate the causal 3-D encoder on a 1-frame clip, literally (5-D tensors throughout)."""

    def causal_conv(x: torch.Tensor, name: str) -> torch.Tensor:
        w = sd[name + ".weight"]
        p = w.shape[-1] // 2
        x = F.pad(x, (p, p, p, p, 2 * (w.shape[2] // 2), 0))  # W, H, then T: 2*p_t zero frames in front
        return F.conv3d(x, w, sd[name + ".bias"])

    def rms(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.normalize(x, dim=1) * x.shape[1] ** 0.5 * sd[name + ".gamma"]

    def per_frame(x: torch.Tensor, fn) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = fn(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)

    def res(x: torch.Tensor, prefix: str) -> torch.Tensor:
        h = causal_conv(x, f"{prefix}.shortcut") if f"{prefix}.shortcut.weight" in sd else x
        r = causal_conv(F.silu(rms(x, f"{prefix}.residual.0")), f"{prefix}.residual.2")
        r = causal_conv(F.silu(rms(r, f"{prefix}.residual.3")), f"{prefix}.residual.6")
        return r + h

    def attn(x: torch.Tensor, prefix: str) -> torch.Tensor:
        def frame(y: torch.Tensor) -> torch.Tensor:
            n, c, h, w = y.shape
            z = F.normalize(y, dim=1) * c**0.5 * sd[prefix + ".norm.gamma"]
            qkv = F.conv2d(z, sd[prefix + ".to_qkv.weight"], sd[prefix + ".to_qkv.bias"])
            q, k, v = qkv.reshape(n, 1, 3 * c, h * w).permute(0, 1, 3, 2).chunk(3, dim=-1)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c), dim=-1) @ v
            a = a.squeeze(1).permute(0, 2, 1).reshape(n, c, h, w)
            return F.conv2d(a, sd[prefix + ".proj.weight"], sd[prefix + ".proj.bias"]) + y
        return per_frame(x, frame)

    x = causal_conv(image.unsqueeze(2), "encoder.conv1")  # (B, C, 1, H, W)
    idx = 0
    for i in range(len(cfg.dim_mult)):
        for _ in range(cfg.num_res_blocks):
            x, idx = res(x, f"encoder.downsamples.{idx}"), idx + 1
        if i != len(cfg.dim_mult) - 1:
            name = f"encoder.downsamples.{idx}.resample.1"
            # per_frame calls the lambda at once, with this iteration's name
            x = per_frame(x, lambda y: F.conv2d(F.pad(y, (0, 1, 0, 1)),
                                                sd[name + ".weight"], sd[name + ".bias"], stride=2))  # noqa: B023
            idx += 1  # downsample3d: first chunk caches and skips time_conv
    x = res(x, "encoder.middle.0")
    x = attn(x, "encoder.middle.1")
    x = res(x, "encoder.middle.2")
    x = causal_conv(F.silu(rms(x, "encoder.head.0")), "encoder.head.2")
    mu = causal_conv(x, "conv1")[:, : cfg.z_dim]
    mean = torch.tensor(LATENT_MEAN, dtype=torch.float32).to(mu.dtype).view(1, -1, 1, 1, 1)
    inv_std = (1.0 / torch.tensor(LATENT_STD, dtype=torch.float32)).to(mu.dtype).view(1, -1, 1, 1, 1)
    return ((mu - mean) * inv_std)[:, :, 0]


@pytest.mark.parametrize("hw", [(64, 48), (32, 80)])
def test_2d_encoder_equals_causal_3d_reference(hw: tuple[int, int]) -> None:
    sd = official_weights(CFG, seed=7)
    image = torch.rand(1, 3, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    vae = VAEEncoder(CFG).double()
    vae.load_state_dict(sd, strict=True)  # 5-D kernels, [C,1,1,1] gammas and time_conv keys accepted
    with torch.no_grad():
        ours = vae(image)
    ref = causal_3d_reference(sd, CFG, image)
    assert ours.shape == (1, 16, hw[0] // 8, hw[1] // 8)
    # float64 (eps 2.2e-16): any summation order stays ~1e6 times below 1e-10; a wrong kernel slice is O(1)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_stored_state_is_2d_and_reloads() -> None:
    vae = VAEEncoder(CFG).double()
    vae.load_state_dict(official_weights(CFG, seed=7))
    sd = vae.state_dict()
    assert sd["encoder.conv1.weight"].shape == (8, 3, 3, 3)
    assert sd["encoder.downsamples.0.residual.0.gamma"].shape == (8, 1, 1)
    assert sd["conv1.weight"].shape == (32, 32, 1, 1)
    assert not any("time_conv" in k for k in sd)
    torch.testing.assert_close(sd["encoder.head.2.weight"],
                               official_weights(CFG, seed=7)["encoder.head.2.weight"][:, :, -1])
    other = VAEEncoder(CFG).double()
    other.load_state_dict(sd, strict=True)
    image = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():  # same weights, same kernels, same shapes, same process: exact by construction
        torch.testing.assert_close(other(image), vae(image), rtol=0, atol=0)


def test_latent_statistics_follow_the_dtype_as_upstream() -> None:
    """The fp32 constants cast to bf16 (docs/model.md, "VAE encoder (one frame)"), never 1/std computed from a bf16 std.

    Exact comparisons: a cast rounds correctly on every CPU, and 1/std is one fp32 division."""
    vae = VAEEncoder(CFG).to(torch.bfloat16)
    mean, inv_std = vae.latent_mean.flatten().tolist(), vae.latent_inv_std.flatten().tolist()
    assert (mean[0], inv_std[0]) == (-0.7578125, 0.35546875)
    assert (mean[7], inv_std[7]) == (1.5546875, 0.482421875)
    assert (mean[14], inv_std[14]) == (0.25, 0.353515625)
    assert (mean[15], inv_std[15]) == (-0.29296875, 0.5234375)
    vae = vae.float()  # recomputed from the float32 recipe, not widened from bf16
    assert vae.latent_inv_std.flatten()[0].item() == pytest.approx(1 / 2.8184, rel=1e-7)


def test_rejects_a_latent_width_without_statistics() -> None:
    with pytest.raises(ValueError, match="z_dim"):
        VAEEncoder(VAEConfig(dim=8, z_dim=8))
