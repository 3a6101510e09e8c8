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
        # The gain in the input's dtype keeps a bf16 activation in bf16 (the statistics accumulate in fp32).
        weight = None if self.weight is None else self.weight.to(x.dtype)
        if x.is_cuda:  # fused kernels, forward and backward
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        return CPURMSNorm.apply(x, weight, self.eps)


class CPURMSNorm(torch.autograd.Function):
    """``F.rms_norm`` with its gradient written out, for CPU.

    torch 2.13 has no CPU backward for the fused RMSNorm, so autograd differentiates its composite (about 15
    elementwise passes over x), and its CPU forward is composite too. Saving the normalised x and the 1/rms
    per row and writing the gradient by hand takes 4 passes forward and 6 backward: MMAR's training step
    (dim 256, depth 6, 13 RMSNorms and 12 QK-norms) is ~7% faster (benchmarks/RESULTS.md). The same function
    to rounding: the statistics are in fp32, the rest in x's dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        stats = torch.promote_types(x.dtype, torch.float32)  # bf16 statistics accumulate in fp32
        # mean(x^2) as a norm: one read of x and no (..., D) temporary
        square_mean = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=stats).square_().div_(x.shape[-1])
        rstd = square_mean.add_(eps).rsqrt_().to(x.dtype)  # (..., 1)
        normed = x * rstd  # (..., D)
        ctx.save_for_backward(normed, rstd, weight)
        return normed if weight is None else normed * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        # y = n * w with n = x * r, r = (mean(x^2) + eps)^-1/2:
        # dL/dx = r * (g_n - n * mean(g_n * n)) with g_n = g * w;  dL/dw = sum over rows of g * n.
        # Both come from one product p = g * n: mean(g_n * n) = p @ w / D, a matrix-vector product with no
        # (..., D) temporary. Every (..., D) temporary is a fresh allocation, which on CPU costs as much as a pass.
        normed, rstd, weight = ctx.saved_tensors
        stats = torch.promote_types(grad.dtype, torch.float32)
        dim = grad.shape[-1]
        grad_weight = None
        if weight is None:
            dot = (grad * normed).to(stats).mean(-1, keepdim=True)  # (..., 1)
            grad_normed = grad.clone()
        else:
            product = grad * normed  # (..., D)
            if ctx.needs_input_grad[1]:
                grad_weight = product.flatten(0, -2).sum(0, dtype=stats).to(weight.dtype)  # (D,)
            dot = (product.to(stats) @ weight.to(stats)).unsqueeze(-1).div_(dim)  # (..., 1)
            grad_normed = torch.mul(grad, weight, out=product)  # reuses p's memory
        grad_x = grad_normed.addcmul_(normed, dot.to(grad.dtype), value=-1).mul_(rstd)
        return grad_x, grad_weight, None


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
