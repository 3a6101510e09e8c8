"""Next-token cross-entropy over the positions that carry a target, with Chameleon's optional z-loss, and the
same cross-entropy split into codes and text as a diagnostic."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # target id of positions without a loss (prompts, padding, image spans of other losses)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE over targets != IGNORE. logits (B, T, V) predict targets (B, T) at the same positions.

    Shifting (position t predicts token t + 1) is done by whoever builds ``targets``; this function does
    not guess. Returns 0 (with a graph) when there is no target at all.
    """
    valid = targets != IGNORE
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), targets[valid])


def z_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean(log Z ^ 2) over target positions: keeps the softmax normaliser near 1 (Chameleon sec. 2.3,
    after PaLM), which counters the logit drift of mixed-modal training."""
    valid = targets != IGNORE
    if not valid.any():
        return logits.sum() * 0.0
    return torch.logsumexp(logits[valid].float(), dim=-1).pow(2).mean()


@torch.no_grad()
def split_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, first_code: int,
                        code_name: str = "image_ce") -> dict[str, torch.Tensor]:
    """Diagnostics, not a loss: the same next-token cross-entropy split by what is predicted, codes (ids >=
    ``first_code``, the text vocabulary's size in a shared id space) as ``code_name`` and text as ``text_ce``;
    a part with no target in the batch is left out. logits (B, T, V), targets (B, T) as for next_token_loss."""
    codes = targets >= first_code
    out = {}
    for name, mask in ((code_name, codes), ("text_ce", (targets != IGNORE) & ~codes)):
        if mask.any():
            out[name] = F.cross_entropy(logits[mask].float(), targets[mask])
    return out


def shift_targets(tokens: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """targets[t] = tokens[t + 1] where ``loss_mask[t + 1]``, else IGNORE. tokens/loss_mask (B, T)."""
    targets = torch.full_like(tokens, IGNORE)
    targets[:, :-1] = torch.where(loss_mask[:, 1:], tokens[:, 1:], torch.full_like(tokens[:, 1:], IGNORE))
    return targets
