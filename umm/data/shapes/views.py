"""Views of a ShapesWorld sample as a sample of another kind (data shaping that several systems share)."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

import torch

from umm.data.shapes import speech
from umm.data.shapes.levels import DEFAULT_LEVEL
from umm.data.shapes.world import ShapesWorld

# an embedding modality -> the key of the sample (a scene or a clip view) that holds it
DATA_MODALITY = {"image": "image", "text": "caption", "audio": "audio", "video": "video"}


def clip_view(sample: dict, with_audio: bool = False) -> dict:
    """A ShapesWorld sample's *video* as a sample of its own, so that every modality describes one content.

    ShapesWorld's clip shows its own moving objects (``video_caption``), not the static scene of ``image`` /
    ``caption`` / ``audio``. An (image, video) pair is therefore formed from the clip itself: its first frame
    is the image (ImageBind pairs video with its frames the same way: an image is a one-frame video, paper
    sec. 3.2), ``video_caption`` is the text, and the caption spoken (same voices as the world's speech) the
    audio. Motion is absent from the first frame, so image-centric binding can carry colour, shape, count
    and position into the video space, but not direction: that is the limit of an image anchor.
    """
    view = {"image": sample["video"][0], "caption": sample["video_caption"], "video": sample["video"],
            "scene": [{k: m[k] for k in ("shape", "colour", "size", "direction")} for m in sample["motion"]]}
    if with_audio:
        voice = speech.sample_voice(random.Random(zlib.crc32(f"clip/{sample['key']}".encode())))
        view["audio"] = torch.from_numpy(speech.speak(sample["video_caption"], **voice)).clamp(-1, 1)
    return view


def scene_content(scene: list[dict], names_cell: bool) -> tuple:
    """What a full caption of ``scene`` states, as a key: each object's size, colour and shape, and its cell where
    the level names it; two scenes with one key are one content to any text or speech of the level."""
    return tuple(sorted((o["size"], o["colour"], o["shape"], (o["row"], o["col"]) if names_cell else None)
                        for o in scene))


def clip_content(motion: list[dict], moving: bool = True) -> tuple:
    """What a clip's caption states: each mover's colour, shape and direction (its size is said only at times);
    ``moving=False``: what its first frame, a still image, can state (colour and shape, no direction)."""
    return tuple(sorted((m["colour"], m["shape"], m["direction"] if moving else None) for m in motion))


@dataclass
class Items:
    """N evaluation items: raw inputs per embedding modality, each item's objects, its caption, and its content key
    (what every modality of the item states: two items with one key are the same content, whatever the words).
    ``stills``: the key of what a still image of the item can state (a clip's first frame shows no direction);
    the same as ``contents`` for scenes."""

    raw: dict[str, list] = field(default_factory=dict)
    scenes: list[list[dict]] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    contents: list[tuple] = field(default_factory=list)
    stills: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scenes)


def scene_items(split: str, n: int, seed: int, canvas: int, modalities: tuple[str, ...],
                level: str = DEFAULT_LEVEL) -> Items:  # fmt: skip
    """ShapesWorld scenes: image, caption and the caption spoken. The captions are the world's *full* style (every
    attribute the level names): a paraphrase that leaves the colour out ("a large cross") fits several
    contents, and no embedding could retrieve its own item among them."""
    data = tuple(dict.fromkeys([*(DATA_MODALITY[m] for m in modalities if m != "video"), "caption"]))
    world = ShapesWorld(split, canvas=canvas, seed=seed, modalities=data, level=level, caption_style="full")
    samples = [world[i] for i in range(n)]
    contents = [scene_content(s["scene"], world.level.names_cell) for s in samples]
    return Items({m: [s[DATA_MODALITY[m]] for s in samples] for m in modalities if m != "video"},
                 [s["scene"] for s in samples], [s["caption"] for s in samples], contents, contents)


def clip_items(split: str, n: int, seed: int, canvas: int, frames: int, modalities: tuple[str, ...],
               level: str = DEFAULT_LEVEL) -> Items:  # fmt: skip
    """ShapesWorld clips, each with its first frame, its caption and that caption spoken (``clip_view``)."""
    world = ShapesWorld(split, canvas=canvas, seed=seed, modalities=("video",), frames=frames, level=level)
    samples = [world[i] for i in range(n)]
    views = [clip_view(s, with_audio="audio" in modalities) for s in samples]
    return Items({m: [v[DATA_MODALITY[m]] for v in views] for m in modalities}, [v["scene"] for v in views],
                 [v["caption"] for v in views], [clip_content(s["motion"]) for s in samples],
                 [clip_content(s["motion"], moving=False) for s in samples])
