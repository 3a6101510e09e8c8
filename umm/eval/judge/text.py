"""Text -> scene spec: a tolerant parser for the ShapesWorld caption grammar.

It inverts ``umm.data.shapes.language`` and tolerates what models get slightly wrong: missing or extra
articles, plural/singular slips, British/American spellings, synonyms ("big", "grey", "centre",
"magenta") and small typos (edit distance 1, or 2 for words of 6+ letters, with transpositions counting
once). Words it cannot place are ignored, so free text around a description does not break it.

Reading is left to right with a little state: determiners, numbers, sizes and colours collect into a
pending noun phrase that a shape noun completes; a position phrase attaches to the previous object
(or, at the start, to the next one); "left of"/"above"/... relate the previous object to the next one;
after a motion verb, a direction word is the previous object's direction.
"""

from __future__ import annotations

import functools
import re

from umm.eval.judge.spec import ObjectSpec, SceneSpec
from umm.data.shapes.vocab import COLOUR_NAMES, SHAPES, plural

_NUMBERS = {"a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5,
            "1": 1, "2": 2, "3": 3, "4": 4, "5": 5}  # fmt: skip
_DETERMINERS = {"the", "this", "that"}
_SIZES = {"small": "small", "large": "large", "big": "large", "tiny": "small", "little": "small"}
_COLOURS = {c: c for c in COLOUR_NAMES} | {
    "grey": "gray", "gray": "gray", "magenta": "purple", "violet": "purple", "pink": "pink",
    "black": "black", "brown": "brown", "aqua": "cyan", "turquoise": "cyan",
}  # fmt: skip
_SHAPE_WORDS = {s: s for s in SHAPES} | {plural(s): s for s in SHAPES} | {
    "plus": "cross", "rhombus": "diamond", "ball": "circle", "dot": "circle", "box": "square",
}  # fmt: skip
_PLURALS = {plural(s) for s in SHAPES}
_ROW_WORDS = {"top": 0, "upper": 0, "bottom": 2, "lower": 2}
_COL_WORDS = {"left": 0, "right": 2}
_MID_WORDS = {"center", "centre", "middle", "central"}
_RELATION_WORDS = {"above": "above", "over": "above", "below": "below", "under": "below",
                   "beneath": "below", "underneath": "below"}  # fmt: skip
_MOTION_VERBS = {"moves", "move", "moving", "slides", "slide", "sliding", "goes", "going", "travels",
                 "travelling", "traveling", "drifts", "heads", "shifts"}  # fmt: skip
_DIRECTIONS = {"left": "left", "right": "right", "up": "up", "upwards": "up", "upward": "up",
               "down": "down", "downwards": "down", "downward": "down"}  # fmt: skip
_FRAME_NOUNS = {"image", "picture", "canvas", "frame", "scene", "photo", "grid"}
_KNOWN = (
    set(_NUMBERS) | _DETERMINERS | set(_SIZES) | set(_COLOURS) | set(_SHAPE_WORDS) | set(_ROW_WORDS)
    | set(_COL_WORDS) | _MID_WORDS | set(_RELATION_WORDS) | _MOTION_VERBS | set(_DIRECTIONS) | _FRAME_NOUNS
    | {"there", "is", "are", "and", "with", "in", "at", "on", "of", "to", "near", "corner", "side", "while",
       "i", "see", "it", "its", "part", "next", "by"}
)  # fmt: skip
# Typos are corrected only towards content words: a typo'd filler word never matters.
_CONTENT = sorted(
    set(_SIZES) | set(_COLOURS) | set(_SHAPE_WORDS) | set(_ROW_WORDS) | set(_COL_WORDS) | _MID_WORDS
    | set(_RELATION_WORDS) | _MOTION_VERBS | set(_DIRECTIONS) | {"two", "three", "four", "five", "there"}
)  # fmt: skip


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


@functools.lru_cache(maxsize=8192)
def correct_word(word: str) -> str:
    """The vocabulary word ``word`` is a typo of, or ``word`` itself when unknown or ambiguous."""
    if word in _KNOWN or len(word) < 3:
        return word
    if word.endswith("s") and word[:-1] in _SHAPE_WORDS:  # plural slips: "crosss", "circless"
        return plural(_SHAPE_WORDS[word[:-1]])
    limit = 1 if len(word) < 6 else 2
    scored = sorted((edit_distance(word, w), w) for w in _CONTENT if abs(len(w) - len(word)) <= limit)
    if not scored or scored[0][0] > limit:
        return word
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        return word  # two equally close words: refuse to guess
    return scored[0][1]


def tokenize(text: str) -> list[str]:
    return [correct_word(w) for w in re.findall(r"[a-z0-9]+", text.lower())]


def _cell(words: list[str]) -> tuple[int, int] | None:
    rows = [_ROW_WORDS[w] for w in words if w in _ROW_WORDS]
    cols = [_COL_WORDS[w] for w in words if w in _COL_WORDS]
    mids = [w for w in words if w in _MID_WORDS]
    if not (rows or cols or mids):
        return None
    return (rows[0] if rows else 1), (cols[0] if cols else 1)


def parse_caption(text: str) -> SceneSpec:
    """Parse a caption, prompt or video caption into a ``SceneSpec`` (see module docstring)."""
    tokens = tokenize(text)
    objects: list[dict] = []
    relations: list[tuple[int, str, int]] = []
    pending: dict = {}  # attributes of a noun phrase still waiting for its shape noun
    last_group: list[int] = []  # indices of the objects the latest noun phrase created
    leading_cell: tuple[int, int] | None = None
    pending_relation: tuple[list[int], str] | None = None
    in_motion = False
    i = 0
    while i < len(tokens):
        word = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if word in _NUMBERS or word in _DETERMINERS:
            pending = {"count": _NUMBERS.get(word, 1)}
        elif word in _SIZES:
            pending["size"] = _SIZES[word]
        elif word in _COLOURS:
            pending["colour"] = _COLOURS[word]
        elif word in _SHAPE_WORDS:
            count = pending.get("count", 2 if word in _PLURALS else 1)  # bare plural: at least two
            start = len(objects)
            for _ in range(count):
                objects.append({"shape": _SHAPE_WORDS[word], "colour": pending.get("colour"), "size": pending.get("size")})
            last_group = list(range(start, len(objects)))
            if leading_cell is not None:
                for k in last_group:
                    objects[k]["row"], objects[k]["col"] = leading_cell
                leading_cell = None
            if pending_relation is not None:
                subjects, rel = pending_relation
                relations.extend((a, rel, b) for a in subjects for b in last_group)
                pending_relation = None
            pending, in_motion = {}, False
        elif word in _MOTION_VERBS:
            in_motion = True
        elif in_motion and word in _DIRECTIONS:
            for k in last_group:
                objects[k]["direction"] = _DIRECTIONS[word]
            in_motion = False
        elif word in _RELATION_WORDS or (word == "on" and nxt == "top" and tokens[i + 2 : i + 3] == ["of"]):
            if word == "on":
                i += 2  # "on top of" == above
            pending_relation = (last_group, _RELATION_WORDS.get(word, "above"))
            pending = {}
        elif word in _COL_WORDS and nxt == "of" and not _frame_follows(tokens, i + 2):
            pending_relation = (last_group, "left of" if word == "left" else "right of")
            pending = {}
            i += 1  # skip "of"
        elif word in _ROW_WORDS or word in _COL_WORDS or word in _MID_WORDS:
            j = i
            while j < len(tokens) and (tokens[j] in _ROW_WORDS or tokens[j] in _COL_WORDS or tokens[j] in _MID_WORDS):
                j += 1
            cell = _cell(tokens[i:j])
            pending = {}
            if last_group and all("row" not in objects[k] for k in last_group):
                for k in last_group:
                    objects[k]["row"], objects[k]["col"] = cell
            else:
                leading_cell = cell
            i = j
            continue
        i += 1
    specs = tuple(ObjectSpec(**o) for o in objects)
    return SceneSpec(specs, tuple(relations))


def _frame_follows(tokens: list[str], k: int) -> bool:
    """'left of the image' is a position, 'left of the square' a relation."""
    rest = [t for t in tokens[k : k + 2] if t not in _DETERMINERS]
    return bool(rest) and rest[0] in _FRAME_NOUNS
