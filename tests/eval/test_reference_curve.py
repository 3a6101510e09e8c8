"""The reference curve that `umm demo` prints beside its own score is exactly what was measured: every
point of ``umm.eval.reference`` equals a record of the jsonl it names under benchmarks/results/reference."""

import json
from pathlib import Path

import pytest

from umm.eval.reference import reference_at, reference_curve

RECORDS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "reference"


@pytest.mark.parametrize("level", ["L1", "L2", "L3", "L4"])
def test_reference_points_equal_the_recorded_runs(level):
    points = reference_curve(level)
    assert points, f"no reference point at {level}"
    records = [json.loads(line) for line in (RECORDS / points[0].source).read_text().splitlines()]
    # records before --cfg existed were sampled at guidance 3
    by_key = {(r["minutes"], r.get("cfg", 3.0)): r for r in records if "minutes" in r}
    for p in points:
        record = by_key[(p.minutes, p.cfg)]
        assert record["level"] == level
        assert (round(record["test"], 3), round(record["heldout"], 3)) == (p.test, p.heldout)


def test_reference_at_takes_the_last_point_within_the_budget():
    first = reference_curve("L1")[0]
    assert reference_at("L1", first.minutes - 0.5) is None
    assert reference_at("L1", first.minutes) == first
    assert reference_at("L1", 1e6) == reference_curve("L1")[-1]
