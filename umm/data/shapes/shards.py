"""Write ShapesWorld samples to WebDataset tar shards that ``umm.data.webdataset`` reads back.

Members per sample (key = ``sample["key"]``): ``png`` image (lossless uint8), ``txt`` caption, ``json``
(split, index, scene, qa, and the video/audio metadata when present), ``flac`` spoken caption,
``npy`` video as uint8 (T, 3, H, W).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from umm.data.audio_io import encode_audio
from umm.data.shapes.world import ShapesWorld


def _png(image: torch.Tensor) -> bytes:
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_to_record(sample: dict) -> dict:
    """A tar record (extension -> bytes) of a ShapesWorld sample."""
    record = {"__key__": sample["key"]}
    meta = {k: v for k, v in sample.items() if k not in ("key", "image", "caption", "audio", "video")}
    if "image" in sample:
        record["png"] = _png(sample["image"])
    if "caption" in sample:
        record["txt"] = sample["caption"].encode("utf-8")
    if "audio" in sample:
        record["flac"] = encode_audio(sample["audio"].numpy())
    if "video" in sample:
        buffer = io.BytesIO()
        np.save(buffer, (sample["video"].clamp(0, 1) * 255).round().to(torch.uint8).numpy(), allow_pickle=False)
        record["npy"] = buffer.getvalue()
    record["json"] = json.dumps(meta).encode("utf-8")
    return record


def write_shards(
    world: ShapesWorld,
    out: str | Path,
    n: int,
    shard_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write samples 0..n-1 of ``world`` to ``out/shapes-{split}-000000.tar``, ...; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pattern = str(out / f"shapes-{world.split}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as writer:
        for index in range(n):
            writer.write(sample_to_record(world[index]))
            if progress is not None:
                progress(index + 1)
    return sorted(out.glob(f"shapes-{world.split}-*.tar"))
