"""Reusable blocks with no knowledge of any model: norms, MLPs, RoPE, layout masks, KV cache, trunk."""

from umm.nn.adaln import AdaLNModulation, modulate
from umm.nn.attention import Attention
from umm.nn.embeddings import PatchEmbed, TimestepEmbedding, patchify, patchify_video, sinusoidal_embedding, unpatchify
from umm.nn.kv_cache import KVCache
from umm.nn.layout import Layout, Span, attention_mask, build_layout, continue_layout
from umm.nn.mlp import MLP, SwiGLU
from umm.nn.norm import QKNorm, RMSNorm
from umm.nn.precision import autocast
from umm.nn.rope import RotaryEmbedding, apply_rope
from umm.nn.token_lm import TokenLM, TokenLMOutput
from umm.nn.transformer import Block, Transformer, TransformerConfig

__all__ = [
    "AdaLNModulation", "Attention", "Block", "KVCache", "Layout", "MLP", "PatchEmbed", "QKNorm", "RMSNorm",
    "RotaryEmbedding", "Span", "SwiGLU", "TimestepEmbedding", "TokenLM", "TokenLMOutput", "Transformer", "TransformerConfig", "apply_rope",
    "attention_mask", "autocast", "build_layout", "continue_layout", "modulate", "patchify", "patchify_video",
    "sinusoidal_embedding", "unpatchify",
]
