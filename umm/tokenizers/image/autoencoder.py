"""The convolutional encoder and decoder every image tokenizer shares (VQ, FSQ, LFQ, RQ, KL-VAE, video).

A VQGAN-style stack (Esser et al. 2021, arXiv 2012.09841, without the GAN and perceptual terms): a stem
convolution, then one resolution level per entry of ``widths``, each of ``blocks`` residual blocks, with a
stride-2 convolution between levels. ``widths=(16, 32, 64)`` turns a 32x32 image into an 8x8 latent grid
(/4); a longer ``widths`` downsamples further. The decoder mirrors it with nearest-neighbour upsampling
followed by a convolution (which avoids the checkerboard artefacts of transposed convolutions).

The video variant is (2+1)D (Tran et al. 2018, arXiv 1711.11248): the 2D encoder runs on every frame,
then stride-2 temporal convolutions (kernel 3 along time only) compress time by 2 per level, as EMU3's
tokenizer compresses 4 frames into one (Wang et al. 2024, arXiv 2409.18869, sec. 2.2). The decoder
upsamples time first (repeat, then a temporal convolution), then runs the 2D decoder on every frame.

Images enter in [0, 1] and are mapped to [-1, 1]; the decoder returns [-1, 1]-scaled pixels, unclamped, so
the reconstruction loss sees gradients everywhere (callers clamp and map back to [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from umm.config import ConfigError
from umm.nn.unet import norm_groups


@dataclass(frozen=True)
class AutoencoderConfig:
    image_size: int = 32  # pixels per side
    channels: int = 3
    # conv width per resolution level: 3 levels = /4. Narrow on purpose: on a CPU, more steps of a small
    # network beat fewer of a wide one within minutes (measured on ShapesWorld, see benchmarks/tokenizer_recon.py)
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1  # residual blocks per level
    latent_dim: int = 32  # channels of the latent grid handed to the quantizer
    # "group": VQGAN's GroupNorm, whose statistics span the whole image, so every latent depends on every pixel
    # (an all-black image encodes to many codes, and an object changes the codes of the empty cells around it).
    # "batch": BatchNorm (the VQ-VAE's encoders' norm before GroupNorm took over), whose running statistics make a
    # frozen tokenizer local: a latent reads only its receptive field, and with padding "replicate" the stack is
    # translation-equivariant up to its stride, so an empty canvas is one code and an object moved by one latent
    # cell moves its codes by one cell (an L1 image: 5.4 -> 2.4 nats a code). It did not make LWM draw motion
    # or Chameleon compose held-out pairs at 10 minutes (benchmarks/RESULTS.md, "Thirteenth round").
    norm: str = "group"
    padding: str = "zeros"  # "zeros" (VQGAN) or "replicate" (the border reads like the canvas beyond it)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.image_size // self.downsample, self.image_size // self.downsample)

    def check(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"model.autoencoder.norm={self.norm!r}; choose one of {sorted(NORMS)}")
        if self.padding not in ("zeros", "replicate"):
            raise ConfigError(f"model.autoencoder.padding={self.padding!r}; choose one of ['replicate', 'zeros']")
        if not self.widths:
            raise ConfigError("model.autoencoder.widths must list at least one level width")
        if self.image_size % self.downsample:
            raise ConfigError(
                f"model.autoencoder.image_size={self.image_size} is not divisible by the downsampling "
                f"{self.downsample} of {len(self.widths)} levels"
            )


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm over (B, C, ...) of any rank. In eval mode it applies its running statistics, so a frozen
    tokenizer's latent reads only its receptive field; in training, statistics over the batch and the canvas
    still lift the small objects off the background (as GroupNorm does: a per-position norm or none at all
    learned 3-5x slower on ShapesWorld, RESULTS.md "Thirteenth round")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(2)).view_as(x)


NORMS = {"group": lambda c: nn.GroupNorm(norm_groups(c), c), "batch": BatchNorm}


def conv3(config: AutoencoderConfig, dim_in: int, dim_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(dim_in, dim_out, 3, stride=stride, padding=1, padding_mode=config.padding)


class ResBlock(nn.Module):
    """Norm -> SiLU -> conv, twice, plus the input (a 1x1 projection when the width changes)."""

    def __init__(self, config: AutoencoderConfig, dim_in: int, dim_out: int):
        super().__init__()
        self.norm1 = NORMS[config.norm](dim_in)
        self.conv1 = conv3(config, dim_in, dim_out)
        self.norm2 = NORMS[config.norm](dim_out)
        self.conv2 = conv3(config, dim_out, dim_out)
        self.skip = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """(B, C, H, W) in [-1, 1] -> (B, out_dim, H / 2^(L-1), W / 2^(L-1))."""

    def __init__(self, config: AutoencoderConfig, out_dim: int):
        super().__init__()
        widths = config.widths
        self.stem = conv3(config, config.channels, widths[0])
        self.levels = nn.ModuleList()
        for i, width in enumerate(widths):
            blocks = [ResBlock(config, width, width) for _ in range(config.blocks)]
            if i + 1 < len(widths):
                blocks.append(conv3(config, width, widths[i + 1], stride=2))
            self.levels.append(nn.Sequential(*blocks))
        self.mid = ResBlock(config, widths[-1], widths[-1])
        self.out_norm = NORMS[config.norm](widths[-1])
        self.out = nn.Conv2d(widths[-1], out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for level in self.levels:
            x = level(x)
        return self.out(F.silu(self.out_norm(self.mid(x))))


class Upsample(nn.Module):
    def __init__(self, config: AutoencoderConfig, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = conv3(config, dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """(B, latent_dim, h, w) -> (B, C, h * 2^(L-1), w * 2^(L-1)), pixels scaled to [-1, 1] (unclamped)."""

    def __init__(self, config: AutoencoderConfig, in_dim: int):
        super().__init__()
        widths = config.widths
        self.stem = conv3(config, in_dim, widths[-1])
        self.mid = ResBlock(config, widths[-1], widths[-1])
        self.levels = nn.ModuleList()
        for i in reversed(range(len(widths))):
            blocks: list[nn.Module] = [ResBlock(config, widths[i], widths[i]) for _ in range(config.blocks)]
            if i > 0:
                blocks.append(Upsample(config, widths[i], widths[i - 1]))
            self.levels.append(nn.Sequential(*blocks))
        self.out_norm = NORMS[config.norm](widths[0])
        self.out = conv3(config, widths[0], config.channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.stem(z))
        for level in self.levels:
            x = level(x)
        return self.out(F.silu(self.out_norm(x)))


# ---- video: (2+1)D ---------------------------------------------------------------------------------------


class TemporalDown(nn.Module):
    """(B, C, T, h, w) -> (B, C, T/2, h, w): a stride-2 convolution along time only, plus a residual
    average of frame pairs so that at init the block passes the frames' mean through."""

    def __init__(self, dim: int, norm: str = "group"):
        super().__init__()
        self.norm = NORMS[norm](dim)
        self.conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool3d(x, (2, 1, 1))
        return pooled + self.conv(F.silu(self.norm(x)))


class TemporalUp(nn.Module):
    """(B, C, t, h, w) -> (B, C, 2t, h, w): repeat each latent frame, then a temporal convolution."""

    def __init__(self, dim: int, norm: str = "group"):
        super().__init__()
        self.norm = NORMS[norm](dim)
        self.conv = nn.Conv3d(dim, dim, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.repeat_interleave(2, dim=2)
        return x + self.conv(F.silu(self.norm(x)))


class VideoEncoder(nn.Module):
    """(B, T, C, H, W) in [-1, 1] -> (B, out_dim, T / temporal, h, w)."""

    def __init__(self, config: AutoencoderConfig, out_dim: int, temporal_levels: int):
        super().__init__()
        self.frames = Encoder(config, out_dim)
        self.time = nn.Sequential(*[TemporalDown(out_dim, config.norm) for _ in range(temporal_levels)])

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        z = self.frames(video.flatten(0, 1))  # (B*T, D, h, w)
        z = z.view(b, t, *z.shape[1:]).transpose(1, 2)  # (B, D, T, h, w)
        return self.time(z)


class VideoDecoder(nn.Module):
    """(B, in_dim, t, h, w) -> (B, t * temporal, C, H, W), pixels scaled to [-1, 1]."""

    def __init__(self, config: AutoencoderConfig, in_dim: int, temporal_levels: int):
        super().__init__()
        self.time = nn.Sequential(*[TemporalUp(in_dim, config.norm) for _ in range(temporal_levels)])
        self.frames = Decoder(config, in_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.time(z)  # (B, D, T, h, w)
        b, t = z.shape[0], z.shape[2]
        frames = self.frames(z.transpose(1, 2).flatten(0, 1))  # (B*T, C, H, W)
        return frames.view(b, t, *frames.shape[1:])
