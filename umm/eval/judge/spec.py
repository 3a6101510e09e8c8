"""Scene specifications (what a caption or prompt states) and how to check them against a scene.

A ``SceneSpec`` is a list of ``ObjectSpec`` (attributes that are None are unstated) plus pairwise
relations (i, relation, j) between object indices. A scene -- the ground truth of a sample or the
judge's parse of an image -- *satisfies* a spec when it has exactly as many objects and there is a
one-to-one assignment under which every stated attribute and relation holds.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from umm.data.shapes.vocab import CELL_NAMES

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position")


@dataclass(frozen=True)
class ObjectSpec:
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    row: int | None = None
    col: int | None = None
    direction: str | None = None  # videos only: left/right/up/down

    def stated(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...] = ()
    relations: tuple[tuple[int, str, int], ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.objects)

    def to_dict(self) -> dict:
        return {"objects": [o.stated() for o in self.objects], "relations": [list(r) for r in self.relations]}

    @classmethod
    def from_dict(cls, data: dict) -> "SceneSpec":
        return cls(tuple(ObjectSpec(**o) for o in data["objects"]), tuple(tuple(r) for r in data.get("relations", ())))

    @classmethod
    def from_scene(cls, scene: list) -> "SceneSpec":
        """The full spec of a ground-truth scene (every attribute stated, no relations needed)."""
        objs = [_get(o) for o in scene]
        return cls(tuple(ObjectSpec(o["shape"], o["colour"], o["size"], o["row"], o["col"]) for o in objs))


def _get(obj: Any) -> dict:
    """Scene objects may be dicts, dataclasses (ShapeObject, DetectedObject) or ObjectSpecs."""
    return obj if isinstance(obj, dict) else asdict(obj)


def relation_holds(a: dict, relation: str, b: dict) -> bool:
    """'a relation b' on the grid: left of = smaller column, above = smaller row."""
    if relation == "left of":
        return a["col"] < b["col"]
    if relation == "right of":
        return a["col"] > b["col"]
    if relation == "above":
        return a["row"] < b["row"]
    if relation == "below":
        return a["row"] > b["row"]
    raise ValueError(f"unknown relation {relation!r}")


def _object_matches(spec: ObjectSpec, obj: dict) -> bool:
    for key, value in spec.stated().items():
        if obj.get(key) != value:
            return False
    return True


def satisfies(scene: list, spec: SceneSpec) -> bool:
    """True when ``scene`` has exactly ``spec.count`` objects and some one-to-one assignment makes every
    stated attribute and relation true."""
    objs = [_get(o) for o in scene]
    if len(objs) != spec.count:
        return False
    # backtracking over assignments; counts are tiny (<= a handful), so this is instant
    candidates = [[j for j, o in enumerate(objs) if _object_matches(s, o)] for s in spec.objects]

    def extend(i: int, used: tuple[int, ...]) -> bool:
        if i == len(candidates):
            return all(relation_holds(objs[used[a]], rel, objs[used[b]]) for a, rel, b in spec.relations)
        return any(extend(i + 1, used + (j,)) for j in candidates[i] if j not in used)

    return extend(0, ())


def best_alignment(spec: SceneSpec, scene: list) -> list[tuple[int, int]]:
    """Pairs (spec index, scene index) of the one-to-one assignment that agrees on the most stated
    attributes and relations (used for per-attribute caption scores when counts may differ)."""
    objs = [_get(o) for o in scene]

    def agreement(pairs: list[tuple[int, int]]) -> int:
        attrs = sum(1 for i, j in pairs for key, v in spec.objects[i].stated().items() if objs[j].get(key) == v)
        where = dict(pairs)
        rels = sum(
            1 for a, rel, b in spec.relations if a in where and b in where and relation_holds(objs[where[a]], rel, objs[where[b]])
        )
        return attrs + rels

    if spec.count <= len(objs):
        options = ([(i, j) for i, j in enumerate(p)] for p in itertools.permutations(range(len(objs)), spec.count))
    else:
        options = ([(i, j) for j, i in enumerate(p)] for p in itertools.permutations(range(spec.count), len(objs)))
    return max(options, key=agreement, default=[])


def scene_key(scene: list) -> list[tuple]:
    """Order-free comparable form of a scene's objects: sorted (shape, colour, size, row, col)."""
    return sorted((o["shape"], o["colour"], o["size"], o["row"], o["col"]) for o in map(_get, scene))


def specs_equivalent(a: SceneSpec, b: SceneSpec) -> bool:
    """Same objects (as a multiset of stated attributes) and the same relations up to re-indexing."""
    if a.count != b.count:
        return False
    norm = lambda rels: sorted(rels)  # noqa: E731
    for perm in itertools.permutations(range(b.count)):
        if all(a.objects[i] == b.objects[perm[i]] for i in range(a.count)):
            mapped = [(perm[i], r, perm[j]) for i, r, j in a.relations]
            if norm(mapped) == norm(list(b.relations)):
                return True
    return False


# ------------------------------------------------------------------------------------------ answers
_ANSWER_SYNONYMS = {
    "centre": "center", "middle": "center", "grey": "gray", "magenta": "purple", "violet": "purple",
    "upper": "top", "lower": "bottom", "big": "large", "tiny": "small", "little": "small",
    "zero": "0", "none": "0", "no": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "circles": "circle", "squares": "square", "triangles": "triangle", "crosses": "cross",
    "stars": "star", "diamonds": "diamond", "plus": "cross",
}  # fmt: skip
_FILLER = {"a", "an", "the", "in", "at", "on", "of", "it", "is", "corner", "side", "part", "image", "picture"}


def normalise_answer(text: str) -> str:
    """Lower-case, drop punctuation, articles and filler, map synonyms, and name grid cells canonically
    ("in the upper-left corner" -> "top left", "middle" -> "center", "two" -> "2")."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FILLER]
    words = [_ANSWER_SYNONYMS.get(w, w) for w in words]
    if words and all(w in ("top", "bottom", "left", "right", "center") for w in words):
        rows = [w for w in words if w in ("top", "bottom")]
        cols = [w for w in words if w in ("left", "right")]
        row = {"top": 0, "bottom": 2}[rows[0]] if rows else 1
        col = {"left": 0, "right": 2}[cols[0]] if cols else 1
        return CELL_NAMES[(row, col)]
    return " ".join(words)
