"""Autoregressive generation of discrete image tokens, one token per step (Chameleon; EMU3, LWM, VILA-U and
LaVIT build on the same pieces).

The model is any module with ``forward(tokens, layout, cache=None, commit=True)`` returning an output with
``.logits`` (B, T, V) over one vocabulary, and ``new_cache(batch, max_len, device)``. A system using
:func:`generate_images`, :func:`caption` and :func:`answer` supplies:

``t2i_prompt(text: str | None, context: Tensor | None) -> Sequence``
    the prompt that precedes a generated image; ``text=None`` drops the text (the unconditional branch of
    classifier-free guidance), ``context`` (h, w) codes of an image to condition on, or None.
``image_plan() -> TokenPlan``
    the slots of one generated image: which are sampled (and from which token range), which are forced.
``codes_from_plan(tokens (B, L)) -> codes``
    the tokenizer codes inside generated slots (drop structure tokens, undo the vocabulary offset).
``understanding_prompt(codes, question: str | None) -> Sequence``
    ``[image] (question)``, after which captions and answers are decoded.
``image_tokenizer`` (``encode``/``decode``), ``tokenizer`` (text: ``pad_id``, ``eos_id``, ``boi_id``, ``decode``)
    and ``config.transformer.rope_axes``.

The loop is :func:`sample_plan`: at each slot it either emits the forced token or guides the branches'
logits and samples from the allowed range, then feeds the token to every branch. ``step`` hides whether the
model re-reads the whole sequence each time (``use_cache=False``) or only the new token against a KV cache;
the two give the same tokens (tested), the cache is what makes the cost per token constant instead of
growing with the sequence (``benchmarks/``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from umm import UmmError
from umm.data.sequence import ANSWER_TOKENS, CAPTION_TOKENS, Sequence, collate
from umm.nn import Layout, Span, autocast, continue_layout
from umm.pipelines.decode import decode_tokens
from umm.registry import LOOPS
from umm.samplers import cfg, three_way_cfg
from umm.samplers.ar import sample_next
from umm.samplers.plan import TokenPlan, concat_layouts, image_plan  # noqa: F401  (the plans the loops follow)

StepFn = Callable[[torch.Tensor, Layout], torch.Tensor]  # (rows, 1) tokens, their layout -> (rows, V) logits
Guide = Callable[[torch.Tensor], torch.Tensor]  # (G * B, V) logits of G branches -> (B, V) guided logits


# ---- guidance over branches ------------------------------------------------------------------------------


def cfg_guide(scale: float) -> Guide:
    """Two branches [conditional; unconditional]: uncond + s * (cond - uncond) on log-probabilities."""
    return lambda logits: cfg(*logits.log_softmax(-1).chunk(2), scale)


def three_way_guide(text_scale: float, image_scale: float) -> Guide:
    """Three branches [text + image; image only; neither] (Chameleon's in-batch InstructPix2Pix-style CFG):
    uncond + s_img * (image - uncond) + s_txt * (full - image), on log-probabilities."""
    return lambda logits: three_way_cfg(*logits.log_softmax(-1).chunk(3), text_scale, image_scale)


# ---- the model behind a step function ------------------------------------------------------------------


def prompt_batch(system, seqs: list[Sequence], device) -> tuple[torch.Tensor, Layout]:
    """Left-padded prompts (every prompt ends at the same slot, so new tokens line up) and their layout."""
    batch = collate(seqs, rope_axes=system.config.transformer.rope_axes, pad_left=True, pad_id=system.tokenizer.pad_id)
    layout = Layout.of(batch).to(device)
    return batch["tokens"].to(device), layout


def cached_steps(model, tokens: torch.Tensor, layout: Layout, extra: int) -> tuple[StepFn, torch.Tensor]:
    """Prefill the prompt into a fresh KV cache with room for ``extra`` tokens; each step runs one token."""
    cache = model.new_cache(tokens.shape[0], tokens.shape[1] + extra, tokens.device)
    logits = model(tokens, layout, cache=cache).logits[:, -1].float()

    def step(token: torch.Tensor, token_layout: Layout) -> torch.Tensor:
        return model(token, token_layout, cache=cache).logits[:, -1].float()

    return step, logits


def recompute_steps(model, tokens: torch.Tensor, layout: Layout) -> tuple[StepFn, torch.Tensor]:
    """No cache: every step re-reads the prompt and everything generated so far (cost grows with length)."""
    state = {"tokens": tokens, "layout": layout}
    logits = model(tokens, layout).logits[:, -1].float()

    def step(token: torch.Tensor, token_layout: Layout) -> torch.Tensor:
        state["tokens"] = torch.cat([state["tokens"], token], 1)
        state["layout"] = concat_layouts([state["layout"], token_layout])
        return model(state["tokens"], state["layout"]).logits[:, -1].float()

    return step, logits


# ---- the loop -----------------------------------------------------------------------------------------


@torch.no_grad()
def sample_plan(step: StepFn, logits: torch.Tensor, next_position: torch.Tensor, plan: TokenPlan, branches: int = 1,
                guide: Guide | None = None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, Layout]:
    """Generate the plan's slots for B = rows / branches sequences; returns (tokens (B, L), the slots' layout).

    Rows are branch-major ([branch 0 rows; branch 1 rows; ...]); every branch is fed the token sampled from
    the guided logits. The last slot is not fed (nothing needs its logits); a caller that continues after
    the span feeds it with ``layout[:, -1:]``.
    """
    rows = logits.shape[0]
    if rows % branches:
        raise UmmError(f"{rows} rows do not split into {branches} guidance branches")
    if branches > 1 and guide is None:
        raise UmmError(f"{branches} branches need a guide to combine them")
    b = rows // branches
    layout = plan.layout(next_position)
    out = []
    for i, forced in enumerate(plan.forced):
        if forced >= 0:
            token = torch.full((b,), forced, dtype=torch.long, device=logits.device)
        else:
            guided = guide(logits) if guide is not None else logits  # (B, V)
            # restrict after guidance: -inf outside the range would turn the guidance arithmetic into nan
            token = sample_next(guided[:, plan.low : plan.high], temperature, top_k, top_p, generator) + plan.low
        out.append(token)
        if i + 1 < len(plan.forced):
            logits = step(token.repeat(branches)[:, None], layout[i : i + 1])
    return torch.stack(out, 1), layout


def encode_images(system, images: torch.Tensor) -> torch.Tensor:
    """Codes of images with the system's frozen tokenizer, on the tokenizer's device; returned on the CPU."""
    tokenizer = system.image_tokenizer
    return tokenizer.encode(images.to(next(tokenizer.parameters()).device)).cpu()


def decode_codes(system, codes: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (float32, CPU) of codes, with the system's frozen tokenizer."""
    tokenizer = system.image_tokenizer
    return tokenizer.decode(codes.to(next(tokenizer.parameters()).device)).float().cpu()


@LOOPS.register("ar.generate_images")
@torch.no_grad()
def generate_images(model, system, prompts: list[str], cfg_scale: float = 3.0, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, context: torch.Tensor | None = None,
                    image_cfg_scale: float = 1.0, seed: int = 0, batch_size: int = 16, use_cache: bool = True,
                    precision: str = "bf16", return_codes: bool = False, steps: int | None = None,
                    sampler: str | None = None) -> torch.Tensor:
    """Text (and optionally an image ``context`` (N, 3, H, W) to condition on) -> images (N, 3, H, W) in [0, 1].

    One step per code, so ``steps`` (the harness passes the diffusion systems' step count to every generator)
    sets nothing here, and there is no ``sampler`` to pick: temperature / top-k / top-p shape each draw.

    Guidance: without context, two branches (prompt; prompt without text) at ``cfg_scale`` (1 = none); with
    context, three branches (text + image; image only; neither) at ``cfg_scale`` for the text and
    ``image_cfg_scale`` for the image. ``return_codes`` returns the tokenizer codes instead of pixels.
    """
    if sampler is not None:
        raise UmmError(f"{system.family} samples image codes one token at a time; there is no {sampler!r} sampler "
                       "to pick (set temperature/top_k/top_p instead)")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    plan = system.image_plan()
    if context is not None and len(context) != len(prompts):
        raise UmmError(f"{len(context)} context images for {len(prompts)} prompts")
    context_codes = None if context is None else encode_images(system, context)
    out = []
    for start in range(0, len(prompts), batch_size):
        texts = prompts[start : start + batch_size]
        ctx = [None] * len(texts) if context_codes is None else list(context_codes[start : start + batch_size])
        seqs = [system.t2i_prompt(t, c) for t, c in zip(texts, ctx)]
        guide, branches = None, 1
        if context_codes is not None:
            seqs += [system.t2i_prompt(None, c) for c in ctx] + [system.t2i_prompt(None, None) for _ in texts]
            guide, branches = three_way_guide(cfg_scale, image_cfg_scale), 3
        elif cfg_scale != 1.0:
            seqs += [system.t2i_prompt(None, None) for _ in texts]
            guide, branches = cfg_guide(cfg_scale), 2
        tokens, layout = prompt_batch(system, seqs, device)
        with autocast(precision, device):
            if use_cache:
                step, logits = cached_steps(model, tokens, layout, len(plan.forced))
            else:
                step, logits = recompute_steps(model, tokens, layout)
            generated, _ = sample_plan(step, logits, layout.next_position, plan, branches, guide, temperature, top_k,
                                       top_p, generator)
        codes = system.codes_from_plan(generated)
        out.append(codes.cpu() if return_codes else decode_codes(system, codes))
    return torch.cat(out)


# ---- understanding: captions and answers ----------------------------------------------------------------


@torch.no_grad()
def _decode_after(model, system, seqs: list[Sequence], max_new_tokens: int, precision: str) -> list[str]:
    device = next(model.parameters()).device
    tokens, layout = prompt_batch(system, seqs, device)
    with autocast(precision, device):
        step, logits = cached_steps(model, tokens, layout, max_new_tokens)
        ids = decode_tokens(step, logits, layout.next_position, max_new_tokens, system.tokenizer.eos_id)
    return [system.tokenizer.decode(row) for row in ids]


@LOOPS.register("ar.caption")
@torch.no_grad()
def caption(model, system, images: torch.Tensor, max_new_tokens: int = CAPTION_TOKENS, batch_size: int = 64,
            precision: str = "bf16") -> list[str]:
    """Images (N, 3, H, W) in [0, 1] -> captions, greedy, after ``system.understanding_prompt(codes, None)``."""
    return answer(model, system, images, None, max_new_tokens, batch_size, precision)


@LOOPS.register("ar.answer")
@torch.no_grad()
def answer(model, system, images: torch.Tensor, questions: list[str] | None, max_new_tokens: int = ANSWER_TOKENS,
           batch_size: int = 64, precision: str = "bf16") -> list[str]:
    """(image, question) -> answer, greedy, after ``system.understanding_prompt(codes, question)``."""
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        codes = encode_images(system, images[start : start + batch_size])
        asks = [None] * len(codes) if questions is None else questions[start : start + batch_size]
        seqs = [system.understanding_prompt(c, q) for c, q in zip(codes, asks)]
        out += _decode_after(model, system, seqs, max_new_tokens, precision)
    return out


@LOOPS.register("ar.generate_interleaved")
@torch.no_grad()
def generate_interleaved(model, system, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                         seed: int = 0, precision: str = "bf16") -> list:
    """Text that may open images: decode text; on BOI, sample a whole image (grid^2 codes, then EOI) with the
    image-only restriction, without guidance; then go on with text. Returns strings and (3, H, W) images."""
    device = next(model.parameters()).device
    tok = system.tokenizer
    generator = torch.Generator(device=device).manual_seed(seed)
    plan = system.image_plan()
    seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id] + system.text_ids(prompt), loss=False)
    tokens, layout = prompt_batch(system, [seq], device)
    segments: list = []
    text: list[int] = []
    with autocast(precision, device):
        step, logits = cached_steps(model, tokens, layout, max_new_tokens * (len(plan.forced) + 1))
        next_position = layout.next_position
        for _ in range(max_new_tokens):
            # text tokens: anything but image codes (an image starts only through BOI)
            token = sample_next(logits[:, : system.config.text_vocab], temperature, generator=generator)
            if int(token) == tok.eos_id:
                break
            token_layout = continue_layout(next_position, Span(1))
            logits, next_position = step(token[:, None], token_layout), token_layout.next_position
            if int(token) != tok.boi_id:
                text.append(int(token))
                continue
            if text:
                segments.append(tok.decode(text))
                text = []
            generated, span = sample_plan(step, logits, next_position, plan, temperature=1.0, generator=generator)
            segments.append(decode_codes(system, system.codes_from_plan(generated))[0])
            logits, next_position = step(generated[:, -1:], span[-1:]), span.next_position  # feed EOI
    if text:
        segments.append(tok.decode(text))
    return segments
