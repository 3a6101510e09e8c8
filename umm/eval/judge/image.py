"""Image -> scene: find ShapesWorld objects in a picture by colour segmentation and shape fitting.

No learned network. Steps for an image (3, H, W) in [0, 1] on a dark background:

1. Foreground = pixels whose brightest channel, lightly smoothed (``SEGMENT_SIGMA``, so noise neither
   invents nor splits objects), exceeds ``FOREGROUND``; 8-connected components of it (label propagation
   with pointer jumping in numpy; scipy is not a dependency).
2. Each component with enough mass is an object. Its colour is the palette colour nearest to the
   component's brightness-weighted mean chromaticity (palette colours all peak at 1.0, so a pixel's
   chromaticity does not depend on how much of it the shape covers). A component made of two or more
   palette colours (touching objects in a generated image) is split by colour first.
3. Coverage of every pixel near the component = projection of its RGB on that colour. Its sum is the
   object's area and its first moments the centroid, both preserved exactly by anti-aliasing
   (box filtering) and unbiased under zero-mean noise.
4. Shape by analysis-by-synthesis: for each candidate shape, the area (over the object's brightness)
   fixes the radius and the centroid fixes the centre; the renderer draws that candidate sharp, blurred
   and at half resolution, each scaled by its least-squares brightness, and the one with the smallest
   squared difference to the observed coverage wins. This uses the same geometry as the generator, so clean
   renders fit exactly, while noise and blur change every candidate's error alike.
5. Size from the fitted radius (threshold at the geometric mean of small and large); grid cell from
   the fitted centre.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from umm.data.shapes.render import coverage, inside
from umm.data.shapes.vocab import CELL_NAMES, COLOUR_NAMES, PALETTE, SHAPES, SIZE_RADIUS

FOREGROUND = 0.25  # brightest-channel threshold of a foreground pixel
MIN_PEAK = 0.45  # a component must reach this brightness somewhere (dim smudges are not objects)
MIN_AREA_FRACTION = 0.35  # of the smallest object's area (a small star)
TEMPLATE_SUPERSAMPLE = 8
TABLE_RES, TABLE_EXTENT = 256, 1.1  # shape lookup tables: 256^2 samples of [-1.1, 1.1]^2
CORE = 0.5  # pixels at least this bright vote on a component's colours
SPLIT_FRACTION = 0.2  # a colour with this share of the votes is an object of its own
# Gaussian blurs (sigma in px) tried for every candidate shape besides the sharp one: generators blur,
# and upsampled or soft-edged outputs blur more (half-resolution + bilinear + sigma 0.8 is about 1.2)
BLUR_SIGMAS = (0.5, 0.8, 1.1, 1.4)
GAIN_MIN = 0.75  # the dimmest object brightness the shape fit corrects for (a render is 1.0)
SEGMENT_SIGMA = 0.6  # the foreground mask is taken on a lightly smoothed image, so noise does not split,
# join or invent components; coverage is still read from the unsmoothed pixels


@dataclass(frozen=True)
class DetectedObject:
    """An object the judge found: the same attributes as a scene object plus fit diagnostics."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    x: float  # centre in pixels
    y: float
    area: float  # in pixels (sum of coverage)
    fit_error: float  # mean squared coverage error of the chosen shape per pixel

    def to_dict(self) -> dict:
        return asdict(self)


def as_chw(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 (3, H, W) in [0, 1] from a tensor/array in (3, H, W) float or (H, W, 3) uint8/float."""
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"expected an image of 3 dims, got shape {array.shape}")
    if array.shape[0] != 3 and array.shape[-1] == 3:
        array = np.moveaxis(array, -1, 0)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32, copy=False)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean (H, W) mask: labels (H, W) int32 in 0..n (0 = background)."""
    height, width = mask.shape
    ids = np.arange(1, height * width + 1, dtype=np.int32).reshape(height, width)
    labels = np.where(mask, ids, 0)
    padded = np.zeros((height + 2, width + 2), dtype=np.int32)
    while True:
        padded[1:-1, 1:-1] = labels
        grown = labels.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.maximum(grown, padded[dy : dy + height, dx : dx + width], out=grown)
        grown = np.where(mask, grown, 0)
        # pointer jumping: label L was born at pixel L-1, which is in the same component, so adopting
        # that pixel's (larger or equal) label is safe and halves the remaining distance
        flat = grown.ravel()
        jumped = np.where(flat > 0, flat[np.maximum(flat - 1, 0)], 0).reshape(height, width)
        grown = np.maximum(grown, jumped)
        if np.array_equal(grown, labels):
            break
        labels = grown
    # renumber the surviving labels 1..n (a lookup table is much cheaper than np.unique's sort)
    present = np.zeros(height * width + 1, dtype=bool)
    present[labels.ravel()] = True
    present[0] = False
    lookup = np.cumsum(present, dtype=np.int32)
    return lookup[labels], int(lookup[-1])


@functools.lru_cache(maxsize=None)
def unit_geometry(shape: str) -> tuple[float, float, float]:
    """(area, centroid u, centroid v) of ``shape`` at radius 1, measured on a fine render."""
    res = 400
    cov = coverage(shape, res / 2.0, res / 2.0, res / 2.0, 0, 0, res, res, ss=2).astype(np.float64)
    area = cov.sum()
    coords = (np.arange(res) + 0.5 - res / 2.0) / (res / 2.0)
    return area / (res / 2.0) ** 2, (cov.sum(0) * coords).sum() / area, (cov.sum(1) * coords).sum() / area


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


@functools.lru_cache(maxsize=None)
def _shape_tables() -> np.ndarray:
    """Inside-masks of every shape on a fine grid over [-TABLE_EXTENT, TABLE_EXTENT]^2: (S, R, R) float32.

    Looking points up in these tables renders all candidate shapes several times faster than evaluating
    the inside-tests (the star's needs trigonometry) for every template. The border rows and columns
    are outside every shape, so clipping an index to the table also answers "outside"."""
    centres = (np.arange(TABLE_RES) + 0.5) / TABLE_RES * 2 * TABLE_EXTENT - TABLE_EXTENT
    u, v = np.meshgrid(centres, centres)
    return np.stack([inside(shape, u, v) for shape in SHAPES]).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _box_filter(n: int, ss: int) -> np.ndarray:
    """(n, n*ss) matrix that averages each run of ``ss`` sub-samples into one pixel."""
    return np.kron(np.eye(n, dtype=np.float32), np.full((1, ss), 1.0 / ss, dtype=np.float32))


def _templates(
    radii: np.ndarray, sx: np.ndarray, sy: np.ndarray, x0: int, y0: int, h: int, w: int, ss: int
) -> np.ndarray:
    """Coverage (S, h, w) of every shape s at radius radii[s] centred at (sx[s], sy[s])."""
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (x0 + np.arange(w)[:, None] + offsets).reshape(-1)  # (w*ss,) sub-sample x coordinates
    ys = (y0 + np.arange(h)[:, None] + offsets).reshape(-1)  # (h*ss,)
    scale = TABLE_RES / (2 * TABLE_EXTENT)
    iu = np.clip(((xs[None, :] - sx[:, None]) / radii[:, None] + TABLE_EXTENT) * scale, 0, TABLE_RES - 1)
    iv = np.clip(((ys[None, :] - sy[:, None]) / radii[:, None] + TABLE_EXTENT) * scale, 0, TABLE_RES - 1)
    iu, iv = iu.astype(np.intp), iv.astype(np.intp)
    tables = _shape_tables()
    box_v, box_u = _box_filter(h, ss), _box_filter(w, ss)
    # the sub-sample grid is separable (rows iv x columns iu), so two 1-D takes gather it and two
    # small matrix products average it down to pixels
    return np.stack([box_v @ tables[k].take(iv[k], axis=0).take(iu[k], axis=1) @ box_u.T for k in range(len(SHAPES))])


@functools.lru_cache(maxsize=None)
def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def _blur(stack: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the last two axes (zero outside)."""
    taps = _gaussian_taps(sigma)
    radius = len(taps) // 2
    height, width = stack.shape[-2:]
    pad = [(0, 0)] * (stack.ndim - 2) + [(radius, radius), (radius, radius)]
    padded = np.pad(stack, pad)
    rows = sum(w * padded[..., k : k + height, :] for k, w in enumerate(taps))
    return sum(w * rows[..., :, k : k + width] for k, w in enumerate(taps))


def _half_resolution(stack: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The stack (S, h, w) as a generator working at half resolution would draw it: 2x2 means on the
    canvas's even pixel grid (the patch's top-left pixel is (x0, y0)), then bilinear upsampling back."""
    _, h, w = stack.shape
    top, left = y0 % 2, x0 % 2
    padded = np.pad(stack, ((0, 0), (top, (h + top) % 2), (left, (w + left) % 2)))
    low = padded.reshape(len(stack), padded.shape[1] // 2, 2, padded.shape[2] // 2, 2).mean(axis=(2, 4))

    def up(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # align-corners=False x2 weights
        pos = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, n - 1), (pos - lo).astype(np.float32)

    (rl, rh, rt), (cl, ch, ct) = up(low.shape[1]), up(low.shape[2])
    rows = low[:, rl] * (1 - rt)[None, :, None] + low[:, rh] * rt[None, :, None]
    full = rows[:, :, cl] * (1 - ct)[None, None, :] + rows[:, :, ch] * ct[None, None, :]
    return full[:, top : top + h, left : left + w]


def _fit_shape(
    cov: np.ndarray, x0: int, y0: int, area: float, cx: float, cy: float, ss: int, gain: float = 1.0
) -> tuple[str, float, float, float, float, float]:
    """Best shape for a coverage patch whose top-left pixel is (x0, y0): (shape, radius, x, y, error, gain).

    Each candidate is compared sharp, blurred (the levels of BLUR_SIGMAS) and as drawn at half resolution
    and upsampled: a model's output or a resized photo is rarely sharp, and a blurred small diamond
    looks more like a sharp circle (or a cross) than like a sharp diamond. ``gain`` is the object's
    brightness (1 for a render, less for a dim generator output): the shape's true area is area / gain,
    and each candidate is scaled by its own least-squares brightness in [GAIN_MIN, 1], so dimming
    neither shrinks an object nor changes its shape."""
    geometry = np.array([unit_geometry(s) for s in SHAPES])  # (S, 3): area, centroid u, v
    radii = np.sqrt(area / gain / geometry[:, 0])
    sx, sy = cx - geometry[:, 1] * radii, cy - geometry[:, 2] * radii
    templates = _templates(radii, sx, sy, x0, y0, *cov.shape, ss)
    errors, gains = np.full(len(SHAPES), np.inf), np.ones(len(SHAPES))
    soft = _half_resolution(templates, x0, y0)
    variants = [templates, soft, _blur(soft, BLUR_SIGMAS[0])] + [_blur(templates, sigma) for sigma in BLUR_SIGMAS]
    for variant in variants:  # each (S, h, w)
        g = np.clip((variant * cov).sum(axis=(1, 2)) / np.maximum((variant**2).sum(axis=(1, 2)), 1e-9), GAIN_MIN, 1.0)
        err = ((g[:, None, None] * variant - cov) ** 2).sum(axis=(1, 2))
        better = err < errors
        errors, gains = np.where(better, err, errors), np.where(better, g, gains)
    best = int(np.argmin(errors))
    return SHAPES[best], float(radii[best]), float(sx[best]), float(sy[best]), float(errors[best]), float(gains[best])


def _brightness(cov: np.ndarray, region: np.ndarray) -> float:
    """First guess of an object's brightness: the median of the brightest third of its pixels (interior
    pixels of a render are fully covered, so this is 1.0 there), in [GAIN_MIN, 1]."""
    values = np.sort(cov[region])[::-1]
    return float(np.clip(np.median(values[: max(1, len(values) // 3)]), GAIN_MIN, 1.0))


def _colour_regions(
    img: np.ndarray, bright: np.ndarray, member: np.ndarray, min_separation: float
) -> list[tuple[np.ndarray, int]]:
    """Split a component into one region per palette colour it is made of: [(mask, colour index)].

    ShapesWorld objects never touch, but generated ones may; two touching objects of different colours
    form one component. Each bright pixel votes for its nearest palette colour (weighted by
    brightness^2); colours with at least SPLIT_FRACTION of the votes are objects of their own and
    every pixel joins the nearest of them, provided their regions lie apart (centroids at least
    ``min_separation`` px apart): a tinted or noisy object whose pixels waver between orange and yellow
    is one object, and keeps, like any one-colour component, the more noise-robust colour of its
    weighted mean chromaticity."""
    ys, xs = np.nonzero(member)
    rgb = img[:, ys, xs]  # (3, n)
    b = bright[ys, xs]
    weights = b**2
    chroma = rgb / np.maximum(b, 1e-6)
    distances = ((PALETTE[:, :, None] - chroma[None]) ** 2).sum(axis=1)  # (C, n)
    votes = np.bincount(distances.argmin(axis=0), weights=weights * (b > CORE), minlength=len(PALETTE))
    major = [int(c) for c in np.argsort(-votes) if votes[c] >= SPLIT_FRACTION * votes.sum() and votes[c] > 0]
    if len(major) > 1:
        nearest = np.asarray(major)[distances[major].argmin(axis=0)]
        centres = np.array([(xs[nearest == c].mean(), ys[nearest == c].mean()) for c in major])
        spread = max(math.dist(a, b) for a in centres for b in centres)
        if spread < min_separation:
            major = major[:1]
    if len(major) <= 1:
        mean_rgb = (rgb * weights).sum(axis=1) / weights.sum()
        mean_chroma = mean_rgb / max(mean_rgb.max(), 1e-6)
        return [(member, int(np.argmin(((PALETTE - mean_chroma) ** 2).sum(axis=1))))]
    nearest = np.asarray(major)[distances[major].argmin(axis=0)]
    regions = []
    for colour in major:
        region = np.zeros_like(member)
        region[ys[nearest == colour], xs[nearest == colour]] = True
        regions.append((region, colour))
    return regions


def parse_image(image: torch.Tensor | np.ndarray) -> list[DetectedObject]:
    """Objects found in ``image`` ((3, H, W) float in [0, 1] or (H, W, 3) uint8), in reading order."""
    img = as_chw(image)
    _, height, width = img.shape
    bright = img.max(axis=0)
    labels, n = label_components(_blur(bright, SEGMENT_SIGMA) > FOREGROUND)
    if n == 0:
        return []
    cell_w, cell_h = width / 3.0, height / 3.0
    cell = math.sqrt(cell_w * cell_h)
    min_area = MIN_AREA_FRACTION * unit_geometry("star")[0] * (SIZE_RADIUS["small"] * cell) ** 2
    size_threshold = math.sqrt(SIZE_RADIUS["small"] * SIZE_RADIUS["large"]) * cell
    # tiny canvases have 3-px shapes whose pixels differ by little between candidates: render finer
    ss = TEMPLATE_SUPERSAMPLE if min(height, width) >= 32 else 2 * TEMPLATE_SUPERSAMPLE
    found = []
    for k in range(1, n + 1):
        member = labels == k
        if bright[member].max() < MIN_PEAK:
            continue
        for region, colour_index in _colour_regions(img, bright, member, 2 * SIZE_RADIUS["small"] * cell):
            rgb = PALETTE[colour_index]
            ys, xs = np.nonzero(region)
            # coverage on the region grown by one pixel (its anti-aliased fringe), minus other objects
            y0, y1 = max(0, ys.min() - 2), min(height, ys.max() + 3)
            x0, x1 = max(0, xs.min() - 2), min(width, xs.max() + 3)
            window = _dilate(region[y0:y1, x0:x1]) & ((labels[y0:y1, x0:x1] == 0) | region[y0:y1, x0:x1])
            patch = img[:, y0:y1, x0:x1]
            cov = np.tensordot(rgb, patch, axes=(0, 0)) / float(rgb @ rgb) * window
            area = float(cov.sum())
            if area < min_area:
                continue
            cx = float(cov.sum(axis=0) @ (np.arange(x0, x1) + 0.5)) / area
            cy = float(cov.sum(axis=1) @ (np.arange(y0, y1) + 0.5)) / area
            gain = _brightness(cov, region[y0:y1, x0:x1])
            shape, radius, sx, sy, error, fitted = _fit_shape(cov, x0, y0, area, cx, cy, ss, gain)
            if abs(fitted - gain) > 0.05:  # the best candidate says the object is dimmer or brighter: refit
                shape, radius, sx, sy, error, fitted = _fit_shape(cov, x0, y0, area, cx, cy, ss, fitted)
            found.append(
                DetectedObject(
                    shape=shape,
                    colour=COLOUR_NAMES[colour_index],
                    size="large" if radius >= size_threshold else "small",
                    row=min(2, max(0, int(sy // cell_h))),
                    col=min(2, max(0, int(sx // cell_w))),
                    x=sx,
                    y=sy,
                    area=area,
                    fit_error=error / max(1, int(window.sum())),
                )
            )
    return sorted(found, key=lambda o: (o.row, o.col, o.y, o.x))



def describe_image(image: torch.Tensor | np.ndarray) -> str:
    """What the judge reads in ``image``, in the caption grammar's words ("a large red circle (top left)");
    "nothing" for an empty canvas. Shown beside generated samples (``umm demo``, ``umm serve``)."""
    found = parse_image(image)
    if not found:
        return "nothing"
    return ", ".join(f"a {o.size} {o.colour} {o.shape} ({CELL_NAMES[(o.row, o.col)]})" for o in found)

def scene_of(objects: list[DetectedObject]) -> list[dict]:
    """Detected objects as plain scene dicts (shape, colour, size, row, col, x, y)."""
    return [{k: getattr(o, k) for k in ("shape", "colour", "size", "row", "col", "x", "y")} for o in objects]
