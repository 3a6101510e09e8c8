"""How the judge holds up: correct renders degraded the way generators degrade them, and wrong renders.

A generated image is never pixel-exact: it is blurred, noisy, a pixel off, soft-edged, a little dim or
tinted. A judge that only accepts exact renders scores a model that draws a recognisable triangle as
a failure, and GenEval-like numbers then mean nothing. This module makes both sides measurable:

* ``degrade(scene, canvas, kind, rng)``: a render of the true scene under one degradation at a random
  severity up to its limit (``LIMITS``), or all of them at once (``"combined"``);
* ``corrupt(scene, level, attribute, rng)``: the scene with one attribute made wrong (shape, colour,
  cell or count), which the judge must reject;
* ``robustness_report(level, n)``: acceptance per degradation, rejection per wrong attribute and a
  confusion table per attribute (true value vs the judge's reading). ``benchmarks/judge_robustness.py``
  writes it for every level; ``tests/eval/test_judge_robustness.py`` holds the judge to it.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from umm.data.shapes.levels import Level, get_level
from umm.data.shapes.render import colour_rgb, coverage, render_scene, shape_bounds
from umm.data.shapes.scene import sample_rng, sample_scene
from umm.data.shapes.vocab import CELL_NAMES, COLOUR_NAMES, cell_centre, radius_px
from umm.eval.judge.image import parse_image, scene_of
from umm.eval.judge.spec import SceneSpec, satisfies

# The degradations a correct render must survive, each at a severity drawn uniformly up to its limit.
LIMITS: dict[str, float] = {
    "blur": 0.8,  # Gaussian blur sigma in px
    "noise": 0.15,  # additive Gaussian noise sigma (then clipped to [0, 1], as a generator's output is)
    "jitter": 1.0,  # each object's centre moved by up to this many px in x and in y
    "soft": 2.0,  # edge profile: each object's coverage c drawn as c ** (1 / g) (soft) or c ** g (hard)
    "dim": 0.8,  # brightness multiplied by a factor in [dim, 1]
    "tint": 0.1,  # each object's colour channels moved by up to +-tint
}
DEGRADATIONS: tuple[str, ...] = ("clean", *LIMITS, "combined")
# Reported beside them, not required: where the judge stops reading (a person stops there too for the
# small shapes): drawn at half resolution and upsampled, a 3x3 box blur, 4x4 patch averaging.
HARSH: tuple[str, ...] = ("half_res", "box3", "patch4")
WRONG_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "cell", "count")


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (3, H, W) with zero padding (the background is black)."""
    if sigma <= 0:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.zeros_like(image)
    for k, w in zip(range(-radius, radius + 1), taps):
        out += w * np.roll(np.pad(image, ((0, 0), (0, 0), (radius, radius))), -k, axis=2)[..., radius:-radius]
    res = np.zeros_like(out)
    for k, w in zip(range(-radius, radius + 1), taps):
        res += w * np.roll(np.pad(out, ((0, 0), (radius, radius), (0, 0))), -k, axis=1)[:, radius:-radius]
    return res


def render_free(scene: list[dict], canvas: int, shifts=None, colours=None, gamma: float = 1.0) -> np.ndarray:
    """Render objects at their cell centre plus a sub-pixel shift (dx, dy), in an optional rgb each, with
    edge coverage c drawn as c ** gamma (gamma < 1: soft edges; > 1: hard ones)."""
    image = np.zeros((3, canvas, canvas), dtype=np.float32)
    for k, obj in enumerate(scene):
        cx, cy = cell_centre(obj["row"], obj["col"], canvas)
        dx, dy = shifts[k] if shifts is not None else (0.0, 0.0)
        cx, cy, radius = cx + dx, cy + dy, radius_px(obj["size"], canvas)
        x0, y0, x1, y1 = shape_bounds(cx, cy, radius + 1, canvas)
        rgb = colours[k] if colours is not None else colour_rgb(obj["colour"])
        mask = coverage(obj["shape"], radius, cx, cy, x0, y0, y1 - y0, x1 - x0) ** gamma
        image[:, y0:y1, x0:x1] = np.maximum(image[:, y0:y1, x0:x1], rgb[:, None, None] * mask[None])
    return image


def _upsample(image: np.ndarray, canvas: int) -> np.ndarray:
    """Bilinear (align-corners=False) resize of (3, h, w) to (3, canvas, canvas)."""
    _, h, _ = image.shape
    pos = np.clip((np.arange(canvas) + 0.5) * h / canvas - 0.5, 0, h - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, h - 1)
    t = (pos - lo).astype(np.float32)
    rows = image[:, lo] * (1 - t)[None, :, None] + image[:, hi] * t[None, :, None]
    return rows[:, :, lo] * (1 - t)[None, None, :] + rows[:, :, hi] * t[None, None, :]


def degrade(scene: list[dict], canvas: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A render of ``scene`` under degradation ``kind`` (one of ``DEGRADATIONS``).

    A single degradation is applied at its limit (the worst case the judge must pass: blur sigma 0.8,
    noise 0.15, a 1 px shift in x and y, edge coverage squared or square-rooted, brightness 0.8, every
    channel +-0.1);
    ``"combined"`` applies all of them at once, each at a severity drawn uniformly up to its limit."""
    if kind in HARSH:
        image = render_scene(scene, canvas)
        if kind == "half_res":
            image = _upsample(render_free(scene_for_canvas(scene, canvas // 2), canvas // 2), canvas)
        elif kind == "box3":
            image = _box_blur(image)
        else:
            image = image.reshape(3, canvas // 4, 4, canvas // 4, 4).mean(axis=(2, 4)).repeat(4, 1).repeat(4, 2)
        return np.clip(image, 0.0, 1.0).astype(np.float32)
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose one of {list(DEGRADATIONS + HARSH)}")
    parts = set(LIMITS) if kind == "combined" else {kind}
    severity = (lambda: rng.uniform(0.0, 1.0)) if kind == "combined" else (lambda: 1.0)  # noqa: E731
    shifts = colours = None
    gamma = 1.0
    if "jitter" in parts:
        shifts = rng.choice((-1.0, 1.0), (len(scene), 2)) * LIMITS["jitter"] * np.array([[severity()] for _ in scene])
    if "tint" in parts:
        colours = [np.clip(colour_rgb(o["colour"]) + rng.choice((-1.0, 1.0), 3) * LIMITS["tint"] * severity(), 0, 1)
                   .astype(np.float32) for o in scene]  # fmt: skip
    if "soft" in parts:
        gamma = (1 + (LIMITS["soft"] - 1) * severity()) ** rng.choice((-1.0, 1.0))
    if shifts is not None or colours is not None or gamma != 1.0:
        image = render_free(scene, canvas, shifts, colours, gamma)
    else:
        image = render_scene(scene, canvas)
    if "blur" in parts:
        image = gaussian_blur(image, LIMITS["blur"] * severity())
    if "dim" in parts:
        image = image * (1 - (1 - LIMITS["dim"]) * severity())
    if "noise" in parts:
        image = image + rng.normal(0.0, LIMITS["noise"] * severity(), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _box_blur(image: np.ndarray) -> np.ndarray:
    """3x3 box blur of (3, H, W), zero outside."""
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)))
    _, h, w = image.shape
    return sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


def scene_for_canvas(scene: list[dict], canvas: int) -> list[dict]:
    """The same objects placed on another canvas size (cells and sizes scale with it)."""
    out = []
    for obj in scene:
        x, y = cell_centre(obj["row"], obj["col"], canvas)
        out.append({**obj, "x": x, "y": y})
    return out


def corrupt(scene: list[dict], level: str | Level, attribute: str, rng: random.Random) -> list[dict]:
    """``scene`` with one ``attribute`` made wrong: a different shape or colour for one object, one
    object moved to an empty cell, or one object more (and, at two or more, sometimes one fewer)."""
    level = get_level(level)
    scene = [dict(o) for o in scene]
    k = rng.randrange(len(scene))
    if attribute == "shape":
        scene[k]["shape"] = rng.choice([s for s in level.shapes if s != scene[k]["shape"]])
    elif attribute == "colour":
        scene[k]["colour"] = rng.choice([c for c in COLOUR_NAMES if c != scene[k]["colour"]])
    elif attribute == "cell":
        used = {(o["row"], o["col"]) for o in scene}
        scene[k]["row"], scene[k]["col"] = rng.choice([c for c in CELL_NAMES if c not in used])
    elif attribute == "count":
        used = {(o["row"], o["col"]) for o in scene}
        if len(scene) > 1 and rng.random() < 0.5:
            del scene[k]
        else:
            row, col = rng.choice([c for c in CELL_NAMES if c not in used])
            colour, shape = rng.choice(level.seen_combinations)
            scene.append({"shape": shape, "colour": colour, "size": rng.choice(level.sizes), "row": row, "col": col})
    else:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {list(WRONG_ATTRIBUTES)}")
    return sorted(scene, key=lambda o: (o["row"], o["col"]))


@dataclass
class RobustnessReport:
    level: str
    canvas: int
    n: int
    acceptance: dict[str, float] = field(default_factory=dict)  # correct renders accepted, per degradation
    false_acceptance: dict[str, float] = field(default_factory=dict)  # wrong renders accepted, per attribute
    # attribute -> Counter of (true value, read value), over degraded correct renders whose object the
    # judge found in the right cell ("missing" when it found none there)
    confusion: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))


def _read_attributes(truth: list[dict], read: list[dict], report: RobustnessReport) -> None:
    by_cell = defaultdict(list)
    for obj in read:
        by_cell[(obj["row"], obj["col"])].append(obj)
    report.confusion["count"][(len(truth), len(read))] += 1
    for obj in truth:
        found = by_cell.get((obj["row"], obj["col"]), [])
        got = found[0] if len(found) == 1 else None
        for attribute in ("shape", "colour", "size"):
            report.confusion[attribute][(obj[attribute], got[attribute] if got else "missing")] += 1
        cell = CELL_NAMES[(obj["row"], obj["col"])]
        report.confusion["cell"][(cell, cell if found else "missing")] += 1


def robustness_report(level: str | Level, n: int = 100, canvas: int = 48, seed: int = 0,
                      split: str = "test", harsh: bool = True) -> RobustnessReport:  # fmt: skip
    """Acceptance of ``n`` scenes of ``level`` under every degradation (and the ``HARSH`` ones when
    ``harsh``), and of their wrong versions (clean and under the combined degradation), with the
    per-attribute confusion of the readings."""
    level = get_level(level)
    report = RobustnessReport(level.name, canvas, n)
    scenes = [[o.to_dict() for o in sample_scene(sample_rng(split, seed, i), split, canvas, 3, level)] for i in range(n)]
    rng = np.random.default_rng(seed)
    for kind in DEGRADATIONS + (HARSH if harsh else ()):
        hits = []
        for scene in scenes:
            read = scene_of(parse_image(degrade(scene, canvas, kind, rng)))
            hits.append(satisfies(read, SceneSpec.from_scene(scene)))
            if kind in DEGRADATIONS and kind != "clean":
                _read_attributes(scene, read, report)
        report.acceptance[kind] = float(np.mean(hits))
    prng = random.Random(seed)
    for attribute in WRONG_ATTRIBUTES:
        hits = []
        for scene in scenes:
            wrong = corrupt(scene, level, attribute, prng)
            for kind in ("clean", "combined"):
                hits.append(satisfies(scene_of(parse_image(degrade(wrong, canvas, kind, rng))), SceneSpec.from_scene(scene)))
        report.false_acceptance[attribute] = float(np.mean(hits))
    return report
