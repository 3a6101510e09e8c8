"""AdamW with decoupled weight decay on matrices only, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """Decay 2-D+ weights (matmuls, embeddings); leave gains, biases and scalars (logit scales) undecayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def lr_at(progress: float, step: int, warmup_steps: int, base_lr: float, min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from ``base_lr`` down to ``min_lr_ratio * base_lr``.

    ``progress`` in [0, 1] is the fraction of the run done (by steps, or by wall-clock for budgeted runs).
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)
