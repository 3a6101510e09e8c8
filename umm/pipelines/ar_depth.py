"""VILA-U's generation and understanding (Wu et al. 2024): the main transformer reads and predicts *positions*
(each the sum of its D residual code embeddings), a small depth transformer samples the D codes of the next
position one by one (RQ-Transformer style, Lee et al. 2022), and text is decoded greedily after an image.

The model is ``umm.models.vila_u.VilaU``-shaped: ``forward(tokens, codes, is_image, layout, cache)`` with
``.logits`` and ``.hidden``, ``new_cache``, ``new_depth_cache``, ``depth_inputs``, ``depth_step``, ``code_embed``
and ``depth_position``; the system supplies ``batch_of``, ``understanding_prompts``, ``text_ids`` and the
vision tower as ``image_tokenizer`` (``umm/pipelines/protocols.py``, ``DepthCodeAR``).
"""

from __future__ import annotations

import torch

from umm import UmmError
from umm.data.sequence import ANSWER_TOKENS, CAPTION_TOKENS, Sequence
from umm.nn import Layout, Span, autocast, continue_layout
from umm.pipelines import ar
from umm.pipelines.decode import decode_tokens
from umm.registry import LOOPS
from umm.samplers import cfg
from umm.samplers.ar import sample_next


@torch.no_grad()
def sample_depth(model, context: torch.Tensor, branches: int, cfg_scale: float, temperature: float, top_k: int,
                 top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """The D codes of one position for each of the B = rows / branches images, from the main transformer's
    states ``context`` (rows, C), rows branch-major [cond; uncond]. Every branch is fed the guided samples.
    Returns (B, D)."""
    rows = context.shape[0]
    cache = model.new_depth_cache(rows, context.device)
    x = model.depth_inputs(context, context.new_zeros((rows, 0), dtype=torch.long))  # (rows, 1, C)
    codes = []
    for d in range(model.config.code_depth):
        logits = model.depth_step(x, d, cache).float()  # (rows, K)
        if branches == 2:
            logits = cfg(*logits.log_softmax(-1).chunk(2), cfg_scale)  # uncond + s * (cond - uncond)
        code = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
        codes.append(code)
        if d + 1 < model.config.code_depth:  # the next step reads the cumulative code embedding
            cumulative = model.code_embed(torch.stack(codes, 1)).sum(1).repeat(branches, 1)  # (rows, C)
            x = (cumulative + model.depth_position[d + 1]).to(context.dtype)[:, None]
    return torch.stack(codes, 1)


@LOOPS.register("ar_depth.generate_images")
@torch.no_grad()
def generate_images(model, system, prompts: list[str], cfg_scale: float = 3.0,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16,
                    precision: str = "bf16", return_codes: bool = False, steps: int | None = None,
                    sampler: str | None = None) -> torch.Tensor:
    """Text -> images (N, 3, H, W) in [0, 1] (codes (N, h, w, D) with ``return_codes``). Guidance: prompt and
    the caption-free ``[BOS] [BOI]`` (VILA-U's empty conversation), combined on log-probabilities. One step per
    position and depth, so ``steps`` sets nothing and there is no ``sampler`` to pick."""
    if sampler is not None:
        raise UmmError(f"{system.family} samples codes position by position with its depth head; there is no "
                       f"{sampler!r} sampler (set temperature/top_k/top_p instead)")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    config, tok = system.config, system.tokenizer
    n, depth = config.grid**2, config.code_depth
    branches = 2 if cfg_scale != 1.0 else 1
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        texts = chunk + ([None] * len(chunk) if branches == 2 else [])
        seqs = [Sequence(pad_id=tok.pad_id).text([tok.bos_id] + ([] if t is None else system.text_ids(t)) + [tok.boi_id],
                                                 loss=False) for t in texts]
        batch = {k: v.to(device) for k, v in system.batch_of(seqs, pad_left=True).items()}
        layout = Layout.of(batch)
        span = continue_layout(layout.next_position, Span(n, False, (config.grid, config.grid)))  # causal, 2D RoPE
        rows = len(seqs)
        pad = torch.full((rows, 1), tok.pad_id, device=device)
        is_image = torch.ones((rows, 1), dtype=torch.bool, device=device)
        codes = []
        with autocast(precision, device):
            cache = model.new_cache(rows, batch["tokens"].shape[1] + n, device)
            context = model(batch["tokens"], batch["codes"], batch["is_image"], layout, cache=cache).hidden[:, -1]
            for i in range(n):
                position = sample_depth(model, context, branches, cfg_scale, temperature, top_k, top_p, generator)
                codes.append(position)
                if i + 1 < n:  # feed the position (the sum of its code embeddings) to every branch
                    fed = position.repeat(branches, 1)[:, None]  # (rows, 1, D)
                    context = model(pad, fed, is_image, span[i : i + 1], cache=cache).hidden[:, -1]
        grid = torch.stack(codes, 1).view(len(chunk), config.grid, config.grid, depth)
        out.append(grid.cpu() if return_codes else ar.decode_codes(system, grid))
    return torch.cat(out)


@LOOPS.register("ar_depth.answer")
@torch.no_grad()
def answer(model, system, images: torch.Tensor, questions: list[str] | None, *, max_new_tokens: int = ANSWER_TOKENS,
           batch_size: int = 64, precision: str = "bf16") -> list[str]:
    """(image, question) -> text, greedy with the KV cache after ``[BOS] [BOI] image [EOI] (question)``."""
    device = next(model.parameters()).device
    tok = system.tokenizer
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        codes = ar.encode_images(system, images[start : start + batch_size])
        asks = [None] * len(codes) if questions is None else questions[start : start + batch_size]
        batch = {k: v.to(device) for k, v in system.batch_of(system.understanding_prompts(codes, asks), pad_left=True).items()}
        layout = Layout.of(batch)
        rows = batch["tokens"].shape[0]
        with autocast(precision, device):
            cache = model.new_cache(rows, batch["tokens"].shape[1] + max_new_tokens, device)
            first = model(batch["tokens"], batch["codes"], batch["is_image"], layout, cache=cache).logits[:, -1].float()
            no_codes = torch.zeros(rows, 1, system.config.code_depth, dtype=torch.long, device=device)
            no_image = torch.zeros(rows, 1, dtype=torch.bool, device=device)

            def step(token: torch.Tensor, token_layout: Layout) -> torch.Tensor:
                return model(token, no_codes, no_image, token_layout, cache=cache).logits[:, -1].float()

            ids = decode_tokens(step, first, layout.next_position, max_new_tokens, tok.eos_id)
        out += [tok.decode(row) for row in ids]
    return out


@LOOPS.register("ar_depth.caption")
@torch.no_grad()
def caption(model, system, images: torch.Tensor, *, max_new_tokens: int = CAPTION_TOKENS, batch_size: int = 64,
            precision: str = "bf16") -> list[str]:
    return answer(model, system, images, None, max_new_tokens=max_new_tokens, batch_size=batch_size, precision=precision)
