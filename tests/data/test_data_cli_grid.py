"""`umm data inspect` / `umm data make-shapes` through the data commands, and the PNG grid writer."""

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from umm import UmmError
from umm.commands import data as commands
from umm.data.grid import make_grid, save_grid
from umm.data.shapes import ShapesWorld


def run(argv: list[str]) -> int:
    """What `umm data ...` does: parse with the data parser, then call the chosen command."""
    parser = argparse.ArgumentParser(prog="umm")
    commands.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def test_help_shows_examples(capsys):
    for argv in (["--help"], ["inspect", "--help"], ["make-shapes", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            run(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "umm data" in out


def test_make_shapes_then_inspect_the_shards(tmp_path, capsys):
    out = tmp_path / "shards"
    assert run(["make-shapes", str(out), "--n", "30", "--shard-size", "10", "--split", "val", "--canvas", "48"]) == 0
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shapes-val-00000{i}.tar" for i in range(3)]
    capsys.readouterr()
    assert run(["inspect", str(out / "shapes-val-*.tar"), "--n", "2", "--canvas", "48", "--grid", str(tmp_path / "g.png")]) == 0
    text = capsys.readouterr().out
    assert "read 30 samples" in text and "30 good, 0 bad records" in text and "caption:" in text
    assert "image=(3, 48, 48)" in text
    assert Image.open(tmp_path / "g.png").size[0] > 48


def test_inspect_folder_reports_bad_records(tmp_path, capsys):
    world = ShapesWorld("test", modalities=("image", "caption"))
    rows = []
    for i in range(10):
        s = world[i]
        path = tmp_path / f"{i}.png"
        Image.fromarray((s["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
        rows.append(json.dumps({"file": path.name, "caption": s["caption"]}))
    (tmp_path / "3.png").write_bytes(b"broken")
    (tmp_path / "captions.jsonl").write_text("\n".join(rows))
    assert run(["inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "records listed: 10" in text and "9 good, 1 bad records (corrupt image 1)" in text and "bad: 3.png" in text


def test_inspect_the_world(capsys):
    assert run(["inspect", "shapes:heldout", "--limit", "20", "--n", "1"]) == 0
    text = capsys.readouterr().out
    assert "ShapesWorld" in text and "records listed: 1000000" in text and "read 20 samples" in text


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UmmError, match="does not exist"):
        run(["inspect", str(tmp_path / "nope")])
    with pytest.raises(UmmError, match="neither"):
        run(["inspect", str(tmp_path)])
    with pytest.raises(UmmError, match="unknown ShapesWorld split"):
        run(["inspect", "shapes:dev"])
    with pytest.raises(UmmError, match="split"):
        run(["make-shapes", str(tmp_path / "x"), "--n", "3", "--split", "dev"])
    with pytest.raises(UmmError, match="modalities"):
        run(["make-shapes", str(tmp_path / "x"), "--n", "3", "--modalities", "image,smell"])
    with pytest.raises(UmmError, match="--n"):
        run(["make-shapes", str(tmp_path / "x"), "--n", "0"])


def test_grid_layout_labels_and_inputs(tmp_path):
    images = torch.rand(5, 3, 8, 10)
    grid = make_grid(images, nrow=2, upscale=3)
    assert grid.size == (2 * (30 + 2) + 2, 3 * (24 + 2) + 2)
    pixels = np.asarray(grid)
    expected = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert (pixels[2:26:3, 2:32:3] == expected).all()  # nearest-neighbour upscale of the first image
    labelled = make_grid([images[i] for i in range(5)], nrow=5, upscale=4, labels=["a red circle"] * 5)
    assert labelled.size[1] > 8 * 4 + 4  # room for the captions
    path = save_grid(images.numpy(), tmp_path / "sub" / "grid.png", nrow=3)
    assert Image.open(path).format == "PNG"
    with pytest.raises(ValueError, match="labels"):
        make_grid(images, labels=["x"])
