"""``ShapesWorld``: the map-style dataset over the procedural world (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from umm.data.shapes import language, render, speech, video
from umm.data.shapes.levels import DEFAULT_CANVAS, DEFAULT_LEVEL, Level, get_level
from umm.data.shapes.scene import ShapeObject, sample_rng, sample_scene
from umm.data.shapes.vocab import SPLITS
from umm.registry import DATASETS

MODALITIES: tuple[str, ...] = ("image", "caption", "qa", "audio", "video")
DEFAULT_MODALITIES: tuple[str, ...] = ("image", "caption", "qa")


@DATASETS.register("shapes")
class ShapesWorld(torch.utils.data.Dataset):
    """Seeded procedural scenes; ``world[i]`` is a deterministic function of (split, seed, i).

    Args:
        split: "train", "val", "test" (same distribution, different seed streams) or "heldout"
            (scenes with at least one (colour, shape) pair that never occurs in the other splits).
        canvas: image side in pixels, 16..128 (the judge is exact from 32 up; at the default 48 every
            object is at least 8 px across).
        seed: world seed; different seeds give different sample streams.
        max_objects: objects per scene, 1..3 (a cap under the level's own maximum).
        level: a difficulty level, "L1".."L4" (``levels.LEVELS``); scenes, captions, QA, audio and video
            all follow it. "L4" is the original world.
        size: ``len(world)``.
        modalities: which of image, caption, qa, audio, video to generate (audio and video cost more).
        frames: video length, 8..16; from 2 at a level whose clips go cell to cell (L1: 2 gives the end frames).
        caption_style: "mixed" (paraphrases with varying detail) or "full" (every attribute stated).
    """

    def __init__(
        self,
        split: str = "train",
        canvas: int = DEFAULT_CANVAS,
        seed: int = 0,
        max_objects: int = 3,
        size: int | None = None,
        modalities: Iterable[str] = DEFAULT_MODALITIES,
        frames: int = 8,
        caption_style: str = "mixed",
        level: str | Level = DEFAULT_LEVEL,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        if not 16 <= canvas <= 128:
            raise ValueError(f"canvas must be in 16..128, got {canvas}")
        if not 1 <= max_objects <= 3:
            raise ValueError(f"max_objects must be in 1..3, got {max_objects}")
        # a glide needs 8+ frames for the judge to read its direction; a clip that goes from one cell centre to
        # another (L1's clip_cells) shows it in two: its end frames
        low = 2 if get_level(level).clip_cells else 8
        if not low <= frames <= 16:
            raise ValueError(f"frames must be in {low}..16 at level {get_level(level).name}, got {frames}")
        if caption_style not in ("mixed", "full"):
            raise ValueError(f"caption_style must be 'mixed' or 'full', got {caption_style!r}")
        modalities = tuple(modalities)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; choose from {list(MODALITIES)}")
        self.split, self.canvas, self.seed, self.max_objects = split, canvas, int(seed), max_objects
        self.size = 1_000_000 if size is None else int(size)
        self.modalities, self.frames, self.caption_style = modalities, frames, caption_style
        self.level = get_level(level)

    @classmethod
    def from_config(cls, config, split: str) -> "ShapesWorld":
        """Build from a recipe's ``DataConfig`` (canvas, seed, level, max_objects, video_frames, modalities,
        caption_style)."""
        return cls(
            split=split,
            canvas=config.canvas,
            seed=config.seed,
            max_objects=config.max_objects,
            modalities=config.modalities,
            frames=config.video_frames,
            level=config.level,
            caption_style=config.caption_style,
        )

    def text_corpus(self, n: int) -> Iterator[str]:
        """Text of the first ``n`` samples for tokenizer training: a caption in each style, every QA
        question and answer, and (every 4th sample) a video caption; nothing is rendered or spoken."""
        for index in range(min(n, self.size)):
            objects = self.scene(index)
            place = self.level.names_cell
            yield language.caption(objects, sample_rng(self.split, self.seed, index, "caption"), "mixed", place)
            yield language.caption(objects, sample_rng(self.split, self.seed, index, "corpus"), "full", place)
            for qa in language.questions(objects, sample_rng(self.split, self.seed, index, "qa"), place):
                yield qa["question"]
                yield qa["answer"]
            if index % 4:
                continue  # video captions use few words: every 4th sample covers them
            rng = sample_rng(self.split, self.seed, index, "video")
            movers = video.sample_motion(rng, self.split, self.canvas, self.frames, level=self.level)
            yield language.video_caption(video.movers_as_objects(movers, self.canvas), [m["direction"] for m in movers], rng)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"ShapesWorld(split={self.split!r}, level={self.level.name}, canvas={self.canvas}, seed={self.seed}, "
            f"size={self.size}, "
            f"modalities={list(self.modalities)})"
        )

    def scene(self, index: int) -> list[ShapeObject]:
        """The ground-truth objects of sample ``index`` (cheap: no rendering)."""
        return sample_scene(sample_rng(self.split, self.seed, index), self.split, self.canvas, self.max_objects,
                            self.level)

    def __getitem__(self, index: int) -> dict:
        index = int(index)  # samplers hand out numpy/torch integers
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a world of size {self.size}")
        # Independent rng streams per modality: asking for audio never changes the caption.
        objects = self.scene(index)
        sample: dict = {
            "key": f"{self.split}-{self.seed}-{index:08d}",
            "split": self.split,
            "index": int(index),
            "scene": [o.to_dict() for o in objects],
        }
        if "image" in self.modalities:
            sample["image"] = torch.from_numpy(render.render_scene(sample["scene"], self.canvas))
        if "caption" in self.modalities or "audio" in self.modalities:
            rng = sample_rng(self.split, self.seed, index, "caption")
            place = self.level.names_cell
            sample["caption"] = language.caption(objects, rng, self.caption_style, place)
            # every object with all its attributes (the cell where the level names it): the target
            # captioning systems learn to produce
            rng_full = sample_rng(self.split, self.seed, index, "caption_full")
            sample["caption_full"] = language.caption(objects, rng_full, "full", place)
        if "qa" in self.modalities:
            sample["qa"] = language.questions(objects, sample_rng(self.split, self.seed, index, "qa"), self.level.names_cell)
        if "audio" in self.modalities:
            rng = sample_rng(self.split, self.seed, index, "audio")
            voice = speech.sample_voice(rng)
            wave = speech.speak(sample["caption"], **voice)
            sample["audio"] = torch.from_numpy(np.clip(wave, -1.0, 1.0))
            sample["audio_text"] = sample["caption"]
            sample["voice"] = voice
        if "video" in self.modalities:
            rng = sample_rng(self.split, self.seed, index, "video")
            movers = video.sample_motion(rng, self.split, self.canvas, self.frames, level=self.level)
            sample["video"] = torch.from_numpy(video.render_clip(movers, self.canvas, self.frames))
            directions = [m["direction"] for m in movers]
            sample["video_caption"] = language.video_caption(video.movers_as_objects(movers, self.canvas), directions, rng)
            sample["motion"] = movers
        return sample

    def __iter__(self) -> Iterator[dict]:
        for index in range(self.size):
            yield self[index]
