"""Video eval (t2v / v2t): the judge's scores of true, frozen and wrong clips and captions on real ShapesWorld clips."""

from dataclasses import dataclass

import pytest
import torch

from umm.eval.harness import EvalConfig, evaluate
from umm.eval.video_eval import align, caption_motion_scores, evaluate_video, video_samples

SWAP = {"left": "right", "right": "left", "up": "down", "down": "up", "upwards": "downwards", "downwards": "upwards"}


@dataclass
class Canvas:
    image_size: int = 32
    frames: int = 8


class ReplaySystem:
    """Answers with ShapesWorld's own clips and captions, optionally spoiled, so the scores have known values."""

    capabilities = ("t2v", "v2t")

    def __init__(self, samples: list[dict], freeze: bool = False):
        self.config = Canvas()
        self.by_caption = {s["video_caption"]: s for s in samples}
        self.freeze = freeze
        self.guidance = []  # the cfg_scale of each generate_videos call

    def generate_videos(self, model, prompts, cfg_scale, seed, batch_size):
        self.guidance.append(cfg_scale)
        clips = torch.stack([self.by_caption[p]["video"] for p in prompts])
        return clips[:, :1].expand_as(clips) if self.freeze else clips  # frozen: the first frame held still

    def caption_videos(self, model, videos, batch_size):
        truth = {s["video"].numpy().tobytes(): s["video_caption"] for s in self.by_caption.values()}
        return [truth[v.numpy().tobytes()] for v in videos]


@pytest.fixture(scope="module")
def samples():
    return video_samples(ReplaySystem([]), "heldout", 1234, 24)


def test_true_captions_score_one_and_wrong_directions_zero(samples):
    motions = [s["motion"] for s in samples]
    truth = caption_motion_scores([s["video_caption"] for s in samples], motions)
    assert truth == dict.fromkeys(("direction_accuracy", "colour", "shape", "direction", "count", "exact"), 1.0)
    wrong = []
    for s in samples:
        words = s["video_caption"].split()
        wrong.append(" ".join(SWAP.get(w, w) for w in words))
    spoiled = caption_motion_scores(wrong, motions)
    assert spoiled["direction"] == 0.0 and spoiled["direction_accuracy"] == 0.0 and spoiled["exact"] == 0.0
    assert spoiled["colour"] == 1.0 and spoiled["shape"] == 1.0
    empty = caption_motion_scores([""] * len(samples), motions)
    assert empty["colour"] == 0.0 and empty["count"] == 0.0


def test_alignment_is_one_to_one_and_order_free():
    movers = [{"colour": "red", "shape": "circle", "direction": "up"},
              {"colour": "blue", "shape": "star", "direction": "left"}]
    predicted = [{"colour": "blue", "shape": "star", "direction": "left"}, {"colour": "red", "shape": "circle"}]
    assert align(movers, predicted) == [predicted[1], predicted[0]]
    assert align(movers, predicted[:1]) == [None, predicted[0]]


def test_replayed_clips_score_one_and_frozen_clips_lose_the_direction(samples):
    metrics, seconds = evaluate_video(None, ReplaySystem(samples), n=24)
    assert metrics["t2v/score"] == 1.0 and metrics["t2v/direction_accuracy"] == 1.0
    assert metrics["t2v/object_accuracy"] == 1.0 and metrics["v2t/exact"] == 1.0
    assert set(seconds) == {"t2v_per_clip", "v2t_per_clip"}
    frozen, _ = evaluate_video(None, ReplaySystem(samples, freeze=True), tasks=("t2v",), n=24)
    assert frozen["t2v/direction_accuracy"] == 0.0 and frozen["t2v/score"] == 0.0
    assert frozen["t2v/object_accuracy"] == 1.0 and "v2t/exact" not in frozen


def test_clips_take_their_own_guidance_where_the_eval_sets_one(samples):
    """``video_cfg_scale`` (eval_args / ``umm eval --video-cfg``) guides generated clips; unset, they take
    ``cfg_scale`` as images do."""
    system = ReplaySystem(samples + video_samples(ReplaySystem([]), "test", 1234, 24))
    result = evaluate(torch.nn.Identity(), system, EvalConfig(n_videos=24, cfg_scale=1.0, video_cfg_scale=2.0))
    assert system.guidance == [2.0, 2.0]  # the eval split's clips and the test split's
    assert result.metrics["t2v/direction_accuracy"] == result.metrics["t2v_test/direction_accuracy"] == 1.0
    system.guidance.clear()
    evaluate(torch.nn.Identity(), system, EvalConfig(n_videos=24, cfg_scale=1.5, test_split=False))
    assert system.guidance == [1.5]
