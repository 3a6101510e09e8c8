"""Recipes inherit (``base:``): bases merge under the recipe in order, the recipe's keys and then overrides
win, lists are replaced whole, and the shipped recipes that share a block say so once."""

import pytest

from umm.config import ConfigError, to_dict
from umm.recipes import RECIPES_DIR, recipe_names
from umm.training.recipe import load_recipe, read_recipe


def test_bases_merge_in_order_and_the_recipe_wins(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {steps: 7, lr: 0.5}\ndata: {level: L2}\n")
    (tmp_path / "b.yaml").write_text("base: a\ntrain: {lr: 0.25}\ntasks: [{name: t2i}, {name: caption}]\n")
    (tmp_path / "r.yaml").write_text("base: [b, base/test]\nmodel: test_transfusion\ntasks: [{name: t2i, batch_size: 4}]\n")
    run = load_recipe(tmp_path / "r.yaml", ["train.warmup_steps=2"])
    # base/test (listed last) wins over b for the keys it sets; b's own keys win over its base a
    assert (run.train.steps, run.train.lr, run.train.precision, run.train.warmup_steps) == (30, 3.0e-3, "fp32", 2)
    assert run.data.level == "L2"
    assert [(t.name, t.batch_size) for t in run.tasks] == [("t2i", 4)]  # a list is replaced, not merged
    assert "base" not in read_recipe(tmp_path / "r.yaml")


def test_the_shipped_tokenizer_recipes_differ_only_in_the_model():
    resolved = {n: to_dict(load_recipe(RECIPES_DIR / f"{n}.yaml")) for n in ("vq_s", "rq_s", "fsq_s", "lfq_s", "vae_s")}
    models = {r.pop("model") for r in resolved.values()}
    assert models == {"vq_s", "rq_s", "fsq_s", "lfq_s", "vae_s"}
    first = next(iter(resolved.values()))
    assert all(r == first for r in resolved.values()) and first["train"]["steps"] == 1500


def test_bases_are_not_listed_as_recipes():
    names = recipe_names()
    assert "transfusion_demo" in names and not any(n.startswith("base") for n in names)
    assert (RECIPES_DIR / "base" / "survey_s.yaml").is_file()


def test_a_bad_base_names_the_key(tmp_path):
    (tmp_path / "r.yaml").write_text("base: {steps: 3}\nmodel: test_transfusion\n")
    with pytest.raises(ConfigError, match="config key 'base'.*expects a recipe name or path"):
        load_recipe(tmp_path / "r.yaml")
    (tmp_path / "x.yaml").write_text("base: y\n")
    (tmp_path / "y.yaml").write_text("base: x\nmodel: test_transfusion\n")
    with pytest.raises(ConfigError, match=r"inherits from itself \(x.yaml -> y.yaml -> x.yaml\)"):
        load_recipe(tmp_path / "x.yaml")
