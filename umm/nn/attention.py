"""Multi-head self-attention with a boolean layout mask.

FlexAttention has no backward on CPU (torch 2.13), so every layout is a boolean mask. On GPUs the mask
goes to ``F.scaled_dot_product_attention`` (fused kernels). On CPU the attention is written out
(scores in fp32, softmax, weighted sum): at umm's sequence lengths (64-300 tokens) that is 2-3x faster
than SDPA's CPU flash kernel for forward + backward, whose backward dominates (measured with bf16, B32 H4
Dh64: T=84 17 ms vs 37 ms; T=260 111 ms vs 152 ms; scripts in benchmarks/attention_cpu.py).
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
        key, value = key.to(query.dtype), value.to(query.dtype)
        if query.is_cuda:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=self.kv_heads != self.heads)
        else:
            out = explicit_attention(query, key, value, mask)
        return self.out(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


def explicit_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) masked) V with the scores and softmax in fp32. query (B, H, Tq, Dh); key/value
    (B, Hkv, Tk, Dh) with H a multiple of Hkv (grouped-query attention); mask (B, 1, Tq, Tk) bool."""
    if key.shape[1] != query.shape[1]:
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    # scale and mask in place on the fresh fp32 scores: two passes over (B, H, Tq, Tk) fewer than out of place
    scores = (query @ key.transpose(-1, -2)).float().mul_(query.shape[-1] ** -0.5)  # (B, H, Tq, Tk)
    scores.masked_fill_(~mask, float("-inf"))
    return scores.softmax(-1).to(value.dtype) @ value
