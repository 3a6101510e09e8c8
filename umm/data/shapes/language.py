"""The ShapesWorld language: captions (a small grammar with paraphrases), QA pairs, video captions.

Every caption is TRUE of its scene and always states the number of objects and each object's shape.
What else it states depends on the style:

* ``full``: every object's size, colour, shape and grid cell ("a small red circle in the top left and
  a large blue square at the bottom"). Paraphrases vary only the wording, not the content.
* ``mixed`` (default): colour (p=0.85), size (p=0.4), and a layout: absolute cells, a pairwise relation
  ("a red circle to the left of a blue square", two objects only) or none, in which case objects that
  share the stated attributes are counted ("two green stars", "three circles").

At a level whose text does not name the cell (``Level.names_cell`` False: L1), captions and questions
never say where an object is (``place=False``): the layout is always "none" and QA has no "where" kind.

The judge's caption parser (``umm.eval.judge.text``) inverts exactly this grammar (and tolerates typos).
The GenEval-like prompt categories are forms of the same grammar, so prompts are in-distribution.
"""

from __future__ import annotations

import random
from collections import Counter

from umm.data.shapes.scene import ShapeObject
from umm.data.shapes.vocab import CELL_NAMES, NUMBER_WORDS, SHAPES, plural

_ROW_SYNONYMS = {0: ("top", "upper"), 2: ("bottom", "lower")}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under"),
}
DIRECTION_PHRASES = {
    "left": ("to the left", "left"),
    "right": ("to the right", "right"),
    "up": ("up", "upwards"),
    "down": ("down", "downwards"),
}
_MOTION_VERBS = ("moves", "is moving", "slides", "goes")


def article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def noun_phrase(obj: ShapeObject, size: bool, colour: bool, det: str = "a") -> str:
    """'a small red circle'; ``det`` is "a" (an/a chosen by the next word), "the" or "one"."""
    words = ([obj.size] if size else []) + ([obj.colour] if colour else []) + [obj.shape]
    if det == "a":
        det = article(words[0])
    return " ".join([det] + words)


def position_phrase(row: int, col: int, rng: random.Random | None = None) -> str:
    """'in the top left' (or a paraphrase when ``rng`` is given) for grid cell (row, col)."""
    pick = rng.choice if rng is not None else (lambda options: options[0])
    if (row, col) == (1, 1):
        return pick(("in the center", "in the middle", "at the center"))
    if col == 1:
        word = pick(_ROW_SYNONYMS[row])
        return pick((f"at the {word}", f"near the {word}", f"in the {word} middle"))
    side = ("left", "", "right")[col]
    if row == 1:
        return pick((f"on the {side}", f"on the {side} side", f"in the middle {side}"))
    word = pick(_ROW_SYNONYMS[row])
    return pick((f"in the {word} {side}", f"at the {word} {side}", f"in the {word} {side} corner"))


def holding_relations(a: ShapeObject, b: ShapeObject) -> list[str]:
    """Relations r with 'a r b' true on the grid (at least one holds for distinct cells)."""
    out = []
    if a.col < b.col:
        out.append("left of")
    if a.col > b.col:
        out.append("right of")
    if a.row < b.row:
        out.append("above")
    if a.row > b.row:
        out.append("below")
    return out


def _join(parts: list[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    last = rng.choice((" and ", ", and ")) if len(parts) > 2 else " and "
    return ", ".join(parts[:-1]) + last + parts[-1]


def _with_prefix(body: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.55:
        return body
    if roll < 0.8:
        # agreement with the first noun phrase: "there is a circle and a star", "there are two stars"
        plural_subject = body.split(" ", 1)[0] in ("two", "three")
        return ("there are " if plural_subject else "there is ") + body
    return rng.choice(("an image of ", "a picture of ", "i see ")) + body


def caption(objects: list[ShapeObject], rng: random.Random, style: str = "mixed", place: bool = True) -> str:
    """A caption of the scene from the grammar; see the module docstring for the two styles. ``place``
    False never states a cell or relation (the levels whose text does not name the place)."""
    if style not in ("mixed", "full"):
        raise ValueError(f"unknown caption style {style!r}; choose 'mixed' or 'full'")
    n = len(objects)
    if style == "full":
        with_colour, with_size, layout = True, True, "absolute" if place else "none"
    elif not place:
        with_colour, with_size, layout = rng.random() < 0.85, rng.random() < 0.4, "none"
    else:
        with_colour = rng.random() < 0.85
        with_size = rng.random() < 0.4
        roll = rng.random()
        if n == 1:
            layout = "absolute" if roll < 0.6 else "none"
        elif n == 2:
            layout = "relation" if roll < 0.35 else ("absolute" if roll < 0.7 else "none")
        else:
            layout = "absolute" if roll < 0.5 else "none"

    if layout == "relation":
        a, b = rng.sample(objects, 2)
        relation = rng.choice(holding_relations(a, b))
        det = rng.choice(("a", "a", "the"))
        np_a, np_b = noun_phrase(a, with_size, with_colour, det), noun_phrase(b, with_size, with_colour, det)
        phrase = rng.choice(RELATION_PHRASES[relation])
        if det == "the" or rng.random() < 0.3:
            return f"{np_a} is {phrase} {np_b}"
        return _with_prefix(f"{np_a} {phrase} {np_b}", rng)

    if layout == "absolute":
        order = list(objects)
        if style == "mixed" or rng.random() < 0.5:
            rng.shuffle(order)
        if n == 1 and rng.random() < 0.2:
            obj = order[0]
            return f"{position_phrase(obj.row, obj.col, rng)} there is {noun_phrase(obj, with_size, with_colour)}"
        parts = [f"{noun_phrase(o, with_size, with_colour)} {position_phrase(o.row, o.col, rng)}" for o in order]
        return _with_prefix(_join(parts, rng), rng)

    # layout "none": count objects that share every stated attribute
    keys = [(o.size if with_size else None, o.colour if with_colour else None, o.shape) for o in objects]
    groups = list(Counter(keys).items())
    rng.shuffle(groups)
    parts = []
    for (size, colour, shape), count in groups:
        words = [w for w in (size, colour) if w]
        if count == 1:
            first = words[0] if words else shape
            parts.append(" ".join([article(first)] + words + [shape]))
        else:
            parts.append(" ".join([NUMBER_WORDS[count]] + words + [plural(shape)]))
    return _with_prefix(_join(parts, rng), rng)


def _cell_reference(obj: ShapeObject) -> str:
    return position_phrase(obj.row, obj.col)


def questions(objects: list[ShapeObject], rng: random.Random, place: bool = True) -> list[dict]:
    """One QA pair per kind (count, colour, shape, where) as dicts {"question", "answer", "kind"}.

    Questions refer to objects unambiguously (by a unique attribute or by their cell); answers are one
    word or a short phrase: "2", "red", "circle", "top left". A kind is skipped only when no object
    can be referred to unambiguously (identical twins, for "where"). ``place`` False (one-object scenes
    only) asks no "where" and refers to the object by its shape or colour, never by its cell.
    """
    if not place and len(objects) != 1:
        raise ValueError(f"questions without places need a one-object scene, got {len(objects)} objects")
    qa = []
    shapes = Counter(o.shape for o in objects)
    colours = Counter(o.colour for o in objects)

    roll = rng.random()
    if roll < 0.4:
        qa.append(("how many objects are there?", str(len(objects)), "count"))
    elif roll < 0.75:
        shape = rng.choice(list(shapes) + [rng.choice(SHAPES)])
        qa.append((f"how many {plural(shape)} are there?", str(shapes.get(shape, 0)), "count"))
    else:
        colour = rng.choice(list(colours))
        qa.append((f"how many {colour} objects are there?", str(colours[colour]), "count"))

    target = rng.choice(objects)
    if not place:
        qa.append((f"what colour is the {target.shape}?", target.colour, "colour"))
        qa.append((f"what shape is the {target.colour} object?", target.shape, "shape"))
        return [{"question": q, "answer": a, "kind": k} for q, a, k in qa]
    if shapes[target.shape] == 1 and rng.random() < 0.5:
        qa.append((f"what colour is the {target.shape}?", target.colour, "colour"))
    else:
        qa.append((f"what colour is the object {_cell_reference(target)}?", target.colour, "colour"))

    target = rng.choice(objects)
    if colours[target.colour] == 1 and rng.random() < 0.5:
        qa.append((f"what shape is the {target.colour} object?", target.shape, "shape"))
    else:
        qa.append((f"what shape is {_cell_reference(target)}?", target.shape, "shape"))

    pairs = Counter((o.colour, o.shape) for o in objects)
    triples = Counter((o.size, o.colour, o.shape) for o in objects)
    candidates = [o for o in objects if pairs[(o.colour, o.shape)] == 1]
    if candidates:
        target = rng.choice(candidates)
        qa.append((f"where is the {target.colour} {target.shape}?", CELL_NAMES[(target.row, target.col)], "where"))
    else:
        candidates = [o for o in objects if triples[(o.size, o.colour, o.shape)] == 1]
        if candidates:
            target = rng.choice(candidates)
            question = f"where is the {target.size} {target.colour} {target.shape}?"
            qa.append((question, CELL_NAMES[(target.row, target.col)], "where"))
    return [{"question": q, "answer": a, "kind": k} for q, a, k in qa]


def video_caption(objects: list[ShapeObject], directions: list[str], rng: random.Random) -> str:
    """'a red circle moves to the right' (and '... and a blue square moves up' for two objects)."""
    with_size = rng.random() < 0.3
    parts = []
    for obj, direction in zip(objects, directions):
        verb = rng.choice(_MOTION_VERBS)
        parts.append(f"{noun_phrase(obj, with_size, True)} {verb} {rng.choice(DIRECTION_PHRASES[direction])}")
    joiner = rng.choice((" and ", " while "))
    return joiner.join(parts)
