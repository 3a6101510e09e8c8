"""The judge reads what generators draw: correct renders degraded as generators degrade them are
accepted, renders with one wrong attribute are rejected, at every world level (issue: a judge that
only accepts pixel-exact renders makes every GenEval-like number meaningless)."""

import numpy as np
import pytest

from umm.data.shapes.levels import LEVELS
from umm.eval.judge import parse_image, scene_of
from umm.eval.judge.robustness import DEGRADATIONS, LIMITS, WRONG_ATTRIBUTES, corrupt, degrade, robustness_report
from umm.eval.judge.spec import SceneSpec, satisfies


@pytest.mark.parametrize("level", list(LEVELS))
def test_judge_accepts_degraded_renders_and_rejects_wrong_ones(level):
    report = robustness_report(level, n=60, canvas=48, seed=3, harsh=False)
    for kind in DEGRADATIONS:
        assert report.acceptance[kind] >= 0.95, (level, kind, report.acceptance)
    for attribute in WRONG_ATTRIBUTES:
        assert report.false_acceptance[attribute] <= 0.05, (level, attribute, report.false_acceptance)
    # the confusion tables are per attribute and mostly diagonal
    for attribute in ("shape", "colour", "cell"):
        table = report.confusion[attribute]
        right = sum(v for (truth, read), v in table.items() if truth == read)
        assert right / sum(table.values()) >= 0.97, (attribute, table.most_common(5))


def test_degradations_change_the_image_and_stay_in_range():
    scene = [{"shape": "star", "colour": "red", "size": "small", "row": 1, "col": 1, "x": 24.0, "y": 24.0}]
    clean = degrade(scene, 48, "clean", np.random.default_rng(0))
    for kind in LIMITS:
        image = degrade(scene, 48, kind, np.random.default_rng(0))
        assert image.shape == (3, 48, 48) and image.min() >= 0.0 and image.max() <= 1.0
        assert np.abs(image - clean).mean() > 1e-4, kind  # every degradation does something
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(scene, 48, "sharpen", np.random.default_rng(0))


def test_a_wrong_attribute_is_wrong_and_the_judge_sees_it():
    import random

    scene = [{"shape": "circle", "colour": "green", "size": "large", "row": 0, "col": 2, "x": 40.0, "y": 8.0}]
    rng = random.Random(0)
    for attribute in WRONG_ATTRIBUTES:
        wrong = corrupt(scene, "L1", attribute, rng)
        assert wrong != scene
        read = scene_of(parse_image(degrade(wrong, 48, "clean", np.random.default_rng(0))))
        assert not satisfies(read, SceneSpec.from_scene(scene)), attribute
        assert satisfies(read, SceneSpec.from_scene(wrong)), attribute
