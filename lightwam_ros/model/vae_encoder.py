"""Wan2.1 VAE encoder for ONE frame, as the exact 2-D network (docs/model.md, "VAE encoder (one frame)").

For a single frame the causal 3-D encoder (``Encoder3d`` in the official ``wan_video_vae.py``) pads
two zero frames in front of every temporal-kernel-3 conv, so only the last temporal tap sees data, and
the ``downsample3d`` blocks skip their time_conv on the first chunk. The encoder is therefore a 2-D CNN
using ``W[:, :, -1]`` of each 3-D kernel: about 3x fewer FLOPs and no 5-D tensors, with the same math.

Keys are the official ``encoder.*`` and ``conv1.*`` names. Loading accepts the official 5-D kernels
(the last temporal tap is kept) and already sliced 4-D ones, accepts RMS gammas as [C,1,1,1] or
[C,1,1], and drops ``*.time_conv.*`` and decoder keys. The stored (and exported) state is 2-D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig
from .derived import DerivedConstantsModule

# Per-channel latent statistics hardcoded in WanVideoVAE.__init__ (valid for the z_dim = 16 VAE only).
LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


class RMSNorm2d(nn.Module):
    """Wan RMS_norm on [B, C, H, W]: F.normalize over channels * sqrt(C) * gamma (no eps in the root)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    """residual = [RMS, SiLU, conv3x3, RMS, SiLU, (dropout), conv3x3]; shortcut = 1x1 conv if widths differ."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm2d(in_dim), nn.SiLU(), nn.Conv2d(in_dim, out_dim, 3, padding=1),
            RMSNorm2d(out_dim), nn.SiLU(), nn.Identity(), nn.Conv2d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = nn.Conv2d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class Resample(nn.Module):
    """Stride-2 3x3 conv after an asymmetric zero pad (right 1, bottom 1): output (i, j) reads rows 2i..2i+2."""

    def __init__(self, dim: int):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W pixels of the frame, width C, full (unmasked)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm2d(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, 1, c * 3, h * w).permute(0, 1, 3, 2)  # (B, 1, HW, 3C)
        q, k, v = qkv.chunk(3, dim=-1)  # each (B, 1, HW, C)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        a = a.squeeze(1).permute(0, 2, 1).reshape(b, c, h, w)  # (B, C, H, W)
        return self.proj(a) + x


class Encoder2d(nn.Module):
    """conv1 -> downsamples (res blocks + stride-2 resamples) -> middle (res, attn, res) -> head."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
        self.conv1 = nn.Conv2d(3, dims[0], 3, padding=1)
        downsamples: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                downsamples.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                downsamples.append(Resample(out_dim))
        self.downsamples = nn.Sequential(*downsamples)
        top = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(top, top), AttentionBlock(top), ResidualBlock(top, top))
        self.head = nn.Sequential(RMSNorm2d(top), nn.SiLU(), nn.Conv2d(top, cfg.z_dim * 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.middle(self.downsamples(self.conv1(x))))


class VAEEncoder(DerivedConstantsModule):
    """Image [B, 3, H, W] in [-1, 1] -> normalised latent mean [B, z_dim, H/8, W/8] (module dtype).

    The latent statistics are float32 constants cast to the module dtype (non-persistent buffers
    ``latent_mean`` / ``latent_inv_std``); in bf16 the normalisation runs in bf16, as upstream.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.z_dim != len(LATENT_MEAN):
            raise ValueError(
                f"model.vae.z_dim must be {len(LATENT_MEAN)}: the latent statistics of the Wan2.1 VAE "
                f"exist only for that width, got {cfg.z_dim}"
            )
        self.cfg = cfg
        self.downsample_factor = 2 ** (len(cfg.dim_mult) - 1)
        self.encoder = Encoder2d(cfg)
        self.conv1 = nn.Conv2d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.register_buffer("latent_mean", torch.empty(0), persistent=False)
        self.register_buffer("latent_inv_std", torch.empty(0), persistent=False)
        self.register_load_state_dict_pre_hook(_accept_official_keys)
        self.refresh_constants()

    @torch.no_grad()
    def refresh_constants(self) -> None:
        ref = self.conv1.weight
        mean = torch.tensor(LATENT_MEAN, dtype=torch.float32)
        inv_std = 1.0 / torch.tensor(LATENT_STD, dtype=torch.float32)  # float32 reciprocal, as upstream
        self.latent_mean = mean.to(device=ref.device, dtype=ref.dtype).view(1, -1, 1, 1)
        self.latent_inv_std = inv_std.to(device=ref.device, dtype=ref.dtype).view(1, -1, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.encoder(image)  # (B, 2*z_dim, H/8, W/8)
        mu = self.conv1(h)[:, : self.cfg.z_dim]  # (B, z_dim, H/8, W/8); log_var is never used
        return (mu - self.latent_mean) * self.latent_inv_std


def _accept_official_keys(module: nn.Module, state_dict: dict, prefix: str, *_args) -> None:
    """Turn an official (3-D) encoder state into the 2-D one, in place, before shapes are checked."""
    own = module.state_dict()
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if ".time_conv." in name or name.startswith(("decoder.", "conv2.")):
            del state_dict[key]  # never used for one frame (time_conv) or by the encoder at all
            continue
        value = state_dict[key]
        target = own.get(name)
        if target is None or value.shape == target.shape:
            continue
        if value.dim() == 5 and target.dim() == 4:
            state_dict[key] = value[:, :, -1]  # the only temporal tap that multiplies the real frame
        elif name.endswith(".gamma") and value.numel() == target.numel():
            state_dict[key] = value.reshape(target.shape)  # [C,1,1,1] (5-D broadcast) -> [C,1,1]
