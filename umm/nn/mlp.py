"""Feed-forward blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden(dim: int, mlp_ratio: float, multiple_of: int = 16) -> int:
    """Hidden width of a SwiGLU MLP: ``mlp_ratio * dim`` rounded up to a multiple (for matmul tiles)."""
    hidden = int(mlp_ratio * dim)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): ``down(silu(gate(x)) * up(x))``.

    ``gate`` and ``up`` are one fused matmul: on a 2-core CPU one (D, 2H) matmul is measurably cheaper
    than two (D, H) ones.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class GELUFeedForward(nn.Module):
    """The GPT-2 / ViT feed-forward ``down(gelu(up(x)))``, without biases like :class:`SwiGLU`.

    MAR's blocks (timm ViT, Li et al. 2024) and autoregressive-diffusion-pytorch's decoder (x-transformers) use it.
    At hidden = 4 * dim it has the parameters and FLOPs of a SwiGLU at 8/3 * dim, one matmul output and one
    activation fewer: on one CPU thread the GELU, unlike SwiGLU's SiLU on a strided gate half and its product,
    costs ~3 ms a layer against ~7 (d256, 68 slots, batch 32; benchmarks/RESULTS.md, "MMAR vs
    autoregressive-diffusion-pytorch").
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class MLP(nn.Module):
    """Plain two-layer GELU MLP, for projectors and small heads."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
