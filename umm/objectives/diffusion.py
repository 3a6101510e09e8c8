"""Diffusion regression loss: MSE between the network output and the path's target, on chosen tokens."""

from __future__ import annotations

import torch


def diffusion_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the latent dims, averaged over tokens where ``mask`` (B, N) is True.

    output/target (B, N, C). Averaging per token (not per element of the whole batch) keeps the loss scale
    independent of how many image tokens a batch happens to carry.
    """
    per_token = (output.float() - target.float()).pow(2).mean(-1)  # (B, N)
    if mask is None:
        return per_token.mean()
    if not mask.any():
        return per_token.sum() * 0.0
    return per_token[mask].mean()
