"""Short clips of 1-2 ShapesWorld objects moving in straight lines (left, right, up or down).

Each object moves ``speed`` pixels per frame along its direction and stays fully inside the canvas for
all frames; two objects keep their outlines apart on every frame, so the judge can track them. At a level
with ``clip_cells`` (L1) the object instead glides from a cell centre to the cell centre 1 or 2 cells along
its direction, so the first and last frames are scenes of the level (``levels`` says why).
Shapes are centred on integer pixel corners so cached patches can be pasted without re-rendering.
"""

from __future__ import annotations

import math
import random

import numpy as np

from umm.data.shapes.render import centred_patch, colour_rgb, paste
from umm.data.shapes.scene import ShapeObject
from umm.data.shapes.levels import DEFAULT_LEVEL, Level, get_level
from umm.data.shapes.vocab import COLOUR_NAMES, DIRECTION_VECTORS, DIRECTIONS, cell_centre, cell_of, radius_px


def sample_motion(
    rng: random.Random, split: str, canvas: int, frames: int, max_objects: int = 2, level: str | Level = DEFAULT_LEVEL
) -> list[dict]:
    """Draw 1..2 moving objects of ``level`` (one at one-object levels, its shapes and sizes); each dict
    holds shape, colour, size, direction, speed (px/frame) and path: [[x, y], ...] centre per frame
    (integers)."""
    level = get_level(level)
    n = rng.randint(1, max(1, min(2, max_objects, level.max_objects)))
    unit = max(1, round(canvas / 32))
    for _attempt in range(100):
        movers = []
        for k in range(n):
            if split == "heldout" and k == 0:
                colour, shape = rng.choice(level.heldout_combinations)
            elif split == "heldout":
                colour, shape = rng.choice(COLOUR_NAMES), rng.choice(level.shapes)
            else:
                colour, shape = rng.choice(level.seen_combinations)
            size = rng.choice(level.sizes)
            direction = rng.choice(DIRECTIONS)
            if level.clip_cells:
                path = _cell_to_cell_path(rng, direction, canvas, frames)
                speed = round(math.dist(path[0], path[-1]) / (frames - 1), 3)  # mean px/frame
                movers.append(dict(shape=shape, colour=colour, size=size, direction=direction, speed=speed, path=path))
                continue
            half = int(math.ceil(radius_px(size, canvas))) + 1
            lo, hi = half, canvas - half  # centre range that keeps the whole patch on the canvas
            # 1 or 2 px/frame (scaled with the canvas); slower when a long clip would not fit, in which
            # case positions are rounded to whole pixels
            speed = min(float(rng.choice((1, 2)) * unit), (hi - lo) / max(1, frames - 1))
            steps = [round(speed * t) for t in range(frames)]
            travel = steps[-1]
            dx, dy = DIRECTION_VECTORS[direction]
            # the coordinate along the motion starts where the whole path fits; the other is free
            along_lo, along_hi = (lo, hi - travel) if (dx + dy) > 0 else (lo + travel, hi)
            start_along = rng.randint(along_lo, along_hi)
            start_across = rng.randint(lo, hi)
            x0, y0 = (start_along, start_across) if dx else (start_across, start_along)
            path = [[x0 + dx * step, y0 + dy * step] for step in steps]
            speed = round(speed, 3)
            movers.append(dict(shape=shape, colour=colour, size=size, direction=direction, speed=speed, path=path))
        if n == 1 or _apart(movers[0], movers[1], canvas):
            return movers
    return movers[:1]  # two objects that cannot be kept apart (tiny canvas): keep the first


def _cell_to_cell_path(rng: random.Random, direction: str, canvas: int, frames: int) -> list[list[int]]:
    """Centres [[x, y]] per frame of an object that glides from a cell centre to the cell centre ``hops`` (1 or 2)
    cells along ``direction``, the same distance every frame up to rounding: frame 0 and frame ``frames - 1``
    stand at cell centres, the frames between do not."""
    hops = rng.choice((1, 2))
    dx, dy = DIRECTION_VECTORS[direction]
    sign = dx + dy
    start_along = rng.randint(0, 2 - hops) if sign > 0 else rng.randint(hops, 2)
    start_across = rng.randint(0, 2)
    row, col = (start_across, start_along) if dx else (start_along, start_across)
    x0, y0 = cell_centre(row, col, canvas)
    travel = hops * canvas / 3.0
    # integer centres (cached patches); the ends are exact at canvases divisible by 6
    return [[round(x0 + dx * travel * t / (frames - 1)), round(y0 + dy * travel * t / (frames - 1))]
            for t in range(frames)]


def _apart(a: dict, b: dict, canvas: int) -> bool:
    # 1.2 * radius bounds every shape's outline (the square's corner is at 1.16); +2 px keeps a gap
    need = 1.2 * (radius_px(a["size"], canvas) + radius_px(b["size"], canvas)) + 2.0
    return all(math.dist(p, q) >= need for p, q in zip(a["path"], b["path"]))


def render_clip(movers: list[dict], canvas: int, frames: int) -> np.ndarray:
    """Frames (T, 3, canvas, canvas) float32 in [0, 1]."""
    clip = np.zeros((frames, 3, canvas, canvas), dtype=np.float32)
    for mover in movers:
        patch, half = centred_patch(mover["shape"], mover["size"], canvas)
        rgb = colour_rgb(mover["colour"])
        for t, (x, y) in enumerate(mover["path"]):
            paste(clip[t], patch, rgb, x - half, y - half)
    return clip


def movers_as_objects(movers: list[dict], canvas: int) -> list[ShapeObject]:
    """The movers as scene objects at their first frame (used to phrase the video caption)."""
    out = []
    for m in movers:
        x, y = m["path"][0]
        row, col = cell_of(x, y, canvas)
        out.append(ShapeObject(m["shape"], m["colour"], m["size"], row, col, float(x), float(y)))
    return out
