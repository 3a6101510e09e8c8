"""The ShapesWorld judge: exact, programmatic scoring of what models generate and say (no networks).

* ``parse_image(image) -> list[DetectedObject]``: colour segmentation + shape fitting (``image``).
* ``parse_caption(text) -> SceneSpec``: tolerant parser of the caption grammar (``text``).
* ``parse_video(frames) -> list[Track]``: per-frame parsing, tracking, direction (``video``).
* ``satisfies(scene, spec)``: does a scene make every statement of a spec true (``spec``).
* Scores (``scores``): ``geneval_prompts`` / ``geneval_score`` (single object, two objects, counting,
  colours, position, colour attribution, overall), ``caption_scores`` (exact + per attribute),
  ``qa_accuracy`` (normalised match), ``video_direction_accuracy`` and ``score_video``.
"""

from umm.eval.judge.image import DetectedObject, describe_image, parse_image, scene_of
from umm.eval.judge.scores import (
    ALL_CATEGORIES,
    CATEGORIES,
    CaptionScores,
    GenEvalPrompt,
    GenEvalScores,
    caption_scores,
    geneval_prompt,
    geneval_prompts,
    geneval_score,
    level_categories,
    oracle_scene,
    qa_accuracy,
    score_image,
    score_video,
    video_direction_accuracy,
)
from umm.eval.judge.spec import ObjectSpec, SceneSpec, normalise_answer, satisfies, scene_key, specs_equivalent
from umm.eval.judge.text import parse_caption
from umm.eval.judge.video import Track, parse_video

__all__ = [
    "describe_image",
    "ALL_CATEGORIES",
    "CATEGORIES",
    "CaptionScores",
    "DetectedObject",
    "GenEvalPrompt",
    "GenEvalScores",
    "ObjectSpec",
    "SceneSpec",
    "Track",
    "caption_scores",
    "geneval_prompt",
    "geneval_prompts",
    "geneval_score",
    "level_categories",
    "normalise_answer",
    "oracle_scene",
    "parse_caption",
    "parse_image",
    "parse_video",
    "qa_accuracy",
    "satisfies",
    "scene_key",
    "scene_of",
    "score_image",
    "score_video",
    "specs_equivalent",
    "video_direction_accuracy",
]
