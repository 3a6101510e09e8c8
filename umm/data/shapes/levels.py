"""Difficulty levels of ShapesWorld: a ladder from one large object of four shapes up to the full world.

Why levels: at the compute umm runs on (minutes of one CPU core), a generator cannot yet draw three
pixel-exact objects of six shapes, so no design choice showed a difference on the full world. The
ladder gives every design a level where it can succeed and levels where designs separate:

=====  ===========  =======  ======================================  ==================================
level  objects      sizes    shapes                                  what it asks
=====  ===========  =======  ======================================  ==================================
L1     exactly 1    large    circle, square, triangle, cross         colour, shape and cell of one object
L2     exactly 1    both     all six                                 + size, stars and diamonds
L3     1..2         both     all six                                 + counting, relations, binding
L4     1..3         both     all six                                 the original world
=====  ===========  =======  ======================================  ==================================

Every level keeps the world's determinism (``world[i]`` is a function of split, seed, index and level),
its splits, and the compositional held-out split: a level's held-out pairs are the world's
``HELDOUT_COMBINATIONS`` whose shape the level draws (L1: green circle, blue triangle, purple square,
yellow cross), so each of its shapes still appears in training with other colours.

Readability: objects are sized as a fraction of a grid cell (``vocab.SIZE_RADIUS``), so the canvas sets
their size in pixels. At ``DEFAULT_CANVAS`` = 48 a small object is 8 px across and a large one 12.8 px,
with >= 3 px between large neighbours (at 32 px a small star was 5 px: not readable after the blur
every generator adds; benchmarks/RESULTS.md, "World levels"). Recipes written before the levels keep
canvas 32 and level L4: exactly the world they trained on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from umm.data.shapes.vocab import COLOUR_NAMES, HELDOUT_COMBINATIONS, SHAPES, SIZES

DEFAULT_CANVAS = 48  # smallest canvas whose small objects are >= 8 px across (0.25 cell * 16 px * 2)


@dataclass(frozen=True)
class Level:
    """What a level's scenes may hold. ``max_objects`` objects at most (at least one), of ``sizes`` and
    ``shapes``; colours are always all eight."""

    name: str
    max_objects: int
    sizes: tuple[str, ...]
    shapes: tuple[str, ...]
    description: str

    @functools.cached_property
    def heldout_combinations(self) -> tuple[tuple[str, str], ...]:
        """(colour, shape) pairs only this level's heldout split contains."""
        return tuple(pair for pair in HELDOUT_COMBINATIONS if pair[1] in self.shapes)

    @functools.cached_property
    def seen_combinations(self) -> tuple[tuple[str, str], ...]:
        """(colour, shape) pairs this level's train/val/test splits draw from."""
        held = set(self.heldout_combinations)
        return tuple((c, s) for c in COLOUR_NAMES for s in self.shapes if (c, s) not in held)

    @property
    def colours(self) -> tuple[str, ...]:
        return COLOUR_NAMES

    def to_dict(self) -> dict:
        return {"name": self.name, "max_objects": self.max_objects, "sizes": list(self.sizes),
                "shapes": list(self.shapes), "description": self.description}  # fmt: skip


LEVELS: dict[str, Level] = {
    "L1": Level("L1", 1, ("large",), ("circle", "square", "triangle", "cross"),
                "one large object; four shapes (circle, square, triangle, cross)"),
    "L2": Level("L2", 1, SIZES, SHAPES, "one object, small or large; all six shapes"),
    "L3": Level("L3", 2, SIZES, SHAPES, "one or two objects, small or large; all six shapes"),
    "L4": Level("L4", 3, SIZES, SHAPES, "one to three objects, small or large; all six shapes (the original world)"),
}  # fmt: skip
DEFAULT_LEVEL = "L4"  # the world every recipe trained on before levels existed


def get_level(level: str | Level) -> Level:
    """The ``Level`` named ``level`` (a Level passes through); an unknown name is a ValueError naming the
    allowed ones."""
    if isinstance(level, Level):
        return level
    if level not in LEVELS:
        raise ValueError(f"unknown ShapesWorld level {level!r}; choose one of {list(LEVELS)}")
    return LEVELS[level]
