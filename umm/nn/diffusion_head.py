"""MAR's per-token diffusion head (Li et al. 2024, "Autoregressive Image Generation without Vector
Quantization", arXiv 2406.11838, sec. 3.2 and fig. 2).

A transformer outputs one vector z per image position; a *small* MLP then models p(x | z) for that
position's continuous token x by denoising: it reads the noisy token x_t, the diffusion time t and z, and
predicts the path's target (eps or v). The MLP is a stack of residual blocks whose LayerNorms are modulated
by c = embed(t) + proj(z) (AdaLN, as in DiT); the paper shows a head of a few blocks suffices because the
transformer does the heavy lifting, and the head only spreads a token's distribution around what z says.

Every leading dimension is a batch dimension: x (..., C), t (...), z (..., Dz) -> (..., C).
"""

from __future__ import annotations

import torch
from torch import nn

from umm.nn.adaln import AdaLNModulation, modulate
from umm.nn.embeddings import TimestepEmbedding


class HeadBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)): MAR's ``ResBlock`` with AdaLN-zero modulation."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = AdaLNModulation(width, width, 3)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(cond)  # each (R, 1, W)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class DiffusionHead(nn.Module):
    """Denoiser of one continuous token conditioned on the transformer's output at its position."""

    def __init__(self, channels: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.channels = channels
        self.input_proj = nn.Linear(channels, width)
        self.time_embed = TimestepEmbedding(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(HeadBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = AdaLNModulation(width, width, 2)
        self.out = nn.Linear(width, channels)
        for module in self.modules():
            if isinstance(module, nn.Linear) and not getattr(module, "_umm_zero_init", False):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # predict 0 at init: the mean of both the eps and the v target
        nn.init.zeros_(self.out.weight)
        self.out._umm_zero_init = True

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x (..., C) noisy tokens, t (...) their times in [0, 1], z (..., Dz) conditions -> (..., C).

        z may broadcast against x's leading dims: training passes one z per token, (M, 1, Dz), for its K noise
        draws (M, K, C), and z's projection then runs once per token, not once per draw."""
        lead = x.shape[:-1]
        assert t.shape == lead and torch.broadcast_shapes(z.shape[:-1], lead) == lead, \
            f"x {tuple(x.shape)}, t {tuple(t.shape)}, z {tuple(z.shape)}"
        # rows as (R, 1, .): AdaLNModulation reads a 3-D condition per token, which each row is
        cond = self.time_embed(t) + self.cond_embed(z)  # (..., W)
        x, cond = x.reshape(-1, 1, x.shape[-1]), cond.reshape(-1, 1, cond.shape[-1])  # (R, 1, C), (R, 1, W)
        h = self.input_proj(x)  # (R, 1, W)
        for block in self.blocks:
            h = block(h, cond)
        shift, scale = self.final_modulation(cond)
        return self.out(modulate(self.final_norm(h), shift, scale)).reshape(*lead, self.channels)
