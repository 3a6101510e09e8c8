"""Regression alignment between two embedding spaces: the survey's L2 cross-modal alignment loss.

Where contrastive losses need negatives, an alignment loss pulls a prediction straight onto a target:
NExT-GPT's output projector regresses the decoder's own text condition with an L2 loss (Wu et al. 2023,
arXiv 2309.05519 sec. 4.2), SEED-X regresses image-encoder features with MSE (Ge et al. 2024,
arXiv 2404.14396 sec. 3.1, weight 6). As an option of ImageBind/UniBind it pulls paired unit vectors
together; with unit vectors ||a - b||^2 = 2 - 2 cos(a, b), so it is the positive half of InfoNCE without
the negatives (and can collapse if nothing else pushes embeddings apart: use it beside a contrastive term).
"""

from __future__ import annotations

import torch


def l2_alignment_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows of the squared L2 distance ||prediction - target||^2; (..., D) each.

    ``mask`` (...,) bool keeps only some rows (e.g. the signal tokens of a sequence). The target is not
    detached: pass ``target.detach()`` when it comes from a frozen model.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"alignment needs matching shapes, got {tuple(prediction.shape)} and {tuple(target.shape)}")
    distance = (prediction.float() - target.float()).pow(2).sum(-1)  # (...,)
    if mask is None:
        return distance.mean()
    if mask.shape != distance.shape:
        raise ValueError(f"alignment mask {tuple(mask.shape)} does not match rows {tuple(distance.shape)}")
    return (distance * mask).sum() / mask.sum().clamp_min(1)


def mse_alignment_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per element (SEED-X's feature regression): the L2 loss divided by D."""
    return l2_alignment_loss(prediction, target, mask) / prediction.shape[-1]


def cosine_alignment_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos(prediction, target), averaged over rows (SEED-X's alternative to MSE)."""
    cos = torch.nn.functional.cosine_similarity(prediction.float(), target.float(), dim=-1)
    return (1 - cos).mean()
