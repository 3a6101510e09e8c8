"""What Transfusion and MonoFormer share: one transformer that is a language model over text and a diffusion
model over image patches. This module holds their common system (sequence formats, the combined loss,
and the capabilities, whose loops live in ``umm/pipelines/diffusion_lm.py``); each family's file holds its
network and its defaults.

Sequences (B batch, T slots, N patches, P patch dim):

    t2i      [BOS] caption [BOI] <image> [EOI] [EOS]       LM on caption/BOI/EOI/EOS, diffusion on the image
    caption  [BOS] [BOI] <image> [EOI] caption [EOS]       LM on the caption; image noise capped (caption_max_t)
    qa       [BOS] [BOI] <image> [EOI] question answer [EOS]   LM on the answer

``<image>`` is ``image_prefix()`` slots (none for Transfusion, MonoFormer's time token) then N patches,
all one bidirectional span. L = lambda_lm * L_LM + lambda_diffusion * L_diffusion.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

import torch
from torch import nn

from umm import UmmError
from umm.data.sequence import PATCH, Sequence, batch_rng, collate, understanding_turn
from umm.models.system import FrozenPart, SystemBase
from umm.config import ConfigError
from umm.nn import Layout, TimestepEmbedding, Transformer, TransformerConfig, patchify, unpatchify
from umm.nn.patch_io import PatchIO, PooledText, rename_legacy_keys
from umm.objectives import diffusion_loss, next_token_loss
from umm.paths import GaussianPath
from umm.tokenizers import image as image_tokenizers  # the module: it imports umm.models itself



@dataclass(frozen=True)
class DiffusionLMConfig:
    """The fields Transfusion and MonoFormer share: vocabulary, image geometry, trunk."""

    vocab_size: int = 512
    image_size: int = 32  # pixels per side
    channels: int = 3
    patch: int = 4  # patch side: a 32x32 image is an 8x8 grid of 48-d patches
    # > 0: the model diffuses in the latent space of a frozen KL-VAE (system_args.image_tokenizer sets both)
    latent_channels: int = 0
    latent_grid: int = 0
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(rope_axes=2))
    # how patches enter and leave the trunk (umm/nn/patch_io.py): linear (both papers) or U-Net patchification
    # (Transfusion sec. 3.3), whose first level runs on unet_fold x unet_fold pixel blocks folded into channels
    # (at 48 px, fold 2 trains 1.8x more samples/s: 22.9 vs 12.4)
    unet: bool = False
    unet_width: int = 32  # channels of the U-Net's first level (doubling per level)
    unet_blocks: int = 1  # ResBlocks per U-Net level (ADM and benchmarks/reference_t2i.py use 2)
    unet_fold: int = 1
    # > 0: the coarsest unet_text_attn levels of the U-Net decoder cross-attend to the trunk's states at the text
    # before the image (Imagen / LDM U-Net cross-attention; benchmarks/reference_t2i.py has it at 12 and 6 px).
    # Off in both papers, where the caption reaches the patches only through the trunk's attention
    unet_text_attn: int = 0
    # add the pooled text before each image to its time conditioning (GLIDE/Imagen; off in both papers)
    pooled_text: bool = False
    # every trunk block AdaLN-zero modulated, at an image's slots, by that image's condition (its time embedding,
    # plus the pooled text with pooled_text): DiT's conditioning of every block on class and time (Peebles &
    # Xie 2023, sec. 3.2), which MonoFormer keeps for its final layer only. Text slots read the modulation's
    # learned bias alone. Off in both papers, where the condition enters the trunk once, at the patch input
    adaln_text: bool = False
    # with adaln_text, whether clean images (t = 0: the images captioning and QA read, and a generated image once it
    # is committed to the context) are modulated too. False reads them as text is read (the modulation's bias
    # alone), so understanding never visits a condition that generation, with logit-normal times, almost never
    # trains (RESULTS.md, "AdaLN-zero text conditioning in every trunk block": captions collapsed with it on)
    adaln_clean: bool = True

    @property
    def token_channels(self) -> int:
        """Channels of what is patchified: RGB, or the VAE latent when ``latent_channels`` > 0."""
        return self.latent_channels or self.channels

    @property
    def token_side(self) -> int:
        return self.latent_grid or self.image_size

    @property
    def grid(self) -> int:
        return self.token_side // self.patch

    @property
    def patch_dim(self) -> int:
        return self.token_channels * self.patch**2


class DiffusionLMNetwork(nn.Module):
    """The parts Transfusion's and MonoFormer's networks share: text embedding, timestep embedding, the pooled
    text (``pooled_text``), the image's way in and out (``PatchIO``), the trunk and the LM head. Each family's
    ``forward`` says where the time and the image enter (umm/models/transfusion.py, umm/models/monoformer.py)."""

    def __init__(self, config: DiffusionLMConfig):
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.token_embed = nn.Embedding(config.vocab_size, dim)
        self.time_embed = TimestepEmbedding(dim)
        self.text_pool = PooledText(dim) if config.pooled_text else None
        self.image_io = PatchIO(config.token_channels, config.token_side, config.patch, dim, config.unet,
                                config.unet_width, config.unet_fold, config.unet_blocks, config.unet_text_attn)
        self.trunk = Transformer(trunk_config(config))
        self.lm_head = nn.Linear(dim, config.vocab_size, bias=False)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        self._register_load_state_dict_pre_hook(rename_legacy_keys)

    def slot_condition(self, x: torch.Tensor, slots: torch.Tensor, cond: torch.Tensor | None,
                       image_times: torch.Tensor | None = None) -> torch.Tensor | None:
        """The trunk's per-slot AdaLN condition (B, T, D) with ``adaln_text``, else None: each image's condition
        ``cond`` (I, D) at its ``slots`` (B, T; row-major, the same number per image), zero at every other slot.
        Without ``adaln_clean``, images whose time ``image_times`` (I,) is 0 get zero too."""
        if not self.config.adaln_text:
            return None
        out = x.new_zeros(x.shape)  # (B, T, D)
        if cond is None:
            return out
        if not self.config.adaln_clean:
            cond = cond * (image_times > 0).to(cond.dtype)[:, None]  # (I, D): clean images read as text
        per_image = int(slots.sum()) // cond.shape[0]
        return out.index_put((slots,), cond.repeat_interleave(per_image, dim=0).to(x.dtype))

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.trunk.new_cache(batch, max_len, device)


def trunk_config(config: DiffusionLMConfig) -> TransformerConfig:
    """The trunk's config: with ``adaln_text``, AdaLN-zero blocks whose condition is as wide as the trunk."""
    if not config.adaln_text:
        if not config.adaln_clean:
            raise ConfigError("model_args.adaln_clean=false says which images AdaLN skips; it needs "
                              "model_args.adaln_text=true")
        if config.transformer.adaln_gate_init and not config.transformer.cond_dim:
            raise ConfigError("model_args.transformer.adaln_gate_init sets AdaLN's gates; it needs "
                              "model_args.adaln_text=true")
        return config.transformer
    if config.transformer.cond_dim not in (0, config.transformer.dim):
        raise ConfigError(f"model_args.adaln_text with transformer.cond_dim={config.transformer.cond_dim}: the blocks "
                          f"read the image's time condition, {config.transformer.dim} wide; leave cond_dim at 0")
    return replace(config.transformer, cond_dim=config.transformer.dim)


class DiffusionLMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V) next-token logits at every slot
    image: torch.Tensor  # (B, T, P) diffusion output at every slot (read only on image slots)


@dataclass(frozen=True)
class DiffusionLMOptions:
    schedule: Literal["cosine", "linear", "flow"] = "flow"
    parameterization: Literal["eps", "v", "x0", "flow"] = "flow"
    # training times: uniform (Transfusion, MonoFormer) or logit-normal (SD3, Esser et al. 2024), which with a
    # positive mean spends the steps at the noisy end where the caption decides what is drawn (umm.paths.gaussian)
    time_sampling: Literal["uniform", "logit_normal"] = "uniform"
    time_mean: float = 0.0
    time_std: float = 1.0
    lambda_lm: float = 1.0
    lambda_diffusion: float = 1.0
    caption_max_t: float = 0.5  # noise cap on images that condition text (Transfusion caps captioning at t=500/1000)
    # True (the paper): images in caption and QA sequences also carry the diffusion loss. False: they only
    # condition the text, so with caption_max_t=0 the model reads clean images, as at inference, and the
    # understanding tasks spend no gradient on denoising at t ~ 0, where v-prediction must recover the noise
    # itself (RESULTS.md, "Transfusion follows text": the mix's gradient norm was 4-14x the t2i-only run's)
    understanding_image_loss: bool = True
    cfg_dropout: float = 0.1  # probability of dropping the caption in text-to-image sequences
    max_text_tokens: int = 32  # text slots per segment (longer captions are truncated)
    # None: diffuse pixel patches. Else a trained KL-VAE (runs/vae_s/model) or a registered name (test_vae: fresh
    # weights, tests only): the model diffuses its latents times latent_scale (LDM's scale factor, which brings
    # the latents near unit variance; vae_s's latents have std ~0.64 on ShapesWorld, so ~1.5)
    image_tokenizer: str | None = None
    latent_scale: float = 1.0


class DiffusionLMSystem(SystemBase):
    tasks = ("t2i", "caption", "qa")
    capabilities = ("t2i", "caption", "qa", "interleaved")
    Options = DiffusionLMOptions
    # umm/pipelines/diffusion_lm.py runs its capabilities (generate_images, caption, answer, generate_interleaved,
    # predict_x0): registered there as "diffusion_lm.<capability>"
    mechanism = "diffusion_lm"

    # optional: unset, the model diffuses pixel patches
    frozen_parts = {"image_tokenizer": FrozenPart("image_tokenizer", "vae_s", image_tokenizers.load_vae, optional=True)}

    def __init__(self, tokenizer, config, options: DiffusionLMOptions | None = None,
                 image_tokenizer: nn.Module | None = None):
        super().__init__(tokenizer, config, options, image_tokenizer=image_tokenizer)
        opts = self.options
        self.path = GaussianPath(opts.schedule, opts.parameterization, time_sampling=opts.time_sampling,
                                 time_mean=opts.time_mean, time_std=opts.time_std)
        vae = self.image_tokenizer  # the KL-VAE whose latents are diffused, or None for pixel patches
        if vae is not None:
            if (vae.latent_channels, vae.grid[0], vae.config.image_size) != (
                    config.latent_channels, config.latent_grid, config.image_size):
                raise UmmError(f"image tokenizer {self.options.image_tokenizer!r} gives {vae.latent_channels}-d "
                               f"latents on a {vae.grid[0]}-grid of {vae.config.image_size}px images; the "
                               f"model expects {config.latent_channels} on {config.latent_grid} of {config.image_size}px")
        elif config.latent_channels:
            raise UmmError("the model diffuses VAE latents (latent_channels > 0) but system_args.image_tokenizer is unset")
        # pixel patches live in [-1, 1], so predicted x0 may be clipped there; latents have no such bound
        self.sample_clip = None if self.image_tokenizer is not None else 1.0

    @classmethod
    def model_overrides(cls, tokenizer, options) -> dict:
        vae = cls.load_part("image_tokenizer", options, warn=False)
        if vae is None:
            return {"vocab_size": tokenizer.vocab_size}
        return {"vocab_size": tokenizer.vocab_size, "latent_channels": vae.latent_channels,
                "latent_grid": vae.grid[0], "image_size": vae.config.image_size}

    # -- sequences -----------------------------------------------------------------------------------------

    def image_prefix(self) -> list[int]:
        """Token ids of the slots that open an image span before its patches (none by default)."""
        return []

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, N, P) tokens: pixel patches in [-1, 1], or scaled VAE latents."""
        config = self.config
        if tuple(images.shape[1:]) != (config.channels, config.image_size, config.image_size):
            raise UmmError(f"images of shape {tuple(images.shape[1:])}, but the model takes "
                           f"{(config.channels, config.image_size, config.image_size)}")
        if self.image_tokenizer is None:
            return patchify(images * 2 - 1, config.patch)
        latents = image_tokenizers.vae_latents(self.image_tokenizer, images, self.options.latent_scale)  # (B, C, h, w)
        return patchify(latents, config.patch)  # (B, N, C_latent * p^2)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, P) generated tokens -> images (B, 3, H, W) in [0, 1]."""
        config = self.config
        x = unpatchify(tokens.float(), config.patch, config.token_channels, config.token_side, config.token_side)
        if self.image_tokenizer is None:
            return (x.clamp(-1, 1) + 1) / 2
        return image_tokenizers.vae_images(self.image_tokenizer, x, self.options.latent_scale)

    def image_patches(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [0, 1] -> (N, P) tokens."""
        return self.encode_images(image[None])[0]

    def build(self, sample: dict, patches: torch.Tensor, task: str, rng: random.Random,
              drop_caption: bool = False) -> Sequence:
        """One training sequence; ``patches`` (N, P) are the sample's image tokens (see :meth:`encode_images`)."""
        tok = self.tokenizer
        seq = Sequence(pad_id=tok.pad_id)
        grid = (self.config.grid, self.config.grid)
        prefix = self.image_prefix()
        if task == "t2i":
            caption = [] if drop_caption else self.text_ids(sample["caption"])
            seq.text([tok.bos_id] + caption + [tok.boi_id], loss=True)
            seq.image(patches, grid, loss=True, prefix=prefix)
            seq.text([tok.eoi_id, tok.eos_id], loss=True)
        elif task == "caption":
            seq.text([tok.bos_id, tok.boi_id], loss=False)
            seq.image(patches, grid, loss=self.options.understanding_image_loss, prefix=prefix)
            seq.text([tok.eoi_id], loss=False)
            seq.text(self.text_ids(understanding_turn(sample, task, rng)[1]) + [tok.eos_id], loss=True)
        elif task == "qa":
            question, answer = understanding_turn(sample, task, rng)
            seq.text([tok.bos_id, tok.boi_id], loss=False)
            seq.image(patches, grid, loss=self.options.understanding_image_loss, prefix=prefix)
            seq.text([tok.eoi_id] + self.text_ids(question), loss=False)
            seq.text(self.text_ids(answer) + [tok.eos_id], loss=True)
        else:
            self.check_task(task)
        return seq

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        rng = batch_rng(generator)
        patches = self.encode_images(torch.stack([s["image"] for s in samples]))  # one (VAE) call per batch
        seqs = [self.build(s, p, task, rng, bool(d) and task == "t2i") for s, p, d in zip(samples, patches, drop)]
        config = self.config
        # pad to the longest sequence (a multiple of 8 keeps matmul shapes friendly)
        batch = collate(seqs, None, config.patch_dim, config.transformer.rope_axes, pad_id=self.tokenizer.pad_id,
                        multiple_of=8)
        max_t = 1.0 if task == "t2i" else self.options.caption_max_t
        batch["max_t"] = torch.full((len(samples),), max_t)
        return batch

    # -- objective -----------------------------------------------------------------------------------------

    def block_times(self, max_t: torch.Tensor, n_blocks: int, generator: torch.Generator, device=None) -> torch.Tensor:
        """Training times (B, n_blocks) for each sample's image spans, capped at ``max_t`` (B,).

        Images that condition text (captioning, QA: max_t < 1) draw their times uniform under the cap.
        Logit-normal times are SD3's weighting for generation; scaled into the cap they would put most
        understanding images near it (mean 1: 73% of the cap), far noisier than the clean images captioned
        at inference. Under uniform time_sampling this is the same distribution as scaling."""
        cap = max_t[:, None].clamp(max=1.0)  # (B, 1)
        generated = self.path.sample_time((max_t.shape[0], n_blocks), generator, device)
        uniform = torch.rand((max_t.shape[0], n_blocks), generator=generator, device=device)
        return torch.where(cap < 1.0, uniform, generated) * cap

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        patches, kinds, block = batch["patches"], batch["kinds"], batch["block"]
        in_image = block >= 0  # image spans are the only bidirectional spans here (patches + any prefix)
        b, device = patches.shape[0], patches.device
        # one diffusion time per image span (per block id), capped per sample for understanding data
        n_blocks = int(block.max().item()) + 1
        t_block = self.block_times(batch["max_t"], n_blocks, generator, device)  # (B, n_blocks)
        times = t_block.gather(1, block.clamp_min(0)) * in_image  # (B, T); 0 outside images
        noise = torch.randn(patches.shape, generator=generator, device=device)
        is_patch = (kinds == PATCH)[..., None]
        noisy = torch.where(is_patch, self.path.add_noise(patches, noise, times), patches)
        layout = Layout(block, batch["positions"], batch["valid"], batch["next_position"])
        out = model(batch["tokens"], kinds, noisy, times, layout)
        lm = next_token_loss(out.logits, batch["text_targets"])
        mse = diffusion_loss(out.image, self.path.target(patches, noise, times), batch["image_loss"])
        return {"lm_loss": self.options.lambda_lm * lm, "diffusion_loss": self.options.lambda_diffusion * mse,
                "lm_ce": lm.detach(), "diffusion_mse": mse.detach()}
