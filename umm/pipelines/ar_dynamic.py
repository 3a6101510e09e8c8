"""Autoregressive generation of a variable number of image codes (LaVIT's dynamic visual tokenizer, Jin et al.
2024): after ``[BOS] caption [BOI]`` each row samples codes until it emits EOI. Captions and answers decode with the
AR loops of ``umm/pipelines/ar.py``.

A system supplies ``config`` (``vocab_size``, ``text_vocab``, ``max_image_tokens``), ``tokenizer`` (``pad_id``,
``bos_id``, ``boi_id``, ``eoi_id``), ``text_ids`` and the frozen ``image_tokenizer`` whose ``decode`` reads
codes padded with PAD_CODE (-1).
"""

from __future__ import annotations

import torch

from umm import UmmError
from umm.data.sequence import Sequence
from umm.nn import Span, autocast, continue_layout
from umm.pipelines import ar
from umm.registry import LOOPS
from umm.samplers.ar import sample_next

PAD_CODE = -1  # a dropped position of the dynamic tokenizer (umm.tokenizers.image.dynamic.PAD_CODE)


def allowed_tokens(config, eoi_id: int, generated: int) -> torch.Tensor:
    """(V,) bool: image codes, and EOI once at least one code exists; only EOI when the image is full (``config``:
    ``vocab_size``, ``text_vocab``, ``max_image_tokens``)."""
    allowed = torch.zeros(config.vocab_size, dtype=torch.bool)
    if generated < config.max_image_tokens:
        allowed[config.text_vocab :] = True
    allowed[eoi_id] = generated > 0
    return allowed


@LOOPS.register("ar_dynamic.generate_images")
@torch.no_grad()
def generate_images(model, system, prompts: list[str], cfg_scale: float = 3.0,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16,
                    precision: str = "bf16", use_cache: bool = True, return_codes: bool = False,
                    steps: int | None = None, sampler: str | None = None) -> torch.Tensor:
    """Text -> images (N, 3, H, W) in [0, 1] (or codes (N, max_image_tokens) padded with -1). One step per
    token, so ``steps`` sets nothing, and there is no ``sampler`` to pick.

    Each row samples codes after ``[BOS] caption [BOI]`` until it emits EOI; guidance combines the prompt and
    the caption-free ``[BOS] [BOI]`` on log-probabilities, and both branches are fed the sampled token. A row
    that has finished keeps being fed EOI (its outputs are ignored) until every row has finished.
    """
    if sampler is not None:
        raise UmmError(f"{system.family} samples visual tokens one at a time until EOI; there is no {sampler!r} sampler")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    config, tok = system.config, system.tokenizer
    n = config.max_image_tokens
    branches = 2 if cfg_scale != 1.0 else 1
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        b = len(chunk)
        texts = chunk + ([None] * b if branches == 2 else [])
        seqs = [Sequence(pad_id=tok.pad_id).text([tok.bos_id] + ([] if t is None else system.text_ids(t)) + [tok.boi_id],
                                                 loss=False) for t in texts]
        tokens, layout = ar.prompt_batch(system, seqs, device)
        codes = torch.full((b, n), PAD_CODE, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        with autocast(precision, device):
            if use_cache:
                step, logits = ar.cached_steps(model, tokens, layout, n + 1)
            else:
                step, logits = ar.recompute_steps(model, tokens, layout)
            next_position = layout.next_position
            for i in range(n + 1):
                guided = logits.log_softmax(-1)
                if branches == 2:
                    cond, uncond = guided.chunk(2)
                    guided = uncond + cfg_scale * (cond - uncond)
                # restrict after guidance (-inf inside the guidance arithmetic would give nan)
                guided = guided.masked_fill(~allowed_tokens(config, tok.eoi_id, i).to(device), float("-inf"))
                token = sample_next(guided, temperature, top_k, top_p, generator).cpu()  # (B,)
                token = torch.where(done, tok.eoi_id, token)
                is_code = token >= config.text_vocab
                if i < n:
                    codes[:, i] = torch.where(is_code, token - config.text_vocab, PAD_CODE)
                done |= ~is_code
                if bool(done.all()):
                    break
                token_layout = continue_layout(next_position, Span(1))
                logits = step(token.repeat(branches)[:, None].to(device), token_layout)
                next_position = token_layout.next_position
        out.append(codes if return_codes else ar.decode_codes(system, codes))
    return torch.cat(out)


LOOPS.register("ar_dynamic.caption")(ar.caption)
LOOPS.register("ar_dynamic.answer")(ar.answer)
