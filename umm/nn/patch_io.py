"""How image tokens enter and leave a diffusion trunk, and the pooled text that may condition them.

``PatchIO`` is the image's way in and out (I images, N patches, P = C * patch^2, D width):

- ``linear`` (ViT/DiT patch embedding; Transfusion's and MonoFormer's papers): a linear map per patch in, a
  zero-initialised linear map out (the model first predicts 0, the mean of every diffusion target);
- ``unet`` (Transfusion sec. 3.3, "U-Net patchification"): a few time-conditioned convolutional levels turn the
  image into the token grid and mirror it back with skips, so a small trunk draws clean shapes
  (benchmarks/RESULTS.md, "Transfusion follows text": the per-patch speckle of linear patches went away).
  ``unet_fold`` folds fold x fold pixel blocks into channels first (pixel unshuffle), so the first level
  runs at 1/fold resolution.

``PooledText`` is GLIDE's and Imagen's pooled-text conditioning (Nichol et al. 2022 sec. 2.3; Saharia et al.
2022 sec. 2.2): the mean embedding of the text before an image, through LayerNorm and an MLP, joins that
image's time conditioning. Its running sum travels in the KV cache, so cached sampling equals a recompute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from umm.config import ConfigError
from umm.nn.embeddings import PatchEmbed, patchify, unpatchify
from umm.nn.unet import UNetDecoder, UNetEncoder


class PatchIO(nn.Module):
    def __init__(self, channels: int, side: int, patch: int, dim: int, unet: bool = False, unet_width: int = 32,
                 unet_fold: int = 1, unet_blocks: int = 1, unet_text_attn: int = 0):
        super().__init__()
        self.channels, self.side, self.patch, self.unet, self.fold = channels, side, patch, unet, unet_fold
        patch_dim = channels * patch**2
        if unet:
            reduce = patch // max(unet_fold, 1)
            levels = reduce.bit_length() - 1
            if unet_fold < 1 or patch % unet_fold or 2**levels != reduce:
                raise ConfigError(f"model_args.unet_fold={unet_fold} with patch={patch}: U-Net patchification "
                                  "needs patch / unet_fold to be a power of two (e.g. fold 1, 2, 4)")
            folded = channels * unet_fold**2
            if unet_blocks < 1:
                raise ConfigError(f"model_args.unet_blocks={unet_blocks}: a U-Net level needs at least one ResBlock")
            if not 0 <= unet_text_attn <= levels + 1:
                raise ConfigError(f"model_args.unet_text_attn={unet_text_attn}: this U-Net has {levels + 1} levels "
                                  f"(patch {patch}, fold {unet_fold}); allowed 0..{levels + 1}")
            self.unet_in = UNetEncoder(folded, dim, levels, unet_width, dim, unet_blocks)
            self.unet_out = UNetDecoder(folded, dim, levels, unet_width, dim, unet_blocks, unet_text_attn)
        else:
            if (unet_width, unet_fold, unet_blocks, unet_text_attn) != (32, 1, 1, 0):
                raise ConfigError("model_args.unet_width / unet_fold / unet_blocks / unet_text_attn shape U-Net "
                                  "patchification; set "
                                  "model_args.unet=true to use them (linear patches take none)")
            self.patch_in = PatchEmbed(patch_dim, dim)
            self.patch_out = nn.Linear(dim, patch_dim)
            nn.init.zeros_(self.patch_out.weight)
            nn.init.zeros_(self.patch_out.bias)

    def embed(self, patches: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(I, N, P) noisy patches and (I, D) condition -> tokens (I, N, D) and the U-Net skips (None if linear)."""
        if not self.unet:
            return self.patch_in(patches), None
        pixels = unpatchify(patches, self.patch, self.channels, self.side, self.side)  # (I, C, H, W)
        return self.unet_in(F.pixel_unshuffle(pixels, self.fold), cond)

    @property
    def reads_text(self) -> bool:
        """Whether :meth:`project` needs the text states before each image (``unet_text_attn`` > 0)."""
        return self.unet and self.unet_out.text_attn is not None

    def project(self, h: torch.Tensor, skips: list[torch.Tensor] | None, cond: torch.Tensor,
                text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Trunk outputs (I, N, D) -> diffusion outputs (I, N, P); ``text`` as :func:`text_before_images` gives."""
        if not self.unet:
            return self.patch_out(h)
        return patchify(F.pixel_shuffle(self.unet_out(h, skips, cond, text), self.fold), self.patch)


def text_before_images(h: torch.Tensor, is_text: torch.Tensor, image: torch.Tensor, n_images: int, cache=None,
                       commit: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The trunk's states at the text slots before each image, for the U-Net decoder's cross-attention.

    h (B, T, D) trunk outputs; is_text (B, T) valid text slots; image (B, T) the patch slots of ``n_images``
    images of equal size, in row-major order. Returns states (I, L, D) and mask (I, L): the committed prefix's
    text (kept in ``cache.state``) and this chunk's text slots before the image's first patch (causal, as the
    trunk reads them). On commit the cache appends this chunk's text states for later chunks. Returns None
    when the chunk holds no image (a prefix call, which only commits)."""
    states, valid = h, is_text
    if cache is not None and "text_states" in cache.state:
        states = torch.cat([cache.state["text_states"], h], dim=1)  # (B, Lc + T, D)
        valid = torch.cat([cache.state["text_valid"], is_text], dim=1)
    if cache is not None and commit:
        cache.state["text_states"], cache.state["text_valid"] = states.detach(), valid
    if n_images == 0:
        return None
    slots = image.nonzero()  # (I * N, 2) row-major: each image's patches are consecutive
    first = slots[:: slots.shape[0] // n_images]  # (I, 2): row and slot of each image's first patch
    rows, start = first[:, 0], first[:, 1] + (states.shape[1] - h.shape[1])  # start in the cached+chunk axis
    before = torch.arange(states.shape[1], device=h.device)[None, :] < start[:, None]  # (I, Lc + T)
    return states[rows], valid[rows] & before


class PooledText(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # LayerNorm first: embeddings start at std 0.02, and without it the pooled text reached the condition
        # with norm 0.83 against the time embedding's 20.4 (RESULTS.md, run T1)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, mean: torch.Tensor) -> torch.Tensor:
        """(I, D) mean text embedding -> (I, D) condition."""
        return self.mlp(mean)

    @staticmethod
    def mean_before(x: torch.Tensor, is_text: torch.Tensor, cache=None, commit: bool = True) -> torch.Tensor:
        """Mean embedding (B, T, D) of the text slots (``is_text`` (B, T)) up to each slot, the cached prefix
        included; on commit the cache keeps the running sum and count for the next chunk."""
        weight = is_text.to(x.dtype)[..., None]  # (B, T, 1)
        sums, counts = torch.cumsum(x * weight, dim=1), torch.cumsum(weight, dim=1)  # (B, T, D), (B, T, 1)
        if cache is not None and "text_sum" in cache.state:
            sums, counts = sums + cache.state["text_sum"][:, None], counts + cache.state["text_count"][:, None]
        if cache is not None and commit:
            cache.state["text_sum"], cache.state["text_count"] = sums[:, -1].detach(), counts[:, -1].detach()
        return sums / counts.clamp_min(1)


# weights saved before PatchIO and PooledText were shared modules (umm <= stop 21) name them on the model itself
LEGACY_PREFIXES = (("unet_in.", "image_io.unet_in."), ("unet_out.", "image_io.unet_out."),
                   ("patch_in.", "image_io.patch_in."), ("patch_out.", "image_io.patch_out."), ("text_pool.", "text_pool.mlp."))


def rename_legacy_keys(state_dict: dict, prefix: str, *_args) -> None:
    """A ``load_state_dict`` pre-hook: rename the old keys in place, so earlier checkpoints load unchanged."""
    for key in list(state_dict):
        for old, new in LEGACY_PREFIXES:
            if key.startswith(prefix + old) and not key.startswith(prefix + new):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
