"""MaskGIT sampling of discrete codes (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer",
arXiv 2202.04200, sec. 3.2), as Show-o uses it (Xie et al. 2024, arXiv 2408.12528, sec. 3.3).

All N codes of an image start masked. Each of ``steps`` iterations predicts every masked code in parallel,
samples a candidate for each, and keeps the most confident ones; the rest are masked again for the next
iteration. How many stay masked after iteration i follows the cosine schedule N * cos(pi/2 * (i+1)/steps)
(MaskGIT sec. 3.2, eq. 3; their fig. 7 shows cosine beats linear and square-root). Confidence is the
candidate's log-probability plus Gumbel noise whose scale (the "choice temperature", 4.5 in MaskGIT) is
annealed linearly to 0 over the iterations: early choices are randomised top-k, late ones greedy.

Nothing here holds state: the schedule is a tensor computed up front and each step is a pure function of
its inputs, so the loop lives in the pipeline (``umm/pipelines/maskgit.py``) in plain sight::

    remaining = mask_schedule(masked.sum(-1), steps)                   # (B, steps)
    for i in range(steps):
        logits = model(canvas)                                         # (B, N, K), guided if CFG is on
        codes, masked = maskgit_step(logits, codes, masked, remaining[:, i], temperature,
                                     annealed_choice_temperature(choice_temperature, i, steps), generator)

A code is revealed once and never re-masked (its confidence is +inf), so codes that start unmasked
(inpainting: the region to keep) come out bit-identical.
"""

from __future__ import annotations

import math

import torch

from umm import UmmError


def cosine_mask_ratio(progress: float) -> float:
    """Fraction of tokens still masked at ``progress`` in [0, 1]: cos(pi/2 * progress) (1 -> 0)."""
    return math.cos(math.pi / 2 * progress)


def mask_schedule(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens still masked after each iteration: (B,) initial counts -> (B, steps) long.

    The count follows floor(n * cos(pi/2 * (i+1)/steps)), corrected so that every iteration reveals at
    least one token while any is masked and, when n >= steps, at least one is left for every later
    iteration; the last column is 0. With n < steps the surplus iterations reveal nothing.
    """
    if steps < 1:
        raise UmmError(f"MaskGIT needs at least one step, got {steps}")
    n_masked = n_masked.long()
    previous = n_masked
    out = []
    for i in range(steps):
        target = torch.floor(n_masked.double() * cosine_mask_ratio((i + 1) / steps)).long()
        later = steps - 1 - i
        remaining = torch.minimum(target.clamp_min(later), (previous - 1).clamp_min(0))
        out.append(remaining)
        previous = remaining
    return torch.stack(out, dim=1)


def annealed_choice_temperature(choice_temperature: float, step: int, steps: int) -> float:
    """The Gumbel-noise scale of iteration ``step`` (0-based): ``t * (1 - (step + 1) / steps)`` (MaskGIT's
    linear annealing; Show-o's ``temperature * (1 - ratio)``), 0 at the last iteration."""
    return choice_temperature * (1.0 - (step + 1) / steps)


def gumbel_noise(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def maskgit_step(logits: torch.Tensor, codes: torch.Tensor, masked: torch.Tensor, remaining: torch.Tensor,
                 temperature: float = 1.0, choice_temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One MaskGIT iteration.

    Args:
        logits: (B, N, K) predictions for every position (only masked positions are read).
        codes: (B, N) long current codes; values at masked positions are placeholders.
        masked: (B, N) bool, True where the code is still unknown.
        remaining: (B,) how many positions stay masked after this step (a column of :func:`mask_schedule`).
        temperature: of the candidates' softmax; 0 takes the argmax.
        choice_temperature: scale of the Gumbel noise on confidences (already annealed by the caller).

    Returns:
        (codes, masked): newly revealed positions hold their sampled candidate; positions revealed before
        are untouched; exactly ``remaining`` positions per row stay masked (fewer if fewer were masked).
    """
    b, n, k = logits.shape
    if codes.shape != (b, n) or masked.shape != (b, n):
        raise UmmError(f"maskgit_step: logits {tuple(logits.shape)} do not match codes {tuple(codes.shape)} / "
                       f"masked {tuple(masked.shape)}")
    logits = logits.float()
    if temperature == 0:
        log_probs = logits.log_softmax(-1)
        candidates = logits.argmax(-1)  # (B, N)
    else:
        log_probs = (logits / temperature).log_softmax(-1)
        candidates = torch.multinomial(log_probs.exp().view(b * n, k), 1, generator=generator).view(b, n)
    confidence = log_probs.gather(-1, candidates[..., None])[..., 0]  # (B, N) log p(candidate)
    if choice_temperature > 0:
        confidence = confidence + choice_temperature * gumbel_noise(confidence.shape, generator, logits.device)
    # revealed positions are the most confident of all: they are never masked again
    confidence = torch.where(masked, confidence, torch.full_like(confidence, float("inf")))
    rank = confidence.argsort(-1).argsort(-1)  # (B, N): 0 = least confident
    still_masked = masked & (rank < remaining.to(rank.device)[:, None])
    revealed_now = masked & ~still_masked
    return torch.where(revealed_now, candidates, codes), still_masked
