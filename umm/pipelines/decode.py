"""Autoregressive text decoding with a KV cache, shared by every single-model system's captioning and QA.

The model is hidden behind ``step(tokens (B, 1), layout) -> logits (B, V)``, a closure over the model and its
cache; this loop only decides tokens and stops at EOS.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from umm.nn.layout import Layout, Span, continue_layout
from umm.samplers.ar import sample_next

StepFn = Callable[[torch.Tensor, Layout], torch.Tensor]


@torch.no_grad()
def decode_tokens(
    step: StepFn,
    first_logits: torch.Tensor,  # (B, V): the logits after the prompt
    next_position: torch.Tensor,  # (B, A): where the first new token goes
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Sample up to ``max_new_tokens`` per row; each row stops at (and excludes) its first EOS."""
    b = first_logits.shape[0]
    logits = first_logits
    out: list[list[int]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool)
    for i in range(max_new_tokens):
        token = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        for row in range(b):
            if not done[row]:
                if int(token[row]) == eos_id:
                    done[row] = True
                else:
                    out[row].append(int(token[row]))
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        layout = continue_layout(next_position, Span(1))
        next_position = layout.next_position
        logits = step(token[:, None], layout)
    return out
