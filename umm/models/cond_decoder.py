"""A conditional image diffusion decoder: M conditioning vectors (B, M, C) -> an image. The expert that the
LLM-centric multi-expert systems route into (multi_expert.md sec. 3).

- With the caption's features from a frozen text encoder as condition (``condition: text``) it is
  NExT-GPT's image decoder "with its own text conditioning", the role Stable Diffusion plays there (Wu et al.
  2023, arXiv 2309.05519 sec. 3): NExT-GPT's output projector learns to produce this condition, and
  TextBind (arXiv 2309.08637) renders the captions its LM writes with it. Trained alone, prompt -> own text
  encoder -> decoder, it is the upper bound of what those systems can draw, and the judge scores it (``t2i``).
- With image-encoder features as condition (``condition: image``) it is SEED-X's visual de-tokenizer
  (Ge et al. 2024, arXiv 2404.14396 sec. 3.1), trained to reconstruct images from the features the LM
  later regresses (task ``detokenize``).

The network is a small DiT (Peebles & Xie 2023): patches of the noisy image and the projected condition
vectors form one bidirectional span of the shared trunk (the condition is a prefix of the image span, as
in MonoFormer and SD3's joint attention, rather than cross-attention), 2D RoPE over the patch grid, and the
diffusion time modulates every block through AdaLN-zero and the final norm. The noise path and the samplers
are umm's (rectified flow + Euler by default); classifier-free guidance uses an all-zero condition as the
null condition, trained by dropping the condition with probability ``cfg_dropout``.

Condition vectors come from a frozen encoder set (``system_args.encoders``: a trained ImageBind run, or a
registered name with fresh weights for tests), copied into the saved system:

- ``text`` + ``text_features: tokens``: the text tower's hidden states (CLS + up to ``max_text_tokens``
  tokens), zero after the caption's end, so the condition has a fixed shape (1 + L, E) like SD's 77 x 768;
- ``text`` + ``text_features: pooled``: the one unit embedding of the caption (1, embed_dim);
- ``image``: the image tower's CLS and its patch grid average-pooled by ``image_pool`` (1 + (g/pool)^2, E).

Shapes: B batch, N patches, P = channels * patch^2, M condition vectors, C their width, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from umm import UmmError
from umm.config import ConfigError
from umm.models.factory import register_model
from umm.models.llm_bridge import FrozenEncoders
from umm.models.system import SystemBase
from umm.nn import (
    AdaLNModulation,
    Layout,
    Span,
    TimestepEmbedding,
    Transformer,
    TransformerConfig,
    build_layout,
    patchify,
)
from umm.nn.patch_io import PatchIO, PooledText, rename_legacy_keys
from umm.objectives import diffusion_loss
from umm.paths import GaussianPath
from umm.registry import ARCHITECTURES, SYSTEMS

ENCODERS_DIR = "encoders"


@dataclass(frozen=True)
class CondDecoderConfig:
    family: ClassVar[str] = "cond_decoder"
    image_size: int = 32  # decided by the system: the frozen encoders' canvas
    channels: int = 3
    patch: int = 4
    context_tokens: int = 25  # decided by the system: M condition vectors
    context_dim: int = 128  # decided by the system: their width C
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(
        dim=128, depth=6, heads=4, rope_axes=2, cond_dim=128, final_adaln=True))
    # how patches enter and leave the trunk (umm/nn/patch_io.py): linear (DiT) or U-Net patchification (Transfusion
    # sec. 3.3), which let the diffusion LMs draw clean shapes in minutes (benchmarks/RESULTS.md, "Transfusion
    # follows text"); off in the papers' decoders, which are Stable Diffusion U-Nets on VAE latents
    unet: bool = False
    unet_width: int = 32
    unet_fold: int = 1
    unet_blocks: int = 1
    # add the mean of the condition vectors, through LayerNorm and an MLP, to the time embedding that drives
    # every AdaLN (and the U-Net's scale-shifts): DiT's class conditioning, GLIDE/Imagen's pooled text. Off: the
    # condition reaches the patches only through attention
    pooled_context: bool = False

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch**2


@ARCHITECTURES.register("cond_decoder")
class CondDecoder(nn.Module):
    config_class = CondDecoderConfig

    def __init__(self, config: CondDecoderConfig):
        super().__init__()
        t = config.transformer
        if t.cond_dim != t.dim or not t.final_adaln or t.rope_axes != 2:
            raise ConfigError("model.transformer of cond_decoder needs cond_dim == dim (the time embedding drives "
                              f"AdaLN), final_adaln: true and rope_axes: 2; got cond_dim={t.cond_dim}, dim={t.dim}, "
                              f"final_adaln={t.final_adaln}, rope_axes={t.rope_axes}")
        self.config = config
        self.context_in = nn.Linear(config.context_dim, t.dim)
        self.image_io = PatchIO(config.channels, config.image_size, config.patch, t.dim, config.unet,
                                config.unet_width, config.unet_fold, config.unet_blocks)
        # absolute positions of the patches, as DiT's fixed sin-cos table (learned here): RoPE alone only tells
        # a patch where others are relative to it, and drawing needs to know where on the canvas it is
        self.pos_embed = nn.Parameter(torch.randn(config.grid**2, t.dim) * 0.02)
        self.time_embed = TimestepEmbedding(t.dim)
        self.context_pool = PooledText(t.dim) if config.pooled_context else None
        self.trunk = Transformer(t)
        # DiT zero-initialises the AdaLN projections and the output layer, so that only the output layer
        # learns on the first step; small random values instead let every parameter learn from the start
        # (blocks begin close to, not exactly at, the identity; the output starts close to 0, the targets' mean).
        for module in self.modules():
            if isinstance(module, AdaLNModulation):
                nn.init.normal_(module.proj.weight, std=0.02)
        if not config.unet:  # the U-Net's output convolution keeps its zero init
            nn.init.normal_(self.image_io.patch_out.weight, std=0.02)
        self._register_load_state_dict_pre_hook(rename_legacy_keys)  # patch_in/out saved before PatchIO
        # one bidirectional span: M condition vectors (a prefix at 1D positions), then the patch grid
        m, grid = config.context_tokens, config.grid
        span = Span(m + grid**2, bidirectional=True, grid=(grid, grid), prefix=m)
        layout = build_layout([[span]], axes=2)
        self.register_buffer("block", layout.block, persistent=False)
        self.register_buffer("positions", layout.positions, persistent=False)
        self.register_buffer("valid", layout.valid, persistent=False)
        self.register_buffer("next_position", layout.next_position, persistent=False)

    def forward(
        self,
        x: torch.Tensor,  # (B, N, P) noisy patches
        t: torch.Tensor,  # (B,) diffusion time in [0, 1]
        context: torch.Tensor,  # (B, M, C) condition vectors (all zero = unconditional)
    ) -> torch.Tensor:
        """-> (B, N, P) the path's target (velocity for flow)."""
        b, m = x.shape[0], self.config.context_tokens
        if context.shape[1:] != (m, self.config.context_dim):
            raise UmmError(f"decoder condition of shape {tuple(context.shape[1:])}, "
                           f"expected {(m, self.config.context_dim)}")
        time = self.time_embed(t)  # (B, D)
        context = self.context_in(context.to(x.dtype))  # (B, M, D)
        if self.context_pool is not None:  # the unconditional (all-zero) condition pools to one learned vector
            time = time + self.context_pool(context.mean(dim=1))  # (B, D)
        embedded, skips = self.image_io.embed(x, time)  # (B, N, D), the U-Net's skips (None if linear)
        h = torch.cat([context, embedded + self.pos_embed.to(x.dtype)], dim=1)  # (B, M + N, D)
        layout = Layout(self.block.expand(b, -1), self.positions.expand(b, -1, -1), self.valid.expand(b, -1),
                        self.next_position.expand(b, -1))
        h = self.trunk(h, layout, cond=time, final_cond=time)
        return self.image_io.project(h[:, m:], skips, time)  # (B, N, P)


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def cond_decoder_s() -> CondDecoderConfig:
    """~2M parameters: 6 blocks of width 128 over 25 condition vectors + 64 patches (a shared 2-core CPU
    trains it at ~1 step/s)."""
    return CondDecoderConfig()


@register_model
def cond_decoder_m() -> CondDecoderConfig:
    return CondDecoderConfig(transformer=TransformerConfig(dim=384, depth=8, heads=6, rope_axes=2, cond_dim=384,
                                                           final_adaln=True))


@register_model
def test_cond_decoder() -> CondDecoderConfig:
    # width 64 > the 48 values of a patch: a narrower trunk cannot even pass a noisy patch through
    return CondDecoderConfig(image_size=16, transformer=TransformerConfig(dim=64, depth=2, heads=2, rope_axes=2,
                                                                          cond_dim=64, final_adaln=True))


# ---- system -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CondDecoderOptions:
    # the frozen encoders (unset is an error): a trained ImageBind run (runs/imagebind_s/model), or in tests a
    # registered name (fresh weights)
    encoders: str | None = None
    condition: Literal["text", "image"] = "text"
    text_features: Literal["tokens", "pooled"] = "tokens"
    max_text_tokens: int = 24  # caption tokens in a text condition (95% of ShapesWorld captions fit in 26)
    image_pool: int = 2  # average-pool the image feature grid by this factor (8x8 -> 4x4)
    schedule: Literal["cosine", "linear", "flow"] = "flow"
    parameterization: Literal["eps", "v", "x0", "flow"] = "flow"
    # training times: uniform, or logit-normal (SD3) with a positive mean for the noisy end, where the condition
    # decides what is drawn (as umm's diffusion LMs train)
    time_sampling: Literal["uniform", "logit_normal"] = "uniform"
    time_mean: float = 0.0
    time_std: float = 1.0
    cfg_dropout: float = 0.1  # probability of the all-zero (unconditional) condition in training


def context_shape(encoders: FrozenEncoders, options: CondDecoderOptions) -> tuple[int, int]:
    """(M, C) of the condition these encoders and options give."""
    if options.condition == "image":
        if encoders.image_grid % options.image_pool:
            raise ConfigError(f"system_args.image_pool {options.image_pool} does not divide the encoder's "
                              f"{encoders.image_grid}x{encoders.image_grid} feature grid")
        return 1 + (encoders.image_grid // options.image_pool) ** 2, encoders.image_dim
    if options.text_features == "pooled":
        return 1, encoders.embed_dim
    return 1 + options.max_text_tokens, encoders.text_dim


@SYSTEMS.register("cond_decoder")
class CondDecoderSystem(SystemBase):
    family = "cond_decoder"
    mechanism = "cond_decoder"  # umm/pipelines/multi_expert.py: the diffusion loop behind render
    tasks = ("t2i", "detokenize")  # an instance trains the one its condition gives (self.tasks below)
    capabilities = ("t2i",)
    Options = CondDecoderOptions

    def __init__(self, tokenizer, config: CondDecoderConfig, options: CondDecoderOptions | None = None,
                 encoders: FrozenEncoders | None = None):
        super().__init__(tokenizer, config, options)
        self.encoders = encoders or FrozenEncoders.load(
            self.frozen_source(self.options, "encoders", "imagebind_s"), tokenizer)
        shape = context_shape(self.encoders, self.options)
        if shape != (config.context_tokens, config.context_dim) or self.encoders.image_size != config.image_size:
            condition = (config.context_tokens, config.context_dim)
            raise UmmError(f"decoder (condition {condition}, {config.image_size} px) "
                           f"does not match its encoders ({shape}, {self.encoders.image_size} px)")
        text = self.options.condition == "text"
        self.tasks = ("t2i",) if text else ("detokenize",)
        self.capabilities = ("t2i",) if text else ()  # a de-tokenizer is scored through SEED-X
        opts = self.options
        self.path = GaussianPath(opts.schedule, opts.parameterization, time_sampling=opts.time_sampling,
                                 time_mean=opts.time_mean, time_std=opts.time_std)

    @classmethod
    def model_overrides(cls, tokenizer, options: CondDecoderOptions) -> dict:
        encoders = FrozenEncoders.load(cls.frozen_source(options, "encoders", "imagebind_s"), tokenizer)
        m, c = context_shape(encoders, options)
        return {"image_size": encoders.image_size, "context_tokens": m, "context_dim": c}

    def save(self, directory: Path) -> None:
        super().save(directory)
        self.encoders.save(directory / ENCODERS_DIR)  # the saved system is complete on its own

    @classmethod
    def load(cls, directory: Path, config: CondDecoderConfig, options: CondDecoderOptions) -> SystemBase:
        from umm.tokenizers.text import TextTokenizer

        encoders = FrozenEncoders.load(directory / ENCODERS_DIR)
        return cls(TextTokenizer.load(directory), config, options, encoders=encoders)

    # -- conditions (frozen, no gradients) ---------------------------------------------------------------

    def text_condition(self, texts: list[str]) -> torch.Tensor:
        """Captions -> (B, M, C), the condition this decoder was trained on (NExT-GPT's regression target)."""
        if self.options.condition != "text":
            raise UmmError("this decoder is conditioned on image features, not text")
        if self.options.text_features == "pooled":
            return self.encoders.text_pooled(texts)
        return self.encoders.text_tokens(texts, self.options.max_text_tokens)

    def image_condition(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, M, C): CLS + the pooled patch-feature grid (SEED-X's regression
        target)."""
        if self.options.condition != "image":
            raise UmmError("this decoder is conditioned on text, not image features")
        features = self.encoders.image_features(images)  # (B, 1 + g*g, E)
        g, pool = self.encoders.image_grid, self.options.image_pool
        grid = features[:, 1:].transpose(1, 2).reshape(-1, features.shape[-1], g, g)  # (B, E, g, g)
        pooled = F.avg_pool2d(grid, pool).flatten(2).transpose(1, 2)  # (B, (g/pool)^2, E)
        return torch.cat([features[:, :1], pooled], dim=1)

    # -- capabilities ---------------------------------------------------------------------------------------

    def render(self, model, context: torch.Tensor, **kwargs) -> torch.Tensor:
        """Condition (B, M, C) -> images (B, 3, H, W) in [0, 1] (the loop: umm.pipelines.multi_expert)."""
        return self.run_loop("render", model, context, **kwargs)

    def generate_images(self, model, prompts: list[str], **kwargs) -> torch.Tensor:
        return self.render(model, self.text_condition(prompts), **kwargs)

    def reconstruct(self, model, images: torch.Tensor, **kwargs) -> torch.Tensor:
        """The de-tokenizer's round trip: images -> frozen image features -> decoder -> images."""
        return self.render(model, self.image_condition(images), **kwargs)

    # -- batches and objective ------------------------------------------------------------------------------

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        images = torch.stack([s["image"] for s in samples])  # (B, 3, H, W)
        if tuple(images.shape[-2:]) != (self.config.image_size,) * 2:
            raise UmmError(f"images of {tuple(images.shape[-2:])} px, the decoder draws {self.config.image_size} px")
        if task == "t2i":
            context = self.text_condition([s["caption"] for s in samples])
        else:
            context = self.image_condition(images)
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        context = context * ~drop[:, None, None]  # the null condition is all zeros
        return {"patches": patchify(images * 2 - 1, self.config.patch), "context": context}

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = batch["patches"]  # (B, N, P) in [-1, 1]
        t = self.path.sample_time((x0.shape[0],), generator, x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        out = model(self.path.add_noise(x0, noise, t), t, batch["context"])
        return {"diffusion_loss": diffusion_loss(out, self.path.target(x0, noise, t))}
