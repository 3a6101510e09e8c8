"""Transfusion (Zhou et al. 2024, "Transfusion: Predict the Next Token and Diffuse Images with One
Multi-Modal Model", arXiv 2408.11039).

One transformer reads a sequence that mixes discrete text tokens and continuous image patches:

    [BOS] a red circle above a blue square [BOI] p_1 ... p_N [EOI] [EOS]

- text positions are causal and trained with next-token prediction (L_LM);
- the N patches of an image attend to each other bidirectionally (and causally to everything before),
  carry the image's diffusion time t (its embedding is added to the patch embedding, as in the paper's
  linear patchification) and are trained to predict the noise target (L_diffusion);
- L = L_LM + lambda * L_diffusion with lambda = 5 (paper sec. 4.1).

Notable choices in umm's version:
- the diffusion path is a config choice: eps with the cosine schedule (the paper), v, or rectified flow;
- captioning/QA sequences cap the image's noise (``caption_max_t``) so understanding sees mostly clean
  images (paper sec. 2.2 caps captioning noise at t = 500 of 1000);
- the caption is dropped with probability ``cfg_dropout`` so classifier-free guidance works at sampling;
- 2D RoPE (row, column) over the patch grid instead of 1D positions (``rope_axes=2``), an option the
  paper did not have; text keeps 1D positions on every axis;
- ``unet`` (paper sec. 3.3): U-Net patchification instead of the linear patch projection, with the time
  conditioning as a scale-shift in every ResBlock (umm/nn/patch_io.py, umm/nn/unet.py);
- ``pooled_text`` (off in the paper's recipe): the mean embedding of the text before an image, through
  LayerNorm and an MLP, is added to that image's time conditioning (the patch embedding and, with ``unet``, the scale-shift
  of every U-Net ResBlock). This is GLIDE's and Imagen's pooled-text conditioning (Nichol et al. 2022
  sec. 2.3; Saharia et al. 2022 sec. 2.2) on top of Transfusion's attention path: in the paper the caption
  reaches the patches only through causal attention, which a small trunk learns slowly (the demo model
  ignored its prompt: benchmarks/RESULTS.md, "Transfusion follows text");
- ``adaln_text`` (off in the paper): every trunk block is AdaLN-zero modulated at the image's patches by the
  same condition (time, plus the pooled text), as DiT conditions every block (Peebles & Xie 2023).

Shapes: B batch, T slots, N patches per image, P = channels * patch^2, D model width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from umm.data.sequence import PATCH, TEXT
from umm.models.diffusion_lm import (DiffusionLMConfig, DiffusionLMNetwork, DiffusionLMOptions, DiffusionLMOutput,
                                    DiffusionLMSystem)
from umm.models.factory import register_model
from umm.nn import Layout, TransformerConfig
from umm.nn.patch_io import PooledText, text_before_images
from umm.registry import ARCHITECTURES, SYSTEMS


@dataclass(frozen=True)
class TransfusionConfig(DiffusionLMConfig):
    family: ClassVar[str] = "transfusion"


@ARCHITECTURES.register("transfusion")
class Transfusion(DiffusionLMNetwork):
    config_class = TransfusionConfig

    def forward(
        self,
        tokens: torch.Tensor,  # (B, T) token ids (pad on image slots)
        kinds: torch.Tensor,  # (B, T) TEXT / PATCH
        patches: torch.Tensor,  # (B, T, P) noisy patches on image slots
        times: torch.Tensor,  # (B, T) diffusion time of each image slot
        layout: Layout,
        cache=None,
        commit: bool = True,
    ) -> DiffusionLMOutput:
        config = self.config
        x = self.token_embed(tokens)  # (B, T, D)
        image = kinds == PATCH
        n_images = int(image.sum()) // config.grid**2
        text_mean = None
        if self.text_pool is not None:
            text_mean = PooledText.mean_before(x, (kinds == TEXT) & layout.valid, cache, commit)  # (B, T, D)
        if n_images == 0:
            h = self.trunk(x, layout, cache=cache, commit=commit, cond=self.slot_condition(x, image, None))
            if self.image_io.reads_text:  # keep the text states for the images of later chunks
                text_before_images(h, (kinds == TEXT) & layout.valid, image, 0, cache, commit)
            return DiffusionLMOutput(self.lm_head(h), h.new_zeros((*h.shape[:2], config.patch_dim)))
        # embed only the image slots; every image adds its time embedding (paper sec. 2.3)
        image_times = times[image].view(n_images, -1)[:, 0]  # (I,)
        time = self.time_embed(image_times)  # (I, D)
        if text_mean is not None:  # + the pooled text before the image, read at its first patch
            time = time + self.text_pool(text_mean[image].view(n_images, -1, x.shape[-1])[:, 0])
        embedded, skips = self.image_io.embed(patches[image].view(n_images, -1, config.patch_dim), time)  # (I, N, D)
        x = x.index_put((image,), (embedded + time[:, None, :]).flatten(0, 1).to(x.dtype))
        # with adaln_text every block also reads the image's condition at its patches
        h = self.trunk(x, layout, cache=cache, commit=commit, cond=self.slot_condition(x, image, time, image_times))
        text = None
        if self.image_io.reads_text:  # the decoder's cross-attention keys: (I, L, D) states, (I, L) mask
            text = text_before_images(h, (kinds == TEXT) & layout.valid, image, n_images, cache, commit)
        image_out = self.image_io.project(h[image].view(n_images, -1, h.shape[-1]), skips, time, text)  # (I, N, P)
        out = h.new_zeros((*h.shape[:2], config.patch_dim)).index_put((image,), image_out.flatten(0, 1).to(h.dtype))
        return DiffusionLMOutput(self.lm_head(h), out)


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def transfusion_xs() -> TransfusionConfig:
    """~1M parameters: the `umm demo` size. At a 10-minute CPU budget a smaller model that takes ~2x more
    optimizer steps than ``transfusion_s`` scores as well or better (umm/recipes/transfusion_demo.yaml)."""
    return TransfusionConfig(transformer=TransformerConfig(dim=128, depth=4, heads=2, rope_axes=2))


@register_model
def transfusion_s() -> TransfusionConfig:
    """~6M parameters: the bench size (like-for-like with chameleon_s, showo_s, mmar_s)."""
    return TransfusionConfig(transformer=TransformerConfig(dim=256, depth=6, heads=4, rope_axes=2))


@register_model
def transfusion_m() -> TransfusionConfig:
    return TransfusionConfig(transformer=TransformerConfig(dim=384, depth=8, heads=6, rope_axes=2))


@register_model
def transfusion_b() -> TransfusionConfig:
    """~85M parameters: a GPU size."""
    return TransfusionConfig(transformer=TransformerConfig(dim=768, depth=12, heads=12, rope_axes=2))


@register_model
def test_transfusion() -> TransfusionConfig:
    return TransfusionConfig(image_size=16, transformer=TransformerConfig(dim=32, depth=2, heads=2, rope_axes=2))


# ---- system ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransfusionOptions(DiffusionLMOptions):
    lambda_lm: float = 1.0
    lambda_diffusion: float = 5.0  # L = L_LM + 5 L_diffusion (paper sec. 4.1)


@SYSTEMS.register("transfusion")
class TransfusionSystem(DiffusionLMSystem):
    """Sequences, losses and capabilities are shared with MonoFormer (umm/models/diffusion_lm.py); an image
    span is just its patches."""

    family = "transfusion"
    Options = TransfusionOptions
