"""Recipes inherit (``base:``): bases merge under the recipe in order, the recipe's keys and then overrides
win, lists are replaced whole, and the shipped recipes that share a block say so once."""

import pytest

from umm.config import ConfigError, merge, to_dict
from umm.recipes import RECIPES_DIR, recipe_names
from umm.training.recipe import load_recipe, read_recipe


def test_bases_merge_in_order_and_the_recipe_wins(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {steps: 7, lr: 0.5}\ndata: {level: L2, video_frames: 4}\n")
    (tmp_path / "b.yaml").write_text("base: a\ntrain: {lr: 0.25}\ntasks: [{name: t2i}, {name: caption}]\n")
    (tmp_path / "r.yaml").write_text("base: [b, base/test]\nmodel: test_transfusion\ntasks: [{name: t2i, batch_size: 4}]\n")
    run = load_recipe(tmp_path / "r.yaml", ["train.warmup_steps=2"])
    # base/test (listed last) wins over b for the keys it sets; b's own keys win over its base a
    assert (run.train.steps, run.train.lr, run.train.precision, run.train.warmup_steps) == (30, 3.0e-3, "fp32", 2)
    assert (run.data.level, run.data.video_frames) == ("L4", 4)  # base/test sets the level, not the frames
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


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return KeyError
        tree = tree[part]
    return tree


def test_no_shipped_recipe_repeats_what_its_bases_give():
    """Each shipped recipe says only what differs from its bases: a key set to the value the bases already
    give is a copy that drifts when the base changes (issue 17: recipes inherit)."""
    from umm.config import load_yaml
    from umm.training.recipe import _base_path

    repeats = []
    for path in sorted(RECIPES_DIR.glob("**/*.yaml")):
        own = load_yaml(path)
        bases = own.pop("base", None) or []
        inherited: dict = {}
        for name in [bases] if isinstance(bases, str) else bases:
            inherited = merge(inherited, read_recipe(_base_path(name, path.parent, path)))
        repeats += [f"{path.relative_to(RECIPES_DIR)}: {key}" for key, value in _leaves(own) if _get(inherited, key) == value]
    assert not repeats, repeats


def test_the_shipped_recipes_that_share_a_world_inherit_it():
    """Every tiny test system recipe reads base/test's world; every survey-size single model base/survey_s's."""
    from umm.config import load_yaml

    for path in RECIPES_DIR.glob("test_*.yaml"):
        if "guard" in path.stem:
            continue  # the learning guards run at L1 on purpose
        bases = load_yaml(path).get("base")
        assert bases in ("base/test", "base/image_tokenizer_test"), f"{path.name} does not inherit the test world"
    for name in ("chameleon_s", "lavit_s", "mmar_s", "monoformer_s", "showo_s", "transfusion_s", "vila_u_s"):
        assert load_yaml(RECIPES_DIR / f"{name}.yaml")["base"] == "base/survey_s"
