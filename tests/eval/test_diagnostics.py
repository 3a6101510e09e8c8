"""The diagnostics that name a generator's failure: per-attribute adherence, the same-noise pixel-change
probe, the denoise check (one-step x0 from the true x_t) and the harness that reports them."""

import random

import numpy as np
import pytest
import torch

import umm.models  # noqa: F401
from umm.data.shapes.render import render_scene
from umm.eval import diagnostics
from umm.eval.harness import EvalConfig, evaluate, training_level
from umm.eval.judge import geneval_prompts, oracle_scene
from umm.models.system import load_system
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    run = load_recipe(RECIPES_DIR / "test_transfusion.yaml", ["train.steps=30", "data.level=L1"])
    train(run, out / "run", show_progress=False)
    model, system = load_system(out / "run" / "model")
    return out / "run" / "model", model, system


def test_attribute_confusion_reads_what_was_drawn():
    prompts = geneval_prompts(30, "test", 0, "L2")
    rng = random.Random(0)
    scenes = [oracle_scene(p.spec, rng, 48) for p in prompts]
    right = [torch.from_numpy(render_scene(s, 48)) for s in scenes]
    accuracy, confusion = diagnostics.attribute_confusion(right, prompts)
    assert accuracy == {"count": 1.0, "shape": 1.0, "colour": 1.0, "cell": 1.0}
    recoloured = [[{**o, "colour": "white" if o["colour"] != "white" else "red"} for o in s] for s in scenes]
    wrong = [torch.from_numpy(render_scene(s, 48)) for s in recoloured]
    accuracy, confusion = diagnostics.attribute_confusion(wrong, prompts)
    assert accuracy["colour"] == 0.0 and accuracy["shape"] == 1.0
    assert sum(v for (asked, read), v in confusion["colour"].items() if read == "white") > 0
    assert "| asked \\ read |" in diagnostics.confusion_table(confusion["colour"])


def test_same_noise_probe_and_denoise_check(tiny):
    model_dir, model, system = tiny
    # the same prompt from the same seed is the same image: the probe's premise
    same = diagnostics.pixel_changes(system, model, ["a red circle"] * 4, 0, steps=4, cfg_scale=3.0, batch_size=8)
    assert same["prompt_change"] == 0.0 and same["seed_change"] > 0.01
    checked = diagnostics.denoise_check(system, model, "L1", system.config.image_size, n=8)
    # the one-step x0 from a less noisy input is closer to the truth
    assert checked["t0.1_mse"] < checked["t0.5_mse"] < checked["t0.7_mse"]
    assert checked["t0.1"] >= checked["t0.7"]
    assert training_level(model_dir) == "L1"


def test_harness_reports_both_splits_and_the_diagnostics(tiny):
    _, model, system = tiny
    config = EvalConfig(level="L1", n_prompts=9, n_images=6, steps=3, n_adherence=3, n_denoise=4)
    result = evaluate(model, system, config, tasks=("t2i",))
    m = result.metrics
    for key in ("geneval/overall", "geneval_test/overall", "geneval/colours", "adherence/shape",
                "adherence/prompt_vs_seed", "denoise/t0.1", "denoise/t0.7_mse"):
        assert key in m and np.isfinite(m[key]), key
    assert "geneval/two_object" not in m  # a one-object level is not asked for two objects
    assert "geneval/absolute_position" not in m  # nor, at L1, for a place its text never names
    assert set(result.confusion) >= {"count", "shape", "colour"}


def test_captions_and_answers_are_scored_on_the_test_split_too(tiny):
    """Held-out scenes test composition; ``caption_test/*`` and ``qa_test/*`` score in-distribution scenes."""
    _, model, system = tiny
    config = EvalConfig(level="L1", n_images=4, steps=2, diagnostics=False, fidelity=False)
    m = evaluate(model, system, config, tasks=("caption", "qa")).metrics
    for key in ("caption/count", "caption_test/count", "qa/accuracy", "qa_test/accuracy"):
        assert key in m and 0.0 <= m[key] <= 1.0, key  # (a tiny model's colour/shape may be nan: never named)
    assert "caption_test/colour" in m and "qa_test/colour" in m
    only_test = evaluate(model, system, EvalConfig(level="L1", n_images=4, split="test"), tasks=("caption",)).metrics
    assert "caption_test/count" not in only_test and only_test["caption/count"] == m["caption_test/count"]
