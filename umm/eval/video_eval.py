"""The video capabilities, scored by the judge on ShapesWorld clips (the harness's ``t2v`` and ``v2t``).

``t2v`` (text -> video): the prompts are the video captions of ``n`` clips of ``split``; each generated clip is
parsed into tracks (:func:`umm.eval.judge.parse_video`) and scored

- ``t2v/score``: the clip shows exactly the prompt's objects moving the stated ways (:func:`score_video`
  against the parsed prompt);
- ``t2v/direction_accuracy``: fraction of the prompt's movers tracked with the right colour, shape and
  direction (:func:`video_direction_accuracy` against the clip's ``motion``, which the prompt describes);
- ``t2v/object_accuracy``: the same without the direction (the objects are there, moving or not).

``v2t`` (video -> caption): the clips are captioned, each caption parsed (:func:`parse_caption`), and its objects
aligned one to one with the true movers (``motion``) to agree on the most attributes; then

- ``v2t/direction_accuracy``: fraction of movers whose aligned object has the right colour, shape *and*
  direction; ``v2t/colour``, ``v2t/shape``, ``v2t/direction``: each attribute alone;
- ``v2t/count``: the caption names as many objects as move; ``v2t/exact``: right count and every mover right.

A system offering these implements ``generate_videos(model, prompts, cfg_scale=, seed=, batch_size=) -> (N, T,
3, H, W)`` and ``caption_videos(model, videos (N, T, 3, H, W), batch_size=) -> list[str]``.
"""

from __future__ import annotations

import itertools
import math
import time

import torch

from umm.data.shapes import ShapesWorld
from umm.data.shapes.levels import DEFAULT_LEVEL
from umm.eval.judge import parse_caption, parse_video, score_video, video_direction_accuracy

ATTRIBUTES = ("colour", "shape", "direction")


def video_samples(system, split: str, seed: int, n: int, level: str = DEFAULT_LEVEL) -> list[dict]:
    """``n`` clips of ``split`` at the system's canvas and clip length (``config.frames``, default 8)."""
    world = ShapesWorld(split, canvas=system.config.image_size, seed=seed, modalities=("video",),
                        frames=getattr(system.config, "frames", 8), level=level)
    return [world[i] for i in range(n)]


def align(movers: list[dict], predicted: list[dict]) -> list[dict | None]:
    """For each mover, its predicted object under the one-to-one assignment that agrees on most attributes
    (None for movers left over when fewer objects are predicted)."""
    def agreement(pairs) -> int:
        return sum(predicted[j].get(a) == movers[i][a] for i, j in pairs for a in ATTRIBUTES)

    best: list[tuple[int, int]] = []
    k = min(len(movers), len(predicted))
    for chosen in itertools.permutations(range(len(predicted)), k):
        for movers_used in itertools.combinations(range(len(movers)), k):
            pairs = list(zip(movers_used, chosen))
            if not best or agreement(pairs) > agreement(best):
                best = pairs
    out: list[dict | None] = [None] * len(movers)
    for i, j in best:
        out[i] = predicted[j]
    return out


def caption_motion_scores(captions: list[str], motions: list[list[dict]]) -> dict[str, float]:
    """Scores of predicted video captions against the true movers (see the module docstring)."""
    if len(captions) != len(motions):
        raise ValueError(f"{len(captions)} captions for {len(motions)} clips")
    right = {a: 0 for a in ATTRIBUTES}
    full = total = count = exact = 0
    for caption, movers in zip(captions, motions):
        predicted = [o.stated() for o in parse_caption(caption).objects]
        aligned = align(movers, predicted)
        hits = []
        for mover, obj in zip(movers, aligned):
            total += 1
            ok = {a: obj is not None and obj.get(a) == mover[a] for a in ATTRIBUTES}
            for a in ATTRIBUTES:
                right[a] += ok[a]
            hits.append(all(ok.values()))
        full += sum(hits)
        count += len(predicted) == len(movers)
        exact += len(predicted) == len(movers) and all(hits)
    n = len(captions)
    if not n:
        return {}
    return {"direction_accuracy": full / total, **{a: right[a] / total for a in ATTRIBUTES}, "count": count / n,
            "exact": exact / n}


def object_accuracy(clips, motions: list[list[dict]]) -> float:
    """Fraction of true movers whose (colour, shape) the judge tracks in the clip, whatever the direction."""
    right = total = 0
    for clip, movers in zip(clips, motions):
        tracks = [(t.colour, t.shape) for t in parse_video(clip)]
        for m in movers:
            total += 1
            right += (m["colour"], m["shape"]) in tracks
    return right / total if total else math.nan


@torch.no_grad()
def evaluate_video(model: torch.nn.Module, system, tasks: tuple[str, ...] = ("t2v", "v2t"), split: str = "heldout",
                   seed: int = 1234, n: int = 50, batch_size: int = 16,
                   cfg_scale: float = 3.0, level: str = DEFAULT_LEVEL) -> tuple[dict[str, float], dict[str, float]]:
    """Score the video ``tasks`` of ``system`` on clips of ``level``; returns (metrics, seconds per clip by task)."""
    samples = video_samples(system, split, seed, n, level)
    motions = [s["motion"] for s in samples]
    metrics, seconds = {}, {}
    if "t2v" in tasks:
        prompts = [s["video_caption"] for s in samples]
        start = time.perf_counter()
        clips = system.generate_videos(model, prompts, cfg_scale=cfg_scale, seed=seed, batch_size=batch_size)
        seconds["t2v_per_clip"] = (time.perf_counter() - start) / n
        metrics["t2v/score"] = sum(score_video(c, parse_caption(p)) for c, p in zip(clips, prompts)) / n
        metrics["t2v/direction_accuracy"] = video_direction_accuracy(list(clips), motions)
        metrics["t2v/object_accuracy"] = object_accuracy(list(clips), motions)
    if "v2t" in tasks:
        videos = torch.stack([s["video"] for s in samples])
        start = time.perf_counter()
        captions = system.caption_videos(model, videos, batch_size=batch_size)
        seconds["v2t_per_clip"] = (time.perf_counter() - start) / n
        metrics.update({f"v2t/{k}": v for k, v in caption_motion_scores(captions, motions).items()})
    return metrics, seconds
