"""Rotary position embedding (Su et al. 2021) over 1, 2 or 3 position axes.

Positions are a (B, T, A) integer tensor: A = 1 is plain 1D RoPE; A = 2 / 3 split the head dimension into
A equal sections, each rotated by one coordinate (row, column; or time, row, column), as in Qwen2-VL's
M-RoPE. Text tokens carry the same value on every axis, so a multi-axis model still reads text exactly
like a 1D one, while image/video patches know their place on the grid.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, axes: int = 1, theta: float = 10000.0):
        super().__init__()
        assert head_dim % (2 * axes) == 0, f"head_dim {head_dim} must be divisible by 2 * axes ({2 * axes})"
        self.axes = axes
        section = head_dim // (2 * axes)  # rotation pairs per axis
        inv_freq = 1.0 / theta ** (torch.arange(section, dtype=torch.float32) / section)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T, A) -> cos, sin each (B, 1, T, head_dim / 2), float32."""
        assert positions.shape[-1] == self.axes, f"positions have {positions.shape[-1]} axes, RoPE expects {self.axes}"
        # (B, T, A, 1) * (S,) -> (B, T, A, S) -> (B, T, A*S): axis a owns pairs [a*S, (a+1)*S)
        angles = positions.float()[..., None] * self.inv_freq
        angles = angles.flatten(-2)[:, None]
        return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, Dh) by the angles in cos/sin (B, 1, T, Dh/2); pairs are (i, i + Dh/2).

    The angles are computed in fp32 (RotaryEmbedding) and the rotation runs in x's dtype: under bf16
    autocast that avoids two full-size casts per call, at bf16's ~3-digit precision on already-bf16 q/k.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return Rotate.apply(x, cos, sin)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(first, second) -> (first cos - second sin, second cos + first sin), written into one new tensor."""
    first, second = x.chunk(2, dim=-1)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out_first, out_second = out.chunk(2, dim=-1)
    torch.mul(first, cos, out=out_first).addcmul_(second, sin, value=-1)
    torch.mul(second, cos, out=out_second).addcmul_(first, sin)
    return out


class Rotate(torch.autograd.Function):
    """RoPE's rotation with its gradient written out: the gradient of a rotation by angle a is the rotation
    of the incoming gradient by -a. Autograd through the four products, two sums and the concatenation
    takes about twice the passes over q and k, forward and backward; with this, MMAR's CPU training step
    (dim 256, depth 6) is ~3% faster (benchmarks/RESULTS.md, "MMAR vs autoregressive-diffusion-pytorch").
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return rotate(grad, cos, -sin), None, None
