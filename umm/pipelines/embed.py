"""Embed and retrieve with a trained embedding system (ImageBind, UniBind, ...): the loops of ``umm embed``
and ``umm retrieve``, usable from Python.

Inputs of one modality are *specs*, strings that name data:

- ``shapes:SPLIT:N`` (or ``shapes:SPLIT:N:SEED``): the first N ShapesWorld items of a split, as the eval reads
  them (scenes for image / text / audio, clips for video; ``umm.eval.retrieval``);
- otherwise one input per string: a text itself, an image file (PNG/JPEG...), an audio file (wav/flac/ogg,
  resampled to 16 kHz), or a clip saved with numpy as (T, 3, H, W) floats in [0, 1] (``.npy``).

Every embedding is a unit vector, so ``query @ gallery.T`` is the cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from umm import UmmError
from umm.data.shapes.views import clip_items, scene_items

MODALITIES = ("image", "text", "audio", "video")
DEFAULT_SEED = 1234  # the eval harness's seed: shapes:test:200 is the set `umm eval --split test` reads


@dataclass
class Inputs:
    raw: list  # what ``system.embed`` takes: images / clips (tensors), texts (str) or 16 kHz waves
    labels: list[str]  # a readable name per input (the file, the text, or the ShapesWorld caption)


def parse_shapes(spec: str) -> tuple[str, int, int] | None:
    """``shapes:test:200[:seed]`` -> (split, n, seed); None for any other string."""
    if not spec.startswith("shapes:"):
        return None
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit() or (len(parts) == 4 and not parts[3].isdigit()):
        raise UmmError(f"bad ShapesWorld spec {spec!r}; use shapes:SPLIT:N or shapes:SPLIT:N:SEED")
    return parts[1], int(parts[2]), int(parts[3]) if len(parts) == 4 else DEFAULT_SEED


def load_inputs(system, modality: str, specs: list[str]) -> Inputs:
    """Read the inputs named by ``specs`` for ``modality`` (see the module docstring)."""
    if modality not in system.embed_modalities:
        raise UmmError(f"this {system.family} model embeds {list(system.embed_modalities)}, not {modality!r}")
    raw, labels = [], []
    config = system.config
    for spec in specs:
        shapes = parse_shapes(spec)
        if shapes is not None:
            split, n, seed = shapes
            if modality == "video":
                items = clip_items(split, n, seed, config.image_size, config.frames, ("video", "text"))
            else:
                items = scene_items(split, n, seed, config.image_size, tuple({modality, "text"}))
            raw += items.raw[modality]
            labels += [f"{split}:{i} {text}" for i, text in enumerate(items.raw["text"])]
            continue
        if modality == "text":
            raw.append(spec)
        elif modality == "image":
            from umm.data.folder import load_image

            image = load_image(Path(spec), config.image_size)
            if image is None:
                raise UmmError(f"cannot read image {spec!r}")
            raw.append(image)
        elif modality == "audio":
            from umm.data.audio_io import read_audio

            if not Path(spec).is_file():
                raise UmmError(f"no audio file {spec!r}")
            raw.append(torch.from_numpy(read_audio(spec)))
        else:
            raw.append(load_clip(spec, config.frames, config.image_size))
        labels.append(spec)
    return Inputs(raw, labels)


def load_clip(path: str, frames: int, size: int) -> torch.Tensor:
    if not path.endswith(".npy") or not Path(path).is_file():
        raise UmmError(f"a video input is a .npy file of (T, 3, H, W) floats in [0, 1]; {path!r} is not one")
    clip = torch.from_numpy(np.load(path)).float()
    if clip.shape != (frames, 3, size, size):
        raise UmmError(f"clip {path!r} has shape {tuple(clip.shape)}; this model reads ({frames}, 3, {size}, {size})")
    return clip


def embed(model: torch.nn.Module, system, modality: str, inputs: Inputs, batch_size: int = 64) -> torch.Tensor:
    """(N, E) unit vectors."""
    return system.embed(model, modality, inputs.raw, batch_size=batch_size)


def retrieve(model: torch.nn.Module, system, query_modality: str, queries: Inputs, gallery_modality: str,
             gallery: Inputs, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """For every query, the cosine scores and gallery indices of its ``k`` nearest gallery items: (Q, k) each."""
    q = embed(model, system, query_modality, queries)
    g = embed(model, system, gallery_modality, gallery)
    scores, indices = (q @ g.T).topk(min(k, g.shape[0]), dim=1)
    return scores, indices
