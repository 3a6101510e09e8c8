"""Image and video tokenizers: discrete (VQ, FSQ, LFQ, RQ, video VQ) and continuous (KL-VAE).

Each is a registered model family trained with ``umm train`` on a recipe (``umm/recipes/vq_s.yaml`` ...), and
saved like every umm model (``runs/<name>/model``: config.json + model.safetensors + system.json).
Downstream systems (Chameleon, EMU3, LWM, VILA-U, Show-o, LaVIT; Transfusion/MMAR with the VAE) load one
with :func:`load_image_tokenizer` and keep it frozen. The interface they rely on:

``encode(images (B, 3, H, W) in [0, 1]) -> codes``
    (B, h, w) long; (B, h, w, D) for RQ; videos (B, T, 3, H, W) -> (B, t, h, w); the VAE returns float
    latents (B, C, h, w) (the posterior mean, or a sample with ``generator=``); LaVIT's dynamic
    tokenizer (``lavit_tokenizer``) returns (B, N) codes of a variable number of kept tokens, padded with -1.
``decode(codes) -> images in [0, 1]``
    the inverse layout of ``encode``.
``codebook_size``, ``grid`` ((h, w), or (t, h, w) for video), ``depth`` (RQ's D, else 1),
``latent_channels`` (VAE)
    geometry a system needs to size its vocabulary and sequences.
``encode_latents(images)`` / ``lookup(codes)`` / ``decode_latents(latents)``
    the continuous side of a discrete tokenizer (pre-quantization features, code vectors), for systems that
    align or predict features (VILA-U).

Offsetting codes into a shared vocabulary (Chameleon: ``text_vocab + code``) is the system's business, not
the tokenizer's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from umm import UmmError
from umm.models.factory import create_model, from_pretrained, load_config
from umm.registry import MODELS
from umm.tokenizers.image import system as _system  # noqa: F401  (registers the reconstruct systems)
from umm.tokenizers.image import dynamic as _dynamic  # noqa: F401  (LaVIT's variable-length tokenizer)
from umm.tokenizers.image.autoencoder import AutoencoderConfig
from umm.tokenizers.image.models import (
    DiscreteTokenizer,
    FSQConfig,
    FSQTokenizer,
    KLAutoencoder,
    LFQConfig,
    LFQTokenizer,
    RQConfig,
    RQTokenizer,
    TokenizerOutput,
    VAEConfig,
    VQConfig,
    VQTokenizer,
    VQVideoConfig,
    VQVideoTokenizer,
)
from umm.tokenizers.image.quantizers import FSQ, LFQ, QuantizerOutput, ResidualQuantizer, VectorQuantizer

FAMILIES = ("vq", "rq", "fsq", "lfq", "vqvideo", "vae", "lavit_tokenizer")


def load_image_tokenizer(name_or_dir: str | Path, device: str | torch.device = "cpu", seed: int = 0) -> nn.Module:
    """A frozen image tokenizer in eval mode.

    ``name_or_dir`` is the directory of a trained tokenizer (``runs/vq_s/model``), or a registered tokenizer
    name (``test_vq``) for fresh weights seeded by ``seed``: untrained, so for tests only.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        family = load_config(path).family
        if family not in FAMILIES:
            raise UmmError(f"{str(path)!r} holds a {family!r} model, not an image tokenizer ({', '.join(FAMILIES)})")
        model = from_pretrained(path, str(device))
    elif str(name_or_dir) in MODELS:
        family = MODELS.get(str(name_or_dir))().family
        if family not in FAMILIES:
            raise UmmError(f"model {str(name_or_dir)!r} is a {family!r}, not an image tokenizer ({', '.join(FAMILIES)})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(str(name_or_dir)).to(device)
    else:
        raise UmmError(
            f"image tokenizer {str(name_or_dir)!r} is neither a trained tokenizer directory (runs/<name>/model) "
            f"nor a registered tokenizer name (e.g. vq_s, test_vq)"
        )
    model.eval()
    model.requires_grad_(False)
    return model


def load_vae(name_or_dir: str | Path) -> nn.Module:
    """A frozen continuous tokenizer (a trained or, in tests, registered ``vae``): what the diffusion systems
    (Transfusion, MonoFormer, MMAR) read when they diffuse latents instead of pixel patches."""
    vae = load_image_tokenizer(name_or_dir)
    if vae.config.family != "vae":
        raise UmmError(f"system_args.image_tokenizer {str(name_or_dir)!r} is a {vae.config.family!r}; diffusion "
                       "needs continuous latents: a 'vae' (see umm.tokenizers.image)")
    return vae


@torch.no_grad()
def vae_latents(vae: nn.Module, images: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> the frozen VAE's latents (B, C, h, w) times ``scale`` (LDM's scale factor,
    which brings them near unit variance), as float on the images' device (the VAE may sit elsewhere)."""
    device = next(vae.parameters()).device
    return vae.encode(images.to(device)).float().to(images.device) * scale


@torch.no_grad()
def vae_images(vae: nn.Module, latents: torch.Tensor, scale: float) -> torch.Tensor:
    """The inverse of :func:`vae_latents`: scaled latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1]."""
    device = next(vae.parameters()).device
    return vae.decode((latents.float() / scale).to(device)).float().to(latents.device)


def warn_if_untrained(name_or_dir: str | Path, system: str, recipe: str,
                      key: str = "system_args.image_tokenizer") -> None:
    """A system given a registered tokenizer *name* gets fresh weights (fine for tests, useless for training):
    say so, and which recipe trains a real one."""
    if str(name_or_dir) in MODELS and not Path(name_or_dir).is_dir():
        warnings.warn(f"{system} uses untrained tokenizer weights ({str(name_or_dir)!r}); train one (umm train "
                      f"{recipe}) and set {key}=runs/{recipe}/model", stacklevel=3)


def require_grid(images: nn.Module, name: str | Path, system: str) -> None:
    """Systems that place one code at each position of an image grid (Chameleon, EMU3, LWM, Show-o) cannot read
    residual stacks (RQ), dynamic sequences (LaVIT) or continuous latents (VAE)."""
    if getattr(images, "depth", None) != 1 or len(getattr(images, "grid", ())) != 2:
        raise UmmError(f"{system} needs an image tokenizer with one code per position of an image grid; "
                       f"{str(name)!r} is a {images.config.family!r}")



def grid_fields(images: nn.Module, name: str | Path, system: str) -> dict:
    """The model fields a system with one code per grid position (Chameleon, Show-o) reads from its frozen
    tokenizer: codebook size, image size and grid side; refuses a tokenizer without such a grid."""
    require_grid(images, name, system)
    return {"image_codes": images.codebook_size, "image_size": images.config.image_size, "grid": images.grid[0]}


__all__ = [
    "FAMILIES", "FSQ", "LFQ", "AutoencoderConfig", "DiscreteTokenizer", "FSQConfig", "FSQTokenizer",
    "KLAutoencoder", "LFQConfig", "LFQTokenizer", "QuantizerOutput", "RQConfig", "RQTokenizer",
    "ResidualQuantizer", "TokenizerOutput", "VAEConfig", "VQConfig", "VQTokenizer", "VQVideoConfig",
    "VQVideoTokenizer", "VectorQuantizer", "grid_fields", "load_image_tokenizer", "require_grid", "vae_images", "vae_latents",
    "warn_if_untrained",
]
