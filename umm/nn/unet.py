"""U-Net down/up blocks that replace linear patchification (Transfusion sec. 3.3, "U-Net patchification").

The encoder turns an image (B, C, H, W) into a (B, h*w, D) token grid through strided convolutions with
time-conditioned residual blocks; the decoder mirrors it, with skip connections from the encoder, back to
(B, C, H, W). The paper reports that these few convolutional layers let a transformer use larger patches
(fewer tokens per image) at the same quality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from umm.nn.attention import explicit_attention


def norm_groups(channels: int) -> int:
    """GroupNorm groups for ``channels``: 32 (Wu & He 2018; ADM) or the largest of 16, 8, .. that divides them."""
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice; the condition (time embedding) scales and shifts the activations
    after the second GroupNorm (ADM's ``use_scale_shift_norm``, Dhariwal & Nichol 2021, sec. 3).

    Why after the norm: DDPM adds the condition as a per-channel bias *before* GroupNorm. With few channels
    per group that bias is removed by the normalisation (at 32 channels in 32 groups, exactly: each group
    is one channel and subtracting its mean subtracts the bias), so the block could not see the noise level
    at all. ``tests/nn/test_unet.py`` checks that the condition changes the block's output.
    """

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)  # (scale, shift) per channel
        nn.init.zeros_(self.film.weight)  # starts unconditioned: scale 1, shift 0
        nn.init.zeros_(self.film.bias)
        self.norm2 = nn.GroupNorm(norm_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C, H, W)
        scale, shift = self.film(F.silu(cond))[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return x + self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))


class TextCrossAttention(nn.Module):
    """A feature map (B, C, H, W) attends to text states (B, L, D_text), residually (Imagen's and LDM's U-Net
    cross-attention, Saharia et al. 2022 sec. 2.2, Rombach et al. 2022 sec. 3.3; benchmarks/reference_t2i.py
    puts it at 12 and 6 px). A learned null key is always visible, so an image with no text before it (the
    guidance's unconditional rows keep only BOS) has something to attend to. The output projection starts
    at zero, so the block starts as the identity and a trained U-Net without it is unchanged."""

    def __init__(self, channels: int, text_dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm = nn.GroupNorm(norm_groups(channels), channels)
        self.text_norm = nn.LayerNorm(text_dim)
        self.null = nn.Parameter(torch.zeros(1, 1, text_dim))
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(text_dim, 2 * channels)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W); text (B, L, D_text); text_mask (B, L) bool, True where a key may be read."""
        b, c, h, w = x.shape
        heads = self.heads
        q = self.to_q(self.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
        keys = torch.cat([self.null.expand(b, 1, -1).to(text.dtype), text], dim=1)  # (B, 1 + L, D_text)
        mask = torch.cat([text_mask.new_ones(b, 1), text_mask], dim=1)  # (B, 1 + L)
        k, v = self.to_kv(self.text_norm(keys)).chunk(2, dim=-1)  # (B, 1 + L, C) each
        split = lambda t: t.view(b, t.shape[1], heads, c // heads).transpose(1, 2)  # noqa: E731  (B, h, *, C/h)
        out = explicit_attention(split(q), split(k.to(q.dtype)), split(v.to(q.dtype)), mask[:, None, None, :])  # (B, h, HW, C/h)
        out = self.to_out(out.transpose(1, 2).reshape(b, h * w, c))  # (B, HW, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


def _more_blocks(widths: list[int], time_dim: int, blocks: int) -> nn.ModuleList | None:
    """The second and later ResBlocks of every level; None for one block a level."""
    if blocks < 1:
        raise ValueError(f"a U-Net level needs at least one ResBlock, got {blocks}")
    if blocks == 1:
        return None
    return nn.ModuleList(nn.ModuleList(ResBlock(c, time_dim) for _ in range(blocks - 1)) for c in widths)


class UNetEncoder(nn.Module):
    """(B, C, H, W) -> tokens (B, (H/2^L) * (W/2^L), D) and the skip activations of each level.

    ``blocks`` ResBlocks a level (ADM and the reference use 2); the first of each level is ``self.blocks[i]``
    and the rest ``self.more[i]``, so one-block models keep their parameter names."""

    def __init__(self, channels: int, dim: int, levels: int, width: int, time_dim: int, blocks: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        widths = [width * 2**i for i in range(levels + 1)]
        self.blocks = nn.ModuleList(ResBlock(widths[i], time_dim) for i in range(levels + 1))
        self.more = _more_blocks(widths, time_dim, blocks)
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(levels))
        self.to_tokens = nn.Linear(widths[-1], dim)

    def forward(self, images: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(images)
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x, time)
            for extra in self.more[i] if self.more else ():
                x = extra(x, time)
            skips.append(x)
            if i < len(self.down):
                x = self.down[i](x)
        tokens = self.to_tokens(x.flatten(2).transpose(1, 2))  # (B, h*w, D)
        return tokens, skips


class UNetDecoder(nn.Module):
    """tokens (B, h*w, D) + encoder skips -> (B, C, H, W).

    ``text_attn`` > 0: the coarsest ``text_attn`` levels attend to the text states before the image after
    their ResBlocks (``self.text_attn[j]`` serves level ``levels - j``), so the decoder that draws the pixels
    reads the caption directly, not only through the tokens the trunk hands it."""

    def __init__(self, channels: int, dim: int, levels: int, width: int, time_dim: int, blocks: int = 1,
                 text_attn: int = 0):
        super().__init__()
        if not 0 <= text_attn <= levels + 1:
            raise ValueError(f"text cross-attention on {text_attn} levels of a {levels + 1}-level U-Net")
        widths = [width * 2**i for i in range(levels + 1)]
        self.from_tokens = nn.Linear(dim, widths[-1])
        self.blocks = nn.ModuleList(ResBlock(widths[i], time_dim) for i in range(levels + 1))
        self.more = _more_blocks(widths, time_dim, blocks)
        self.merge = nn.ModuleList(nn.Conv2d(2 * widths[i], widths[i], 1) for i in range(levels + 1))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 4, stride=2, padding=1) for i in range(levels))
        self.text_attn = nn.ModuleList(TextCrossAttention(widths[levels - j], dim) for j in range(text_attn)) \
            if text_attn else None
        self.out_norm = nn.GroupNorm(norm_groups(width), width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # predict 0 at init, like the linear head
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, skips: list[torch.Tensor], time: torch.Tensor,
                text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``text``: (states (B, L, D), mask (B, L)) of the text before each image; needed with ``text_attn``."""
        if self.text_attn is not None and text is None:
            raise ValueError("this U-Net decoder attends to text: pass the text states before each image")
        b, n, _ = tokens.shape
        h, w = skips[-1].shape[-2:]
        x = self.from_tokens(tokens).transpose(1, 2).reshape(b, -1, h, w)
        for i in reversed(range(len(self.blocks))):
            x = self.merge[i](torch.cat([x, skips[i]], dim=1))
            x = self.blocks[i](x, time)
            for extra in self.more[i] if self.more else ():
                x = extra(x, time)
            j = len(self.blocks) - 1 - i  # 0 at the coarsest level
            if self.text_attn is not None and j < len(self.text_attn):
                x = self.text_attn[j](x, *text)
            if i > 0:
                x = self.up[i - 1](x)
        return self.out(F.silu(self.out_norm(x)))
