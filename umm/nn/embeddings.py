"""Patch and timestep embeddings, and the (un)patchify reshapes they rely on."""

from __future__ import annotations

import math

import torch
from torch import nn


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p), patches in raster order."""
    b, c, h, w = images.shape
    assert h % patch == 0 and w % patch == 0, f"image {h}x{w} is not divisible by patch {patch}"
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(tokens: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """(B, N, C*p*p) -> (B, C, H, W); the inverse of :func:`patchify`."""
    b = tokens.shape[0]
    gh, gw = height // patch, width // patch
    x = tokens.reshape(b, gh, gw, channels, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, height, width)


def patchify_video(video: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T/t * H/p * W/p, t*C*p*p): space-time patches (ViViT "tubelets")."""
    b, t, c, h, w = video.shape
    assert t % tubelet == 0, f"{t} frames are not divisible by tubelet {tubelet}"
    x = video.reshape(b, t // tubelet, tubelet, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 1, 4, 6, 2, 3, 5, 7)
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * c * patch * patch)


class PatchEmbed(nn.Module):
    """Linear embedding of flattened patches: (B, N, C*p*p) -> (B, N, D)."""

    def __init__(self, patch_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(patch_dim, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.proj(patches)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of a (possibly fractional) scalar per element: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """Diffusion time -> vector (DiT): sinusoidal features of ``t * scale`` through a 2-layer MLP.

    ``t`` is in [0, 1] for every path in umm; ``scale=1000`` spreads it over the frequencies the way
    integer DDPM steps do.
    """

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: (B,) or (B, T) -> (B, D) or (B, T, D)
        return self.mlp(sinusoidal_embedding(t * self.scale, self.freq_dim))
