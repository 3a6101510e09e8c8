"""A decoder over one discrete vocabulary: embedding -> trunk -> head.

Chameleon, EMU3, Show-o and LaVIT share this network exactly (text tokens and image codes in one vocabulary,
Chameleon's "early fusion"); what differs between them is the vocabulary layout, the attention layout
(causal everywhere, or Show-o's omni-attention) and the objective, all of which live in each system's file.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import nn

from umm.nn.layout import Layout
from umm.nn.transformer import Transformer, TransformerConfig


class TokenLMConfig(Protocol):
    transformer: TransformerConfig

    @property
    def vocab_size(self) -> int: ...


class TokenLMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V) logits over the whole vocabulary at every position


class TokenLM(nn.Module):
    """Subclasses set ``config_class`` and register the architecture under their family's name."""

    def __init__(self, config: TokenLMConfig):
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.embed = nn.Embedding(config.vocab_size, dim)
        self.trunk = Transformer(config.transformer)
        self.head = nn.Linear(dim, config.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, layout: Layout, cache=None, commit: bool = True) -> TokenLMOutput:
        """tokens (B, T) -> logits (B, T, V); the layout decides who attends to whom."""
        return TokenLMOutput(self.head(self.trunk(self.embed(tokens), layout, cache=cache, commit=commit)))

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.trunk.new_cache(batch, max_len, device)
