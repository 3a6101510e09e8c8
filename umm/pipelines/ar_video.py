"""Autoregressive generation of token *grids*: images and videos as raster streams with structure tokens
(EMU3's end-of-row / end-of-frame, LWM's end-of-frame / end-of-video), built on the pieces of
:mod:`umm.pipelines.ar`.

A grid of ``frames x height x width`` codes is generated slot by slot. Where the stream must hold a structure
token the slot is *forced*; everywhere else the token is sampled from the code range only. This is EMU3's
``PrefixConstrainedLogitsProcessor`` (Wang et al. 2024, arXiv 2409.18869, released inference code) written out
ahead of time: once the resolution prefix fixes (t, h, w), the allowed set at slot i of the span is a fixed
function of i, so the whole constraint is one :class:`~umm.pipelines.ar.TokenPlan` and a malformed grid cannot be
sampled at all (tested from an untrained model). :func:`plan_codes` reads codes back and refuses a stream
that breaks the plan (one taken from elsewhere) with one clear error.

Guidance uses a *negative prompt* as the unconditional branch (EMU3's README: CFG 3.0 with a negative prompt
through ``UnbatchedClassifierFreeGuidanceLogitsProcessor``): the system builds the negative prompt's sequence
like any prompt, so an empty negative text is ordinary CFG.

The system passes prompt :class:`~umm.data.sequence.Sequence` s; it needs ``config.transformer.rope_axes`` and
``tokenizer`` (``pad_id``, ``eos_id``, ``decode``), as in :mod:`umm.pipelines.ar`.
"""

from __future__ import annotations

import torch

from umm import UmmError
from umm.data.sequence import Sequence
from umm.nn import Span, autocast
from umm.pipelines import ar
from umm.pipelines.decode import decode_tokens


def grid_plan(frames: int, height: int, width: int, low: int, high: int, row_end: int | None = None,
              frame_ends: tuple[int, ...] = (), end: tuple[int, ...] = ()) -> ar.TokenPlan:
    """Slots of a ``frames x height x width`` grid in raster order, codes sampled from ``[low, high)``.

    ``row_end`` (EMU3's EOL) follows every row; ``frame_ends[f]`` closes frame ``f`` (EMU3: EOF after every
    frame; LWM: EOF after each frame but the last, EOV after the last), then the ``end`` tokens (EOI ...).
    The slots form one causal span (EMU3 and LWM use 1D RoPE over the flattened stream).
    """
    if min(frames, height, width) < 1:
        raise UmmError(f"a grid needs at least one frame, row and column, got {frames}x{height}x{width}")
    if frame_ends and len(frame_ends) != frames:
        raise UmmError(f"{len(frame_ends)} end-of-frame tokens for {frames} frames")
    row = (-1,) * width + ((row_end,) if row_end is not None else ())
    forced: tuple[int, ...] = ()
    for f in range(frames):
        forced += row * height + ((frame_ends[f],) if frame_ends else ())
    forced += tuple(end)
    return ar.TokenPlan(forced, low, high, (Span(len(forced)),))


def plan_codes(plan: ar.TokenPlan, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Generated slots (B, L) of ``plan`` -> codes (B, *grid) (offset ``plan.low`` removed).

    Raises :class:`UmmError` naming the first slot that breaks the plan: a structure token missing or in the
    wrong place, or a code outside the range. Streams sampled with the plan always pass.
    """
    forced = torch.tensor(plan.forced, device=tokens.device)
    if tokens.ndim != 2 or tokens.shape[1] != len(plan.forced):
        raise UmmError(f"a grid stream of {tuple(grid)} has {len(plan.forced)} slots, "
                       f"got tokens of shape {tuple(tokens.shape)}")
    is_code = forced < 0
    bad = torch.where(is_code, (tokens < plan.low) | (tokens >= plan.high), tokens != forced)  # (B, L)
    if bad.any():
        row, slot = (int(i) for i in bad.nonzero()[0])
        want = f"a code in [{plan.low}, {plan.high})" if is_code[slot] else f"structure token {int(forced[slot])}"
        raise UmmError(f"malformed grid stream: sequence {row}, slot {slot} holds {int(tokens[row, slot])}, "
                       f"expected {want}")
    return (tokens[:, is_code] - plan.low).reshape(tokens.shape[0], *grid)


@torch.no_grad()
def generate_plan(model, system, prompts: list[Sequence], plan: ar.TokenPlan, negatives: list[Sequence] | None = None,
                  cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                  batch_size: int = 16, use_cache: bool = True, precision: str = "bf16") -> torch.Tensor:
    """Sample ``plan``'s slots after every prompt -> tokens (N, len(plan.forced)), on the CPU.

    Guidance: with ``negatives`` (one per prompt) and ``cfg_scale != 1``, two branches [prompt; negative prompt]
    combined as ``negative + s * (prompt - negative)`` on log-probabilities. ``use_cache=False`` re-reads the
    whole sequence at every slot (same tokens, tested; the cost grows with the length).
    """
    if negatives is not None and len(negatives) != len(prompts):
        raise UmmError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
    guided = negatives is not None and cfg_scale != 1.0
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, len(prompts), batch_size):
        seqs = prompts[start : start + batch_size]
        if guided:
            seqs = seqs + negatives[start : start + batch_size]
        tokens, layout = ar.prompt_batch(system, seqs, device)
        with autocast(precision, device):
            if use_cache:
                step, logits = ar.cached_steps(model, tokens, layout, len(plan.forced))
            else:
                step, logits = ar.recompute_steps(model, tokens, layout)
            generated, _ = ar.sample_plan(step, logits, layout.next_position, plan, 2 if guided else 1,
                                          ar.cfg_guide(cfg_scale) if guided else None, temperature, top_k, top_p,
                                          generator)
        out.append(generated.cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_text(model, system, prompts: list[Sequence], text_vocab: int, max_new_tokens: int = 32,
                batch_size: int = 64, precision: str = "bf16") -> list[str]:
    """Greedy text after each prompt (captions, answers), sampled among the first ``text_vocab`` ids only: a
    model whose output covers vision tokens too (EMU3's shared vocabulary, LWM's two heads) never writes a
    code into a caption."""
    device = next(model.parameters()).device
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        tokens, layout = ar.prompt_batch(system, prompts[start : start + batch_size], device)
        with autocast(precision, device):
            step, logits = ar.cached_steps(model, tokens, layout, max_new_tokens)
            ids = decode_tokens(lambda t, lay: step(t, lay)[:, :text_vocab], logits[:, :text_vocab],
                                layout.next_position, max_new_tokens, system.tokenizer.eos_id)
        out += [system.tokenizer.decode(row) for row in ids]
    return out
