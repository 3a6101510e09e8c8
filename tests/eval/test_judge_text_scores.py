"""Caption parser round trips, spec matching, and the GenEval-like / caption / QA scores."""

import math
import random

import pytest
import torch

from umm.data.shapes import CELL_NAMES, COLOUR_NAMES, SHAPES, ShapesWorld
from umm.data.shapes.language import RELATION_PHRASES, position_phrase
from umm.data.shapes.render import render_scene
from umm.data.shapes.vocab import heldout_combinations, plural
from umm.eval.judge import (
    CATEGORIES,
    ObjectSpec,
    SceneSpec,
    caption_scores,
    geneval_prompts,
    geneval_score,
    normalise_answer,
    oracle_scene,
    parse_caption,
    qa_accuracy,
    satisfies,
    score_image,
    score_video,
    specs_equivalent,
)


def test_world_captions_parse_to_specs_their_scene_satisfies():
    for style in ("mixed", "full"):
        for split in ("train", "heldout"):
            world = ShapesWorld(split, modalities=("caption",), caption_style=style)
            for i in range(1500):
                s = world[i]
                spec = parse_caption(s["caption"])
                assert satisfies(s["scene"], spec), (s["caption"], spec, s["scene"])
                if style == "full":  # full captions determine the whole scene
                    assert specs_equivalent(spec, SceneSpec.from_scene(s["scene"])), s["caption"]


def test_every_position_paraphrase_names_its_cell():
    rng = random.Random(0)
    for (row, col) in CELL_NAMES:
        phrases = {position_phrase(row, col, rng) for _ in range(200)}
        assert len(phrases) >= 3
        for phrase in phrases:
            for colour, shape in (("red", "circle"), ("orange", "star")):
                spec = parse_caption(f"a {colour} {shape} {phrase}")
                assert spec.objects == (ObjectSpec(shape=shape, colour=colour, row=row, col=col),), phrase
                lead = parse_caption(f"{phrase} there is a large {colour} {shape}")
                assert lead.objects == (ObjectSpec(shape=shape, colour=colour, size="large", row=row, col=col),)


@pytest.mark.parametrize("relation", ["left of", "right of", "above", "below"])
def test_every_relation_paraphrase(relation):
    for phrase in RELATION_PHRASES[relation]:
        for form in ("a red circle {p} a blue square", "the red circle is {p} the blue square", "there is a red circle {p} a blue square"):
            spec = parse_caption(form.format(p=phrase))
            assert spec.objects == (ObjectSpec("circle", "red"), ObjectSpec("square", "blue"))
            assert spec.relations == ((0, relation, 1),)


def test_counts_plurals_and_groups():
    for shape in SHAPES:
        assert parse_caption(f"two green {plural(shape)}").objects == (ObjectSpec(shape, "green"),) * 2
        assert parse_caption(f"three {plural(shape)} and a red circle").count == 4
        assert parse_caption(f"{plural(shape)}").count == 2  # a bare plural is "several"
        assert parse_caption(f"2 small {shape}s").objects == (ObjectSpec(shape, None, "small"),) * 2


def test_parser_tolerates_near_misses():
    assert parse_caption("red circle top left").objects == (ObjectSpec("circle", "red", row=0, col=0),)
    assert parse_caption("A Big REDD cirlce, in the upper-left corner!").objects == (
        ObjectSpec("circle", "red", "large", 0, 0),
    )
    assert parse_caption("an orang sqaure at teh bottom").objects == (ObjectSpec("square", "orange", row=2, col=1),)
    assert parse_caption("a grey diamond in the centre").objects == (ObjectSpec("diamond", "gray", row=1, col=1),)
    assert parse_caption("a magenta star").objects == (ObjectSpec("star", "purple"),)
    assert parse_caption("the image shows a tiny blue triangle on the left side of the image").objects == (
        ObjectSpec("triangle", "blue", "small", 1, 0),
    )
    assert parse_caption("").count == 0 and parse_caption("nothing to see here").count == 0


def test_video_captions_parse_directions():
    world = ShapesWorld("train", modalities=("video",))
    for i in range(200):
        s = world[i]
        spec = parse_caption(s["video_caption"])
        assert [o.direction for o in spec.objects] == [m["direction"] for m in s["motion"]], s["video_caption"]
        assert score_video(s["video"], spec) if i < 20 else True
    spec = parse_caption("a red circle moves to the right")
    wrong = SceneSpec((ObjectSpec("circle", "red", direction="left"),))
    assert spec.objects[0].direction == "right" and not specs_equivalent(spec, wrong)


def test_satisfies_checks_count_attributes_and_relations():
    scene = [dict(shape="circle", colour="red", size="small", row=0, col=0), dict(shape="square", colour="blue", size="large", row=0, col=2)]
    assert satisfies(scene, parse_caption("a red circle to the left of a blue square"))
    assert not satisfies(scene, parse_caption("a red circle to the right of a blue square"))
    assert satisfies(scene, parse_caption("a blue square and a red circle"))
    assert not satisfies(scene, parse_caption("a red circle"))  # count must be exact
    assert not satisfies(scene, parse_caption("a blue circle and a red square"))  # binding matters
    assert satisfies(scene, parse_caption("a small red circle in the top left and a square in the top right"))


def test_geneval_prompts_are_balanced_parse_to_their_spec_and_respect_splits():
    prompts = geneval_prompts(600, "test", seed=0)
    assert [p.category for p in prompts[:6]] == list(CATEGORIES)
    assert {c: sum(p.category == c for p in prompts) for c in CATEGORIES} == {c: 100 for c in CATEGORIES}
    held = set(heldout_combinations())
    for p in prompts:
        assert specs_equivalent(parse_caption(p.prompt), p.spec), p.prompt
        assert not {(o.colour, o.shape) for o in p.spec.objects} & held
    assert prompts == geneval_prompts(600, "test", seed=0) and prompts != geneval_prompts(600, "test", seed=1)
    for p in geneval_prompts(120, "heldout"):
        if p.category in ("colours", "colour_attribution"):
            assert {(o.colour, o.shape) for o in p.spec.objects} & held


def test_geneval_score_is_one_for_oracle_images_and_low_for_wrong_ones():
    prompts = geneval_prompts(120, "test")
    oracle = [torch.from_numpy(render_scene(oracle_scene(p.spec, random.Random(i)), 32)) for i, p in enumerate(prompts)]
    scores = geneval_score(oracle, prompts)
    assert scores.overall == 1.0 and all(v == 1.0 for v in scores.per_category.values())
    blank = geneval_score([torch.zeros(3, 32, 32)] * len(prompts), prompts)
    assert blank.overall == 0.0
    shuffled = geneval_score(oracle[1:] + oracle[:1], prompts)  # each image answers the wrong prompt
    assert shuffled.overall < 0.3
    # a red circle is not "a blue circle", and two circles are not "three circles"
    red = render_scene([dict(shape="circle", colour="red", size="large", row=1, col=1)], 32)
    assert score_image(red, parse_caption("a red circle")) and not score_image(red, parse_caption("a blue circle"))
    two = render_scene([dict(shape="circle", colour="red", size="large", row=0, col=c) for c in (0, 2)], 32)
    assert score_image(two, parse_caption("two circles")) and not score_image(two, parse_caption("three circles"))


def test_caption_scores():
    world = ShapesWorld("val", caption_style="full")
    samples = [world[i] for i in range(300)]
    truth = caption_scores([s["caption"] for s in samples], [s["scene"] for s in samples])
    assert truth.exact == 1.0 and truth.count == 1.0 and math.isnan(truth.reference_match)
    assert truth.shape == truth.colour == truth.size == truth.position == 1.0
    # swap every colour word for another colour: shapes, sizes and positions stay right
    recoloured = []
    for s in samples:
        words = [COLOUR_NAMES[(COLOUR_NAMES.index(w) + 1) % len(COLOUR_NAMES)] if w in COLOUR_NAMES else w for w in s["caption"].split()]
        recoloured.append(" ".join(words).replace(" a orange", " an orange").replace("a orange", "an orange"))
    wrong = caption_scores(recoloured, [s["scene"] for s in samples], [s["caption"] for s in samples])
    assert wrong.exact == 0.0 and wrong.colour < 0.2 and wrong.shape == 1.0 and wrong.size == 1.0
    assert wrong.reference_match == 0.0
    # a paraphrase of the same full description matches its reference whatever the wording
    paraphrased = ["there is " + s["caption"].replace(" at the ", " in the ") for s in samples]
    assert caption_scores(paraphrased, [s["scene"] for s in samples], [s["caption"] for s in samples]).reference_match == 1.0
    empty = caption_scores(["a circle"], [[dict(shape="circle", colour="red", size="small", row=0, col=0)]])
    assert empty.exact == 0.0 and empty.shape == 1.0 and math.isnan(empty.colour)


def test_qa_accuracy_normalises_answers():
    assert normalise_answer("In the upper-left corner.") == "top left"
    assert normalise_answer("the centre") == "center" and normalise_answer("middle") == "center"
    assert normalise_answer("top middle") == "top" and normalise_answer("on the left side") == "left"
    assert normalise_answer("Two") == "2" and normalise_answer("Circles") == "circle"
    scores = qa_accuracy(["Red.", "two", "a circle", "bottom"], ["red", "2", "circle", "top"], ["colour", "count", "shape", "where"])
    assert scores == {"accuracy": 0.75, "colour": 1.0, "count": 1.0, "shape": 1.0, "where": 0.0}
    world = ShapesWorld("test")
    qas = [qa for i in range(200) for qa in world[i]["qa"]]
    assert qa_accuracy([q["answer"] for q in qas], [q["answer"] for q in qas])["accuracy"] == 1.0


def test_geneval_interval_brackets_the_score_and_narrows_with_more_prompts():
    from umm.eval.judge.scores import bootstrap_interval

    prompts = geneval_prompts(120, "test")
    oracle = [torch.from_numpy(render_scene(oracle_scene(p.spec, random.Random(i)), 32)) for i, p in enumerate(prompts)]
    keep = random.Random(0).sample(range(len(oracle)), len(oracle) // 2)  # half the images blank, in every category
    half = [img if i in keep else torch.zeros(3, 32, 32) for i, img in enumerate(oracle)]
    scores = geneval_score(half, prompts)
    low, high = scores.interval
    assert low < scores.overall < high and 0.3 < low and high < 0.7
    assert scores.to_dict()["overall_ci_low"] == low
    assert geneval_score(oracle, prompts).interval == (1.0, 1.0)  # no spread when every prompt is right
    few = bootstrap_interval({"a": [True, False] * 5})
    many = bootstrap_interval({"a": [True, False] * 200})
    assert (few[1] - few[0]) > 3 * (many[1] - many[0])
