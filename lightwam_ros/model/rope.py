"""Wan 3-D rotary position embedding as real cos/sin tables (no complex dtype, export-friendly).

The official code (wan_video_dit.py, ``precompute_freqs_cis_3d`` / ``rope_apply``) builds complex128
tables and rotates q/k in float64. Here the angles are computed once in float64 and stored as float32
cos/sin tables on the module's device; the rotation runs in float32. For bf16 activations the result
is identical after the final bf16 rounding except at rare rounding ties; in float32 the difference is
one float32 rounding (~1e-7 relative). This keeps float64 and complex numbers out of the ONNX graph.
"""

from __future__ import annotations

import torch

ROPE_THETA = 10000.0
ROPE_MAX_POSITIONS = 1024  # table length of the official precompute


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real widths of the [time | height | width] parts of one head: 44/42/42 for head_dim 128.

    Wan's split is d - 4*(d//6), 2*(d//6), 2*(d//6). The Light-WAM code writes it as
    d - 2*(d//3), d//3, d//3, which is the same whenever that code runs at all (d//3 even).
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"RoPE needs an even head_dim >= 6, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(axis_dim: int, max_positions: int) -> torch.Tensor:
    """[max_positions, axis_dim // 2] float64 angles pos / theta^(2j / axis_dim)."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, axis_dim, 2, dtype=torch.float64)[: axis_dim // 2] / axis_dim))
    return torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)


def rope_tables(head_dim: int, max_positions: int = ROPE_MAX_POSITIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each [max_positions, head_dim // 2] float32, columns [time | height | width] pairs.

    Row p of the time columns holds position p on the time axis, and likewise for height and width,
    so a token (f, h, w) reads row f of the time part, row h of the height part, row w of the width part.
    """
    angles = torch.cat([_axis_angles(d, max_positions) for d in rope_axis_dims(head_dim)], dim=1)
    return torch.cos(angles).float(), torch.sin(angles).float()


def grid_tables(
    cos: torch.Tensor, sin: torch.Tensor, head_dim: int, grid: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cos/sin [S, 1, head_dim // 2] for tokens in row-major (f, h, w) order.

    Pure slicing/expansion of the device tables: no host->device copy per call.
    """
    f, h, w = grid
    pt, ph, pw = (d // 2 for d in rope_axis_dims(head_dim))
    if max(f, h, w) > cos.shape[0]:
        raise ValueError(f"latent grid {grid} exceeds the RoPE table length {cos.shape[0]}")

    def expand(table: torch.Tensor) -> torch.Tensor:
        parts = [
            table[:f, :pt].view(f, 1, 1, pt).expand(f, h, w, pt),
            table[:h, pt : pt + ph].view(1, h, 1, ph).expand(f, h, w, ph),
            table[:w, pt + ph : pt + ph + pw].view(1, 1, w, pw).expand(f, h, w, pw),
        ]
        return torch.cat(parts, dim=-1).reshape(f * h * w, 1, pt + ph + pw)

    return expand(cos), expand(sin)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of each head of x [B, S, N*D] by the per-token angles.

    Computed in float32 (the reference uses float64), returned in x's dtype.
    """
    b, s, width = x.shape
    xf = x.float().view(b, s, num_heads, width // num_heads // 2, 2)  # (B, S, N, D/2, 2)
    xr, xi = xf[..., 0], xf[..., 1]  # (B, S, N, D/2)
    out = torch.stack((xr * cos - xi * sin, xr * sin + xi * cos), dim=-1)  # (B, S, N, D/2, 2)
    return out.flatten(2).to(x.dtype)  # (B, S, N*D)
