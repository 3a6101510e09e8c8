"""Sample grids as PNG: the pictures of the demo, eval and report.

``save_grid(images, path, nrow=8, upscale=4, labels=None)``: images (N, 3, H, W) in [0, 1] (a tensor, an
array or a list of (3, H, W)), laid out ``nrow`` per row with a gap, each scaled up ``upscale`` times with
nearest-neighbour (small images stay crisp) and optionally captioned underneath.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GAP = 2  # pixels between cells (after upscaling)
BACKGROUND = (40, 40, 40)  # dark grey, distinct from ShapesWorld's black canvas
LINE_HEIGHT = 11  # the default PIL bitmap font is about 11 px tall


def _as_uint8(images: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """(N, H, W, 3) uint8 from (N, 3, H, W) floats in [0, 1] or a list of (3, H, W)."""
    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(np.asarray(i) if not isinstance(i, torch.Tensor) else i) for i in images])
    images = torch.as_tensor(images).detach().cpu().float()
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    """One (3, H, W) image in [0, 1] -> an RGB PIL image (clamped, rounded to 8 bits)."""
    return Image.fromarray(_as_uint8(torch.as_tensor(image)[None])[0], "RGB")


def make_grid(
    images: torch.Tensor | np.ndarray | Sequence, nrow: int = 8, upscale: int = 4, labels: Sequence[str] | None = None
) -> Image.Image:
    """The grid as a PIL image (see module docstring)."""
    pixels = _as_uint8(images)
    n, height, width, _ = pixels.shape
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    if n == 0:
        raise ValueError("no images to put in a grid")
    nrow = max(1, min(nrow, n))
    rows = -(-n // nrow)
    cell_w, cell_h = width * upscale, height * upscale
    chars = max(4, cell_w // 6)  # the bitmap font is ~6 px wide per character
    wrapped = [textwrap.wrap(str(label), chars)[:3] if label else [] for label in (labels or [""] * n)]
    text_h = max((len(lines) for lines in wrapped), default=0) * LINE_HEIGHT
    grid = Image.new("RGB", (nrow * (cell_w + GAP) + GAP, rows * (cell_h + text_h + GAP) + GAP), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for k in range(n):
        row, col = divmod(k, nrow)
        x = GAP + col * (cell_w + GAP)
        y = GAP + row * (cell_h + text_h + GAP)
        tile = Image.fromarray(pixels[k]).resize((cell_w, cell_h), Image.Resampling.NEAREST)
        grid.paste(tile, (x, y))
        for i, line in enumerate(wrapped[k]):
            draw.text((x + 1, y + cell_h + i * LINE_HEIGHT), line, fill=(230, 230, 230), font=font)
    return grid


def save_grid(
    images: torch.Tensor | np.ndarray | Sequence,
    path: str | Path,
    nrow: int = 8,
    upscale: int = 4,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write the grid of ``images`` to ``path`` (PNG); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, nrow, upscale, labels).save(path, format="PNG")
    return path
