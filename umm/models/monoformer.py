"""MonoFormer (Zhao et al. 2024, "MonoFormer: One Transformer for Both Diffusion and Autoregression",
arXiv 2409.16280).

Like Transfusion, one set of weights is both the autoregressive language model and the diffusion model.
What differs (paper sec. 3):

- the diffusion timestep enters as a **token**: the image span opens with one slot whose embedding is the
  timestep embedding, bidirectionally visible to every patch of that image (patches get no time added);
- the image output goes through an **AdaLN final layer** (DiT's FinalLayer) conditioned on the timestep,
  while text logits come from the plain final norm;
- loss weights text 0.01 / diffusion 1.0, and DiT's diffusion: linear-beta schedule with epsilon
  prediction (both configurable; the learned-variance output of DiT is not used).

Options shared with Transfusion (off in the paper; umm/nn/patch_io.py):
- ``unet``: U-Net patchification (Transfusion sec. 3.3) instead of linear patches. Its ResBlocks are
  conditioned on the same vector as the time token, and the AdaLN final layer modulates the trunk output
  before the U-Net decoder;
- ``pooled_text``: the pooled text before an image (GLIDE/Imagen) is added to its time token and so also to
  the AdaLN final layer's condition. With it, the caption conditions the image's output layer directly, as
  DiT's class label does (Peebles & Xie 2023, adaLN), and not only through attention;
- ``adaln_text``: that condition modulates every trunk block too (AdaLN-zero at the time token and patches).

Shapes: B batch, T slots, I images in the batch, N patches per image, P patch dim, D width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from umm.data.sequence import PATCH, SPECIAL, TEXT
from umm.models.diffusion_lm import (DiffusionLMConfig, DiffusionLMNetwork, DiffusionLMOptions, DiffusionLMOutput,
                                    DiffusionLMSystem)
from umm.models.factory import register_model
from umm.nn import AdaLNModulation, Layout, TransformerConfig, modulate
from umm.nn.patch_io import PooledText, text_before_images
from umm.registry import ARCHITECTURES, SYSTEMS


@dataclass(frozen=True)
class MonoFormerConfig(DiffusionLMConfig):
    family: ClassVar[str] = "monoformer"


@ARCHITECTURES.register("monoformer")
class MonoFormer(DiffusionLMNetwork):
    config_class = MonoFormerConfig

    def __init__(self, config: MonoFormerConfig):
        super().__init__(config)
        dim = config.transformer.dim
        self.final_modulation = AdaLNModulation(dim, dim, 2)  # DiT FinalLayer: shift, scale from the timestep

    def forward(
        self,
        tokens: torch.Tensor,  # (B, T)
        kinds: torch.Tensor,  # (B, T) TEXT / PATCH / SPECIAL (the time token)
        patches: torch.Tensor,  # (B, T, P) noisy patches on image slots
        times: torch.Tensor,  # (B, T) diffusion time of each image's slots (time token included)
        layout: Layout,
        cache=None,
        commit: bool = True,
    ) -> DiffusionLMOutput:
        config = self.config
        x = self.token_embed(tokens)  # (B, T, D)
        time_slot, patch = kinds == SPECIAL, kinds == PATCH
        n_images = int(time_slot.sum())
        text_mean = None
        if self.text_pool is not None:
            text_mean = PooledText.mean_before(x, (kinds == TEXT) & layout.valid, cache, commit)  # (B, T, D)
        if n_images:
            time = self.time_embed(times[time_slot])  # (I, D): one time token per image
            if text_mean is not None:  # + the pooled text before the image, read at its time token
                time = time + self.text_pool(text_mean[time_slot])
            x = x.index_put((time_slot,), time.to(x.dtype))
            embedded, skips = self.image_io.embed(patches[patch].view(n_images, -1, config.patch_dim), time)  # (I, N, D)
            x = x.index_put((patch,), embedded.flatten(0, 1).to(x.dtype))
        # with adaln_text every block also reads the image's condition at its time token and patches
        cond = self.slot_condition(x, time_slot | patch, time if n_images else None, times[time_slot])
        h = self.trunk(x, layout, cache=cache, commit=commit, cond=cond)
        out = h.new_zeros((*h.shape[:2], config.patch_dim))
        text = None
        if self.image_io.reads_text:  # the decoder's cross-attention keys (and, on commit, the cache's copy)
            text = text_before_images(h, (kinds == TEXT) & layout.valid, patch, n_images, cache, commit)
        if n_images:
            shift, scale = self.final_modulation(time)  # (I, 1, D) each
            h_image = modulate(h[patch].view(n_images, -1, h.shape[-1]), shift, scale)  # (I, N, D)
            image_out = self.image_io.project(h_image, skips, time, text)  # (I, N, P)
            out = out.index_put((patch,), image_out.flatten(0, 1).to(h.dtype))
        return DiffusionLMOutput(self.lm_head(h), out)


@register_model
def monoformer_xs() -> MonoFormerConfig:
    """~1M parameters: transfusion_xs's trunk, for the like-for-like comparison at the demo's budget."""
    return MonoFormerConfig(transformer=TransformerConfig(dim=128, depth=4, heads=2, rope_axes=2))


@register_model
def monoformer_s() -> MonoFormerConfig:
    return MonoFormerConfig(transformer=TransformerConfig(dim=256, depth=6, heads=4, rope_axes=2))


@register_model
def monoformer_b() -> MonoFormerConfig:
    return MonoFormerConfig(transformer=TransformerConfig(dim=768, depth=12, heads=12, rope_axes=2))


@register_model
def test_monoformer() -> MonoFormerConfig:
    return MonoFormerConfig(image_size=16, transformer=TransformerConfig(dim=32, depth=2, heads=2, rope_axes=2))


@dataclass(frozen=True)
class MonoFormerOptions(DiffusionLMOptions):
    schedule: Literal["cosine", "linear", "flow"] = "linear"  # DiT's linear betas
    parameterization: Literal["eps", "v", "x0", "flow"] = "eps"
    lambda_lm: float = 0.01  # MonoFormer's loss_lm weight
    lambda_diffusion: float = 1.0


@SYSTEMS.register("monoformer")
class MonoFormerSystem(DiffusionLMSystem):
    family = "monoformer"
    Options = MonoFormerOptions

    def image_prefix(self) -> list[int]:
        """One time-token slot opens every image span (its embedding is the timestep embedding)."""
        return [self.tokenizer.pad_id]
