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

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.widths) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.image_size // self.downsample, self.image_size // self.downsample)

    def check(self) -> None:
        if not self.widths:
            raise ConfigError("model.autoencoder.widths must list at least one level width")
        if self.image_size % self.downsample:
            raise ConfigError(
                f"model.autoencoder.image_size={self.image_size} is not divisible by the downsampling "
                f"{self.downsample} of {len(self.widths)} levels"
            )


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus the input (a 1x1 projection when the width changes)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(dim_in), dim_in)
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups(dim_out), dim_out)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1)
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
        self.stem = nn.Conv2d(config.channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i, width in enumerate(widths):
            blocks = [ResBlock(width, width) for _ in range(config.blocks)]
            if i + 1 < len(widths):
                blocks.append(nn.Conv2d(width, widths[i + 1], 3, stride=2, padding=1))
            self.levels.append(nn.Sequential(*blocks))
        self.mid = ResBlock(widths[-1], widths[-1])
        self.out_norm = nn.GroupNorm(norm_groups(widths[-1]), widths[-1])
        self.out = nn.Conv2d(widths[-1], out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for level in self.levels:
            x = level(x)
        return self.out(F.silu(self.out_norm(self.mid(x))))


class Upsample(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """(B, latent_dim, h, w) -> (B, C, h * 2^(L-1), w * 2^(L-1)), pixels scaled to [-1, 1] (unclamped)."""

    def __init__(self, config: AutoencoderConfig, in_dim: int):
        super().__init__()
        widths = config.widths
        self.stem = nn.Conv2d(in_dim, widths[-1], 3, padding=1)
        self.mid = ResBlock(widths[-1], widths[-1])
        self.levels = nn.ModuleList()
        for i in reversed(range(len(widths))):
            blocks: list[nn.Module] = [ResBlock(widths[i], widths[i]) for _ in range(config.blocks)]
            if i > 0:
                blocks.append(Upsample(widths[i], widths[i - 1]))
            self.levels.append(nn.Sequential(*blocks))
        self.out_norm = nn.GroupNorm(norm_groups(widths[0]), widths[0])
        self.out = nn.Conv2d(widths[0], config.channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.stem(z))
        for level in self.levels:
            x = level(x)
        return self.out(F.silu(self.out_norm(x)))


# ---- video: (2+1)D ---------------------------------------------------------------------------------------


class TemporalDown(nn.Module):
    """(B, C, T, h, w) -> (B, C, T/2, h, w): a stride-2 convolution along time only, plus a residual
    average of frame pairs so that at init the block passes the frames' mean through."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(dim), dim)
        self.conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool3d(x, (2, 1, 1))
        return pooled + self.conv(F.silu(self.norm(x)))


class TemporalUp(nn.Module):
    """(B, C, t, h, w) -> (B, C, 2t, h, w): repeat each latent frame, then a temporal convolution."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(dim), dim)
        self.conv = nn.Conv3d(dim, dim, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.repeat_interleave(2, dim=2)
        return x + self.conv(F.silu(self.norm(x)))


class VideoEncoder(nn.Module):
    """(B, T, C, H, W) in [-1, 1] -> (B, out_dim, T / temporal, h, w)."""

    def __init__(self, config: AutoencoderConfig, out_dim: int, temporal_levels: int):
        super().__init__()
        self.frames = Encoder(config, out_dim)
        self.time = nn.Sequential(*[TemporalDown(out_dim) for _ in range(temporal_levels)])

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        z = self.frames(video.flatten(0, 1))  # (B*T, D, h, w)
        z = z.view(b, t, *z.shape[1:]).transpose(1, 2)  # (B, D, T, h, w)
        return self.time(z)


class VideoDecoder(nn.Module):
    """(B, in_dim, t, h, w) -> (B, t * temporal, C, H, W), pixels scaled to [-1, 1]."""

    def __init__(self, config: AutoencoderConfig, in_dim: int, temporal_levels: int):
        super().__init__()
        self.time = nn.Sequential(*[TemporalUp(in_dim) for _ in range(temporal_levels)])
        self.frames = Decoder(config, in_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.time(z)  # (B, D, T, h, w)
        b, t = z.shape[0], z.shape[2]
        frames = self.frames(z.transpose(1, 2).flatten(0, 1))  # (B*T, C, H, W)
        return frames.view(b, t, *frames.shape[1:])
