"""Your own data, part 1: a folder of images with captions (and optional audio) -> sample dicts.

Layout::

    my_data/
      captions.jsonl     {"file": "cat.png", "caption": "a cat", "audio": "cat.wav"}   ("audio" optional)
      (or captions.csv   file,caption[,audio]   with that header)
      cat.png  dog.jpg  cat.wav ...

A record may also name no audio and still get one: a sound file with the image's stem (cat.wav, cat.flac)
is picked up. If ``root/<split>/`` holds its own captions file, that sub-folder is the split.

Samples: ``key`` (str), ``image`` float32 (3, canvas, canvas) in [0, 1] (shorter side resized to
``canvas``, centre-cropped; alpha composited on black), ``caption`` (str), ``audio`` float32 (N,) 16 kHz
mono when present, ``source`` (path).

Bad records never crash a run: a missing file or malformed index line is found when the index is read,
a corrupt or truncated image or audio file when it is decoded; each is skipped and counted in
``stats()`` (and ``report()`` says it in one line). Map-style access ``ds[i]`` on a bad record counts
it and returns the next good record, so a training run over a fixed index order keeps going;
``ds.get(i)`` raises ``BadRecord`` instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from umm import UmmError
from umm.data.audio_io import read_audio
from umm.registry import DATASETS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
INDEX_FILES = ("captions.jsonl", "captions.csv")


class BadRecord(UmmError):
    """A record that cannot be read (missing, corrupt or truncated file, malformed index line)."""


class RecordStats:
    """Counts of good and bad records, with the reason of each bad one (shared by the loaders)."""

    def __init__(self, name: str):
        self.name = name
        self._good: set = set()  # keys of good records: a record read twice counts once
        self.bad: Counter[str] = Counter()
        self.examples: list[str] = []  # the first few bad records, for the report

    def good(self, key) -> None:
        self._good.add(key)

    @property
    def ok(self) -> int:
        return len(self._good)

    def fail(self, reason: str, where: str) -> None:
        self.bad[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    def as_dict(self) -> dict:
        return {"ok": self.ok, "bad": self.n_bad, "reasons": dict(self.bad), "examples": list(self.examples)}

    def report(self) -> str:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.bad.items()))
        return f"{self.name}: {self.ok} good, {self.n_bad} bad records" + (f" ({reasons})" if reasons else "")


def decode_image(source: str | Path | bytes, canvas: int) -> torch.Tensor:
    """(3, canvas, canvas) float32 in [0, 1]: shorter side resized to ``canvas``, centre crop.
    Raises on corrupt or truncated input (PIL refuses truncated files unless told otherwise)."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(handle) as image:
        image.load()  # decode now, so truncation surfaces here
        return pil_to_tensor(image, canvas)


def pil_to_tensor(image: Image.Image, canvas: int) -> torch.Tensor:
    """A PIL image -> (3, canvas, canvas) float32 in [0, 1]: transparency composited on black (ShapesWorld's
    background), shorter side resized to ``canvas``, centre crop."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    else:
        image = image.convert("RGB")
    width, height = image.size
    if (width, height) != (canvas, canvas):
        scale = canvas / min(width, height)
        size = (max(canvas, round(width * scale)), max(canvas, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)  # Pillow filters anti-alias when shrinking
        left, top = (size[0] - canvas) // 2, (size[1] - canvas) // 2
        image = image.crop((left, top, left + canvas, top + canvas))
    array = np.array(image, dtype=np.uint8)  # a writable copy for torch
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def load_image(path: str | Path, canvas: int) -> torch.Tensor | None:
    """``decode_image`` of a file, or None when it is missing or unreadable (the caller reports it)."""
    try:
        return decode_image(Path(path), canvas)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _index_rows(index: Path) -> Iterator[tuple[int, dict | None]]:
    """(line number, row) of an index file; row is None for a malformed line."""
    if index.suffix == ".jsonl":
        for number, line in enumerate(index.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            yield number, row if isinstance(row, dict) else None
    else:
        with index.open(newline="", encoding="utf-8", errors="replace") as handle:
            for number, row in enumerate(csv.DictReader(handle), 2):
                yield number, row


@DATASETS.register("folder")
class FolderDataset(torch.utils.data.Dataset):
    """Images + captions.jsonl/csv (+ audio) in a folder; map-style and iterable. See the module doc."""

    def __init__(self, root: str | Path, canvas: int = 32, split: str | None = None, audio: bool = True):
        root = Path(root)
        if split is not None and any((root / split / name).is_file() for name in INDEX_FILES):
            root = root / split
        if not root.is_dir():
            raise UmmError(f"data folder {str(root)!r} does not exist")
        index = next((root / name for name in INDEX_FILES if (root / name).is_file()), None)
        if index is None:
            raise UmmError(f"no {' or '.join(INDEX_FILES)} in {str(root)!r} (one row per image: file, caption)")
        self.root, self.canvas, self.audio = root, int(canvas), audio
        self.stats_ = RecordStats(f"folder {root}")
        self._bad: set[int] = set()
        self.records: list[dict] = []
        for number, row in _index_rows(index):
            where = f"{index.name}:{number}"
            if row is None or not str(row.get("file") or "").strip() or row.get("caption") is None:
                self.stats_.fail("malformed index line", where)
                continue
            path = root / str(row["file"]).strip()
            if not path.is_file():
                self.stats_.fail("missing image", str(row["file"]))
                continue
            sound = self._audio_path(path, row.get("audio"))
            if sound is False:
                self.stats_.fail("missing audio", str(row.get("audio")))
                continue
            self.records.append({"file": path, "caption": str(row["caption"]), "audio": sound})

    @staticmethod
    def _audio_path(image: Path, named: str | None) -> Path | None | bool:
        """The record's audio file, None when it has none, False when it names one that is missing."""
        if named:
            path = image.parent / str(named).strip()
            return path if path.is_file() else False
        for ext in AUDIO_EXTENSIONS:
            if image.with_suffix(ext).is_file():
                return image.with_suffix(ext)
        return None

    @classmethod
    def from_config(cls, config, split: str) -> "FolderDataset":
        if not config.path:
            raise UmmError("data.path must name the image folder for data.name=folder")
        return cls(config.path, canvas=config.canvas, split=split)

    def __len__(self) -> int:
        return len(self.records)

    def get(self, index: int) -> dict:
        """The sample of record ``index``; raises BadRecord (after counting it) if it cannot be read."""
        record = self.records[index]
        try:
            image = decode_image(record["file"], self.canvas)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            self._mark_bad(index, "corrupt image", record["file"])
            raise BadRecord(f"cannot read image {str(record['file'])!r}: {error}") from None
        sample = {"key": os.path.relpath(record["file"], self.root), "image": image, "caption": record["caption"], "source": str(record["file"])}
        if self.audio and record["audio"] is not None:
            try:
                sample["audio"] = torch.from_numpy(read_audio(str(record["audio"])))
            except (OSError, RuntimeError, ValueError) as error:  # soundfile raises LibsndfileError (a RuntimeError)
                self._mark_bad(index, "corrupt audio", record["audio"])
                raise BadRecord(f"cannot read audio {str(record['audio'])!r}: {error}") from None
        self.stats_.good(index)
        return sample

    def _mark_bad(self, index: int, reason: str, path: Path) -> None:
        if index not in self._bad:  # count each bad record once, however often it is visited
            self._bad.add(index)
            self.stats_.fail(reason, os.path.relpath(path, self.root))

    def __getitem__(self, index: int) -> dict:
        """The sample of record ``index``, or of the next good record if this one is bad."""
        n = len(self.records)
        for step in range(n):
            k = (index + step) % n
            if k in self._bad:
                continue
            try:
                return self.get(k)
            except BadRecord:
                continue
        raise UmmError(f"no readable record in {str(self.root)!r} ({self.report()})")

    def __iter__(self) -> Iterator[dict]:
        """Every good record once, in index order; bad ones are skipped and counted."""
        for index in range(len(self.records)):
            if index in self._bad:
                continue
            try:
                sample = self.get(index)
            except BadRecord:
                continue
            yield sample

    def text_corpus(self, n: int) -> Iterator[str]:
        """Captions of the first ``n`` records (for tokenizer training; no file is opened)."""
        for record in self.records[:n]:
            yield record["caption"]

    def stats(self) -> dict:
        """{"ok", "bad", "reasons", "examples"} over the records read so far (each counted once)."""
        return self.stats_.as_dict()

    def report(self) -> str:
        return self.stats_.report()
