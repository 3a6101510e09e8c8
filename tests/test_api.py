"""The Python API (umm/api.py): the README's example runs as written, and each method does its job on a tiny
trained system, with one clear error where the system cannot."""

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import umm
import umm.api  # umm.api.Pipeline below; umm itself imports it lazily
from umm import UmmError
from umm.data.grid import to_pil
from umm.data.shapes import ShapesWorld

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert Image.open(tmp_path / "sample.png").size == (16, 16)
    out = capsys.readouterr().out
    assert "Pipeline(transfusion, can: t2i, caption, qa" in out and out.count(" -> ") == 4


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    run_dir = umm.train("test_transfusion", tmp_path_factory.mktemp("api") / "run", overrides=["train.steps=3"],
                        data={"level": "L1"})
    assert run_dir.name == "run"
    return umm.load(run_dir / "model")


def test_train_applies_sections_and_strings(pipe):
    assert pipe.family == "transfusion" and "t2i" in pipe.capabilities
    with pytest.raises(Exception, match="stepz"):
        umm.train("test_transfusion", train={"stepz": 3})


def test_generate_returns_n_images_per_prompt_seeded(pipe):
    images = pipe.generate(["a red circle", "a blue square"], n=2, seed=3, steps=4)
    assert len(images) == 4 and all(isinstance(i, Image.Image) and i.size == (16, 16) for i in images)
    again = pipe.generate(["a red circle", "a blue square"], n=2, seed=3, steps=4, output="tensor")
    assert again[0].shape == (3, 16, 16)
    torch.testing.assert_close(pipe.images(images), torch.stack(again), atol=1 / 255, rtol=0)  # same seed, same images
    other = pipe.generate("a red circle", seed=4, steps=4, output="tensor")[0]
    assert (other - again[0]).abs().mean() > 1e-4  # another seed, another image
    for bad, match in ((dict(prompts=[]), "non-empty prompt"), (dict(prompts=[" "]), "non-empty prompt"),
                       (dict(prompts=["a"], n=0), "n must be at least 1"), (dict(prompts=["a"], output="np"), "'pil' or")):
        with pytest.raises(UmmError, match=match):
            pipe.generate(**bad)


def test_images_in_as_pil_paths_or_tensors_are_the_same_batch(pipe, tmp_path):
    sample = ShapesWorld("test", canvas=16, level="L1")[0]
    pil = to_pil(sample["image"])
    pil.save(tmp_path / "x.png")
    as_tensor = pipe.images(sample["image"])
    assert as_tensor.shape == (1, 3, 16, 16)
    for other in (pil, [pil], tmp_path / "x.png", str(tmp_path / "x.png"), sample["image"][None]):
        torch.testing.assert_close(pipe.images(other), as_tensor, atol=2 / 255, rtol=0)
    big = pipe.images(pil.resize((64, 80), Image.NEAREST))  # resized to the canvas: shorter side, centre crop
    assert big.shape == (1, 3, 16, 16) and (big - as_tensor).abs().mean() < 0.02
    with pytest.raises(UmmError, match="cannot read image"):
        pipe.images(tmp_path / "missing.png")
    with pytest.raises(UmmError, match=r"\(3, H, W\)"):
        pipe.images(torch.zeros(1, 16, 16))


def test_understanding_and_a_clear_error_for_what_it_cannot_do(pipe):
    images = [ShapesWorld("test", canvas=16, level="L1")[i]["image"] for i in range(2)]
    captions = pipe.caption(images)
    answers = pipe.answer(images, "what colour is the object?")
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions) and len(answers) == 2
    with pytest.raises(UmmError, match="2 images but 3 questions"):
        pipe.answer(images, ["a", "b", "c"])
    with pytest.raises(UmmError, match=r"cannot embed\(\); it can: generate, caption, answer"):
        pipe.embed("text", ["a red circle"])


def test_judge_accepts_a_clean_render_and_rejects_the_wrong_prompt():
    # the judge needs no trained model; a Pipeline of any system judges ShapesWorld images
    world = ShapesWorld("test", canvas=48, level="L1")
    sample = world[0]
    obj = sample["scene"][0]
    pipe = umm.api.Pipeline(torch.nn.Identity(), type("S", (), {"family": "none", "capabilities": (),
                                                                 "config": type("C", (), {"image_size": 48})})())
    right = f"a {obj['colour']} {obj['shape']}"
    wrong_colour = "red" if obj["colour"] != "red" else "blue"
    (ok, bad) = pipe.judge([sample["image"]] * 2, [right, f"a {wrong_colour} {obj['shape']}"])
    assert ok.ok and not bad.ok and ok.read.startswith(f"a large {obj['colour']} {obj['shape']} (")


def test_the_recipes_sampling_settings_are_the_defaults(tmp_path):
    """A recipe's ``eval_args.steps`` / ``cfg_scale`` (the demo samples in 10 steps) and its precision are how
    ``umm.load`` samples unless a call says otherwise; ``umm eval`` starts from the same settings."""
    from umm.eval.harness import EVAL_SAMPLING_KEYS, training_sampling

    run_dir = umm.train("test_transfusion", tmp_path / "run", train={"steps": 3, "precision": "fp32"},
                        eval_args={"steps": 2, "cfg_scale": 1.0, "video_cfg_scale": 2.0})
    pipe = umm.load(run_dir / "model")
    assert pipe.defaults == training_sampling(run_dir / "model") == {"steps": 2, "cfg_scale": 1.0, "precision": "fp32"}
    # the clips' guidance is umm eval's (generate() draws images only)
    assert training_sampling(run_dir / "model", EVAL_SAMPLING_KEYS)["video_cfg_scale"] == 2.0
    implied = pipe.generate("a red circle", seed=3, output="tensor")[0]
    assert torch.equal(implied, pipe.generate("a red circle", seed=3, steps=2, cfg=1.0, output="tensor")[0])
    assert not torch.equal(implied, pipe.generate("a red circle", seed=3, steps=5, output="tensor")[0])
