"""Retrieval R@k, zero-shot classification rules, and the eval items (scenes and clips) on real ShapesWorld."""

import pytest
import torch
import torch.nn.functional as F

from umm.data.shapes import DIRECTIONS
from umm.data.shapes.views import clip_items, scene_items
from umm.eval.retrieval import (AXES, classify, matrix_table, recall_at_k, same_content, template_concepts,
                                zero_shot_scores)


def test_recall_at_k_on_known_matrices():
    assert recall_at_k(torch.eye(10)) == {1: 1.0, 5: 1.0, 10: 1.0}
    # every query's own item is ranked last of 10
    sims = torch.eye(10) * -1
    assert recall_at_k(sims) == {1: 0.0, 5: 0.0, 10: 1.0}
    # own item second for half of the queries
    sims = torch.eye(4)
    sims[0, 1] = sims[2, 3] = 2.0
    assert recall_at_k(sims, (1, 2)) == {1: 0.5, 2: 1.0}


def test_an_item_with_the_same_content_is_the_querys_own():
    # items 0 and 1 are both a large red circle: a text query for item 0 that ranks item 1 first has found its
    # content; item 2's query ranking item 0 first has not
    red, blue = (("large", "red", "circle", None),), (("large", "blue", "square", None),)
    same = same_content([red, red, blue])
    assert same.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    sims = torch.tensor([[0.5, 0.9, 0.1], [0.9, 0.5, 0.1], [0.9, 0.1, 0.5]])
    assert recall_at_k(sims, (1, 2)) == {1: 0.0, 2: 1.0}  # item by item
    assert recall_at_k(sims, (1, 2), same=same) == pytest.approx({1: 2 / 3, 2: 1.0})  # content by content
    # a tie with an item of other content still counts against the query
    assert recall_at_k(torch.ones(3, 3), (1,), same=same)[1] == 0.0


def test_eval_items_state_their_whole_content_and_one_content_is_one_key():
    """The items' captions are full (colour and shape always said), and the content key ignores the wording: at L1
    two scenes of one colour and shape are one content, wherever they stand; at L2 the named cell tells them apart."""
    items = scene_items("test", 40, 0, 16, ("image", "text", "audio"), "L1")
    assert len(items.captions) == 40 and len(items.raw["audio"]) == 40
    for text, scene, key in zip(items.raw["text"], items.scenes, items.contents):
        (obj,) = scene
        assert obj["colour"] in text and obj["shape"] in text
        assert key == (("large", obj["colour"], obj["shape"], None),)
    assert len(set(items.contents)) < len(set(items.captions))  # several wordings of one content
    l2 = scene_items("test", 20, 0, 16, ("image", "text"), "L2")
    assert all(k[0][3] == (o[0]["row"], o[0]["col"]) for k, o in zip(l2.contents, l2.scenes))


def test_ties_count_against_the_query():
    assert recall_at_k(torch.zeros(5, 5), (1, 5)) == {1: 0.0, 5: 1.0}


def test_mean_and_nearest_centre_rules_can_disagree():
    # class a: two centres far apart; class b: one centre. A query near one of a's centres but closer to
    # b's mean direction: nearest picks a, mean picks b.
    a1, a2, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-0.6, 0.8, 0.0]), torch.tensor([0.6, 0.0, 0.8])
    centres = torch.stack([a1, a2, b])
    query = F.normalize(torch.tensor([[1.0, 0.0, 0.3]]), dim=-1)
    by_mean, by_nearest = classify(query, centres, ["a", "a", "b"], ("a", "b"))
    assert by_nearest == ["a"] and by_mean == ["b"]


def test_zero_shot_scores_and_chance():
    scenes = [[{"colour": "red", "shape": "circle"}], [{"colour": "blue", "shape": "star"}, {"colour": "red", "shape": "star"}]]
    concepts = {("colour", c): F.normalize(torch.eye(8)[i: i + 1], dim=-1) for i, c in enumerate(AXES["colour"])}
    red = concepts[("colour", "red")]
    blue = concepts[("colour", "blue")]
    scores = zero_shot_scores(torch.cat([red, blue]), scenes, concepts)
    assert scores["colour/mean_centre"] == 1.0 and scores["colour/nearest_centre"] == 1.0
    assert scores["colour/chance"] == pytest.approx((1 / 8 + 2 / 8) / 2)
    assert "shape/mean_centre" not in scores  # no shape texts given
    wrong = zero_shot_scores(torch.cat([blue, concepts[("colour", "green")]]), scenes, concepts)
    assert wrong["colour/mean_centre"] == 0.0


def test_zero_shot_direction_is_scored_on_the_items_that_state_one():
    """A still item states no direction: it is left out of that axis; a clip is scored on its movers' directions."""
    concepts = {("direction", d): F.normalize(torch.eye(4)[i: i + 1], dim=-1) for i, d in enumerate(DIRECTIONS)}
    left, up = concepts[("direction", "left")], concepts[("direction", "up")]
    stills = [[{"colour": "red", "shape": "circle"}]] * 2
    assert zero_shot_scores(torch.cat([left, up]), stills, concepts) == {}
    clips = [[{"colour": "red", "shape": "circle", "direction": "left"}], [{"colour": "red", "shape": "star"}],
             [{"colour": "blue", "shape": "star", "direction": "down"}]]
    scores = zero_shot_scores(torch.cat([left, left, up]), clips, concepts)  # the still middle item is left out
    assert scores["direction/mean_centre"] == 0.5 and scores["direction/chance"] == 0.25


def test_templates_cover_every_class():
    concepts = template_concepts()
    for axis, classes in AXES.items():
        for c in classes:
            assert len(concepts[(axis, c)]) >= 6
    assert all("red" in t for t in concepts[("colour", "red")])
    assert all(t.startswith("two ") or " and " in t for t in concepts[("count", "2")])


def test_scene_and_clip_items_describe_one_content():
    scenes = scene_items("test", 3, 7, 32, ("image", "text"))
    assert len(scenes) == 3 and scenes.raw["image"][0].shape == (3, 32, 32)
    assert all(o["shape"] in scenes.raw["text"][i] or "object" in scenes.raw["text"][i]
               for i, s in enumerate(scenes.scenes) for o in s[:1])
    clips = clip_items("test", 2, 7, 32, 8, ("image", "text", "video"))
    for image, video, text, scene, key in zip(clips.raw["image"], clips.raw["video"], clips.raw["text"], clips.scenes,
                                              clips.contents):
        assert torch.equal(image, video[0])  # the image of a clip is its first frame
        assert all(o["colour"] in text and o["shape"] in text for o in scene)
        assert all(direction in DIRECTIONS for _, _, direction in key)
    assert all(d is None for key in clips.stills for _, _, d in key)  # a still frame states no direction


def test_matrix_table_marks_emergent_cells():
    metrics = {"retrieval/paired/image->text/R@1": 0.5, "retrieval/paired/text->image/R@1": 0.4,
               "retrieval/emergent/audio->text/R@1": 0.1, "retrieval/emergent/text->audio/R@1": 0.2,
               "retrieval/paired/image->audio/R@1": 0.3, "retrieval/paired/audio->image/R@1": 0.3}
    table = matrix_table(metrics, ("image", "text", "audio"))
    assert "0.100*" in table and "0.500 " in table
