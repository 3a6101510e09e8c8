"""Your own data, part 2: WebDataset tar shards (the ``webdataset`` package) -> the same sample dicts.

A shard is a tar whose members are grouped by key: ``0001.png 0001.txt 0001.json 0001.flac ...``.
Recognised extensions: image ``png/jpg/jpeg/webp``, caption ``txt`` (or ``json["caption"]``), extras
``json`` (its fields are copied into the sample: scene, qa, ... as written by ``umm data make-shapes``),
audio ``wav/flac/ogg``, video ``npy`` (uint8 (T, 3, H, W)). Every sample has ``key``, ``image`` and
``caption``; ``audio`` (float32 (N,) 16 kHz) and ``video`` (float32 (T, 3, H, W)) when present.

``WebDatasetShards(path)`` takes a shard file, a directory of ``*.tar``, a glob (``data/*.tar``) or a
brace pattern (``shard-{000000..000009}.tar``). It is iterable (shards are read in order; the trainer
assigns samples to ranks). Missing or truncated shards and corrupt members are skipped and counted in
``stats()``; ``report()`` says it in one line.
"""

from __future__ import annotations

import glob
import io
import json
from collections.abc import Iterator
from pathlib import Path

import braceexpand
import numpy as np
import torch
import webdataset as wds

from umm import UmmError
from umm.data.audio_io import read_audio
from umm.data.folder import RecordStats, decode_image
from umm.registry import DATASETS

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
AUDIO_KEYS = ("flac", "wav", "ogg")


def resolve_shards(path: str | Path) -> list[str]:
    """Shard files named by a file, a directory, a glob or a brace pattern (sorted, existing or not for
    brace patterns so that a missing shard is reported rather than silently dropped)."""
    text = str(path)
    if "{" in text:
        return list(braceexpand.braceexpand(text))
    if Path(text).is_dir():
        shards = sorted(str(p) for p in Path(text).glob("*.tar"))
    elif any(ch in text for ch in "*?["):
        shards = sorted(glob.glob(text))
    else:
        shards = [text] if Path(text).is_file() else []
    if not shards:
        raise UmmError(f"no tar shards at {text!r} (give a .tar file, a folder of them, a glob or a {{a..b}} pattern)")
    return shards


def _all_nodes(shards):
    # every rank reads every shard; umm's trainer keeps each rank's share of the stream itself
    return shards


@DATASETS.register("webdataset")
class WebDatasetShards(torch.utils.data.IterableDataset):
    """Iterable over the samples of WebDataset shards; see the module docstring."""

    def __init__(self, path: str | Path | list[str], canvas: int = 32):
        self.shards = list(path) if isinstance(path, (list, tuple)) else resolve_shards(path)
        self.canvas = int(canvas)
        self.stats_ = RecordStats(f"shards {path}")

    @classmethod
    def from_config(cls, config, split: str) -> "WebDatasetShards":
        if not config.path:
            raise UmmError("data.path must name the shards for data.name=webdataset")
        return cls(config.path, canvas=config.canvas)

    def _on_error(self, error: Exception) -> bool:
        """webdataset's handler: a shard that is missing or breaks off mid-way is counted, not fatal."""
        reason = "missing shard" if isinstance(error, FileNotFoundError) else "unreadable shard"
        self.stats_.fail(reason, f"{type(error).__name__}: {str(error)[:120]}")
        return True  # continue with the next shard

    def raw(self) -> Iterator[dict]:
        """Raw webdataset samples: dicts of extension -> bytes, plus __key__ and __url__."""
        return iter(
            wds.WebDataset(
                self.shards, shardshuffle=False, handler=self._on_error, empty_check=False, nodesplitter=_all_nodes
            )
        )

    def decode(self, raw: dict) -> dict:
        """Sample dict of a raw record; raises ValueError/OSError on a corrupt or incomplete one."""
        extras = json.loads(raw["json"]) if "json" in raw else {}
        if not isinstance(extras, dict):
            raise ValueError("json member is not an object")
        image_key = next((k for k in IMAGE_KEYS if k in raw), None)
        if image_key is None:
            raise ValueError("no image member")
        caption = raw["txt"].decode("utf-8") if "txt" in raw else extras.get("caption")
        if caption is None:
            raise ValueError("no caption (txt member or json caption)")
        sample = {k: v for k, v in extras.items() if k not in ("image", "audio", "video")}
        sample.update(key=raw["__key__"], image=decode_image(raw[image_key], self.canvas), caption=caption)
        audio_key = next((k for k in AUDIO_KEYS if k in raw), None)
        if audio_key is not None:
            sample["audio"] = torch.from_numpy(read_audio(raw[audio_key]))
        if "npy" in raw:
            frames = np.load(io.BytesIO(raw["npy"]), allow_pickle=False)
            if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != np.uint8:
                raise ValueError(f"video npy must be uint8 (T, 3, H, W), got {frames.dtype} {frames.shape}")
            sample["video"] = torch.from_numpy(frames).float().div_(255.0)
        return sample

    def __iter__(self) -> Iterator[dict]:
        for raw in self.raw():
            where = f"{Path(raw.get('__url__', '?')).name}/{raw.get('__key__', '?')}"
            try:
                sample = self.decode(raw)
            except (OSError, ValueError, RuntimeError, KeyError, UnicodeDecodeError) as error:
                reason = "incomplete record" if "no " in str(error)[:3] else "corrupt member"
                self.stats_.fail(reason, f"{where} ({str(error)[:80]})")
                continue
            self.stats_.good(where)
            yield sample

    def text_corpus(self, n: int) -> Iterator[str]:
        """Captions of the first ``n`` records (images are not decoded)."""
        count = 0
        for raw in self.raw():
            if count >= n:
                return
            try:
                extras = json.loads(raw["json"]) if "json" in raw else {}
                caption = raw["txt"].decode("utf-8") if "txt" in raw else extras.get("caption")
            except (ValueError, UnicodeDecodeError):
                continue
            if caption:
                count += 1
                yield caption

    def stats(self) -> dict:
        return self.stats_.as_dict()

    def report(self) -> str:
        return self.stats_.report()
