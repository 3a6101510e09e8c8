"""Normalisation layers: RMSNorm and the per-head QK-norm used by Chameleon (and Show-o's QK-LayerNorm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): no mean subtraction, learnable gain only."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The gain in the input's dtype lets bf16 activations take the fused kernel (it accumulates in fp32).
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)


class QKNorm(nn.Module):
    """RMS-normalise queries and keys per head before the dot product.

    Chameleon (Team 2024, sec. 2.3) found the logit drift of mixed-modal training comes from query/key norms
    growing without bound; normalising them keeps the softmax from saturating.
    """

    def __init__(self, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.query_norm = RMSNorm(head_dim, eps)
        self.key_norm = RMSNorm(head_dim, eps)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(query), self.key_norm(key)
