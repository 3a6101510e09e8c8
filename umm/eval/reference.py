"""The yardstick: what the reference text-to-image model scored per level and budget, as measured.

The reference (``benchmarks/reference_t2i.py``, at its defaults: a 3.4M-parameter conv U-Net with CoordConv,
FiLM on time + pooled text, cross-attention to a 2-layer text encoder, v-prediction with logit-normal
training times, EMA, DDIM 25 steps + CFG, 1.5 where it was chosen on validation prompts) was trained on one
thread of a 2-core AMD EPYC (no AMX) and scored on 90 test and 90 held-out GenEval-like prompts at each checkpoint. ``umm demo`` prints the point
at its budget beside its own score, so a user sees at once how far a run is from what this world allows.
The raw records are ``benchmarks/results/reference/<file>``; ``tests/eval/test_reference_curve.py`` checks
that this table equals them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReferencePoint:
    level: str
    minutes: float  # training CPU-minutes of one thread
    test: float  # GenEval-like, test split (in distribution)
    heldout: float  # GenEval-like, held-out split
    cfg: float  # guidance scale of the scored samples
    source: str  # the jsonl under benchmarks/results/reference/ that recorded it


# level -> (jsonl, guidance scale, {minutes: (test, held-out)})
_CURVE: dict[str, tuple[str, float, dict[float, tuple[float, float]]]] = {
    # L1, L2 and L3: rerun in the tenth round on a machine of the same kind that trains ~2x the steps per CPU-minute
    # (the earlier records, reference_L1.jsonl and reference_L2.jsonl, reached 0.83 at L1 only after 10 minutes)
    "L1": ("reference_L1_r10.jsonl", 1.5, {5.0: (0.989, 0.933), 10.0: (1.0, 0.989)}),
    "L2": ("reference_L2_r10.jsonl", 1.5, {10.0: (0.567, 0.567), 30.0: (0.733, 0.722)}),
    "L3": ("reference_L3_r10.jsonl", 1.5, {5.0: (0.211, 0.189), 10.0: (0.478, 0.478), 15.0: (0.444, 0.533),
                                          30.0: (0.567, 0.544)}),
    "L4": ("reference_L4.jsonl", 1.5, {5.0: (0.022, 0.044), 10.0: (0.067, 0.044), 30.0: (0.344, 0.411)}),
}


def reference_curve(level: str) -> list[ReferencePoint]:
    """Every measured point of ``level``, by budget (empty where the reference has not been run)."""
    if level not in _CURVE:
        return []
    source, cfg, points = _CURVE[level]
    return [ReferencePoint(level, m, t, h, cfg, source) for m, (t, h) in sorted(points.items())]


def reference_at(level: str, minutes: float) -> ReferencePoint | None:
    """The reference's point at the largest measured budget not above ``minutes`` (None if none is)."""
    below = [p for p in reference_curve(level) if p.minutes <= minutes + 1e-9]
    return below[-1] if below else None
