"""The shared transformer trunk: pre-norm blocks (RMSNorm, attention, SwiGLU or GELU MLP), optional AdaLN.

The trunk takes embedded tokens and a :class:`~umm.nn.layout.Layout` and returns normalised hidden
states; embeddings and output heads belong to each system, which is what lets one trunk serve causal LMs,
diffusion transformers, masked-token models and encoders alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from umm.nn.adaln import AdaLNModulation, modulate
from umm.nn.attention import Attention
from umm.nn.kv_cache import KVCache, LayerCache
from umm.nn.layout import Layout, attention_mask
from umm.nn.mlp import GELUFeedForward, SwiGLU, swiglu_hidden
from umm.nn.norm import RMSNorm
from umm.nn.rope import RotaryEmbedding


@dataclass(frozen=True)
class TransformerConfig:
    dim: int = 256
    depth: int = 6
    heads: int = 4
    kv_heads: int | None = None  # grouped-query attention when < heads (EMU3 uses 8 KV heads)
    mlp_ratio: float = 8 / 3  # SwiGLU hidden = mlp_ratio * dim, ~ the FLOPs of a 4x GELU MLP
    # "swiglu": LLaMA's feed-forward (Chameleon, EMU3, MMAR's Qwen2). "gelu": the GPT-2 / ViT one of MAR's blocks,
    # at hidden 1.5 * mlp_ratio * dim (4 * dim by default: the SwiGLU's parameters and FLOPs)
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    qk_norm: bool = True
    rope_axes: int = 1  # 1: 1D RoPE; 2: (row, col) for image grids; 3: (time, row, col) for video
    rope_theta: float = 10000.0
    cond_dim: int = 0  # > 0: every block is AdaLN-zero modulated by a conditioning vector (DiT)
    # the bias of the AdaLN gates at init. 0: adaLN-Zero, every block starts as the identity (DiT sec. 3.2).
    # 1: every block starts as the plain pre-norm block, and the condition learns to modulate it (DiT's "adaLN"
    # block plus a learned gate). In a trunk shared with text, where text slots read a zero condition, 0 also
    # starts the language model's blocks as the identity (RESULTS.md, "AdaLN's gates and the captioner")
    adaln_gate_init: float = 0.0
    final_adaln: bool = False  # AdaLN on the final norm only (DiT's final layer: the multi-expert image decoder)


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        dim = config.dim
        adaln = config.cond_dim > 0
        self.attn_norm = RMSNorm(dim, affine=not adaln)
        self.attn = Attention(dim, config.heads, config.kv_heads, config.qk_norm)
        self.mlp_norm = RMSNorm(dim, affine=not adaln)
        if config.mlp == "gelu":
            self.mlp = GELUFeedForward(dim, swiglu_hidden(dim, 1.5 * config.mlp_ratio))
        else:
            self.mlp = SwiGLU(dim, swiglu_hidden(dim, config.mlp_ratio))
        self.modulation = AdaLNModulation(config.cond_dim, dim, 6) if adaln else None
        if adaln and config.adaln_gate_init:
            with torch.no_grad():  # chunks: shift1, scale1, gate1, shift2, scale2, gate2
                self.modulation.proj.bias.view(6, dim)[[2, 5]] = config.adaln_gate_init

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: LayerCache | None,
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.modulation is None:
            x = x + self.attn(self.attn_norm(x), mask, rope, cache)
            return x + self.mlp(self.mlp_norm(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)
        x = x + gate1 * self.attn(modulate(self.attn_norm(x), shift1, scale1), mask, rope, cache)
        return x + gate2 * self.mlp(modulate(self.mlp_norm(x), shift2, scale2))


class Transformer(nn.Module):
    """A stack of :class:`Block` over an embedded sequence; returns normalised hidden states (B, T, D)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.rope = RotaryEmbedding(config.dim // config.heads, config.rope_axes, config.rope_theta)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = RMSNorm(config.dim, affine=not config.final_adaln)
        self.final_modulation = AdaLNModulation(config.cond_dim or config.dim, config.dim, 2) if config.final_adaln else None
        self.gradient_checkpointing = False
        self.apply(init_weights)
        # GPT-2: scale residual output projections by 1/sqrt(2 * depth) so the residual stream's variance
        # does not grow with depth at init.
        for name, p in self.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.depth))

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu") -> KVCache:
        return KVCache(self.config.depth, batch, max_len, device)

    def forward(
        self,
        x: torch.Tensor,
        layout: Layout,
        cache: KVCache | None = None,
        commit: bool = True,
        cond: torch.Tensor | None = None,
        final_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D) embedded tokens laid out by ``layout`` -> hidden states (B, T, D).

        With a ``cache``, ``x`` is the chunk that follows the cached prefix; its keys/values are written after
        it and, if ``commit``, kept. ``cond`` (B, C) or (B, T, C) modulates every block when ``cond_dim`` > 0;
        ``final_cond`` modulates the final norm when ``final_adaln``.
        """
        offset = 0 if cache is None else cache.length
        if cache is None:
            key_block, key_valid = layout.block, layout.valid
        else:
            key_block, key_valid = cache.write_layout(layout.block, layout.valid)
        mask = attention_mask(layout.block, key_block, key_valid, offset)
        rope = self.rope(layout.positions)
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache.layers[i]
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, mask, rope, layer_cache, cond, use_reentrant=False)
            else:
                x = block(x, mask, rope, layer_cache, cond)
        if cache is not None and commit:
            cache.commit(x.shape[1])
        x = self.norm(x)
        if self.final_modulation is not None:
            assert final_cond is not None, "final_adaln=True needs final_cond"
            shift, scale = self.final_modulation(final_cond)
            x = modulate(x, shift, scale)
        return x


def init_weights(module: nn.Module) -> None:
    """GPT-2 style init for linear and embedding layers; AdaLN projections keep their zero init."""
    if isinstance(module, AdaLNModulation):
        return
    if isinstance(module, nn.Linear) and not getattr(module, "_umm_zero_init", False):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
