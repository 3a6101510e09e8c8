"""Generation loops for autoregressive models with a per-token diffusion head (MAR, MMAR).

The model is any module with ``forward(tokens, kinds, patches, masked, layout, head_input, cache, commit)``
returning ``(logits, hidden, head)``, a ``head(x_t, t, z)`` denoiser and ``new_cache(batch, max_len)``; the
system supplies the tokenizer, the noise path, the token geometry and bounds (``token_clip``), images <->
tokens (``image_tokens``, ``tokens_to_images``), the prompts (``t2i_prompt``, ``image_prompt``) and its
options (``order``, ``iterations``, ``temperature``).

Two orders, each loop in the open:

- **masked** (MAR, Li et al. 2024, arXiv 2406.11838, sec. 3.3 and alg. 1): the prompt is cached once; every
  iteration re-reads the whole image span (bidirectional, unknown tokens shown as [MASK]) against it, and
  the tokens due at that iteration, in a random order, are sampled by the diffusion head from their z. The
  number still masked after iteration i follows MaskGIT's cosine schedule N * cos(pi/2 * (i+1)/I).
- **raster**: the span is causal; each sampled patch is committed to the KV cache and its output z models
  the next patch.

In both, classifier-free guidance runs the head on the conditional and unconditional z with MAR's linear
schedule (guidance grows with the fraction of tokens generated), and ``temperature`` scales the noise of
each DDPM step of the head. Captioning and QA decode text greedily with the KV cache (``decode.py``).
"""

from __future__ import annotations

import math

import torch

from umm import UmmError
from umm.data.sequence import ANSWER_TOKENS, CAPTION_TOKENS, PATCH, TEXT, Sequence, collate
from umm.nn import Layout, Span, autocast, continue_layout
from umm.nn.diffusion_head import DiffusionHead
from umm.pipelines.decode import decode_tokens
from umm.samplers import DDIMSampler, DDPMSampler, cfg, linear_cfg_scale
from umm.registry import LOOPS

IMAGE_BLOCK = 1_000_000  # span id for generated images: never equal to a prompt span's id

def make_head_sampler(name: str | None, path, temperature: float, clip: float | None = 1.0) -> DDIMSampler:
    """The head's sampler: ``ddpm`` (default; MAR's ancestral sampling with temperature) or ``ddim`` (eta 0).
    ``clip`` bounds the predicted tokens (pixels: 1; latents: None)."""
    if name in (None, "ddpm"):
        return DDPMSampler(path, clip=clip, noise_scale=temperature)
    if name == "ddim":
        if temperature != 1.0:
            raise UmmError(f"temperature {temperature} scales the noise of stochastic steps; the ddim sampler has "
                           "none: use sampler ddpm or temperature 1")
        return DDIMSampler(path, clip=clip)
    raise UmmError(f"unknown head sampler {name!r}; choose ddpm or ddim (Euler and Heun need a flow path, "
                   "MMAR's is cosine)")


def unmask_counts(n_tokens: int, iterations: int) -> list[int]:
    """Tokens sampled at each of ``iterations`` masked-AR iterations: MaskGIT's cosine schedule, every
    iteration samples at least one token and the counts add up to ``n_tokens``."""
    if not 1 <= iterations <= n_tokens:
        raise UmmError(f"masked-AR iterations must be in [1, {n_tokens}] (tokens per image), got {iterations}")
    counts, masked = [], n_tokens
    for i in range(iterations):
        remaining = math.floor(n_tokens * math.cos(math.pi / 2 * (i + 1) / iterations))
        # leave at least one token per later iteration, and take at least one now
        remaining = min(max(remaining, iterations - 1 - i), masked - 1)
        counts.append(masked - remaining)
        masked = remaining
    return counts


def sample_with_head(head: DiffusionHead, z_cond: torch.Tensor, z_uncond: torch.Tensor | None, cfg_scale: float, path,
                     sampler: DDIMSampler, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Denoise one token per row of z (..., D) from pure noise with ``steps`` sampler steps -> (..., P).

    With ``z_uncond`` the head's outputs for the two conditions are combined by CFG at ``cfg_scale``.
    """
    x = torch.randn((*z_cond.shape[:-1], head.channels), generator=generator, device=z_cond.device)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_tokens = t.view(-1, *([1] * (x.ndim - 2))).expand(x.shape[:-1])  # (B,) -> (...) one time per token
        if z_uncond is None:
            return head(x, t_tokens, z_cond).float()
        out = head(torch.cat([x, x]), torch.cat([t_tokens, t_tokens]), torch.cat([z_cond, z_uncond])).float()
        cond, uncond = out.chunk(2)
        return cfg(cond, uncond, cfg_scale)

    times = path.sampling_times(steps)
    for t, t_next in zip(times[:-1], times[1:]):
        x = sampler.step(denoise, x, t, t_next, generator)
    return x


def prefill(model, system, seqs: list[Sequence], extra: int, device) -> tuple[object, dict, torch.Tensor, torch.Tensor]:
    """Run left-padded prompts into a fresh cache with room for ``extra`` more slots.

    Returns (cache, batch, logits (B, V) and hidden state (B, D) at the last prompt slot).
    """
    config = system.config
    batch = collate(seqs, patch_dim=config.patch_dim, rope_axes=config.transformer.rope_axes, pad_left=True,
                    pad_id=system.tokenizer.pad_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    cache = model.new_cache(len(seqs), batch["tokens"].shape[1] + extra, device)
    masked = torch.zeros(batch["tokens"].shape, dtype=torch.bool, device=device)
    out = model(batch["tokens"], batch["kinds"], batch["patches"], masked, Layout.of(batch), cache=cache)
    return cache, batch, out.logits[:, -1].float(), out.hidden[:, -1]


def _split(h: torch.Tensor, guided: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows (cond; uncond) of a guided batch -> (cond, uncond); unguided -> (h, None)."""
    return tuple(h.chunk(2)) if guided else (h, None)


def _masked_ar(model, system, cache, next_position: torch.Tensor, b: int, guided: bool, cfg_scale: float,
               iterations: int, steps: int, sampler: DDIMSampler, generator, device) -> torch.Tensor:
    """MAR's masked autoregression against a cached prompt; returns image tokens (b, N, P)."""
    config = system.config
    n, p = config.grid**2, config.patch_dim
    rows = 2 * b if guided else b
    tokens = torch.full((rows, n), system.tokenizer.pad_id, device=device)
    kinds = torch.full((rows, n), PATCH, device=device)
    layout = continue_layout(next_position, Span(n, True, (config.grid, config.grid)), IMAGE_BLOCK)
    x = torch.zeros((b, n, p), device=device)
    masked = torch.ones((b, n), dtype=torch.bool, device=device)
    order = torch.rand((b, n), generator=generator, device=device).argsort(-1)  # a random order per image
    both = (lambda v: torch.cat([v, v])) if guided else (lambda v: v)  # the same canvas for both CFG branches
    done = 0
    for count in unmask_counts(n, iterations):
        hidden = model(tokens, kinds, both(x), both(masked), layout, cache=cache, commit=False).hidden  # (rows, N, D)
        due = order[:, done : done + count]  # (b, count) positions sampled now
        z_cond, z_uncond = _split(hidden.gather(1, both(due)[..., None].expand(-1, -1, hidden.shape[-1])), guided)
        done += count
        scale = linear_cfg_scale(cfg_scale, done / n)  # MAR: 1 + (cfg - 1) * (#generated / N)
        new = sample_with_head(model.head, z_cond, z_uncond, scale, system.path, sampler, steps, generator)
        x = x.scatter(1, due[..., None].expand(-1, -1, p), new.to(x.dtype))
        masked = masked.scatter(1, due, False)
    return x


def _raster(model, system, cache, next_position: torch.Tensor, last_hidden: torch.Tensor, b: int, guided: bool,
            cfg_scale: float, steps: int, sampler: DDIMSampler, generator, device) -> torch.Tensor:
    """Causal generation in raster order: z of slot i models patch i + 1; returns image tokens (b, N, P)."""
    config = system.config
    n, p = config.grid**2, config.patch_dim
    rows = 2 * b if guided else b
    layout = continue_layout(next_position, Span(n, False, (config.grid, config.grid)))  # causal, 2D positions
    token = torch.full((rows, 1), system.tokenizer.pad_id, device=device)
    kind = torch.full((rows, 1), PATCH, device=device)
    not_masked = torch.zeros((rows, 1), dtype=torch.bool, device=device)
    z = last_hidden[:, None, :]  # (rows, 1, D): the BOI slot models the first patch
    x = torch.zeros((b, n, p), device=device)
    for i in range(n):
        z_cond, z_uncond = _split(z, guided)
        scale = linear_cfg_scale(cfg_scale, (i + 1) / n)
        new = sample_with_head(model.head, z_cond, z_uncond, scale, system.path, sampler, steps, generator)  # (b, 1, P)
        x[:, i : i + 1] = new.to(x.dtype)
        if i == n - 1:
            break
        fed = torch.cat([x[:, i : i + 1]] * 2) if guided else x[:, i : i + 1]
        z = model(token, kind, fed, not_masked, layout[i : i + 1], cache=cache).hidden  # commit patch i
    return x


@LOOPS.register("masked_ar.generate_images")
@torch.no_grad()
def generate_images(model, system, prompts: list[str], steps: int = 25, cfg_scale: float = 3.0,
                    sampler: str | None = None, seed: int = 0, batch_size: int = 16, precision: str = "bf16",
                    iterations: int | None = None, temperature: float | None = None) -> torch.Tensor:
    """Text -> image. Returns (len(prompts), C, H, W) in [0, 1].

    ``steps`` are the head's denoising steps per token (MAR: 100); ``iterations`` the masked-AR iterations
    (default: the system's; raster order always takes N); ``temperature`` defaults to the system's.
    """
    device = next(model.parameters()).device
    config, options = system.config, system.options
    if options.order == "raster" and iterations is not None:
        raise UmmError("iterations apply to masked order; raster order generates one token per step")
    iterations = options.iterations if iterations is None else iterations
    temperature = options.temperature if temperature is None else temperature
    head_sampler = make_head_sampler(sampler, system.path, temperature, system.token_clip)
    generator = torch.Generator(device=device).manual_seed(seed)
    guided = cfg_scale != 1.0
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seqs = [system.t2i_prompt(p) for p in chunk] + ([system.t2i_prompt(None) for _ in chunk] if guided else [])
        with autocast(precision, device):
            cache, batch, _, last_hidden = prefill(model, system, seqs, config.grid**2, device)
            if options.order == "masked":
                x = _masked_ar(model, system, cache, batch["next_position"], len(chunk), guided, cfg_scale, iterations,
                               steps, head_sampler, generator, device)
            else:
                x = _raster(model, system, cache, batch["next_position"], last_hidden, len(chunk), guided, cfg_scale,
                            steps, head_sampler, generator, device)
        images.append(system.tokens_to_images(x.float()))
    return torch.cat(images)


@torch.no_grad()
def _decode_after(model, system, seqs: list[Sequence], max_new_tokens: int, precision: str) -> list[str]:
    device = next(model.parameters()).device
    config = system.config
    with autocast(precision, device):
        cache, batch, logits, _ = prefill(model, system, seqs, max_new_tokens, device)

        def step(token: torch.Tensor, layout: Layout) -> torch.Tensor:
            kinds = torch.full(token.shape, TEXT, device=device)
            patches = torch.zeros((*token.shape, config.patch_dim), device=device)
            masked = torch.zeros(token.shape, dtype=torch.bool, device=device)
            return model(token, kinds, patches, masked, layout, cache=cache).logits[:, -1].float()

        ids = decode_tokens(step, logits, batch["next_position"], max_new_tokens, system.tokenizer.eos_id)
    return [system.tokenizer.decode(row) for row in ids]


@LOOPS.register("masked_ar.caption")
@torch.no_grad()
def caption(model, system, images: torch.Tensor, max_new_tokens: int = CAPTION_TOKENS, batch_size: int = 64,
            precision: str = "bf16") -> list[str]:
    """Image (N, C, H, W) in [0, 1] -> caption, greedy decoding after ``[BOS] [BOI] image [EOI]``."""
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        seqs = [system.image_prompt(x, None) for x in system.image_tokens(images[start : start + batch_size])]
        out += _decode_after(model, system, seqs, max_new_tokens, precision)
    return out


@LOOPS.register("masked_ar.answer")
@torch.no_grad()
def answer(model, system, images: torch.Tensor, questions: list[str], max_new_tokens: int = ANSWER_TOKENS,
           batch_size: int = 64,
           precision: str = "bf16") -> list[str]:
    """(image, question) -> short answer, greedy decoding after ``[BOS] [BOI] image [EOI] question``."""
    if len(images) != len(questions):
        raise UmmError(f"{len(images)} images but {len(questions)} questions")
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        tokens = system.image_tokens(images[start : start + batch_size])
        seqs = [system.image_prompt(x, q) for x, q in zip(tokens, questions[start : start + batch_size])]
        out += _decode_after(model, system, seqs, max_new_tokens, precision)
    return out
