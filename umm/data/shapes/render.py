"""Anti-aliased rendering of ShapesWorld shapes with numpy.

A shape is an inside-test in unit coordinates (u, v), v pointing down, the shape's bounding box
inside [-1, 1]^2. A pixel's coverage is the fraction of ``ss x ss`` sub-pixel samples that fall inside,
so edges are anti-aliased (box filter). Scenes only ever place a (shape, size) at one of nine cell
centres, so their coverage masks are cached per (shape, size, row, col, canvas) and a scene is a few
multiply-adds; video clips use per-(shape, size, canvas) patches pasted at integer pixel offsets.
The judge re-uses ``coverage`` to re-render candidate shapes (analysis by synthesis).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from umm.data.shapes.vocab import COLOURS, radius_px, cell_centre

SUPERSAMPLE = 8  # sub-pixel samples per axis for cached masks (64 per pixel)

# Shape parameters in unit coordinates (documented once, used by the inside tests below).
SQUARE_HALF = 0.82  # a full-box square looks larger than the rest; shrink it to balance areas
CROSS_HALF_WIDTH = 0.32
CROSS_HALF_LENGTH = 0.95
TRIANGLE_TOP, TRIANGLE_BASE = -0.9, 0.9  # apex up; base half-width 1.0
STAR_INNER = 0.45  # inner-vertex radius of the 5-pointed star (outer radius 1)


def _star_inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Fold the plane into one half-sector [0, 36 deg] around the "up" tip, then test against the edge
    # from the tip T=(0, 1) to the inner vertex I (both in folded polar coords, y pointing up).
    theta = np.arctan2(u, -v)  # 0 = straight up
    sector = 2 * math.pi / 5
    phi = np.abs(np.mod(theta + sector / 2, sector) - sector / 2)
    r = np.hypot(u, v)
    px, py = r * np.sin(phi), r * np.cos(phi)
    ix, iy = STAR_INNER * math.sin(sector / 2), STAR_INNER * math.cos(sector / 2)
    # inside iff on the origin's side of the line T->I, where cross((I - T), (p - T)) is negative
    cross = ix * (py - 1.0) - (iy - 1.0) * px
    return cross <= 0.0


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of points (u, v) (unit coordinates, v down) inside ``shape``."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= SQUARE_HALF
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "triangle":
        height = TRIANGLE_BASE - TRIANGLE_TOP
        return (v <= TRIANGLE_BASE) & (au <= (v - TRIANGLE_TOP) / height)
    if shape == "cross":
        return ((au <= CROSS_HALF_WIDTH) & (av <= CROSS_HALF_LENGTH)) | (
            (av <= CROSS_HALF_WIDTH) & (au <= CROSS_HALF_LENGTH)
        )
    if shape == "star":
        return _star_inside(u, v)
    raise ValueError(f"unknown shape {shape!r}")


def coverage(
    shape: str, radius: float, cx: float, cy: float, x0: int, y0: int, h: int, w: int, ss: int = SUPERSAMPLE
) -> np.ndarray:
    """Coverage in [0, 1] of pixels [y0, y0+h) x [x0, x0+w) by ``shape`` of half-extent ``radius``
    centred at pixel coordinates (cx, cy). Returns float32 (h, w)."""
    offsets = (np.arange(ss, dtype=np.float64) + 0.5) / ss
    xs = (x0 + np.arange(w)[:, None] + offsets[None, :]).reshape(-1)  # (w*ss,)
    ys = (y0 + np.arange(h)[:, None] + offsets[None, :]).reshape(-1)  # (h*ss,)
    u = (xs[None, :] - cx) / radius
    v = (ys[:, None] - cy) / radius
    u, v = np.broadcast_arrays(u, v)
    hit = inside(shape, u, v).astype(np.float32)  # (h*ss, w*ss)
    return hit.reshape(h, ss, w, ss).mean(axis=(1, 3))


def shape_bounds(cx: float, cy: float, radius: float, canvas: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) that contains a shape of this radius, clipped to the canvas."""
    x0 = max(0, int(math.floor(cx - radius)) - 1)
    y0 = max(0, int(math.floor(cy - radius)) - 1)
    x1 = min(canvas, int(math.ceil(cx + radius)) + 1)
    y1 = min(canvas, int(math.ceil(cy + radius)) + 1)
    return x0, y0, x1, y1


@functools.lru_cache(maxsize=4096)
def cell_mask(shape: str, size: str, row: int, col: int, canvas: int) -> np.ndarray:
    """Cached full-canvas coverage (canvas, canvas) of a shape centred in grid cell (row, col)."""
    cx, cy = cell_centre(row, col, canvas)
    radius = radius_px(size, canvas)
    x0, y0, x1, y1 = shape_bounds(cx, cy, radius, canvas)
    mask = np.zeros((canvas, canvas), dtype=np.float32)
    mask[y0:y1, x0:x1] = coverage(shape, radius, cx, cy, x0, y0, y1 - y0, x1 - x0)
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=1024)
def centred_patch(shape: str, size: str, canvas: int) -> tuple[np.ndarray, int]:
    """Cached coverage patch (P, P) of a shape centred on the pixel corner (half, half); returns
    (patch, half). Pasting it with its top-left at (x - half, y - half) centres the shape at (x, y)."""
    radius = radius_px(size, canvas)
    half = int(math.ceil(radius)) + 1
    patch = coverage(shape, radius, float(half), float(half), 0, 0, 2 * half, 2 * half)
    patch.setflags(write=False)
    return patch, half


def colour_rgb(name: str) -> np.ndarray:
    return np.asarray(COLOURS[name], dtype=np.float32)


def render_scene(objects: list[dict], canvas: int) -> np.ndarray:
    """Image (3, canvas, canvas) float32 in [0, 1] of objects on a black background.

    ``objects`` are scene dicts with "shape", "colour", "size", "row", "col" in distinct cells, so the
    masks never overlap and a plain sum composes them.
    """
    image = np.zeros((3, canvas, canvas), dtype=np.float32)
    for obj in objects:
        mask = cell_mask(obj["shape"], obj["size"], obj["row"], obj["col"], canvas)
        image += colour_rgb(obj["colour"])[:, None, None] * mask[None]
    return image


def paste(image: np.ndarray, patch: np.ndarray, rgb: np.ndarray, x: int, y: int) -> None:
    """Max-composite ``rgb * patch`` into ``image`` (3, H, W) with the patch's top-left at (x, y)."""
    _, height, width = image.shape
    ph, pw = patch.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + pw), min(height, y + ph)
    if x0 >= x1 or y0 >= y1:
        return
    sub = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    region = image[:, y0:y1, x0:x1]
    np.maximum(region, rgb[:, None, None] * sub[None], out=region)
