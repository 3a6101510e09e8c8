"""Video -> object tracks and their directions of motion.

Every frame is parsed with ``parse_image``; detections are linked frame to frame by nearest centre
(a colour change costs as much as a jump across the canvas), and a track's shape, colour and size are
the majority over its frames. The direction is the dominant axis of the displacement from the first
to the last frame the track is seen in; a track that moves less than ``STILL_PX`` pixels is "still".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch

from umm.eval.judge.image import DetectedObject, parse_image

STILL_PX = 1.5


@dataclass(frozen=True)
class Track:
    shape: str
    colour: str
    size: str
    direction: str  # left / right / up / down / still
    path: tuple[tuple[float, float], ...]  # centre per frame it was seen in
    frames: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def direction_of(dx: float, dy: float) -> str:
    """Dominant axis of a displacement in pixels (y grows downwards)."""
    if max(abs(dx), abs(dy)) < STILL_PX:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def parse_video(frames: torch.Tensor | np.ndarray) -> list[Track]:
    """Tracks of the objects in ``frames`` (T, 3, H, W) in [0, 1]; tracks seen in fewer than half of
    the frames (flicker in generated clips) are dropped."""
    if frames.ndim != 4:
        raise ValueError(f"expected frames (T, 3, H, W), got shape {tuple(frames.shape)}")
    length, _, height, width = frames.shape
    jump_cost = math.hypot(height, width)
    tracks: list[list[tuple[int, DetectedObject]]] = []
    for t in range(length):
        detections = parse_image(frames[t])
        # greedy assignment by increasing cost: distance to the track's last centre, + a penalty if the
        # colour changed; costs beyond a canvas diagonal start a new track
        pairs = []
        for ti, track in enumerate(tracks):
            last_t, last = track[-1]
            if last_t != t - 1:
                continue
            for di, det in enumerate(detections):
                cost = math.hypot(det.x - last.x, det.y - last.y) + (jump_cost if det.colour != last.colour else 0.0)
                pairs.append((cost, ti, di))
        used_tracks, used_dets = set(), set()
        for cost, ti, di in sorted(pairs):
            if cost < jump_cost and ti not in used_tracks and di not in used_dets:
                tracks[ti].append((t, detections[di]))
                used_tracks.add(ti)
                used_dets.add(di)
        tracks.extend([(t, det)] for di, det in enumerate(detections) if di not in used_dets)
    out = []
    for track in tracks:
        if len(track) * 2 < length:
            continue
        dets = [d for _, d in track]
        vote = lambda key: Counter(getattr(d, key) for d in dets).most_common(1)[0][0]  # noqa: E731
        first, last = dets[0], dets[-1]
        out.append(
            Track(
                shape=vote("shape"),
                colour=vote("colour"),
                size=vote("size"),
                direction=direction_of(last.x - first.x, last.y - first.y),
                path=tuple((d.x, d.y) for d in dets),
                frames=tuple(t for t, _ in track),
            )
        )
    return out
