"""The closed vocabulary of ShapesWorld: shapes, colours, sizes, grid cells, relations, splits.

Everything else (renderer, captions, judge) reads its words and numbers from here, so the generator
and the judge can never disagree about what "orange" or "top left" means.
"""

from __future__ import annotations

import functools

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "diamond")

# Every colour has its brightest channel at 1.0: anti-aliased edge pixels are then the colour times a
# coverage in [0, 1], so the judge can read coverage as brightness and colour as chromaticity.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "orange": (1.0, 0.5, 0.0),
    "yellow": (1.0, 1.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "blue": (0.1, 0.3, 1.0),
    "purple": (0.75, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)  # (C, 3)

SIZES: tuple[str, ...] = ("small", "large")
# Half-extent of a shape's bounding box as a fraction of one grid cell (canvas / 3). Large objects in
# neighbouring cells keep a gap of 0.2 cell (>= 2 px at 32x32), so they never touch, even after blur.
SIZE_RADIUS: dict[str, float] = {"small": 0.25, "large": 0.40}

# 3x3 grid: row 0 is the top, col 0 is the left.
ROW_WORDS: tuple[str, ...] = ("top", "middle", "bottom")
COL_WORDS: tuple[str, ...] = ("left", "center", "right")
CELL_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
CELL_BY_NAME: dict[str, tuple[int, int]] = {name: cell for cell, name in CELL_NAMES.items()}

# Pairwise relations between two objects a, b in grid cells; "a left of b" means col_a < col_b.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

SPLITS: tuple[str, ...] = ("train", "val", "test", "heldout")

# The compositional held-out split: these (colour, shape) pairs never occur in train/val/test and
# every heldout scene contains at least one of them. 7 of the 48 pairs (14.6%); every colour and every
# shape still appears in training with other partners, so the combination is what is new.
HELDOUT_COMBINATIONS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "circle"),
    ("blue", "triangle"),
    ("yellow", "cross"),
    ("purple", "square"),
    ("cyan", "diamond"),
    ("white", "star"),
)

NUMBER_WORDS: dict[int, str] = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def heldout_combinations() -> tuple[tuple[str, str], ...]:
    """(colour, shape) pairs reserved for the heldout split."""
    return HELDOUT_COMBINATIONS


@functools.lru_cache(maxsize=None)
def seen_combinations() -> tuple[tuple[str, str], ...]:
    """(colour, shape) pairs that train/val/test draw from."""
    held = set(HELDOUT_COMBINATIONS)
    return tuple((c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in held)


def cell_centre(row: int, col: int, canvas: int) -> tuple[float, float]:
    """Pixel coordinates (x, y) of a grid cell's centre; pixel i spans [i, i + 1)."""
    cell = canvas / 3.0
    return (col + 0.5) * cell, (row + 0.5) * cell


def cell_of(x: float, y: float, canvas: int) -> tuple[int, int]:
    """Grid cell (row, col) containing pixel coordinates (x, y)."""
    cell = canvas / 3.0
    return min(2, max(0, int(y // cell))), min(2, max(0, int(x // cell)))


def radius_px(size: str, canvas: int) -> float:
    """Half-extent in pixels of a shape of the given size."""
    return SIZE_RADIUS[size] * canvas / 3.0


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith("s") else shape + "s"
