"""Folder and WebDataset loaders: same sample dicts, bad records skipped and counted, never a crash."""

import csv
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from umm import UmmError
from umm.data.folder import BadRecord, FolderDataset, decode_image, load_image
from umm.data.shapes import ShapesWorld
from umm.data.shapes.shards import write_shards
from umm.data.webdataset import WebDatasetShards, resolve_shards
from umm.eval.judge import parse_image, scene_key
from umm.registry import DATASETS


def _png(rgb, size=(40, 24), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(seconds=0.5, rate=22050) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * 440 * t), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture
def folder_with_bad_files(tmp_path):
    """30 images, every 10th corrupt (truncated, garbage, empty), plus one missing image and one
    malformed index line; three records carry audio, one of them corrupt."""
    rows = []
    for i in range(30):
        data = _png((8 * i, 100, 200))
        if i == 9:
            data = data[: len(data) // 2]  # truncated
        elif i == 19:
            data = b"not an image at all"
        elif i == 29:
            data = b""
        (tmp_path / f"img{i:02d}.png").write_bytes(data)
        rows.append({"file": f"img{i:02d}.png", "caption": f"picture number {i}"})
    (tmp_path / "img03.wav").write_bytes(_wav())  # found by stem
    (tmp_path / "voice.flac").write_bytes(b"")  # named in the index, but corrupt
    (tmp_path / "speech.wav").write_bytes(_wav(1.0, 16000))
    rows[5]["audio"] = "voice.flac"
    rows[7]["audio"] = "speech.wav"
    lines = [json.dumps(r) for r in rows] + ['{"file": "gone.png", "caption": "missing"}', "{not json"]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_folder_with_one_in_ten_corrupt_files_finishes_and_counts(folder_with_bad_files):
    ds = FolderDataset(folder_with_bad_files, canvas=16)
    assert len(ds) == 30  # the missing image and the malformed line never became records
    samples = list(ds)
    assert len(samples) == 26  # 3 corrupt images + 1 corrupt audio skipped
    stats = ds.stats()
    assert stats["ok"] == 26 and stats["bad"] == 6
    assert stats["reasons"] == {"corrupt image": 3, "corrupt audio": 1, "missing image": 1, "malformed index line": 1}
    assert "26 good, 6 bad records" in ds.report()
    for s in samples:
        assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.float32
        assert s["caption"].startswith("picture number")
    with_audio = {s["key"]: s["audio"] for s in samples if "audio" in s}
    assert set(with_audio) == {"img03.png", "img07.png"}
    assert with_audio["img03.png"].shape == (8000,)  # 0.5 s resampled from 22.05 to 16 kHz
    assert with_audio["img07.png"].shape == (16000,)
    list(ds)  # a second pass counts nothing twice
    assert ds.stats()["bad"] == 6 and ds.stats()["ok"] == 26


def test_folder_map_style_skips_bad_records(folder_with_bad_files):
    ds = FolderDataset(folder_with_bad_files, canvas=16)
    assert ds[9]["key"] == "img10.png"  # record 9 is corrupt: its successor stands in
    assert ds[29]["key"] == "img00.png"  # ... wrapping around at the end
    with pytest.raises(BadRecord, match="img19.png"):
        ds.get(19)
    assert ds.stats()["reasons"]["corrupt image"] == 3  # 9, 29 and 19
    assert list(ds.text_corpus(3)) == ["picture number 0", "picture number 1", "picture number 2"]


def test_folder_csv_split_subfolder_and_errors(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "a.jpg").write_bytes(_png((255, 0, 0)))
    with (tmp_path / "val" / "captions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "caption"])
        writer.writerow(["a.jpg", "a red picture, with a comma"])
    ds = FolderDataset(tmp_path, canvas=8, split="val")
    (sample,) = list(ds)
    assert sample["caption"] == "a red picture, with a comma"
    assert torch.allclose(sample["image"][:, 4, 4], torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(UmmError, match="no captions.jsonl or captions.csv"):
        FolderDataset(tmp_path, canvas=8)
    with pytest.raises(UmmError, match="does not exist"):
        FolderDataset(tmp_path / "nope")
    assert DATASETS.get("folder") is FolderDataset


def test_decode_image_resizes_crops_and_composites_alpha(tmp_path):
    wide = Image.new("RGB", (64, 32), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 8, 32))  # a red left strip that the centre crop cuts away
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    image = decode_image(buffer.getvalue(), 16)
    assert image.shape == (3, 16, 16) and float(image[0].max()) < 0.05 and float(image[2].min()) > 0.95
    transparent = decode_image(_png((255, 255, 255, 0), mode="RGBA"), 8)
    assert float(transparent.max()) == 0.0  # transparent -> the black background
    (tmp_path / "bad.png").write_bytes(b"xx")
    assert load_image(tmp_path / "bad.png", 8) is None and load_image(tmp_path / "none.png", 8) is None


def test_shapes_shards_round_trip_through_the_generic_loader(tmp_path):
    world = ShapesWorld("heldout", modalities=("image", "caption", "qa", "audio", "video"))
    paths = write_shards(world, tmp_path, 12, shard_size=5)
    assert [p.name for p in paths] == ["shapes-heldout-000000.tar", "shapes-heldout-000001.tar", "shapes-heldout-000002.tar"]
    ds = WebDatasetShards(tmp_path, canvas=world.canvas)
    samples = list(ds)
    assert len(samples) == 12 and ds.stats()["bad"] == 0
    for i, s in enumerate(samples):
        original = world[i]
        assert s["key"] == original["key"] and s["caption"] == original["caption"]
        assert s["scene"] == original["scene"] and s["qa"] == original["qa"] and s["motion"] == original["motion"]
        assert (s["image"] - original["image"]).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
        assert scene_key(parse_image(s["image"])) == scene_key(s["scene"])  # the judge still reads it exactly
        assert s["audio"].shape == original["audio"].shape
        assert (s["audio"] - original["audio"]).abs().max() < 1e-3  # 16-bit FLAC
        assert s["video"].shape == original["video"].shape
    assert len(list(WebDatasetShards(str(tmp_path / "shapes-heldout-{000000..000001}.tar")))) == 10
    assert list(ds.text_corpus(4)) == [world[i]["caption"] for i in range(4)]


def test_shard_with_corrupt_member_and_truncated_shard_finish_and_count(tmp_path):
    good = tmp_path / "a.tar"
    with tarfile.open(good, "w") as tar:
        for i in range(10):
            members = {f"{i:04d}.png": _png((i * 20, 0, 0)), f"{i:04d}.txt": f"caption {i}".encode()}
            if i == 4:
                members[f"{i:04d}.png"] = b"\x89PNG corrupt"
            if i == 7:
                del members[f"{i:04d}.txt"]  # no caption
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    blob = good.read_bytes()
    (tmp_path / "b.tar").write_bytes(blob[: len(blob) // 2 + 300])  # cut mid-way
    ds = WebDatasetShards([str(good), str(tmp_path / "b.tar"), str(tmp_path / "missing.tar")], canvas=8)
    samples = list(ds)
    stats = ds.stats()
    assert [s["caption"] for s in samples[:8]] == [f"caption {i}" for i in (0, 1, 2, 3, 5, 6, 8, 9)]
    assert stats["reasons"]["corrupt member"] >= 1 and stats["reasons"]["incomplete record"] >= 1
    assert stats["reasons"]["missing shard"] == 1
    assert stats["ok"] == len(samples) and len(samples) >= 10
    assert "bad records" in ds.report()
    # the truncated shard alone: what precedes the cut is read, the record it cuts through is counted
    cut = WebDatasetShards([str(tmp_path / "b.tar")], canvas=8)
    assert 3 <= len(list(cut)) < 10 and cut.stats()["bad"] >= 1
    (tmp_path / "c.tar").write_bytes(blob[:100])  # cut inside the first header
    header = WebDatasetShards([str(tmp_path / "c.tar")], canvas=8)
    assert list(header) == [] and header.stats()["reasons"] == {"unreadable shard": 1}


def test_resolve_shards(tmp_path):
    with pytest.raises(UmmError, match="no tar shards"):
        resolve_shards(tmp_path)
    (tmp_path / "x-1.tar").write_bytes(b"")
    (tmp_path / "x-0.tar").write_bytes(b"")
    assert resolve_shards(tmp_path) == [str(tmp_path / "x-0.tar"), str(tmp_path / "x-1.tar")]
    assert resolve_shards(str(tmp_path / "x-*.tar")) == resolve_shards(tmp_path)
    assert resolve_shards(str(tmp_path / "x-{0..2}.tar"))[-1] == str(tmp_path / "x-2.tar")
    assert DATASETS.get("webdataset") is WebDatasetShards
