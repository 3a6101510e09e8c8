"""LaVIT (Jin et al. 2023, "Unified Language-Vision Pretraining in LLM with Dynamic Discrete Visual
Tokenization", arXiv 2309.04669).

An image becomes a *variable* number of discrete tokens: the dynamic visual tokenizer
(``umm/tokenizers/image/dynamic.py``, its own recipe ``lavit_tokenizer_s``) keeps the informative patches,
merges the dropped ones into them and quantizes the result. The language model treats those codes as words
of one vocabulary with text (offset by the text vocabulary) and is trained by next-token prediction over
both, with causal attention everywhere (sec. 3.2):

    t2i      [BOS] caption [BOI] c_1 ... c_n [EOI] [EOS]        NTP on everything (n varies per image)
    caption  [BOS] [BOI] c_1 ... c_n [EOI] caption [EOS]        NTP on the caption
    qa       [BOS] [BOI] c_1 ... c_n [EOI] question answer [EOS]

Generation (sec. 3.3) samples codes after BOI until the model emits EOI, so the model decides how many
tokens an image gets (at least one, at most the tokenizer's N), with classifier-free guidance (the caption
is dropped with probability ``cfg_dropout`` in training) and top-k/top-p; the tokenizer's decoder turns the
sequence back into pixels (LaVIT uses a diffusion de-tokenizer; umm's tokenizer decodes pixels itself).
Captioning and QA decode greedily with the KV cache (``umm/pipelines/ar.py``).

Shapes: B batch, T slots, n kept codes of an image (<= N), K codebook size, D width, V = text vocab + K.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from umm import UmmError
from umm.data.sequence import Sequence, ar_sequence, batch_rng, collate
from umm.models.factory import register_model
from umm.models.system import FrozenPart, SystemBase
from umm.nn import Layout, TokenLM, TransformerConfig
from umm.objectives import next_token_loss, split_cross_entropy
from umm.registry import ARCHITECTURES, SYSTEMS
from umm.tokenizers import image as image_tokenizers  # the module: it imports umm.models itself
from umm.tokenizers.image.dynamic import PAD_CODE



@dataclass(frozen=True)
class LavitConfig:
    family: ClassVar[str] = "lavit"
    text_vocab: int = 512  # decided by the system: the text tokenizer's size
    image_codes: int = 1024  # decided by the system: the dynamic tokenizer's codebook size
    image_size: int = 32  # decided by the system
    max_image_tokens: int = 64  # decided by the system: the most tokens the tokenizer keeps (its grid's N)
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(qk_norm=True))

    @property
    def vocab_size(self) -> int:
        return self.text_vocab + self.image_codes


@ARCHITECTURES.register("lavit")
class Lavit(TokenLM):
    """A decoder-only language model over one vocabulary of text tokens and visual codes (1D RoPE: the
    visual tokens of a dynamic tokenizer have an order, not a grid)."""

    config_class = LavitConfig


@register_model
def lavit_s() -> LavitConfig:
    """~6M parameters (Chameleon-s width and depth)."""
    return LavitConfig(transformer=TransformerConfig(dim=256, depth=6, heads=4, qk_norm=True))


@register_model
def test_lavit() -> LavitConfig:
    return LavitConfig(image_size=16, max_image_tokens=16, transformer=TransformerConfig(dim=32, depth=2, heads=2,
                                                                                         qk_norm=True))


# ---- system -------------------------------------------------------------------------------------------------


def _load_dynamic_tokenizer(name_or_dir) -> nn.Module:
    images = image_tokenizers.load_image_tokenizer(name_or_dir)
    if images.config.family != "lavit_tokenizer":
        raise UmmError(f"LaVIT needs a dynamic (variable-length) visual tokenizer; {str(name_or_dir)!r} is a "
                       f"{images.config.family!r} (train one with umm train lavit_tokenizer_s)")
    return images


@dataclass(frozen=True)
class LavitOptions:
    # the frozen dynamic tokenizer: a trained run (runs/lavit_tokenizer_s/model), or in tests a registered name
    # (fresh weights, with a warning); unset is an error naming the recipe that trains one
    image_tokenizer: str | None = None
    cfg_dropout: float = 0.1
    max_text_tokens: int = 32
    temperature: float = 1.0  # image-code sampling defaults of generate_images
    top_k: int = 0
    top_p: float = 1.0


@SYSTEMS.register("lavit")
class LavitSystem(SystemBase):
    family = "lavit"
    tasks = ("t2i", "caption", "qa")
    capabilities = ("t2i", "caption", "qa")
    Options = LavitOptions
    mechanism = "ar_dynamic"  # umm/pipelines/ar_dynamic.py: codes until EOI, as many as the model wants
    frozen_parts = {"image_tokenizer": FrozenPart("image_tokenizer", "lavit_tokenizer_s", _load_dynamic_tokenizer)}

    def __init__(self, tokenizer, config: LavitConfig, options: LavitOptions | None = None,
                 image_tokenizer: nn.Module | None = None):
        super().__init__(tokenizer, config, options, image_tokenizer=image_tokenizer)
        images = self.image_tokenizer
        if (images.codebook_size, images.tokens_per_image) != (config.image_codes, config.max_image_tokens):
            raise UmmError(f"image tokenizer ({images.codebook_size} codes, up to {images.tokens_per_image} tokens) "
                           f"does not match the model ({config.image_codes} codes, up to {config.max_image_tokens})")

    @classmethod
    def model_overrides(cls, tokenizer, options: LavitOptions) -> dict:
        images = cls.load_part("image_tokenizer", options, warn=False)  # the system warns once, when it is built
        return {"text_vocab": tokenizer.vocab_size, "image_codes": images.codebook_size,
                "image_size": images.config.image_size, "max_image_tokens": images.tokens_per_image}

    # -- sequences ----------------------------------------------------------------------------------------

    def image_ids(self, codes: torch.Tensor) -> list[int]:
        """One image's codes (N,) padded with PAD_CODE -> its n token ids in the shared vocabulary."""
        return (codes[codes != PAD_CODE] + self.config.text_vocab).tolist()

    def add_image(self, seq: Sequence, codes: torch.Tensor, loss: bool) -> Sequence:
        """``[BOI] c_1 .. c_n [EOI]``: plain causal tokens, as many as the tokenizer kept."""
        return seq.text([self.tokenizer.boi_id] + self.image_ids(codes) + [self.tokenizer.eoi_id], loss=loss)

    def build(self, sample: dict, codes: torch.Tensor, task: str, rng: random.Random, drop_caption: bool) -> Sequence:
        self.check_task(task)
        return ar_sequence(self.tokenizer, sample, task, lambda seq, loss: self.add_image(seq, codes, loss=loss),
                           self.text_ids, rng, drop_caption)

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        """Sequences of different lengths (each image has its own number of tokens), right-padded."""
        self.check_task(task)
        codes = self.image_tokenizer.encode(torch.stack([s["image"] for s in samples]))  # (B, N), frozen
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        rng = batch_rng(generator)
        seqs = [self.build(s, c, task, rng, bool(d) and task == "t2i") for s, c, d in zip(samples, codes, drop)]
        return collate(seqs, rope_axes=self.config.transformer.rope_axes, pad_id=self.tokenizer.pad_id, multiple_of=8)

    def understanding_prompt(self, codes: torch.Tensor, question: str | None) -> Sequence:
        """``[BOS] [BOI] codes [EOI] (question)`` for ``umm.pipelines.ar``'s captioning and QA."""
        seq = self.add_image(Sequence(pad_id=self.tokenizer.pad_id).text([self.tokenizer.bos_id], loss=False),
                             codes, loss=False)
        return seq.text([] if question is None else self.text_ids(question), loss=False)

    # -- objective --------------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        layout = Layout.of(batch)
        logits = model(batch["tokens"], layout).logits  # (B, T, V)
        targets = batch["text_targets"]
        out = {"lm_loss": next_token_loss(logits, targets)}
        # diagnostics: the same cross-entropy split by what is predicted
        out.update(split_cross_entropy(logits, targets, self.config.text_vocab))
        return out

    # -- capabilities (the loops: umm/pipelines/ar_dynamic.py, captions and answers by umm/pipelines/ar.py) ----

    def sampling_defaults(self, capability: str) -> dict:
        """The code sampler's temperature and top-k/p from the options."""
        o = self.options
        return {"temperature": o.temperature, "top_k": o.top_k, "top_p": o.top_p} if capability == "generate_images" else {}
