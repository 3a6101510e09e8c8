"""Adaptive layer norm (AdaLN / AdaLN-zero, Peebles & Xie 2023 "DiT")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift``; shift/scale broadcast as (B, 1, D) per sample or (B, T, D) per token."""
    return x * (1 + scale) + shift


class AdaLNModulation(nn.Module):
    """Maps a conditioning vector to ``chunks`` modulation tensors of width ``dim``.

    The projection is zero-initialised (DiT's "adaLN-zero"), so at init every modulated block is the
    identity and the conditioning is learned in gradually.
    """

    def __init__(self, cond_dim: int, dim: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.proj = nn.Linear(cond_dim, chunks * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.proj._umm_zero_init = True  # generic weight init (transformer.init_weights) leaves it at zero

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # cond: (B, C) -> each chunk (B, 1, D); or (B, T, C) -> each chunk (B, T, D)
        if cond.ndim == 2:
            cond = cond[:, None, :]
        return self.proj(F.silu(cond)).chunk(self.chunks, dim=-1)
