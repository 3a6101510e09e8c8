"""Multi-head self-attention over ``F.scaled_dot_product_attention`` with a boolean layout mask.

FlexAttention has no backward on CPU (torch 2.13), and SDPA with a boolean mask runs as fast as
``is_causal`` there (reference/env_probe.md sec. 3), so one code path serves every layout on CPU and GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from umm.nn.kv_cache import LayerCache
from umm.nn.norm import QKNorm
from umm.nn.rope import apply_rope


class Attention(nn.Module):
    """Self-attention with optional grouped KV heads, QK-norm and RoPE."""

    def __init__(self, dim: int, heads: int, kv_heads: int | None = None, qk_norm: bool = True):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} is not divisible by heads {heads}"
        self.heads = heads
        self.kv_heads = kv_heads or heads
        assert heads % self.kv_heads == 0, f"heads {heads} must be a multiple of kv_heads {self.kv_heads}"
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, (heads + 2 * self.kv_heads) * self.head_dim, bias=False)
        self.out = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.qk_norm = QKNorm(self.head_dim) if qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, self.heads + 2 * self.kv_heads, self.head_dim).transpose(1, 2)
        query, key, value = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=1)  # (B, h, T, Dh)
        if self.qk_norm is not None:
            query, key = self.qk_norm(query, key)
        if rope is not None:
            query, key = apply_rope(query, *rope), apply_rope(key, *rope)
        if cache is not None:
            key, value = cache.write(key, value)  # (B, kv_h, T_cached + T, Dh)
        out = F.scaled_dot_product_attention(
            query, key.to(query.dtype), value.to(query.dtype), attn_mask=mask, enable_gqa=self.kv_heads != self.heads
        )
        return self.out(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))
