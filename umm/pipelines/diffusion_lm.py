"""Pipelines for models that are a language model and a diffusion model at once (Transfusion, MonoFormer).

The model is any module with ``forward(tokens, kinds, patches, times, layout, cache, commit)`` returning
``(logits, image)`` and a ``new_cache(batch, max_len)``; the system supplies the tokenizer, the noise path,
the image geometry and ``image_prefix`` (slots that open an image span: none for Transfusion, the time
token for MonoFormer). Each loop below is the whole algorithm, in the open.
"""

from __future__ import annotations

import torch

from umm.data.sequence import ANSWER_TOKENS, CAPTION_TOKENS, PATCH, SPECIAL, TEXT, Sequence, collate
from umm.nn import Layout, Span, autocast, continue_layout
from umm.pipelines.decode import decode_tokens
from umm.samplers import DDIMSampler, DDPMSampler, DPMSolverSampler, EulerSampler, HeunSampler, cfg
from umm.registry import LOOPS

IMAGE_BLOCK = 1_000_000  # span id for generated images: never equal to a prompt span's id


SAMPLERS = ("ddim", "ddpm", "dpm++", "euler", "heun")


def make_sampler(name: str | None, path, clip: float | None = 1.0):
    """A sampler by name; ``None`` picks Euler on the flow path and DDIM on cosine/linear paths. ``clip`` bounds
    the predicted x0 (pixels live in [-1, 1]; latents pass None)."""
    name = name or ("euler" if path.schedule == "flow" else "ddim")
    if name == "euler":
        return EulerSampler(path, clip)
    if name == "heun":
        return HeunSampler(path, clip)
    if name == "ddim":
        return DDIMSampler(path, clip=clip)
    if name == "ddpm":
        return DDPMSampler(path, clip=clip)
    if name == "dpm++":
        return DPMSolverSampler(path, clip=clip)  # multistep: a fresh instance per loop, as here
    raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")


def _prefill(model, system, seqs: list[Sequence], extra: int, device) -> tuple[object, dict, torch.Tensor]:
    """Run left-padded prompt sequences into a fresh cache; return (cache, batch, last logits (B, V))."""
    config = system.config
    batch = collate(seqs, patch_dim=config.patch_dim, rope_axes=config.transformer.rope_axes, pad_left=True,
                    pad_id=system.tokenizer.pad_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    cache = model.new_cache(len(seqs), batch["tokens"].shape[1] + extra, device)
    times = torch.zeros(batch["tokens"].shape, device=device)
    out = model(batch["tokens"], batch["kinds"], batch["patches"], times, Layout.of(batch), cache=cache)
    return cache, batch, out.logits[:, -1].float()


def _image_chunk(system, rows: int, next_position: torch.Tensor, device):
    """Token ids, slot kinds and layout of one image span (with its prefix) appended after a prompt."""
    config, prefix = system.config, system.image_prefix()
    n = config.grid**2
    tokens = torch.full((rows, len(prefix) + n), system.tokenizer.pad_id, device=device)
    if prefix:
        tokens[:, : len(prefix)] = torch.tensor(prefix, device=device)
    kinds = torch.full(tokens.shape, PATCH, device=device)
    kinds[:, : len(prefix)] = SPECIAL
    span = Span(len(prefix) + n, True, (config.grid, config.grid), prefix=len(prefix))
    return tokens, kinds, continue_layout(next_position, span, IMAGE_BLOCK)


def _denoise_image(model, system, cache, next_position, rows: int, guided: bool, cfg_scale: float, steps: int,
                   sampler: str | None, generator, device,
                   cfg_interval: tuple[float, float] | None = None) -> tuple[torch.Tensor, tuple]:
    """Sample one image per prompt row against the cached prompt; returns tokens (B, N, P).

    ``cfg_interval`` (lo, hi): guide only the steps whose time t lies in [lo, hi] and run the others on the
    conditional rows alone, half the rows (Kynkaanniemi et al. 2024, arXiv 2404.07724, "Applying guidance in
    a limited interval": guidance at the low-noise end costs network calls and adds little)."""
    config = system.config
    b = rows // 2 if guided else rows
    tokens, kinds, layout = _image_chunk(system, rows, next_position, device)
    n_prefix = len(system.image_prefix())
    sampler_ = make_sampler(sampler, system.path, system.sample_clip)
    cond_only = (tokens[:b], kinds[:b], layout.rows(b), cache.rows(b)) if guided else (tokens, kinds, layout, cache)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        guide = guided and (cfg_interval is None or cfg_interval[0] <= float(t[0]) <= cfg_interval[1])
        chunk_tokens, chunk_kinds, chunk_layout, chunk_cache = (tokens, kinds, layout, cache) if guide else cond_only
        x_in = torch.cat([x, x]) if guide else x
        patches = torch.cat([x_in.new_zeros(x_in.shape[0], n_prefix, x.shape[-1]), x_in], dim=1)
        times = t[:1].expand(x_in.shape[0], tokens.shape[1]).to(device)
        out = model(chunk_tokens, chunk_kinds, patches, times, chunk_layout, cache=chunk_cache, commit=False)
        out = out.image[:, n_prefix:].float()
        if guide:
            cond, uncond = out.chunk(2)
            return cfg(cond, uncond, cfg_scale)
        return out

    x = torch.randn((b, config.grid**2, config.patch_dim), generator=generator, device=device)
    times = system.path.sampling_times(steps)
    for t, t_next in zip(times[:-1], times[1:]):
        x = sampler_.step(denoise, x, t, t_next, generator)
    if system.sample_clip is not None:
        x = x.clamp(-system.sample_clip, system.sample_clip)
    return x, (tokens, kinds, layout)


@LOOPS.register("diffusion_lm.generate_images")
@torch.no_grad()
def generate_images(model, system, prompts: list[str], steps: int = 25, cfg_scale: float = 3.0, sampler: str | None = None,
                    seed: int = 0, batch_size: int = 16, precision: str = "bf16",
                    cfg_interval: tuple[float, float] | None = None) -> torch.Tensor:
    """Text -> image. Returns (len(prompts), C, H, W) in [0, 1]. ``cfg_interval``: see :func:`_denoise_image`.

    The prompt ``[BOS] caption [BOI]`` (and, for guidance, the unconditional ``[BOS] [BOI]``) is encoded
    once into the KV cache; each denoising step runs only the N image slots against it.
    """
    device = next(model.parameters()).device
    tok, config = system.tokenizer, system.config
    generator = torch.Generator(device=device).manual_seed(seed)
    images = []
    guided = cfg_scale != 1.0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seqs = [Sequence(pad_id=tok.pad_id).text([tok.bos_id] + system.text_ids(p) + [tok.boi_id], loss=False) for p in chunk]
        if guided:
            seqs += [Sequence(pad_id=tok.pad_id).text([tok.bos_id, tok.boi_id], loss=False) for _ in chunk]
        with autocast(precision, device):
            cache, batch, _ = _prefill(model, system, seqs, len(system.image_prefix()) + config.grid**2, device)
            x, _ = _denoise_image(model, system, cache, batch["next_position"], len(seqs), guided, cfg_scale, steps,
                                  sampler, generator, device, cfg_interval)
        images.append(system.decode_tokens(x))
    return torch.cat(images)


def _image_prompts(system, images: torch.Tensor, texts: list[str] | None) -> list[Sequence]:
    """``[BOS] [BOI] <clean image> [EOI] (text)`` per image."""
    tok, config = system.tokenizer, system.config
    seqs = []
    for i, patches in enumerate(system.encode_images(images)):
        seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id, tok.boi_id], loss=False)
        seq.image(patches, (config.grid, config.grid), loss=False, prefix=system.image_prefix())
        seq.text([tok.eoi_id] + (system.text_ids(texts[i]) if texts else []), loss=False)
        seqs.append(seq)
    return seqs


@torch.no_grad()
def _decode_after(model, system, seqs: list[Sequence], max_new_tokens: int, precision: str) -> list[str]:
    device = next(model.parameters()).device
    config = system.config
    with autocast(precision, device):
        cache, batch, logits = _prefill(model, system, seqs, max_new_tokens, device)

        def step(token: torch.Tensor, layout: Layout) -> torch.Tensor:
            kinds = torch.full(token.shape, TEXT, device=device)
            patches = torch.zeros((*token.shape, config.patch_dim), device=device)
            return model(token, kinds, patches, torch.zeros(token.shape, device=device), layout, cache=cache).logits[:, -1].float()

        ids = decode_tokens(step, logits, batch["next_position"], max_new_tokens, system.tokenizer.eos_id)
    return [system.tokenizer.decode(row) for row in ids]


@LOOPS.register("diffusion_lm.caption")
@torch.no_grad()
def caption(model, system, images: torch.Tensor, max_new_tokens: int = CAPTION_TOKENS, batch_size: int = 64,
            precision: str = "bf16") -> list[str]:
    """Image (N, C, H, W) in [0, 1] -> caption, greedy decoding after ``[BOS] [BOI] image [EOI]``."""
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        out += _decode_after(model, system, _image_prompts(system, images[start : start + batch_size], None),
                             max_new_tokens, precision)
    return out


@LOOPS.register("diffusion_lm.answer")
@torch.no_grad()
def answer(model, system, images: torch.Tensor, questions: list[str], max_new_tokens: int = ANSWER_TOKENS,
           batch_size: int = 64,
           precision: str = "bf16") -> list[str]:
    """(image, question) -> short answer, greedy decoding after ``[BOS] [BOI] image [EOI] question``."""
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        seqs = _image_prompts(system, images[start : start + batch_size], questions[start : start + batch_size])
        out += _decode_after(model, system, seqs, max_new_tokens, precision)
    return out


@LOOPS.register("diffusion_lm.generate_interleaved")
@torch.no_grad()
def generate_interleaved(model, system, prompt: str, max_new_tokens: int = 64, steps: int = 25,
                         temperature: float = 0.0, seed: int = 0, precision: str = "bf16",
                         force_image: bool = False) -> list[str | torch.Tensor]:
    """Text that may open images: decode text; on BOI, diffuse an image in place; then continue after EOI.

    ``force_image`` makes the first generated token BOI (an image right after the prompt, then text).

    Returns the segments in order: strings and (C, H, W) images in [0, 1]. Images are sampled without
    guidance: inside one stream an image is conditioned on everything before it, and an unconditional
    branch would need a second cache of a different history.
    """
    device = next(model.parameters()).device
    tok, config = system.tokenizer, system.config
    generator = torch.Generator(device=device).manual_seed(seed)
    n_image = len(system.image_prefix()) + config.grid**2
    seqs = [Sequence(pad_id=tok.pad_id).text([tok.bos_id] + system.text_ids(prompt), loss=False)]
    segments: list[str | torch.Tensor] = []
    text: list[int] = []
    with autocast(precision, device):
        cache, batch, logits = _prefill(model, system, seqs, max_new_tokens + 4 * (n_image + 2), device)
        next_position = batch["next_position"]
        for i in range(max_new_tokens):
            token = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)) if temperature > 0 \
                else int(logits.argmax(-1))
            if force_image and i == 0:
                token = tok.boi_id
            if token == tok.eos_id:
                break
            if token == tok.boi_id and cache.length + n_image + 2 <= cache.max_len:
                if text:
                    segments.append(tok.decode(text))
                    text = []
                logits, next_position = _feed(model, system, cache, token, next_position, device)
                x, (tokens, kinds, layout) = _denoise_image(model, system, cache, next_position, 1, False, 1.0, steps,
                                                            None, generator, device)
                patches = torch.cat([x.new_zeros(1, len(system.image_prefix()), x.shape[-1]), x], dim=1)
                model(tokens, kinds, patches, torch.zeros(tokens.shape, device=device), layout, cache=cache)  # commit, clean
                next_position = layout.next_position
                segments.append(system.decode_tokens(x)[0])
                logits, next_position = _feed(model, system, cache, tok.eoi_id, next_position, device)
                continue
            text.append(token)
            logits, next_position = _feed(model, system, cache, token, next_position, device)
    if text:
        segments.append(tok.decode(text))
    return segments


def _feed(model, system, cache, token: int, next_position: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one text token to the cache; return (logits (1, V), next position)."""
    layout = continue_layout(next_position, Span(1))
    ids = torch.tensor([[token]], device=device)
    out = model(ids, torch.full(ids.shape, TEXT, device=device), torch.zeros((1, 1, system.config.patch_dim), device=device),
                torch.zeros(ids.shape, device=device), layout, cache=cache)
    return out.logits[:, -1].float(), layout.next_position


@LOOPS.register("diffusion_lm.predict_x0")
@torch.no_grad()
def predict_x0(model, system, images: torch.Tensor, prompts: list[str], t: float, seed: int = 0,
               batch_size: int = 32, precision: str = "bf16") -> torch.Tensor:
    """The one-step x0 prediction from the true x_t: noise each image to time ``t`` along the system's
    path, run the t2i sequence ``[BOS] prompt [BOI] x_t [EOI]`` once, and decode the implied x0.

    This is the denoise check (a diagnostic): a model that cannot recover a readable image from
    x_t at small t cannot sample one either, whatever its sampler does. Returns (B, 3, H, W) in [0, 1]."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out_images = []
    for start in range(0, len(prompts), batch_size):
        chunk = images[start : start + batch_size]
        patches = system.encode_images(chunk).to(device)  # (B, N, P)
        seqs = [system.build({"caption": p}, x, "t2i", None) for p, x in zip(prompts[start : start + batch_size], patches)]
        config = system.config
        batch = collate(seqs, None, config.patch_dim, config.transformer.rope_axes, pad_id=system.tokenizer.pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        is_patch = batch["kinds"] == PATCH
        times = (batch["block"] >= 0).float() * t  # (B, T): the image span at time t, as in training
        noise = torch.randn(batch["patches"].shape, generator=generator, device=device)
        noisy = torch.where(is_patch[..., None], system.path.add_noise(batch["patches"], noise, times), batch["patches"])
        with autocast(precision, device):
            out = model(batch["tokens"], batch["kinds"], noisy, times, Layout.of(batch))
        x0, _ = system.path.to_x0_eps(out.image.float(), noisy.float(), times)
        tokens = torch.stack([x0[i][is_patch[i]] for i in range(len(seqs))])  # (B, N, P)
        if system.sample_clip is not None:
            tokens = tokens.clamp(-system.sample_clip, system.sample_clip)
        out_images.append(system.decode_tokens(tokens).cpu())
    return torch.cat(out_images)
