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

The capability loops at the end (mechanism ``ar_video``: EMU3, LWM) ask the system for what differs between
them (``umm/pipelines/protocols.py``, ``VideoCodeAR``): ``vision_prompts`` (the prompts, their unconditional or
negative twins, the plan and the code grid of a request), ``decode_vision``, and the prompts that captions and
answers are decoded after; they need ``config.transformer.rope_axes`` and ``config.text_vocab`` and ``tokenizer``
(``pad_id``, ``eos_id``, ``decode``), as in :mod:`umm.pipelines.ar`.
"""

from __future__ import annotations

import torch

from umm import UmmError
from umm.data.sequence import Sequence
from umm.nn import autocast
from umm.pipelines import ar
from umm.data.sequence import ANSWER_TOKENS, CAPTION_TOKENS
from umm.pipelines.decode import decode_tokens
from umm.registry import LOOPS
from umm.samplers.plan import grid_plan  # noqa: F401  (the plan of a grid stream)


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


# ---- the capability loops of mechanism "ar_video" (EMU3, LWM) ----------------------------------------------


def _sample_codes(model, system, prompts: list[str], video: bool, request: dict, **sampling) -> torch.Tensor:
    """Codes (N, t, h, w) of the grid the system plans for ``request`` (its own keywords: frames, scale ...)."""
    seqs, negatives, plan, grid = system.vision_prompts(prompts, video, **request)
    return plan_codes(plan, generate_plan(model, system, seqs, plan, negatives, **sampling), grid)


@LOOPS.register("ar_video.generate_images")
@torch.no_grad()
def generate_images(model, system, prompts: list[str], *, cfg_scale: float = 3.0, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16, precision: str = "bf16",
                    use_cache: bool = True, return_codes: bool = False, steps: int | None = None,
                    sampler: str | None = None, **request) -> torch.Tensor:
    """Text -> images (N, 3, H, W) in [0, 1] (codes (N, h, w) with ``return_codes``). One step per token, so
    ``steps`` sets nothing and there is no ``sampler`` to pick; ``request`` goes to the system (EMU3: ``scale``,
    ``negative_prompt``)."""
    if sampler is not None:
        raise UmmError(f"{system.family} samples one token at a time; there is no {sampler!r} sampler to pick "
                       "(set temperature/top_k/top_p instead)")
    codes = _sample_codes(model, system, prompts, False, request, cfg_scale=cfg_scale, temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=seed, batch_size=batch_size, use_cache=use_cache,
                          precision=precision)  # (N, 1, h, w)
    return codes[:, 0] if return_codes else system.decode_vision(codes, video=False)


@LOOPS.register("ar_video.generate_videos")
@torch.no_grad()
def generate_videos(model, system, prompts: list[str], *, cfg_scale: float = 3.0, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16, precision: str = "bf16",
                    use_cache: bool = True, return_codes: bool = False, **request) -> torch.Tensor:
    """Text -> clips (N, T, 3, H, W) in [0, 1] (codes (N, t, h, w) with ``return_codes``); ``request``: the
    system's (``frames``, ``negative_prompt``)."""
    codes = _sample_codes(model, system, prompts, True, request, cfg_scale=cfg_scale, temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=seed, batch_size=batch_size, use_cache=use_cache,
                          precision=precision)
    return codes if return_codes else system.decode_vision(codes, video=True)


@LOOPS.register("ar_video.answer")
@torch.no_grad()
def answer(model, system, images: torch.Tensor, questions: list[str] | None, *, batch_size: int = 64,
           max_new_tokens: int = ANSWER_TOKENS, precision: str = "bf16") -> list[str]:
    """Images (N, 3, H, W) -> greedy answers to ``questions`` (captions when None)."""
    seqs = system.understanding_prompts(images, questions)
    return decode_text(model, system, seqs, system.config.text_vocab, max_new_tokens, batch_size, precision)


@LOOPS.register("ar_video.caption")
@torch.no_grad()
def caption(model, system, images: torch.Tensor, *, batch_size: int = 64, max_new_tokens: int = CAPTION_TOKENS,
            precision: str = "bf16") -> list[str]:
    return answer(model, system, images, None, batch_size=batch_size, max_new_tokens=max_new_tokens, precision=precision)


@LOOPS.register("ar_video.caption_videos")
@torch.no_grad()
def caption_videos(model, system, videos: torch.Tensor, *, batch_size: int = 32, max_new_tokens: int = CAPTION_TOKENS,
                   precision: str = "bf16") -> list[str]:
    """Clips (N, T, 3, H, W) -> greedy captions."""
    seqs = system.video_understanding_prompts(videos)
    return decode_text(model, system, seqs, system.config.text_vocab, max_new_tokens, batch_size, precision)
