"""TextBind (Li et al. 2023, "TextBind: Multi-turn Interleaved Multimodal Instruction-following in the Wild",
arXiv 2309.08637): text is the interface between the language model and the image experts.

- **Reading images**: a frozen image encoder's patch features go through a Q-Former-like resampler with
  learnable queries (TextBind: BLIP-2's Q-Former, 32 queries, then a linear layer into Llama-2) into the
  LM's image slots; a linear or MLP projector over every patch is the alternative (``model.connector``).
- **Drawing images**: the LM writes a *caption* between markers (TextBind's ``<start>`` / ``<end>``; here the
  tokenizer's ``<boi>`` / ``<eoi>``), and a separate text -> image generator renders it (TextBind: SDXL).
  No embedding is regressed: the only thing that crosses from the LM to the generator is text.

Sequences (one small causal LM, ``umm.models.llm_bridge``):

    t2i      [BOS] request [BOI] caption [EOI] [EOS]          LM loss on [BOI] caption [EOI] [EOS]
    caption  [BOS] [BOI] <image slots> [EOI] caption [EOS]    LM loss on the caption
    qa       [BOS] [BOI] <image slots> [EOI] question answer [EOS]

On ShapesWorld a request is a caption of the grammar and the generator was trained on such captions, so the
LM learns to restate the request as the caption to draw; the point is the mechanism, whose ceiling is the
generator's own score (``umm eval`` of the generator run).

umm's choices: the image encoder is a trained umm ImageBind run (``system_args.encoders``) and the generator
any trained umm system with the ``t2i`` capability (``system_args.generator``: a ``cond_decoder`` run, or
Transfusion, Chameleon ...), both frozen and copied into the saved system; the LM is trained from scratch
with every part at once (TextBind's stage 2 trains Q-Former + linear + LLM; there is no pretrained LLM to
keep frozen at this scale). Generated images are not re-encoded into the context (TextBind's multi-turn
``cache_generation``): the harness asks for one image per prompt.

Shapes: B batch, T slots, F feature tokens, E feature width, D LM width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from umm.config import ConfigError
from umm.data.sequence import Sequence
from umm.models.factory import register_model
from umm.models.llm_bridge import (
    BridgeLM,
    BridgeOutput,
    BridgeSystem,
    ConnectorConfig,
    FrozenEncoders,
    ResamplerConfig,
    frozen_system,
)
from umm.models.system import load_system, save_system
from umm.nn import Layout, TransformerConfig
from umm.objectives import next_token_loss
from umm.registry import ARCHITECTURES, SYSTEMS

ENCODERS_DIR, GENERATOR_DIR = "encoders", "generator"


@dataclass(frozen=True)
class TextBindConfig:
    family: ClassVar[str] = "textbind"
    vocab_size: int = 512  # decided by the system: the tokenizer's size
    image_size: int = 32  # decided by the system: the encoders' canvas
    feature_dim: int = 128  # decided by the system: the image encoder's width
    feature_tokens: int = 65  # decided by the system: CLS + patches of the image encoder
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=256, depth=4, heads=4))


@ARCHITECTURES.register("textbind")
class TextBind(nn.Module):
    config_class = TextBindConfig

    def __init__(self, config: TextBindConfig):
        super().__init__()
        self.config = config
        self.lm = BridgeLM(config.vocab_size, 0, config.feature_dim, config.feature_tokens, config.connector,
                           config.transformer)

    def forward(self, tokens: torch.Tensor, kinds: torch.Tensor, features: torch.Tensor | None, layout: Layout,
                cache=None, commit: bool = True, out_slots: torch.Tensor | None = None) -> BridgeOutput:
        """tokens/kinds (B, T), features (I, F, E) -> logits (B, T, V); TextBind has no output projector."""
        if out_slots is not None:
            raise ConfigError("TextBind draws through text; it has no output slots")
        hidden, logits = self.lm(tokens, kinds, features, layout, cache, commit)
        return BridgeOutput(logits, hidden, None)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.lm.new_cache(batch, max_len, device)


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def textbind_s() -> TextBindConfig:
    """~3.5M trainable parameters: a 4-layer width-256 LM and a 2-layer resampler with 16 queries."""
    return TextBindConfig()


@register_model
def test_textbind() -> TextBindConfig:
    return TextBindConfig(connector=ConnectorConfig(queries=4, resampler=ResamplerConfig(dim=32, depth=1, heads=2)),
                          transformer=TransformerConfig(dim=32, depth=2, heads=2))


# ---- system -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextBindOptions:
    # frozen parts (unset is an error): a trained ImageBind run (runs/imagebind_s/model), and any trained system
    # with the t2i capability (runs/cond_decoder_s/model); in tests registered names (fresh weights)
    encoders: str | None = None
    generator: str | None = None
    max_text_tokens: int = 40  # text slots per caption / question (truncated beyond)
    max_caption_tokens: int = 40  # tokens the LM may write between [BOI] and [EOI]


@SYSTEMS.register("textbind")
class TextBindSystem(BridgeSystem):
    family = "textbind"
    tasks = ("t2i", "caption", "qa")
    Options = TextBindOptions

    def __init__(self, tokenizer, config: TextBindConfig, options: TextBindOptions | None = None,
                 encoders: FrozenEncoders | None = None, generator: tuple[nn.Module, object] | None = None):
        super().__init__(tokenizer, config, options)
        opts = self.options
        self.encoders = encoders or FrozenEncoders.load(self.frozen_source(opts, "encoders", "imagebind_s"), tokenizer)
        self.check_encoders()
        self.generator_model, self.generator = generator or frozen_system(
            self.frozen_source(opts, "generator", "cond_decoder_s"), tokenizer)
        if "t2i" not in self.generator.capabilities:
            raise ConfigError(f"system_args.generator {self.options.generator!r} ({self.generator.family}) cannot "
                              "draw from text (no t2i capability)")
        if self.generator.config.image_size != config.image_size:
            raise ConfigError(f"system_args.generator draws {self.generator.config.image_size} px images but the "
                              f"encoders read {config.image_size} px")

    @classmethod
    def model_overrides(cls, tokenizer, options: TextBindOptions) -> dict:
        encoders = FrozenEncoders.load(cls.frozen_source(options, "encoders", "imagebind_s"), tokenizer)
        return {"vocab_size": tokenizer.vocab_size, "image_size": encoders.image_size,
                "feature_dim": encoders.image_dim, "feature_tokens": 1 + encoders.image_grid**2}

    def save(self, directory: Path) -> None:
        super().save(directory)
        self.encoders.save(directory / ENCODERS_DIR)
        save_system(directory / GENERATOR_DIR, self.generator_model, self.generator)

    @classmethod
    def load(cls, directory: Path, config: TextBindConfig, options: TextBindOptions) -> BridgeSystem:
        from umm.tokenizers.text import TextTokenizer

        encoders = FrozenEncoders.load(directory / ENCODERS_DIR)
        return cls(TextTokenizer.load(directory), config, options, encoders, load_system(directory / GENERATOR_DIR))

    # -- text -> image: the LM writes a caption, the generator draws it ----------------------------------

    def t2i_prompt(self, request: str) -> Sequence:
        """``[BOS] request [BOI]``: the LM continues with the caption to draw, up to [EOI]."""
        tok = self.tokenizer
        return Sequence(pad_id=tok.pad_id).text([tok.bos_id] + self.text_ids(request) + [tok.boi_id], loss=False)

    def write_captions(self, model, requests: list[str], batch_size: int = 64, precision: str = "bf16") -> list[str]:
        """Requests -> the captions the LM writes between [BOI] and [EOI] (greedy, text tokens only)."""
        tok = self.tokenizer
        out: list[str] = []
        for start in range(0, len(requests), batch_size):
            seqs = [self.t2i_prompt(r) for r in requests[start : start + batch_size]]
            ids = self.run_loop("decode_text", model, seqs, None, self.options.max_caption_tokens, tok.eoi_id,
                                           vocab=tok.vocab_size, precision=precision)
            out += [tok.decode(row) for row in ids]
        return out

    def generate_images(self, model, prompts: list[str], batch_size: int = 16, precision: str = "bf16",
                        **kwargs) -> torch.Tensor:
        """Text -> images (N, 3, H, W) in [0, 1]: the LM's captions, drawn by the generator (``kwargs``: its
        sampling options, e.g. steps, cfg_scale, seed)."""
        captions = self.write_captions(model, prompts, precision=precision)
        return self.generator.generate_images(self.generator_model, captions, batch_size=batch_size, **kwargs)

    # -- batches and objective ------------------------------------------------------------------------------

    def t2i_sequence(self, sample: dict) -> Sequence:
        tok = self.tokenizer
        seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id] + self.text_ids(sample["caption"]), loss=False)
        return seq.text([tok.boi_id] + self.text_ids(sample["caption"]) + [tok.eoi_id, tok.eos_id], loss=True)

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        if task == "t2i":
            return self.batch_of([self.t2i_sequence(s) for s in samples], None)
        return self.collate_understanding(samples, task, generator)

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        out = model(batch["tokens"], batch["kinds"], batch["features"], Layout.of(batch))
        return {"lm_loss": next_token_loss(out.logits, batch["text_targets"])}
