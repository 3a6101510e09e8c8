"""`umm demo` end to end on a tiny recipe: it trains at the level asked, and its report carries the judge's
verdict on each sample, the prompt-adherence figures and the reference's score at the same budget."""

import json

from umm.demo import run_demo
from umm.eval.judge import describe_image
from umm.data.shapes import ShapesWorld
from umm.eval.reference import reference_at
from umm.recipes import RECIPES_DIR



def test_describe_image_names_what_is_drawn():
    sample = ShapesWorld("test", level="L2")[0]
    (obj,) = sample["scene"]
    assert describe_image(sample["image"]).startswith(f"a {obj['size']} {obj['colour']} {obj['shape']} (")
    assert describe_image(sample["image"] * 0) == "nothing"


def test_demo_reports_verdicts_adherence_and_the_reference(tmp_path):
    eval_overrides = {"n_prompts": 6, "n_images": 4, "steps": 3, "n_adherence": 2, "n_denoise": 4}
    scores = run_demo(tmp_path, minutes=10, show_progress=False, recipe=RECIPES_DIR / "test_transfusion.yaml",
                      overrides=["train.steps=4"], eval_overrides=eval_overrides, level="L1")
    assert scores["level"] == "L1" and scores["train_steps"] == 4
    assert json.loads((tmp_path / "scores.json").read_text())["level"] == "L1"
    report = (tmp_path / "report.md").read_text()
    assert "| prompt | verdict | the judge read |" in report
    assert report.count("| pass |") + report.count("| FAIL |") == 6
    assert "prompt_vs_seed" in report
    point = reference_at("L1", 10)  # the reference's score at this budget, beside the run's own
    assert scores["reference/test"] == point.test and f"{point.test:.3f}" in report
    for name in ("samples.png", "loss_curve.png", "captions.md"):
        assert (tmp_path / name).stat().st_size > 0


def test_demo_trains_the_vae_its_recipe_reads_first(tmp_path):
    """A recipe that diffuses a VAE's latents (``image_tokenizer: runs/<name>/model``) gets that VAE trained by the
    demo, into its own directory, before the model; a second demo in the same directory reuses it."""
    recipe = tmp_path / "tf_latents.yaml"
    recipe.write_text("base: test_transfusion\nsystem_args: {image_tokenizer: runs/test_vae/model}\n")
    eval_overrides = {"n_prompts": 4, "n_images": 4, "steps": 2, "n_adherence": 2, "n_denoise": 4}
    out = tmp_path / "demo"
    scores = run_demo(out, minutes=10, show_progress=False, recipe=recipe, overrides=["train.steps=3"],
                      eval_overrides=eval_overrides, level="L1")
    vae = out / "test_vae" / "model"
    assert (vae / "model.safetensors").is_file() and scores["part/test_vae/steps"] > 0
    assert "level: L1" in (vae.parent / "recipe.yaml").read_text(), "the VAE did not train at the demo's level"
    recipe_used = (out / "run" / "recipe.yaml").read_text()
    assert str(vae) in recipe_used, "the model was not pointed at the VAE the demo trained"
    assert "reads `test_vae`, which the demo trained first" in (out / "report.md").read_text()
    stamp = (vae / "model.safetensors").stat().st_mtime_ns
    run_demo(out, minutes=10, show_progress=False, recipe=recipe, overrides=["train.steps=3"],
             eval_overrides=eval_overrides, level="L1")
    assert (vae / "model.safetensors").stat().st_mtime_ns == stamp, "the second demo retrained the VAE"
