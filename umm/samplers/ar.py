"""Autoregressive token sampling: pure logit processors and one ``sample_next`` function.

Processors take and return (B, V) logits and hold no state, so the decoding loop (in the pipelines) shows
every choice: temperature, top-k, top-p (nucleus, Holtzman et al. 2020), and restriction to an allowed
token range (Chameleon samples only image codes inside an image span).
"""

from __future__ import annotations

import torch


def restrict(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Keep only the tokens where ``allowed`` (V,) or (B, V) is True."""
    return logits.masked_fill(~allowed, float("-inf"))


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches ``p`` (always at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    # drop a token if the mass *before* it already reaches p
    drop = (probs.cumsum(-1) - probs) >= p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    k: int = 0,
    p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. ``temperature == 0`` is greedy."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = top_p(top_k(logits / temperature, k), p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
