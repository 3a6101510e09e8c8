"""Exponential moving average of model weights (kept in fp32, on the model's device).

The decay warms up as min(decay, (1 + step) / (10 + step)) (as in ADM's and timm's EMA), so the average
forgets the random initial weights within the first few hundred steps: a constant 0.999 would still hold
37% of the initial weights after 1000 steps, about what a 10-minute CPU run takes.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step ``step`` (0-based)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = self.decay_at(step)
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.float(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v.to(state[k].dtype))
