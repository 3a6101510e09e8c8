"""MMAR (Yang et al. 2024, "MMAR: Towards Lossless Multi-Modal Auto-Regressive Probabilistic Modeling",
arXiv 2410.10798), built on MAR (Li et al. 2024, "Autoregressive Image Generation without Vector
Quantization", arXiv 2406.11838).

One transformer reads text tokens and *continuous* image tokens (pixel patches here) and never sees noise:

    [BOS] a red circle above a blue square [BOI] p_1 ... p_N [EOI] [EOS]

- text is causal and trained with next-token prediction;
- an image is generated token by token, but each token's continuous value is modelled by a small per-token
  diffusion head (``umm.nn.diffusion_head``) conditioned on the transformer's output z at that position
  (MAR sec. 3.2); the transformer itself only ever reads clean patches, which is why MMAR calls its image
  representation "lossless" for understanding (MMAR sec. 3.1): captioning and QA see exactly the image;
- ``order="masked"`` (MAR's masked autoregression, sec. 3.3): attention is bidirectional inside the image;
  in training a random subset of patches (ratio ~ truncated normal on [0.7, 1]) is replaced by a learned
  [MASK] embedding and the head is trained on those positions only; sampling unmasks the image in a random
  order over a MaskGIT cosine schedule of iterations (``umm.pipelines.masked_ar``);
- ``order="raster"``: the image span is causal and the output at slot i models patch i + 1 (MAR's
  "AR, raster order" baseline, table 1);
- the head is trained with v-prediction by default (MMAR sec. 3.3: its error under bf16 stays bounded at
  low SNR where eps-prediction's blows up; ``benchmarks/mmar_eps_vs_v.py`` measures it), several noise
  draws per token (``diffusion_batch_mul``, MAR uses 4), on a cosine schedule;
- the caption is dropped with probability ``cfg_dropout`` so classifier-free guidance works at sampling,
  where MAR's linear CFG schedule and temperature apply.

Image tokens are 4x4x3 pixel patches of a 32x32 image (an 8x8 grid) with 2D RoPE over the grid, or, with
``system_args.image_tokenizer=runs/vae_s/model``, the latent vectors of a frozen continuous VAE
(``umm.tokenizers.image``): one token per latent position as MAR does with its KL-16 VAE, or a p x p block of
latents per token (``model_args.latent_patch``, as MAR does with its 4-channel KL-8; mmar_l1 uses 2). The VAE runs
in ``collate`` and is copied into the saved system.

Shapes: B batch, T slots, N patches per image, P token width (channels * patch^2), D model width, V vocabulary,
M head rows (tokens the head is trained on), K noise draws per token.
"""

from __future__ import annotations

import random
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import nn

from umm import UmmError
from umm.data.sequence import PATCH, TEXT, Sequence, batch_rng, collate, drop_final_slot, understanding_turn
from umm.models.factory import register_model
from umm.models.system import FrozenPart, SystemBase
from umm.nn import Layout, PatchEmbed, Transformer, TransformerConfig, patchify, unpatchify
from umm.nn.diffusion_head import DiffusionHead
from umm.nn.patch_io import PooledText
from umm.objectives import IGNORE, next_token_loss
from umm.objectives.per_token_diffusion import draw_noise, per_token_diffusion_loss
from umm.paths import GaussianPath
from umm.registry import ARCHITECTURES, SYSTEMS
from umm.tokenizers import image as image_tokenizers  # the module, not names: it imports umm.models itself



@dataclass(frozen=True)
class MMARConfig:
    family: ClassVar[str] = "mmar"
    vocab_size: int = 512
    image_size: int = 32  # pixels per side
    channels: int = 3
    patch: int = 4  # pixel patch side: a 32x32 image is an 8x8 grid of 48-d tokens
    head_width: int = 256  # per-token diffusion MLP (MAR: 1024-1536 wide for a 768-1280 wide transformer)
    head_depth: int = 3  # residual AdaLN blocks of the head (MAR: 3-12)
    latent_channels: int = 0  # > 0: tokens are VAE latents of this width (set from system_args.image_tokenizer)
    latent_grid: int = 0  # the VAE's latent grid side
    # latents per token side (MAR's patch size over the VAE's latents: 1 on its 16-channel KL-16, 2 on a 4-channel
    # KL-8): 2 makes each token a 2x2 block of latents, a 4x shorter image span whose tokens each hold more
    latent_patch: int = 1
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(rope_axes=2))
    # add the pooled text before an image to every one of its slots (GLIDE/Imagen's pooled-text conditioning, as
    # Transfusion's pooled_text does; off in MAR and MMAR, where the caption reaches the image only through
    # attention): a [MASK] slot then starts from the caption's gist, not from the same vector for every prompt
    pooled_text: bool = False

    @property
    def grid(self) -> int:
        return self.latent_grid // self.latent_patch if self.latent_channels else self.image_size // self.patch

    @property
    def patch_dim(self) -> int:
        """Width P of one image token: a flattened pixel patch, or a flattened block of latent vectors."""
        return self.latent_channels * self.latent_patch**2 if self.latent_channels else self.channels * self.patch**2


class HeadInput(NamedTuple):
    rows: torch.Tensor  # (B, T) bool: slots whose hidden state z conditions the head
    x_t: torch.Tensor  # (M, K, P) noisy tokens, M = rows.sum(), in the row-major order of ``rows``
    t: torch.Tensor  # (M, K) their diffusion times


class MMAROutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V) next-token logits at every slot, or (R, V) at the ``logit_rows`` given
    hidden: torch.Tensor  # (B, T, D) the transformer's output z at every slot
    head: torch.Tensor | None  # (M, K, P) the head's output for ``head_input``; None when none was given


@ARCHITECTURES.register("mmar")
class MMAR(nn.Module):
    config_class = MMARConfig

    def __init__(self, config: MMARConfig):
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.token_embed = nn.Embedding(config.vocab_size, dim)
        self.patch_in = PatchEmbed(config.patch_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))  # MAR's learned [MASK] embedding
        self.text_pool = PooledText(dim) if config.pooled_text else None
        self.trunk = Transformer(config.transformer)
        self.lm_head = nn.Linear(dim, config.vocab_size, bias=False)
        self.head = DiffusionHead(config.patch_dim, dim, config.head_width, config.head_depth)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self,
        tokens: torch.Tensor,  # (B, T) token ids (pad on image slots)
        kinds: torch.Tensor,  # (B, T) TEXT / PATCH
        patches: torch.Tensor,  # (B, T, P) clean patches on image slots
        masked: torch.Tensor,  # (B, T) bool: image slots shown as [MASK] instead of their patch
        layout: Layout,
        head_input: HeadInput | None = None,
        cache=None,
        commit: bool = True,
        logit_rows: torch.Tensor | None = None,  # (B, T) bool: score only these slots (training: text targets)
    ) -> MMAROutput:
        x = self.token_embed(tokens)  # (B, T, D)
        image = kinds == PATCH
        text_mean = None
        if self.text_pool is not None:  # running mean of the text embeddings up to each slot, cached prefix included
            text_mean = PooledText.mean_before(x, (kinds == TEXT) & layout.valid, cache, commit)  # (B, T, D)
        if bool(image.any()):
            embedded = self.patch_in(patches[image])  # (M, D), clean: the trunk never sees noise (MMAR sec. 3.1)
            embedded = torch.where(masked[image][:, None], self.mask_token.to(embedded.dtype), embedded)
            if text_mean is not None:
                embedded = embedded + self.text_pool(text_mean[image]).to(embedded.dtype)  # (M, D)
            x = x.index_put((image,), embedded.to(x.dtype))
        h = self.trunk(x, layout, cache=cache, commit=commit)
        out = None
        if head_input is not None:
            z = h[head_input.rows]  # (M, D)
            out = self.head(head_input.x_t, head_input.t, z[:, None, :])  # (M, K, P): z broadcasts over the K draws
        # training needs logits only where a text target is (3 slots of 68 without a caption): (R, V)
        logits = self.lm_head(h if logit_rows is None else h[logit_rows])
        return MMAROutput(logits, h, out)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.trunk.new_cache(batch, max_len, device)


# ---- sizes ------------------------------------------------------------------------------------------------


# MMAR builds on Qwen2 LLMs (0.5B and 7B), which have no QK-norm; umm's trunk keeps Chameleon's QK-norm by default
# (model_args.transformer.qk_norm=false gives Qwen2's). Without it, mmar_l1 drew 0.589 / 0.622 test / held-out in
# one 10-minute run and 0.311 / 0.400 and 0.589 / 0.511 (mask_ratio_min 0) in two more, against 0.578, 0.611 and
# 0.700 (mask_ratio_min 0) with it (benchmarks/RESULTS.md, "Fifteenth round"): a step ~5% cheaper is not worth a
# wider spread.


@register_model
def mmar_s() -> MMARConfig:
    """~6.4M parameters (the trunk of transfusion_s plus a 3-block, 256-wide head): the CPU size."""
    return MMARConfig(head_width=256, head_depth=3,
                      transformer=TransformerConfig(dim=256, depth=6, heads=4, rope_axes=2))


@register_model
def mmar_m() -> MMARConfig:
    return MMARConfig(head_width=384, head_depth=4,
                      transformer=TransformerConfig(dim=384, depth=8, heads=6, rope_axes=2))


@register_model
def mmar_b() -> MMARConfig:
    """A GPU size: MAR-B's 1024-wide, 6-block head on a 768-wide trunk."""
    return MMARConfig(head_width=1024, head_depth=6,
                      transformer=TransformerConfig(dim=768, depth=12, heads=12, rope_axes=2))


@register_model
def test_mmar() -> MMARConfig:
    return MMARConfig(image_size=16, head_width=32, head_depth=2,
                      transformer=TransformerConfig(dim=32, depth=2, heads=2, rope_axes=2))


# ---- system: data formatting, losses, capabilities --------------------------------------------------------


@dataclass(frozen=True)
class MMAROptions:
    order: Literal["masked", "raster"] = "masked"  # image generation order (see the module docstring)
    parameterization: Literal["eps", "v"] = "v"  # the head's target (MMAR: v is stable under bf16)
    schedule: Literal["cosine", "linear"] = "cosine"  # MAR: cosine, 1000 steps
    diffusion_batch_mul: int = 4  # noise draws per token in training (MAR: 4)
    mask_ratio_min: float = 0.7  # training mask ratio ~ N(1, std) truncated to [min, 1] (MAR; MMAR stage 2: 0)
    mask_ratio_std: float = 0.25
    lambda_diffusion: float = 1.0  # L = L_LM + lambda * L_diffusion
    cfg_dropout: float = 0.1  # probability of dropping the caption in text-to-image sequences
    max_text_tokens: int = 32  # text slots per sequence (captions are truncated beyond this)
    iterations: int = 16  # masked-AR sampling iterations over N tokens (MAR: 64 for 256 tokens)
    temperature: float = 1.0  # scales the fresh noise of each DDPM step of the head (MAR sec. 3.4)
    # None: pixel patches. Else a trained continuous VAE (runs/vae_s/model), or a registered name (test_vae:
    # fresh weights, for tests only); its latents, times latent_scale (LDM/MAR's scale factor, which brings
    # them near unit variance), are the image tokens
    image_tokenizer: str | None = None
    latent_scale: float = 1.0


@SYSTEMS.register("mmar")
class MMARSystem(SystemBase):
    family = "mmar"
    mechanism = "masked_ar"  # umm/pipelines/masked_ar.py runs its capabilities
    tasks = ("t2i", "caption", "qa")
    capabilities = ("t2i", "caption", "qa")
    Options = MMAROptions
    # optional: unset, the model reads pixel patches
    frozen_parts = {"image_tokenizer": FrozenPart("image_tokenizer", "vae_s", image_tokenizers.load_vae, optional=True)}

    def __init__(self, tokenizer, config: MMARConfig, options: MMAROptions | None = None,
                 image_tokenizer: nn.Module | None = None):
        super().__init__(tokenizer, config, options, image_tokenizer=image_tokenizer)
        opts = self.options
        if self.image_tokenizer is not None:
            vae = self.image_tokenizer
            if (vae.latent_channels, vae.grid[0], vae.config.image_size) != (
                    config.latent_channels, config.latent_grid, config.image_size):
                raise UmmError(f"image tokenizer {opts.image_tokenizer!r} gives {vae.latent_channels}-d latents on a "
                               f"{vae.grid[0]}-grid of {vae.config.image_size}px images; the model expects "
                               f"{config.latent_channels}, {config.latent_grid}, {config.image_size}")
        elif config.latent_channels:
            raise UmmError("the model reads VAE latents (latent_channels > 0) but system_args.image_tokenizer is unset")
        if config.latent_channels and (config.latent_patch < 1 or config.latent_grid % config.latent_patch):
            raise UmmError(f"model_args.latent_patch must divide the VAE's {config.latent_grid}-latent grid, got "
                           f"{config.latent_patch}")
        if opts.order not in ("masked", "raster"):
            raise UmmError(f"system_args.order must be 'masked' or 'raster', got {opts.order!r}")
        if not 0.0 <= opts.mask_ratio_min <= 1.0 or opts.mask_ratio_std <= 0:
            raise UmmError(f"system_args.mask_ratio_min must be in [0, 1] and mask_ratio_std > 0, got "
                           f"{opts.mask_ratio_min} and {opts.mask_ratio_std}")
        if opts.diffusion_batch_mul < 1:
            raise UmmError(f"system_args.diffusion_batch_mul must be >= 1, got {opts.diffusion_batch_mul}")
        if not 1 <= opts.iterations <= config.grid**2:
            raise UmmError(f"system_args.iterations must be in [1, {config.grid**2}] (tokens per image), "
                           f"got {opts.iterations}")
        self.path = GaussianPath(opts.schedule, opts.parameterization)

    @classmethod
    def model_overrides(cls, tokenizer, options: MMAROptions) -> dict:
        vae = cls.load_part("image_tokenizer", options, warn=False)
        if vae is None:
            return {"vocab_size": tokenizer.vocab_size}
        return {"vocab_size": tokenizer.vocab_size, "latent_channels": vae.latent_channels,
                "latent_grid": vae.grid[0], "image_size": vae.config.image_size}

    # -- sequences --------------------------------------------------------------------------------------

    @property
    def bidirectional_image(self) -> bool:
        """Masked AR attends within the image both ways; raster order is causal."""
        return self.options.order == "masked"

    @property
    def token_clip(self) -> float | None:
        """Bound of a token's values: pixels live in [-1, 1]; latents are unbounded (MAR clips nothing)."""
        return None if self.image_tokenizer is not None else 1.0

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, N, P) image tokens: patches in [-1, 1], or scaled VAE latents."""
        config = self.config
        if tuple(images.shape[1:]) != (config.channels, config.image_size, config.image_size):
            raise UmmError(f"images of shape {tuple(images.shape)} but the model expects "
                           f"(B, {config.channels}, {config.image_size}, {config.image_size})")
        if self.image_tokenizer is None:
            return patchify(images * 2 - 1, config.patch)
        latents = image_tokenizers.vae_latents(self.image_tokenizer, images, self.options.latent_scale)  # (B, C, h, w)
        return patchify(latents, config.latent_patch)  # (B, h*w / p^2, C*p^2): a p x p block of latents a token (MAR)

    def tokens_to_images(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, P) image tokens -> (B, 3, H, W) in [0, 1]; the inverse of :meth:`image_tokens`."""
        config = self.config
        if self.image_tokenizer is None:
            pixels = unpatchify(tokens.float(), config.patch, config.channels, config.image_size, config.image_size)
            return pixels * 0.5 + 0.5
        latents = unpatchify(tokens.float(), config.latent_patch, config.latent_channels, config.latent_grid,
                             config.latent_grid)
        return image_tokenizers.vae_images(self.image_tokenizer, latents, self.options.latent_scale)

    def t2i_prompt(self, caption: str | None) -> Sequence:
        """``[BOS] caption [BOI]``: what precedes a generated image (no caption: the unconditional prompt)."""
        tok = self.tokenizer
        ids = [] if caption is None else self.text_ids(caption)
        return Sequence(pad_id=tok.pad_id).text([tok.bos_id] + ids + [tok.boi_id], loss=True)

    def image_prompt(self, tokens: torch.Tensor, question: str | None) -> Sequence:
        """``[BOS] [BOI] <clean image tokens (N, P)> [EOI] (question)``: what precedes a caption or an answer."""
        tok, grid = self.tokenizer, (self.config.grid, self.config.grid)
        seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id, tok.boi_id], loss=False)
        seq.image(tokens, grid, loss=False, bidirectional=self.bidirectional_image)
        return seq.text([tok.eoi_id] + (self.text_ids(question) if question is not None else []), loss=False)

    def build(self, sample: dict, tokens: torch.Tensor, task: str, rng: random.Random,
              drop_caption: bool = False) -> Sequence:
        """The training sequence of one sample whose image tokens are ``tokens`` (N, P)."""
        tok = self.tokenizer
        if task == "t2i":
            seq = self.t2i_prompt(None if drop_caption else sample["caption"])
            seq.image(tokens, (self.config.grid, self.config.grid), loss=True, bidirectional=self.bidirectional_image)
            return seq.text([tok.eoi_id, tok.eos_id], loss=True)
        self.check_task(task)
        question, target = understanding_turn(sample, task, rng)
        return self.image_prompt(tokens, question).text(self.text_ids(target) + [tok.eos_id], loss=True)

    def mask_ratios(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) training mask ratios: 1 - |N(0, std)| truncated to [mask_ratio_min, 1] (MAR's truncated normal
        centred at 1), drawn exactly by inverting the half-normal CDF F(x) = erf(x / (std * sqrt 2))."""
        opts = self.options
        scale = opts.mask_ratio_std * math.sqrt(2)
        top = math.erf((1.0 - opts.mask_ratio_min) / scale)
        u = torch.rand(n, generator=generator) * top
        return (1.0 - scale * torch.special.erfinv(u)).clamp(opts.mask_ratio_min, 1.0)

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        # a frozen VAE runs here, without gradients, so losses() only calls the model
        tokens = self.image_tokens(torch.stack([s["image"] for s in samples]))  # (B, N, P)
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        rng = batch_rng(generator)
        seqs = [self.build(s, x, task, rng, bool(d) and task == "t2i") for s, x, d in zip(samples, tokens, drop)]
        config = self.config
        # pad to the longest sequence only: rounding up to a multiple of 8 (72 slots for 68) made the CPU training
        # step ~7% slower for no faster matmul (benchmarks/RESULTS.md, "MMAR vs autoregressive-diffusion-pytorch")
        batch = collate(seqs, None, config.patch_dim, config.transformer.rope_axes, pad_id=self.tokenizer.pad_id)
        # every sequence ends in [EOS] (or padding), which has no target: not fed, as in any decoder LM (-1.5% a step)
        batch = drop_final_slot(batch)
        # masked AR: hide a random subset of each target image (at least one token) behind [MASK]
        masked = torch.zeros_like(batch["image_loss"])
        if self.options.order == "masked":
            ratios = self.mask_ratios(len(samples), generator)
            for i, ratio in enumerate(ratios.tolist()):
                slots = batch["image_loss"][i].nonzero().squeeze(1)  # (N,) or empty
                if len(slots):
                    count = max(1, math.ceil(ratio * len(slots)))
                    masked[i, slots[torch.randperm(len(slots), generator=generator)[:count]]] = True
        batch["masked"] = masked
        return batch

    # -- objective --------------------------------------------------------------------------------------

    def head_targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows (B, T) whose z conditions the head, their clean target tokens x0 (M, P)).

        Masked order: z at a masked slot models that slot's patch. Raster order: z at slot s models the patch
        at slot s + 1 (next-token prediction; the BOI slot models the first patch).
        """
        patches, target = batch["patches"], batch["image_loss"]
        if self.options.order == "masked":
            rows = batch["masked"] & target
            return rows, patches[rows]
        rows = torch.zeros_like(target)
        rows[:, :-1] = target[:, 1:]
        return rows, patches[:, 1:][target[:, 1:]]

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        layout = Layout.of(batch)
        rows, x0 = self.head_targets(batch)
        draws = draw_noise(x0, self.path, self.options.diffusion_batch_mul, generator)  # (M, K, P)
        text = batch["text_targets"] != IGNORE  # (B, T) slots with a next-token target
        out = model(batch["tokens"], batch["kinds"], batch["patches"], batch["masked"], layout,
                    HeadInput(rows, draws.x_t, draws.t), logit_rows=text)
        lm = next_token_loss(out.logits, batch["text_targets"][text])  # (R, V) logits for their R targets
        mse = per_token_diffusion_loss(out.head, draws.target)
        return {"lm_loss": lm, "diffusion_loss": self.options.lambda_diffusion * mse, "diffusion_mse": mse.detach()}
