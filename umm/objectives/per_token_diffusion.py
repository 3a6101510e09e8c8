"""MAR's per-token diffusion loss (Li et al. 2024, arXiv 2406.11838, sec. 3.2, eq. 2).

Each target token x (C,) is noised ``mul`` times, each with its own time and noise (MAR's
``diffusion_batch_mul = 4``): the head is small and cheap next to the transformer that produced z, so
several draws per z cost little and lower the variance of the gradient reaching the transformer. The loss
is the mean squared error between the head's output and the path's target (eps, or v as MMAR prefers,
arXiv 2410.10798 sec. 3.3), averaged over tokens and draws.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from umm.objectives.diffusion import diffusion_loss
from umm.paths import GaussianPath


class NoiseDraws(NamedTuple):
    x_t: torch.Tensor  # (M, K, C) noisy copies of each token
    t: torch.Tensor  # (M, K) their times
    target: torch.Tensor  # (M, K, C) what the head should output at (x_t, t)


def draw_noise(x0: torch.Tensor, path: GaussianPath, mul: int, generator: torch.Generator) -> NoiseDraws:
    """``mul`` independent (time, noise) draws for each of the M clean tokens x0 (M, C)."""
    if mul < 1:
        raise ValueError(f"diffusion_batch_mul must be >= 1, got {mul}")
    x0 = x0.float()[:, None, :].expand(-1, mul, -1)  # (M, K, C)
    t = path.sample_time(x0.shape[:2], generator, x0.device)  # (M, K)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    return NoiseDraws(path.add_noise(x0, noise, t), t, path.target(x0, noise, t))


def per_token_diffusion_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over tokens and draws of the per-token MSE; output/target (M, K, C). 0 (with a graph) if M = 0."""
    if output.shape != target.shape:
        raise ValueError(f"head output {tuple(output.shape)} and target {tuple(target.shape)} differ")
    if output.numel() == 0:
        return output.sum() * 0.0
    return diffusion_loss(output, target)
