"""Difficulty levels of ShapesWorld: a ladder from one large object of four shapes up to the full world.

Why levels: at the compute umm runs on (minutes of one CPU core), a generator cannot yet draw three
pixel-exact objects of six shapes, so no design choice showed a difference on the full world. The
ladder gives every design a level where it can succeed and levels where designs separate:

=====  ===========  =======  ======================================  ==================================
level  objects      sizes    shapes                                  what it asks
=====  ===========  =======  ======================================  ==================================
L1     exactly 1    large    circle, square, triangle, cross         colour and shape of one object
L2     exactly 1    both     all six                                 + size, stars, diamonds, its cell
L3     1..2         large    all six                                 + counting, relations, binding
L4     1..3         both     all six                                 + small objects among others, three
=====  ===========  =======  ======================================  ==================================

Where the object stands: at L1 it still stands in any of the nine cells, but no caption or question names
the cell (``names_cell`` False), so L1 asks a generator for the right colour and shape anywhere and has no
absolute-position prompts. Why: the reference (benchmarks/reference_t2i.py) learned the colour and shape
words of L1 by 10 minutes (read 0.98 and 1.00) but not the place words (cell read 0.13-0.27 against chance
0.11 in every design tried; RESULTS.md "Second round"), which capped L1 at 0.68 when it asked the cell.
Without it the reference scores 0.83 at L1 after 10 minutes ("Third round"); the cell is the first thing L2
adds.

How a clip's object moves: at L1 it glides from one cell centre to the cell centre 1 or 2 cells along its
direction, evenly over the clip, so the clip's first and last frames are L1 images and every frame moves
(2.3 or 4.6 px a frame at 48 px); from L2 on it glides 1-2 px a frame (x canvas / 32) from any start.
Why: with free starts an L1 clip was a far larger distribution than any image level, and LWM, which draws
a clip frame by frame, drew no motion (RESULTS.md "Thirteenth round"). Clips that hop between cells taught
it motion, but their still frames inside a video tower's tubelets hid the direction from the binders
("Fourteenth round"). Cell to cell keeps both: LWM takes the end frames, and every tubelet holds motion
("Sixteenth round").

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
    ``shapes``; colours are always all eight. ``names_cell`` False: no caption or question says where the
    (single) object is. ``clip_cells`` True: a clip's object glides from a cell centre to the cell centre 1 or
    2 cells along its direction (``video.sample_motion``), so its first and last frames are scenes of the
    level."""

    name: str
    max_objects: int
    sizes: tuple[str, ...]
    shapes: tuple[str, ...]
    description: str
    names_cell: bool = True
    clip_cells: bool = False

    def __post_init__(self) -> None:
        if not self.names_cell and self.max_objects != 1:
            # with two objects, "the circle" may be ambiguous and only a cell or relation tells them apart
            raise ValueError(f"level {self.name}: names_cell=False needs max_objects=1, got {self.max_objects}")

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
                "shapes": list(self.shapes), "description": self.description, "names_cell": self.names_cell,
                "clip_cells": self.clip_cells}  # fmt: skip


LEVELS: dict[str, Level] = {
    "L1": Level("L1", 1, ("large",), ("circle", "square", "triangle", "cross"),
                "one large object anywhere, its cell never named; four shapes (circle, square, triangle, cross)",
                names_cell=False, clip_cells=True),
    "L2": Level("L2", 1, SIZES, SHAPES, "one object, small or large, its cell named; all six shapes"),
    "L3": Level("L3", 2, ("large",), SHAPES, "one or two large objects; all six shapes"),
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
