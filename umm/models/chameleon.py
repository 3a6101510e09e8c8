"""Chameleon (Chameleon Team 2024, "Chameleon: Mixed-Modal Early-Fusion Foundation Models", arXiv 2405.09818).

Early fusion: an image becomes a grid of discrete codes from a VQ tokenizer, the codes become tokens of the
same vocabulary as text (offset by the text vocabulary size, paper sec. 2.1), and one decoder-only
transformer models every token with causal attention and one next-token loss:

    [BOS] a red circle above a blue square [BOI] c_1 ... c_N [EOI] [EOS]      (text -> image)
    [BOS] [BOI] c_1 ... c_N [EOI] a red circle above ... [EOS]                  (captioning)

Stability measures of sec. 2.3: QK-norm (RMS-normalised queries and keys; ``TransformerConfig.qk_norm``) and
the z-loss ``1e-5 * log^2 Z`` on the softmax normaliser. Sampling (sec. 2.4 / the released inference code)
restricts tokens inside an image span to the image codes, emits exactly N codes then EOI, and guides with
classifier-free guidance: two-way (text; no text) for text -> image, three-way with separate text and image
scales when the prompt also holds an image (``umm.samplers.guidance.three_way_cfg``). The loops live in
``umm/pipelines/ar.py``.

umm's choices: the image tokenizer is any trained umm tokenizer with one code per position (``vq_s``,
``fsq_s``, ``lfq_s``; ``system_args.image_tokenizer``), frozen and copied into the saved system; captioning
and QA put the loss on the text answer only (instruction-tuning style), while text -> image sequences
train every token; the caption is dropped with probability ``cfg_dropout`` so the unconditional branch
exists. 1D RoPE over the flattened sequence, as in the paper (``rope_axes=2`` gives the grid (row, col)).

Shapes: B batch, T slots, D model width, V = text vocabulary + codebook size.
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
from umm.objectives import next_token_loss, split_cross_entropy, z_loss
from umm.samplers.plan import TokenPlan, image_plan
from umm.registry import ARCHITECTURES, SYSTEMS
from umm.tokenizers import image as image_tokenizers  # the module, not names: it imports umm.models itself



@dataclass(frozen=True)
class ChameleonConfig:
    family: ClassVar[str] = "chameleon"
    text_vocab: int = 512  # decided by the system: the text tokenizer's size
    image_codes: int = 512  # decided by the system: the image tokenizer's codebook size
    image_size: int = 32  # decided by the system: the tokenizer's image side in pixels
    grid: int = 8  # decided by the system: codes per image side
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(qk_norm=True))

    @property
    def vocab_size(self) -> int:
        return self.text_vocab + self.image_codes


@ARCHITECTURES.register("chameleon")
class Chameleon(TokenLM):
    config_class = ChameleonConfig


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def chameleon_xs() -> ChameleonConfig:
    """~1M parameters: the size that trains thousands of steps in 10 one-core minutes (chameleon_l1)."""
    return ChameleonConfig(transformer=TransformerConfig(dim=128, depth=4, heads=4, qk_norm=True))


@register_model
def chameleon_s() -> ChameleonConfig:
    """~6M parameters (with a 512-code tokenizer): the CPU size."""
    return ChameleonConfig(transformer=TransformerConfig(dim=256, depth=6, heads=4, qk_norm=True))


@register_model
def chameleon_m() -> ChameleonConfig:
    return ChameleonConfig(transformer=TransformerConfig(dim=384, depth=8, heads=6, qk_norm=True))


@register_model
def test_chameleon() -> ChameleonConfig:
    return ChameleonConfig(image_size=16, grid=4, transformer=TransformerConfig(dim=32, depth=2, heads=2, qk_norm=True))


# ---- system: data formatting, losses, capabilities --------------------------------------------------------


@dataclass(frozen=True)
class ChameleonOptions:
    # the frozen image tokenizer: a trained run (runs/vq_s/model), or in tests a registered name (fresh
    # weights, with a warning); unset is an error naming the recipe that trains one
    image_tokenizer: str | None = None
    z_loss_weight: float = 1e-5  # paper sec. 2.3
    cfg_dropout: float = 0.1  # probability of dropping the caption of a text -> image sequence
    max_text_tokens: int = 32  # text slots per caption / question (truncated beyond)
    temperature: float = 1.0  # image-code sampling defaults of generate_images
    top_k: int = 0
    top_p: float = 1.0
    image_cfg_scale: float = 1.2  # three-way guidance's image scale (paper's inference default)


@SYSTEMS.register("chameleon")
class ChameleonSystem(SystemBase):
    family = "chameleon"
    tasks = ("t2i", "caption", "qa")
    capabilities = ("t2i", "caption", "qa", "interleaved")
    Options = ChameleonOptions
    frozen_parts = {"image_tokenizer": FrozenPart("image_tokenizer", "vq_s", image_tokenizers.load_image_tokenizer)}
    mechanism = "ar"  # umm/pipelines/ar.py runs its capabilities (interleaved generation included)

    def __init__(self, tokenizer, config: ChameleonConfig, options: ChameleonOptions | None = None,
                 image_tokenizer: nn.Module | None = None):
        super().__init__(tokenizer, config, options, image_tokenizer=image_tokenizer)
        _check_tokenizer(self.image_tokenizer, config)

    @classmethod
    def model_overrides(cls, tokenizer, options: ChameleonOptions) -> dict:
        images = cls.load_part("image_tokenizer", options, warn=False)
        return {"text_vocab": tokenizer.vocab_size, **image_tokenizers.grid_fields(images, options.image_tokenizer, "Chameleon")}

    # -- capabilities (the loops: umm/pipelines/ar.py) ---------------------------------------------------

    def sampling_defaults(self, capability: str) -> dict:
        """The code sampler's temperature, top-k/p and image guidance scale from the options."""
        if capability != "generate_images":
            return {}
        o = self.options
        return {"temperature": o.temperature, "top_k": o.top_k, "top_p": o.top_p, "image_cfg_scale": o.image_cfg_scale}

    # -- sequences --------------------------------------------------------------------------------------

    def image_ids(self, codes: torch.Tensor) -> list[int]:
        """(h, w) codes -> token ids in the shared vocabulary (codes offset by the text vocabulary)."""
        return (codes.flatten() + self.config.text_vocab).tolist()

    def add_image(self, seq: Sequence, codes: torch.Tensor, loss: bool) -> Sequence:
        """``[BOI] codes [EOI]``: a causal span that keeps its grid (for 2D RoPE); BOI/EOI are targets with
        the codes when ``loss``."""
        grid = (self.config.grid, self.config.grid)
        seq.text([self.tokenizer.boi_id], loss=loss)
        seq.image(None, grid, loss=loss, token_ids=self.image_ids(codes), bidirectional=False)
        return seq.text([self.tokenizer.eoi_id], loss=loss)

    def build(self, sample: dict, codes: torch.Tensor, task: str, rng: random.Random,
              drop_caption: bool = False) -> Sequence:
        self.check_task(task)
        return ar_sequence(self.tokenizer, sample, task, lambda seq, loss: self.add_image(seq, codes, loss=loss),
                           self.text_ids, rng, drop_caption)

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        # the frozen tokenizer runs here, without gradients, so losses() only calls the model
        codes = self.image_tokenizer.encode(torch.stack([s["image"] for s in samples]))  # (B, h, w)
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        rng = batch_rng(generator)
        seqs = [self.build(s, c, task, rng, bool(d) and task == "t2i") for s, c, d in zip(samples, codes, drop)]
        return collate(seqs, rope_axes=self.config.transformer.rope_axes, pad_id=self.tokenizer.pad_id, multiple_of=8)

    # -- prompts and plans for umm.pipelines.ar ----------------------------------------------------------

    def t2i_prompt(self, text: str | None, context: torch.Tensor | None = None) -> Sequence:
        """``[BOS] ([BOI] context [EOI]) text [BOI]``; ``text=None`` is the unconditional prompt."""
        tok = self.tokenizer
        seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id], loss=False)
        if context is not None:
            self.add_image(seq, context, loss=False)
        return seq.text(([] if text is None else self.text_ids(text)) + [tok.boi_id], loss=False)

    def image_plan(self) -> TokenPlan:
        """After BOI: exactly grid^2 codes, sampled among the image tokens only, then EOI."""
        text, grid = self.config.text_vocab, self.config.grid
        return image_plan((grid, grid), text, text + self.config.image_codes, end=(self.tokenizer.eoi_id,))

    def codes_from_plan(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated slots (B, grid^2 + 1) -> codes (B, grid, grid)."""
        grid = self.config.grid
        return (tokens[:, : grid * grid] - self.config.text_vocab).view(-1, grid, grid)

    def understanding_prompt(self, codes: torch.Tensor, question: str | None) -> Sequence:
        """``[BOS] [BOI] codes [EOI] (question)``."""
        seq = Sequence(pad_id=self.tokenizer.pad_id).text([self.tokenizer.bos_id], loss=False)
        self.add_image(seq, codes, loss=False)
        return seq.text([] if question is None else self.text_ids(question), loss=False)

    # -- objective --------------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        layout = Layout.of(batch)
        logits = model(batch["tokens"], layout).logits  # (B, T, V)
        targets = batch["text_targets"]
        out = {"lm_loss": next_token_loss(logits, targets)}
        if self.options.z_loss_weight > 0:
            out["z_loss"] = self.options.z_loss_weight * z_loss(logits, targets)
        out.update(split_cross_entropy(logits, targets, self.config.text_vocab))  # diagnostics: CE by what is predicted
        return out


def _check_tokenizer(images: nn.Module, config: ChameleonConfig) -> None:
    if images.codebook_size != config.image_codes or images.grid != (config.grid, config.grid):
        raise UmmError(f"image tokenizer ({images.codebook_size} codes, grid {images.grid}) does not match the model "
                       f"({config.image_codes} codes, grid {config.grid})")
