"""Generation loops of the multi-expert systems (TextBind, NExT-GPT, SEED-X) and of their diffusion decoder.

- :func:`sample_images`: condition vectors (B, M, C) -> images, through the conditional decoder
  (umm.models.cond_decoder) with classifier-free guidance against the all-zero null condition.
- :func:`decode_text`: greedy text after left-padded prompts that may hold images, with a KV cache; the
  caption / answer capabilities of every LLM-centric system, and TextBind's written captions.
- :func:`image_query`: one forward over ``prompt + output slots`` whose hidden states an output projector
  maps onto a decoder's condition (NExT-GPT's signal tokens, SEED-X's learnable output queries).
- :func:`route`: NExT-GPT's routing: the first signal token of a generated stream picks the decoder; a stream
  with missing, partial or out-of-order signal tokens, or one that asks for a modality without a decoder,
  gives a :class:`RouteResult` of kind ``none`` with the reason, never an exception.

The LM is any module with ``forward(tokens, kinds, features, layout, cache=None, commit=True, out_slots=None)``
returning ``(logits, hidden, out)`` and ``new_cache(batch, max_len)`` (umm.models.llm_bridge); the system
supplies the tokenizer, the image features and the prompts.
"""

from __future__ import annotations

import torch

from umm.data.sequence import ANSWER_TOKENS, CAPTION_TOKENS, TEXT, Sequence, collate
from umm.nn import Layout, autocast, unpatchify
from umm.pipelines.decode import decode_tokens
from umm.pipelines.diffusion_lm import make_sampler
from umm.registry import LOOPS
from umm.samplers import cfg


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---- the conditional diffusion decoder ------------------------------------------------------------------------


@torch.no_grad()
def sample_images(model, system, context: torch.Tensor, steps: int = 25, cfg_scale: float = 3.0,
                  sampler: str | None = None, seed: int = 0, batch_size: int = 16,
                  precision: str = "bf16") -> torch.Tensor:
    """Condition (B, M, C) -> (B, 3, H, W) in [0, 1]. ``system`` gives the noise path and the image geometry."""
    device = _device(model)
    config = system.config
    generator = torch.Generator(device=device).manual_seed(seed)
    step_fn = make_sampler(sampler, system.path)
    guided = cfg_scale != 1.0
    images = []
    for start in range(0, len(context), batch_size):
        ctx = context[start : start + batch_size].to(device)
        b = ctx.shape[0]
        ctx_in = torch.cat([ctx, torch.zeros_like(ctx)]) if guided else ctx  # conditional rows, then null rows

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x_in = torch.cat([x, x]) if guided else x
            out = model(x_in, t[:1].expand(x_in.shape[0]).to(device), ctx_in).float()
            return cfg(*out.chunk(2), cfg_scale) if guided else out

        x = torch.randn((b, config.grid**2, config.patch_dim), generator=generator, device=device)
        times = system.path.sampling_times(steps)
        with autocast(precision, device):
            for t, t_next in zip(times[:-1], times[1:]):
                x = step_fn.step(denoise, x, t, t_next, generator)
        images.append(unpatchify(x.clamp(-1, 1).float(), config.patch, config.channels, config.image_size,
                                 config.image_size))
    return torch.cat(images).cpu() * 0.5 + 0.5


# ---- the language model -----------------------------------------------------------------------------------------


def prompt_batch(system, seqs: list[Sequence], device) -> dict:
    """Left-padded prompts (every prompt ends at the last slot, so generated tokens line up)."""
    batch = collate(seqs, patch_dim=0, rope_axes=1, pad_left=True, pad_id=system.tokenizer.pad_id)
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def decode_text(model, system, seqs: list[Sequence], features: torch.Tensor | None, max_new_tokens: int,
                stop_id: int, vocab: int | None = None, precision: str = "bf16") -> list[list[int]]:
    """Greedy ids after each prompt until ``stop_id`` (excluded). ``features`` (I, F, E) fill the prompts'
    image slots in order; ``vocab`` limits decoding to the first ids (text only, no signal tokens)."""
    device = _device(model)
    batch = prompt_batch(system, seqs, device)
    features = None if features is None else features.to(device)
    with autocast(precision, device):
        cache = model.new_cache(len(seqs), batch["tokens"].shape[1] + max_new_tokens, device)
        out = model(batch["tokens"], batch["kinds"], features, Layout.of(batch), cache=cache)

        def step(token: torch.Tensor, layout: Layout) -> torch.Tensor:
            kinds = torch.full(token.shape, TEXT, device=device)
            return model(token, kinds, None, layout, cache=cache).logits[:, -1, :vocab].float()

        return decode_tokens(step, out.logits[:, -1, :vocab].float(), batch["next_position"], max_new_tokens, stop_id)


@torch.no_grad()
def understand(model, system, images: torch.Tensor, questions: list[str] | None, max_new_tokens: int,
               batch_size: int = 64, precision: str = "bf16") -> list[str]:
    """Captions (``questions=None``) or answers: ``[BOS] [BOI] image [EOI] (question)`` -> greedy text."""
    out: list[str] = []
    tok = system.tokenizer
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        asked = [None] * len(chunk) if questions is None else questions[start : start + len(chunk)]
        seqs = [system.understanding_prompt(q) for q in asked]
        ids = decode_text(model, system, seqs, system.input_features(chunk), max_new_tokens, tok.eos_id,
                          vocab=tok.vocab_size, precision=precision)
        out += [tok.decode(row) for row in ids]
    return out


@torch.no_grad()
def image_query(model, system, seqs: list[Sequence], n_slots: int, batch_size: int = 64,
                precision: str = "bf16") -> torch.Tensor:
    """Prompts that end with ``n_slots`` output slots -> the model's projected ``out`` for them (B, M, C)."""
    device = _device(model)
    outs = []
    for start in range(0, len(seqs), batch_size):
        batch = prompt_batch(system, seqs[start : start + batch_size], device)
        t = batch["tokens"].shape[1]
        slots = torch.arange(t - n_slots, t, device=device).expand(batch["tokens"].shape[0], -1)  # (B, K)
        with autocast(precision, device):
            out = model(batch["tokens"], batch["kinds"], None, Layout.of(batch), out_slots=slots).out
        outs.append(out.float().cpu())
    return torch.cat(outs)


# ---- the loops of mechanisms "bridge" (TextBind, NExT-GPT, SEED-X) and "cond_decoder" --------------------------

LOOPS.register("bridge.decode_text")(decode_text)
LOOPS.register("bridge.image_query")(image_query)
LOOPS.register("cond_decoder.render")(sample_images)


@LOOPS.register("bridge.caption")
def caption(model, system, images: torch.Tensor, *, max_new_tokens: int = CAPTION_TOKENS, batch_size: int = 64,
            precision: str = "bf16") -> list[str]:
    return understand(model, system, images, None, max_new_tokens, batch_size, precision)


@LOOPS.register("bridge.answer")
def answer(model, system, images: torch.Tensor, questions: list[str], *, max_new_tokens: int = ANSWER_TOKENS,
           batch_size: int = 64, precision: str = "bf16") -> list[str]:
    return understand(model, system, images, questions, max_new_tokens, batch_size, precision)
