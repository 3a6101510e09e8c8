"""SEED-X (Ge et al. 2024, "SEED-X: Multimodal Models with Unified Multi-granularity Comprehension and
Generation", arXiv 2404.14396): the LM *regresses image-encoder features*, and a diffusion de-tokenizer
conditioned on those features draws the image.

- **Input side**: the frozen image encoder's patch features go through a resampler with learnable queries
  into the LM's image slots (SEED-X: Qwen-VL's ViT, a resampler to 64 tokens, LLaMA2-13B).
- **Output side**: to draw, the LM opens ``[BOI]`` and reads N learnable output tokens (embedding rows after
  the text vocabulary; SEED-X: 64) before ``[EOI]``; their hidden states go through an output resampler that
  regresses the image encoder's features of the target image, with MSE x 6.0 (``regression: cosine`` as
  the alternative of the released code; ``src/models/mllm/seed_x.py``).
- **De-tokenizer**: a diffusion decoder conditioned on those image features, trained on its own to
  reconstruct images from them (SEED-X: SDXL with a resampler, pre-trained on ViT features; here a
  ``cond_decoder`` run with ``condition: image``, ``umm/recipes/seedx_detokenizer_s.yaml``). It is frozen, and its
  frozen image encoder is the one the LM reads with, so regression targets and inputs share one space.

Sequences (one small causal LM, ``umm.models.llm_bridge``):

    t2i      [BOS] caption [BOI] q_1 ... q_N [EOI] [EOS]           LM loss on [BOI], [EOI], [EOS];
                                                                    6 * MSE(resampler(h_q), image features)
    caption  [BOS] [BOI] <image slots> [EOI] caption [EOS]          LM loss on the caption
    qa       [BOS] [BOI] <image slots> [EOI] question answer [EOS]  LM loss on the answer

The target features are the de-tokenizer's condition: the image tower's CLS and its patch grid
average-pooled (``cond_decoder.image_condition``). The LM is trained from scratch with every part at once
(SEED-X starts from a pretrained LLaMA2 and tunes it with LoRA).

Shapes: B batch, T slots, N output tokens, M x C target features, D LM width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from umm.config import ConfigError
from umm.data.sequence import Sequence
from umm.models.factory import register_model
from umm.models.llm_bridge import (
    BridgeLM,
    BridgeOutput,
    BridgeSystem,
    ConnectorConfig,
    QueryResampler,
    ResamplerConfig,
    frozen_system,
    gather_slots,
)
from umm.models.system import load_system, save_system
from umm.nn import Layout, TransformerConfig
from umm.objectives import next_token_loss
from umm.objectives.diffusion import diffusion_loss
from umm.registry import ARCHITECTURES, SYSTEMS

DETOKENIZER_DIR = "detokenizer"


@dataclass(frozen=True)
class SeedXConfig:
    family: ClassVar[str] = "seedx"
    vocab_size: int = 512  # decided by the system: the text tokenizer's size (output tokens come after it)
    image_size: int = 32  # decided by the system: the de-tokenizer's canvas
    feature_dim: int = 128  # decided by the system: the image encoder's width
    feature_tokens: int = 65  # decided by the system: CLS + patches of the image encoder
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=256, depth=4, heads=4))
    output_tokens: int = 16  # N learnable output tokens between [BOI] and [EOI] (SEED-X: 64)
    target_tokens: int = 17  # decided by the system: the de-tokenizer's condition is M x C
    target_dim: int = 128
    output_resampler: ResamplerConfig = field(default_factory=ResamplerConfig)


@ARCHITECTURES.register("seedx")
class SeedX(nn.Module):
    config_class = SeedXConfig

    def __init__(self, config: SeedXConfig):
        super().__init__()
        self.config = config
        self.lm = BridgeLM(config.vocab_size, config.output_tokens, config.feature_dim, config.feature_tokens,
                           config.connector, config.transformer)
        self.output_resampler = QueryResampler(config.transformer.dim, config.target_dim, config.output_tokens,
                                               config.target_tokens, config.output_resampler)

    def forward(self, tokens: torch.Tensor, kinds: torch.Tensor, features: torch.Tensor | None, layout: Layout,
                cache=None, commit: bool = True, out_slots: torch.Tensor | None = None) -> BridgeOutput:
        """tokens/kinds (B, T), features (I, F, E); ``out_slots`` (B, N): the output tokens' slots, whose
        hidden states the output resampler maps to image features ``out`` (B, M, C)."""
        hidden, logits = self.lm(tokens, kinds, features, layout, cache, commit)
        out = None if out_slots is None else self.output_resampler(gather_slots(hidden, out_slots))
        return BridgeOutput(logits, hidden, out)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.lm.new_cache(batch, max_len, device)


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def seedx_s() -> SeedXConfig:
    """~4M trainable parameters: a 4-layer width-256 LM, 16-query input resampler, 16 output tokens."""
    return SeedXConfig()


@register_model
def test_seedx() -> SeedXConfig:
    return SeedXConfig(connector=ConnectorConfig(queries=4, resampler=ResamplerConfig(dim=32, depth=1, heads=2)),
                       transformer=TransformerConfig(dim=32, depth=2, heads=2), output_tokens=4,
                       output_resampler=ResamplerConfig(dim=32, depth=1, heads=2))


# ---- system -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedXOptions:
    # the frozen de-tokenizer (unset is an error): a trained image-conditioned cond_decoder run
    # (runs/seedx_detokenizer_s/model), or in tests a registered name (fresh weights); its frozen image encoder
    # is also the LM's input encoder
    detokenizer: str | None = None
    lambda_regression: float = 6.0  # SEED-X's weight of the feature regression
    regression: Literal["mse", "cosine"] = "mse"
    max_text_tokens: int = 40


@SYSTEMS.register("seedx")
class SeedXSystem(BridgeSystem):
    family = "seedx"
    tasks = ("t2i", "caption", "qa")
    Options = SeedXOptions

    def __init__(self, tokenizer, config: SeedXConfig, options: SeedXOptions | None = None,
                 detokenizer: tuple[nn.Module, object] | None = None):
        super().__init__(tokenizer, config, options)
        self.detokenizer_model, self.detokenizer = detokenizer or _detokenizer(
            self.frozen_source(self.options, "detokenizer", "seedx_detokenizer_s"), tokenizer)
        self.encoders = self.detokenizer.encoders
        self.check_encoders()
        shape = (self.detokenizer.config.context_tokens, self.detokenizer.config.context_dim)
        if shape != (config.target_tokens, config.target_dim):
            raise ConfigError(f"de-tokenizer condition {shape} does not match the output resampler "
                              f"{(config.target_tokens, config.target_dim)}")
        self.queries = list(range(config.vocab_size, config.vocab_size + config.output_tokens))

    @classmethod
    def model_overrides(cls, tokenizer, options: SeedXOptions) -> dict:
        _, detokenizer = _detokenizer(cls.frozen_source(options, "detokenizer", "seedx_detokenizer_s"), tokenizer)
        encoders = detokenizer.encoders
        return {"vocab_size": tokenizer.vocab_size, "image_size": encoders.image_size,
                "feature_dim": encoders.image_dim, "feature_tokens": 1 + encoders.image_grid**2,
                "target_tokens": detokenizer.config.context_tokens, "target_dim": detokenizer.config.context_dim}

    def save(self, directory: Path) -> None:
        super().save(directory)
        save_system(directory / DETOKENIZER_DIR, self.detokenizer_model, self.detokenizer)

    @classmethod
    def load(cls, directory: Path, config: SeedXConfig, options: SeedXOptions) -> BridgeSystem:
        from umm.tokenizers.text import TextTokenizer

        return cls(TextTokenizer.load(directory), config, options, load_system(directory / DETOKENIZER_DIR))

    # -- text -> image: regress features, de-tokenize ------------------------------------------------------

    def t2i_prompt(self, caption: str) -> Sequence:
        """``[BOS] caption [BOI] q_1 ... q_N``: the output tokens end the sequence."""
        tok = self.tokenizer
        return Sequence(pad_id=tok.pad_id).text([tok.bos_id] + self.text_ids(caption) + [tok.boi_id] + self.queries,
                                                loss=False)

    def regress(self, model, prompts: list[str], precision: str = "bf16") -> torch.Tensor:
        """Prompts -> the image features the LM regresses (B, M, C)."""
        seqs = [self.t2i_prompt(p) for p in prompts]
        return self.run_loop("image_query", model, seqs, self.config.output_tokens, precision=precision)

    def generate_images(self, model, prompts: list[str], batch_size: int = 16, precision: str = "bf16",
                        **kwargs) -> torch.Tensor:
        """Text -> images (N, 3, H, W) in [0, 1] (``kwargs``: the de-tokenizer's sampling options)."""
        features = self.regress(model, prompts, precision)
        return self.detokenizer.render(self.detokenizer_model, features, batch_size=batch_size, precision=precision,
                                       **kwargs)

    # -- batches and objective ------------------------------------------------------------------------------

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        if task != "t2i":
            return self.collate_understanding(samples, task, generator)
        tok = self.tokenizer
        seqs, slots = [], []
        for s in samples:
            seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id] + self.text_ids(s["caption"]), loss=False)
            seq.text([tok.boi_id], loss=True)
            slots.append(list(range(len(seq), len(seq) + len(self.queries))))
            seq.text(self.queries, loss=False)  # input queries, not predictions
            seqs.append(seq.text([tok.eoi_id, tok.eos_id], loss=True))
        batch = self.batch_of(seqs, None)
        batch["out_slots"] = torch.tensor(slots, dtype=torch.long)  # (B, N)
        batch["target"] = self.detokenizer.image_condition(torch.stack([s["image"] for s in samples]))  # (B, M, C)
        return batch

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        out = model(batch["tokens"], batch["kinds"], batch["features"], Layout.of(batch),
                    out_slots=batch.get("out_slots"))
        losses = {"lm_loss": next_token_loss(out.logits, batch["text_targets"])}
        if out.out is not None:
            target = batch["target"]
            if self.options.regression == "cosine":
                error = 1 - F.cosine_similarity(out.out.float(), target.float(), dim=-1).mean()
            else:
                error = diffusion_loss(out.out, target)  # mean squared error per feature element
            losses["regression_loss"] = self.options.lambda_regression * error
            losses["regression_error"] = error.detach()
        return losses


def _detokenizer(source: str, tokenizer) -> tuple[nn.Module, object]:
    model, system = frozen_system(source, tokenizer, {"condition": "image"})
    if system.family != "cond_decoder" or system.options.condition != "image":
        raise ConfigError(f"system_args.detokenizer {source!r} must be a cond_decoder conditioned on image features "
                          "(umm/recipes/seedx_detokenizer_s.yaml)")
    return model, system
