"""Scenes: the ground truth of a ShapesWorld image, and how a seeded generator draws them.

A scene is 1..max_objects objects, each in its own cell of the 3x3 grid (so objects never overlap and
the judge's ground truth is exact), sorted in reading order (row-major). Samples carry the scene as a
list of plain dicts (``ShapeObject.to_dict``) so it is JSON-serialisable and survives shards.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass

from umm.data.shapes.levels import DEFAULT_LEVEL, Level, get_level
from umm.data.shapes.vocab import COLOUR_NAMES, SPLITS, cell_centre


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene; (row, col) is its grid cell, (x, y) its centre in pixels."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    x: float = 0.0
    y: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ShapeObject":
        return cls(**{k: data[k] for k in ("shape", "colour", "size", "row", "col") if k in data},
                   x=float(data.get("x", 0.0)), y=float(data.get("y", 0.0)))


def sample_rng(split: str, seed: int, index: int, stream: str = "scene") -> random.Random:
    """A Random seeded by (split, seed, index, stream) alone, so world[i] never depends on call order.

    ``random.Random`` seeds from an int in about a microsecond, much faster than numpy Generators,
    which matters at thousands of samples per second. crc32 gives a stable id for the strings."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    key = zlib.crc32(f"{split}/{stream}".encode())
    return random.Random((int(seed) << 96) ^ (key << 64) ^ int(index))


def sample_scene(
    rng: random.Random, split: str, canvas: int, max_objects: int = 3, level: str | Level = DEFAULT_LEVEL
) -> list[ShapeObject]:
    """Draw a scene of ``level`` (``levels.LEVELS``): 1..min(max_objects, level.max_objects) objects in
    distinct cells, with the level's shapes and sizes.

    train/val/test only use the level's seen (colour, shape) pairs; heldout scenes put a held-out pair
    first and draw the others from all of the level's pairs. With probability 0.3 a multi-object scene
    repeats the first object's shape and colour (sizes stay free), so counting phrases ("two green
    stars") are common enough to learn. At level L4 the draws are exactly those of the world before
    levels existed.
    """
    level = get_level(level)
    n = rng.randint(1, max(1, min(level.max_objects, max_objects)))
    cells = rng.sample(range(9), n)
    if split == "heldout":
        pairs = [rng.choice(level.heldout_combinations)]
        pairs += [(rng.choice(COLOUR_NAMES), rng.choice(level.shapes)) for _ in range(n - 1)]
    else:
        pairs = [rng.choice(level.seen_combinations) for _ in range(n)]
    if n > 1 and rng.random() < 0.3:
        repeats = rng.randint(1, n - 1)
        pairs = [pairs[0]] * (repeats + 1) + pairs[repeats + 1 :]
    objects = []
    for cell, (colour, shape) in zip(cells, pairs):
        row, col = divmod(cell, 3)
        x, y = cell_centre(row, col, canvas)
        objects.append(ShapeObject(shape, colour, rng.choice(level.sizes), row, col, round(x, 3), round(y, 3)))
    return sorted(objects, key=lambda o: (o.row, o.col))
