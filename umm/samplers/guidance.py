"""Classifier-free guidance (Ho & Salimans 2022) in the forms the surveyed systems use."""

from __future__ import annotations

import torch


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond); scale 1 returns ``cond`` exactly (no guidance)."""
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def muse_cfg(cond: torch.Tensor, uncond: torch.Tensor, s: float) -> torch.Tensor:
    """(1 + s) * cond - s * uncond (MUSE, Show-o); s = 0 is no guidance. Equals ``cfg`` with scale 1 + s."""
    return cfg(cond, uncond, 1.0 + s)


def three_way_cfg(full: torch.Tensor, image_only: torch.Tensor, uncond: torch.Tensor, text_scale: float,
                  image_scale: float) -> torch.Tensor:
    """Chameleon's InstructPix2Pix-style guidance with separate text and image scales:
    uncond + s_img * (image_only - uncond) + s_txt * (full - image_only)."""
    return uncond + image_scale * (image_only - uncond) + text_scale * (full - image_only)


def linear_cfg_scale(scale: float, progress: float) -> float:
    """MAR's linear schedule: guidance grows from 1 to ``scale`` as generation proceeds (progress in [0, 1])."""
    return 1.0 + (scale - 1.0) * progress
