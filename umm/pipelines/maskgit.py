"""Masked-token (MaskGIT) generation of discrete image codes: Show-o's text -> image and inpainting.

The model is any module with ``forward(tokens, layout, cache=None, commit=True)`` returning ``.logits``
(B, T, V) over one vocabulary, and ``new_cache(batch, max_len, device)``. The system supplies:

``t2i_prompt(text: str | None) -> Sequence``
    the prompt before the image span, ending in BOI; ``None`` is the unconditional prompt of CFG.
``code_range() -> (low, high)``
    where the K image codes sit in the vocabulary (code c is token ``low + c``).
``tokenizer.mask_id``, ``config.grid``, ``image_tokenizer`` (``encode``/``decode``), ``config.transformer``.

The loop (MaskGIT, Chang et al. 2022, arXiv 2202.04200, sec. 3.2; the sampler is
:mod:`umm.samplers.maskgit`): the prompt is run once into a KV cache; every iteration re-reads the whole
image span (one bidirectional span: unknown codes shown as [MASK]) against the cached prompt with
``commit=False``, guides the code logits with MUSE's ``(1 + s) * cond - s * uncond`` (Show-o's form, s = 0
is no guidance), and lets the sampler reveal the most confident codes. The prompt is causal text that never
sees the image, so caching it is exact; Show-o's released code instead re-runs the whole sequence at every
iteration. Cost: one prompt pass + ``steps`` passes over N image tokens (x2 with guidance), whatever N.

Inpainting (Show-o sec. 3.3, "inpainting and extrapolation for free"): the codes of an image are the
starting canvas, only the region to regenerate is masked, and the same loop fills it in; codes outside the
region are never touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from umm import UmmError
from umm.nn import Span, autocast, continue_layout
from umm.pipelines import ar
from umm.samplers import annealed_choice_temperature, mask_schedule, maskgit_step, muse_cfg
from umm.registry import LOOPS

IMAGE_BLOCK = 1_000_000  # span id of the generated image: never equal to a prompt span's id


@torch.no_grad()
def sample_codes(model, system, prompts: list[str | None], codes: torch.Tensor, masked: torch.Tensor, steps: int,
                 cfg_scale: float = 0.0, temperature: float = 1.0, choice_temperature: float = 4.5,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the ``masked`` (B, N) positions of ``codes`` (B, N) given the text ``prompts``; returns (B, N) codes.

    ``cfg_scale`` is MUSE's s (0 = no guidance: the unconditional branch is not run). Call under the
    autocast you want; ``generator`` drives the candidates and the Gumbel noise.
    """
    device = next(model.parameters()).device
    b, n = codes.shape
    grid = system.config.grid
    if n != grid * grid or masked.shape != codes.shape:
        raise UmmError(f"codes {tuple(codes.shape)} and mask {tuple(masked.shape)} must both be (B, {grid * grid})")
    guided = cfg_scale != 0.0
    seqs = [system.t2i_prompt(p) for p in prompts] + ([system.t2i_prompt(None) for _ in prompts] if guided else [])
    tokens, layout = ar.prompt_batch(system, seqs, device)
    cache = model.new_cache(len(seqs), tokens.shape[1] + n, device)
    model(tokens, layout, cache=cache)  # the prompt, once
    span = continue_layout(layout.next_position, Span(n, True, (grid, grid)), IMAGE_BLOCK)
    low, high = system.code_range()
    codes, masked = codes.to(device), masked.to(device)
    remaining = mask_schedule(masked.sum(-1), steps)  # (B, steps)
    for i in range(steps):
        canvas = torch.where(masked, system.tokenizer.mask_id, codes + low)  # (B, N) token ids
        rows = torch.cat([canvas, canvas]) if guided else canvas
        logits = model(rows, span, cache=cache, commit=False).logits[..., low:high].float()  # (rows, N, K)
        if guided:
            logits = muse_cfg(*logits.chunk(2), cfg_scale)
        codes, masked = maskgit_step(logits, codes, masked, remaining[:, i], temperature,
                                     annealed_choice_temperature(choice_temperature, i, steps), generator)
    return codes


@LOOPS.register("maskgit.generate_images")
@torch.no_grad()
def generate_images(model, system, prompts: list[str], steps: int = 16, cfg_scale: float = 0.0,
                    temperature: float = 1.0, choice_temperature: float = 4.5, seed: int = 0, batch_size: int = 16,
                    precision: str = "bf16", return_codes: bool = False, sampler: str | None = None) -> torch.Tensor:
    """Text -> images (N, 3, H, W) in [0, 1] (or codes (N, grid, grid) with ``return_codes``) by MaskGIT in
    ``steps`` iterations; ``cfg_scale`` is MUSE's s (0 = none; Show-o samples with 1.75 to 5)."""
    if sampler not in (None, "maskgit"):
        raise UmmError(f"{system.family} samples image codes with MaskGIT; there is no {sampler!r} sampler to pick")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    n = system.config.grid**2
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        codes = torch.zeros(len(chunk), n, dtype=torch.long)
        masked = torch.ones(len(chunk), n, dtype=torch.bool)
        with autocast(precision, device):
            codes = sample_codes(model, system, chunk, codes, masked, steps, cfg_scale, temperature,
                                 choice_temperature, generator)
        codes = codes.view(-1, system.config.grid, system.config.grid)
        out.append(codes.cpu() if return_codes else ar.decode_codes(system, codes))
    return torch.cat(out)


def region_to_grid(region: torch.Tensor, grid: int) -> torch.Tensor:
    """A pixel mask (B, H, W) bool -> the code positions to regenerate (B, grid * grid): a code is
    regenerated when any pixel of its cell is in the region."""
    if region.ndim != 3 or region.shape[1] != region.shape[2] or region.shape[1] % grid:
        raise UmmError(f"inpainting region must be a (B, H, W) mask with H = W a multiple of {grid}, "
                       f"got {tuple(region.shape)}")
    pooled = F.max_pool2d(region.float()[:, None], region.shape[1] // grid)  # (B, 1, grid, grid)
    return pooled.flatten(1) > 0


@LOOPS.register("maskgit.inpaint")
@torch.no_grad()
def inpaint(model, system, images: torch.Tensor, region: torch.Tensor, prompts: list[str] | None = None,
            steps: int = 16, cfg_scale: float = 0.0, temperature: float = 1.0, choice_temperature: float = 4.5,
            seed: int = 0, batch_size: int = 16, precision: str = "bf16", return_codes: bool = False) -> torch.Tensor:
    """Regenerate ``region`` (B, H, W) bool of ``images`` (B, 3, H, W) in [0, 1], optionally guided by text.

    Without ``prompts`` the unconditional prompt is used (and guidance must be 0). Returns images in [0, 1]
    or, with ``return_codes``, codes (B, grid, grid) whose positions outside the region equal the
    tokenizer's codes of ``images`` bit for bit.
    """
    if len(region) != len(images) or (prompts is not None and len(prompts) != len(images)):
        raise UmmError(f"inpainting needs one region (and prompt) per image: {len(images)} images, "
                       f"{len(region)} regions, {len(prompts) if prompts is not None else 0} prompts")
    if prompts is None and cfg_scale != 0.0:
        raise UmmError("guidance needs text prompts to guide towards; pass prompts or cfg_scale=0")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    grid = system.config.grid
    texts = prompts if prompts is not None else [None] * len(images)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        codes = ar.encode_images(system, images[chunk]).flatten(1)  # (b, N)
        masked = region_to_grid(region[chunk], grid)
        with autocast(precision, device):
            codes = sample_codes(model, system, texts[chunk], codes, masked, steps, cfg_scale, temperature,
                                 choice_temperature, generator)
        codes = codes.view(-1, grid, grid)
        out.append(codes.cpu() if return_codes else ar.decode_codes(system, codes))
    return torch.cat(out)


# captioning and QA of a masked-token system read a clean image and decode text with the AR loops (Show-o sec. 3.3)
LOOPS.register("maskgit.caption")(ar.caption)
LOOPS.register("maskgit.answer")(ar.answer)
