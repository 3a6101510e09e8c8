"""ShapesWorld: the embedded, procedural multimodal world every umm system trains and is judged on.

``ShapesWorld(split, canvas=32, seed=0, ...)[i]`` is a deterministic function of (split, seed, i).

Sample dict (exact keys and types; downstream code relies on them):

=================  ==========================================================================
key                value
=================  ==========================================================================
``key``            str, unique id "split-seed-index" (the ``__key__`` in shards)
``split``          str: "train" | "val" | "test" | "heldout"
``index``          int
``scene``          list of dicts {"shape", "colour", "size", "row", "col", "x", "y"}, one per
                   object in reading order; row/col in 0..2 (0 = top/left); x, y = centre in px
``image``          torch.float32 (3, H, W) in [0, 1], black background      [modality "image"]
``caption``        str from the caption grammar (``language``), true of the scene  ["caption"]
``caption_full``   str, a caption naming every object's size, colour, shape and cell   ["caption"]
                   (captioning tasks train on it: a complete description is checkable)
``qa``             list of {"question", "answer", "kind"}, kind in count/colour/shape/where;
                   answers are short: "2", "red", "circle", "top left"       [modality "qa"]
``audio``          torch.float32 (N,) 16 kHz mono in [-1, 1]: the caption spoken   ["audio"]
``audio_text``     str, the spoken text (== caption)                             ["audio"]
``voice``          dict {"voice", "rate", "pitch"} used by espeak-ng             ["audio"]
``video``          torch.float32 (T, 3, H, W) in [0, 1], T = ``frames`` (8..16)  ["video"]
``video_caption``  str, e.g. "a red circle moves to the right"                   ["video"]
``motion``         list of {"shape", "colour", "size", "direction", "speed", "path"} per
                   moving object; direction in left/right/up/down, path = [[x, y]] per frame
=================  ==========================================================================

Vocabulary: shapes circle, square, triangle, cross, star, diamond; colours red, orange, yellow, green,
cyan, blue, purple, white; sizes small, large; a 3x3 grid of cells named "top left", "top",
"top right", "left", "center", "right", "bottom left", "bottom", "bottom right"; relations
"left of", "right of", "above", "below". ``heldout_combinations()`` lists the (colour, shape) pairs that
only the heldout split contains.
"""

from umm.data.shapes.language import caption, questions, video_caption
from umm.data.shapes.render import render_scene
from umm.data.shapes.scene import ShapeObject, sample_scene
from umm.data.shapes.vocab import (
    CELL_NAMES,
    COLOUR_NAMES,
    COLOURS,
    DIRECTIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SPLITS,
    heldout_combinations,
    seen_combinations,
)
from umm.data.shapes.world import DEFAULT_MODALITIES, MODALITIES, ShapesWorld

__all__ = [
    "CELL_NAMES",
    "COLOUR_NAMES",
    "COLOURS",
    "DEFAULT_MODALITIES",
    "DIRECTIONS",
    "MODALITIES",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "ShapeObject",
    "ShapesWorld",
    "caption",
    "heldout_combinations",
    "questions",
    "render_scene",
    "sample_scene",
    "seen_combinations",
    "video_caption",
]
