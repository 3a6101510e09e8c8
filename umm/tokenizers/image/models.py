"""Image and video tokenizers as trainable umm models: encoder -> quantizer -> decoder.

Families (each a registered architecture with a frozen config and sizes, trained by ``umm train``):

==========  ======================================  ===========================================================
family      codes from ``encode``                   quantizer
==========  ======================================  ===========================================================
``vq``      (B, h, w) long in [0, K)                :class:`VectorQuantizer`, EMA or straight-through codebook
``fsq``     (B, h, w) long in [0, prod(levels))     :class:`FSQ`
``lfq``     (B, h, w) long in [0, 2^bits)           :class:`LFQ`
``rq``      (B, h, w, D) long in [0, K)             :class:`ResidualQuantizer` of depth D
``vqvideo`` (B, t, h, w) long, t = T / temporal     :class:`VectorQuantizer` on a (2+1)D autoencoder
``vae``     latents (B, C, h, w) float              none: a KL-regularised Gaussian latent (continuous)
==========  ======================================  ===========================================================

Images are (B, 3, H, W) in [0, 1]; videos (B, T, 3, H, W). ``decode`` returns the same layout in [0, 1].
``forward(images, generator)`` is the training pass: it returns the unclamped reconstruction in [-1, 1]
scale, the codes, and the quantizer's unweighted auxiliary losses, which the system weights.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from umm import UmmError
from umm.models.factory import register_model
from umm.registry import ARCHITECTURES
from umm.tokenizers.image.autoencoder import AutoencoderConfig, Decoder, Encoder, VideoDecoder, VideoEncoder
from umm.tokenizers.image.quantizers import FSQ, LFQ, ResidualQuantizer, VectorQuantizer


class TokenizerOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, 3, H, W) or (B, T, 3, H, W): pixels in [-1, 1] scale, unclamped
    codes: torch.Tensor  # (B, h, w) | (B, h, w, D) | (B, t, h, w) long; VAE: sampled latents (B, C, h, w)
    losses: dict[str, torch.Tensor]  # unweighted: commitment, codebook, entropy, kl


def to_tokens(z: torch.Tensor) -> torch.Tensor:
    """(B, C, *grid) -> (B * prod(grid), C): one token per latent position, raster order."""
    return z.movedim(1, -1).flatten(0, -2)


def from_tokens(tokens: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B * prod(grid), C) -> (B, C, *grid) where ``shape`` is (B, *grid)."""
    return tokens.view(*shape, tokens.shape[-1]).movedim(-1, 1)


# ---- configs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VQConfig:
    family: ClassVar[str] = "vq"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    codebook_size: int = 512
    ema: bool = True  # EMA codebook (VQ-VAE app. A.1); False: a parameter trained by the codebook loss
    ema_decay: float = 0.99
    restart_threshold: float = 0.03  # restart codes used fewer times per step (EMA) than this; 0 = never

    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size


@dataclass(frozen=True)
class RQConfig:
    family: ClassVar[str] = "rq"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    codebook_size: int = 256
    depth: int = 4  # residual codes per position (VILA-U uses 4 to 16)
    shared_codebook: bool = True  # one codebook for every depth (RQ-VAE)
    ema: bool = True
    ema_decay: float = 0.99
    restart_threshold: float = 0.03

    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size


@dataclass(frozen=True)
class FSQConfig:
    family: ClassVar[str] = "fsq"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    levels: tuple[int, ...] = (8, 5, 5, 5)  # 1000 codes (FSQ paper, table 1)

    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size


@dataclass(frozen=True)
class LFQConfig:
    family: ClassVar[str] = "lfq"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    bits: int = 10  # 1024 codes
    temperature: float = 0.01  # of the code distribution in the entropy penalty
    batch_entropy_weight: float = 1.0  # gamma: weight of the codebook-usage term

    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size


@dataclass(frozen=True)
class VQVideoConfig:
    family: ClassVar[str] = "vqvideo"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    frames: int = 8  # clip length the recipe trains on (any multiple of ``temporal_downsample`` encodes)
    temporal_downsample: int = 2  # 1, 2 or 4 frames per latent frame (EMU3 uses 4)
    codebook_size: int = 512
    ema: bool = True
    ema_decay: float = 0.99
    restart_threshold: float = 0.03

    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size


@dataclass(frozen=True)
class VAEConfig:
    family: ClassVar[str] = "vae"
    # latent_dim = the latent channels (4 in SD-VAE, 8 in Transfusion, 16 in MAR's KL-16)
    autoencoder: AutoencoderConfig = field(default_factory=lambda: AutoencoderConfig(latent_dim=8))

    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size


# ---- discrete image tokenizers --------------------------------------------------------------------------


class DiscreteTokenizer(nn.Module, abc.ABC):
    """encoder -> quantizer -> decoder over images; a family only chooses its quantizer.

    The interface downstream systems use: ``encode(images) -> codes``, ``decode(codes) -> images``,
    ``grid`` (h, w), ``codebook_size``, ``depth`` (codes per position: D for RQ, else 1), and for systems that
    need features rather than codes ``encode_latents`` / ``lookup`` / ``decode_latents``.
    """

    def __init__(self, config):
        super().__init__()
        config.autoencoder.check()
        self.config = config
        self.encoder, self.decoder = self.build_autoencoder()
        self.quantizer = self.build_quantizer()

    def build_autoencoder(self) -> tuple[nn.Module, nn.Module]:
        ae = self.config.autoencoder
        return Encoder(ae, ae.latent_dim), Decoder(ae, ae.latent_dim)

    @abc.abstractmethod
    def build_quantizer(self) -> nn.Module:
        """The family's quantizer (VQ, FSQ, LFQ, RQ): the one thing a tokenizer family decides."""

    @property
    def grid(self) -> tuple[int, ...]:
        return self.config.autoencoder.grid

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def depth(self) -> int:
        return self.quantizer.depth

    def check_input(self, images: torch.Tensor) -> None:
        size = self.config.autoencoder.image_size
        if images.ndim != 4 or images.shape[1] != self.config.autoencoder.channels or images.shape[-2:] != (size, size):
            raise UmmError(f"{self.config.family} tokenizer expects images (B, 3, {size}, {size}), got {tuple(images.shape)}")

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> continuous encoder outputs before quantization (B, C, *grid)."""
        self.check_input(images)
        return self.encoder(images * 2 - 1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, *grid[, D]) -> quantized latents (B, C, *grid), what the decoder reads."""
        vectors = self.quantizer.lookup(codes)  # (B, *grid, C)
        return vectors.movedim(-1, 1)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, C, *grid) -> pixels in [-1, 1] scale, unclamped."""
        return self.decoder(latents)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> TokenizerOutput:
        z = self.encode_latents(images)  # (B, C, *grid)
        out = self.quantizer(to_tokens(z), generator)
        shape = (z.shape[0], *z.shape[2:])
        codes = out.codes.view(*shape, *out.codes.shape[1:])
        reconstruction = self.decode_latents(from_tokens(out.quantized, shape))
        return TokenizerOutput(reconstruction, codes, out.losses)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> codes (B, *grid) long ((B, *grid, D) for residual quantization)."""
        z = self.encode_latents(images)
        codes = self.quantizer(to_tokens(z)).codes
        return codes.view(z.shape[0], *z.shape[2:], *codes.shape[1:])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes as returned by :meth:`encode` -> images in [0, 1]."""
        if codes.dtype != torch.long:
            raise UmmError(f"codes must be integer (torch.long), got {codes.dtype}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise UmmError(f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")
        return (self.decode_latents(self.lookup(codes)).float().clamp(-1, 1) + 1) / 2


@ARCHITECTURES.register("vq")
class VQTokenizer(DiscreteTokenizer):
    config_class = VQConfig

    def build_quantizer(self) -> nn.Module:
        c = self.config
        return VectorQuantizer(c.codebook_size, c.autoencoder.latent_dim, c.ema, c.ema_decay, c.restart_threshold)


@ARCHITECTURES.register("rq")
class RQTokenizer(DiscreteTokenizer):
    config_class = RQConfig

    def build_quantizer(self) -> nn.Module:
        c = self.config
        return ResidualQuantizer(c.codebook_size, c.autoencoder.latent_dim, c.depth, c.shared_codebook, c.ema,
                                 c.ema_decay, c.restart_threshold)


@ARCHITECTURES.register("fsq")
class FSQTokenizer(DiscreteTokenizer):
    config_class = FSQConfig

    def build_quantizer(self) -> nn.Module:
        return FSQ(self.config.levels, self.config.autoencoder.latent_dim)


@ARCHITECTURES.register("lfq")
class LFQTokenizer(DiscreteTokenizer):
    config_class = LFQConfig

    def build_quantizer(self) -> nn.Module:
        c = self.config
        return LFQ(c.bits, c.autoencoder.latent_dim, c.temperature, c.batch_entropy_weight)


@ARCHITECTURES.register("vqvideo")
class VQVideoTokenizer(DiscreteTokenizer):
    """Videos (B, T, 3, H, W) -> codes (B, T / temporal_downsample, h, w) through a (2+1)D autoencoder."""

    config_class = VQVideoConfig

    def build_autoencoder(self) -> tuple[nn.Module, nn.Module]:
        c = self.config
        if c.temporal_downsample not in (1, 2, 4):
            raise UmmError(f"model.temporal_downsample must be 1, 2 or 4, got {c.temporal_downsample}")
        levels = c.temporal_downsample.bit_length() - 1
        ae = c.autoencoder
        return VideoEncoder(ae, ae.latent_dim, levels), VideoDecoder(ae, ae.latent_dim, levels)

    def build_quantizer(self) -> nn.Module:
        c = self.config
        return VectorQuantizer(c.codebook_size, c.autoencoder.latent_dim, c.ema, c.ema_decay, c.restart_threshold)

    @property
    def grid(self) -> tuple[int, ...]:
        """(t, h, w) of a clip of ``config.frames`` frames."""
        return (self.config.frames // self.config.temporal_downsample, *self.config.autoencoder.grid)

    def check_input(self, videos: torch.Tensor) -> None:
        size, k = self.config.autoencoder.image_size, self.config.temporal_downsample
        if videos.ndim != 5 or videos.shape[2] != self.config.autoencoder.channels or videos.shape[-2:] != (size, size):
            raise UmmError(f"vqvideo tokenizer expects videos (B, T, 3, {size}, {size}), got {tuple(videos.shape)}")
        if videos.shape[1] % k:
            raise UmmError(f"vqvideo tokenizer needs a frame count divisible by {k}, got {videos.shape[1]}")


# ---- continuous: the KL-VAE ------------------------------------------------------------------------------


@ARCHITECTURES.register("vae")
class KLAutoencoder(nn.Module):
    """A VAE with a diagonal Gaussian latent (Kingma & Welling 2014; the LDM "KL-f4" autoencoder, Rombach et
    al. 2022, arXiv 2112.10752, sec. 3): continuous latents with no quantisation error, for Transfusion/MMAR.

    ``encode(images)`` gives the posterior mean (deterministic); with ``generator`` a sample. The KL term
    (weighted by the system, kept small as in LDM) only keeps the latent scale tame; it does not make the
    latents unit-variance, so diffusion users should standardise them (see ``latent_stats`` in the eval).
    """

    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__()
        config.autoencoder.check()
        self.config = config
        ae = config.autoencoder
        self.encoder = Encoder(ae, 2 * ae.latent_dim)  # mean and log-variance
        self.decoder = Decoder(ae, ae.latent_dim)

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.autoencoder.grid

    @property
    def latent_channels(self) -> int:
        return self.config.autoencoder.latent_dim

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] -> (mean, log-variance), each (B, C, h, w)."""
        size = self.config.autoencoder.image_size
        if images.ndim != 4 or images.shape[-2:] != (size, size):
            raise UmmError(f"vae expects images (B, 3, {size}, {size}), got {tuple(images.shape)}")
        mean, logvar = self.encoder(images * 2 - 1).float().chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> TokenizerOutput:
        if generator is None:
            raise UmmError("the VAE's training forward samples its latent: pass generator=")
        mean, logvar = self.posterior(images)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        latents = mean + (0.5 * logvar).exp() * noise  # reparameterisation
        # KL(N(mean, var) || N(0, 1)) per latent element, averaged
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return TokenizerOutput(self.decoder(latents), latents, {"kl": kl})

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] -> latents (B, C, h, w): the posterior mean, or a sample when ``generator`` is given."""
        mean, logvar = self.posterior(images)
        if generator is None:
            return mean
        return mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator, device=mean.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) -> images in [0, 1]."""
        return (self.decoder(latents).float().clamp(-1, 1) + 1) / 2


# ---- sizes ---------------------------------------------------------------------------------------------

_TEST_AE = AutoencoderConfig(image_size=16, widths=(8, 16, 32), latent_dim=16)


@register_model
def vq_s() -> VQConfig:
    """32x32 -> 8x8 codes from 512; ~0.4M parameters."""
    return VQConfig()


@register_model
def test_vq() -> VQConfig:
    return VQConfig(autoencoder=_TEST_AE, codebook_size=64)


@register_model
def rq_s() -> RQConfig:
    """32x32 -> 8x8 x 4 residual codes from one shared codebook of 256."""
    return RQConfig()


@register_model
def test_rq() -> RQConfig:
    return RQConfig(autoencoder=_TEST_AE, codebook_size=32, depth=2)


@register_model
def fsq_s() -> FSQConfig:
    """32x32 -> 8x8 codes from 8*5*5*5 = 1000."""
    return FSQConfig()


@register_model
def test_fsq() -> FSQConfig:
    return FSQConfig(autoencoder=_TEST_AE, levels=(4, 3, 3))


@register_model
def lfq_s() -> LFQConfig:
    """32x32 -> 8x8 codes from 2^10 = 1024."""
    return LFQConfig()


@register_model
def test_lfq() -> LFQConfig:
    return LFQConfig(autoencoder=_TEST_AE, bits=6)


@register_model
def vqvideo_s() -> VQVideoConfig:
    """8 frames of 32x32 -> 4 x 8 x 8 codes from 512."""
    return VQVideoConfig()


@register_model
def test_vqvideo() -> VQVideoConfig:
    return VQVideoConfig(autoencoder=_TEST_AE, codebook_size=64)


@register_model
def vae_s() -> VAEConfig:
    """32x32 -> 8 x 8x8 continuous latents."""
    return VAEConfig()


@register_model
def test_vae() -> VAEConfig:
    return VAEConfig(autoencoder=AutoencoderConfig(image_size=16, widths=(8, 16, 32), latent_dim=4))
