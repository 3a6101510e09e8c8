"""SEED-X: learnable output tokens between [BOI] and [EOI] are inputs, not predictions; the regression target is
the de-tokenizer's own image condition (MSE x 6, or cosine); text -> image = regressed features through the
de-tokenizer; one frozen image encoder on both sides; the tiny recipe end to end."""


import pytest
import torch
import torch.nn.functional as F

import umm.models  # noqa: F401  (registers every family)
from umm.config import ConfigError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.factory import build_model, model_config
from umm.models.llm_bridge import frozen_system
from umm.nn import Layout
from umm.models.seedx import DETOKENIZER_DIR, SeedXOptions, SeedXSystem
from umm.models.system import load_system, save_system
from umm.objectives import IGNORE
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


def make(tokenizer, **options):
    opts = SeedXOptions(**{"detokenizer": "test_cond_decoder", **options})
    torch.manual_seed(0)
    model = build_model(model_config("test_seedx", SeedXSystem.model_overrides(tokenizer, opts))).eval()
    return model, SeedXSystem(tokenizer, model.config, opts)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    world = ShapesWorld("train", canvas=16, max_objects=2)
    return (*make(tokenizer), [world[i] for i in range(4)])


def test_output_tokens_are_inputs_between_boi_and_eoi(tiny):
    model, system, samples = tiny
    tok = system.tokenizer
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    queries = list(range(tok.vocab_size, tok.vocab_size + model.config.output_tokens))
    for row in range(len(samples)):
        slots = batch["out_slots"][row]
        assert batch["tokens"][row, slots].tolist() == queries
        assert int(batch["tokens"][row, slots[0] - 1]) == tok.boi_id and int(batch["tokens"][row, slots[-1] + 1]) == tok.eoi_id
        targets = [int(t) for t in batch["text_targets"][row] if t != IGNORE]
        assert targets == [tok.boi_id, tok.eoi_id, tok.eos_id]  # no query is ever a prediction target


def test_regression_target_is_the_detokenizers_condition_weighted_six(tiny):
    model, system, samples = tiny
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    images = torch.stack([s["image"] for s in samples])
    assert torch.equal(batch["target"], system.detokenizer.image_condition(images))
    assert system.encoders is system.detokenizer.encoders  # one frozen image encoder for input and target
    losses = system.losses(model, batch, torch.Generator().manual_seed(0))
    assert torch.allclose(losses["regression_loss"], 6.0 * losses["regression_error"])
    with torch.no_grad():
        out = model(batch["tokens"], batch["kinds"], batch["features"], Layout.of(batch), out_slots=batch["out_slots"]).out
    assert torch.allclose(losses["regression_error"], F.mse_loss(out, batch["target"]), rtol=1e-5)


def test_cosine_regression_is_an_option(tokenizer, tiny):
    _, _, samples = tiny
    model, system = make(tokenizer, regression="cosine")
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    error = system.losses(model, batch, torch.Generator().manual_seed(0))["regression_error"]
    assert 0 <= float(error) <= 2


def test_generate_images_decodes_the_regressed_features(tiny):
    model, system, _ = tiny
    prompts = ["a red circle", "two blue squares"]
    features = system.regress(model, prompts)
    assert features.shape == (2, model.config.target_tokens, model.config.target_dim)
    images = system.generate_images(model, prompts, steps=3, cfg_scale=2.0, seed=1)
    direct = system.detokenizer.render(system.detokenizer_model, features, steps=3, cfg_scale=2.0, seed=1)
    assert images.shape == (2, 3, 16, 16) and torch.equal(images, direct)


def test_regression_learns_the_target_features(tokenizer):
    model, system = make(tokenizer)
    world = ShapesWorld("train", canvas=16, max_objects=1)
    batch = system.collate([world[i] for i in range(8)], "t2i", torch.Generator().manual_seed(0))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    errors = []
    for _ in range(40):
        losses = system.losses(model, batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        (losses["regression_loss"] + losses["lm_loss"]).backward()
        optimizer.step()
        errors.append(float(losses["regression_error"]))
    assert errors[-1] < 0.5 * errors[0], errors


def test_the_detokenizer_must_be_conditioned_on_image_features(tokenizer, tmp_path):
    text_model, text_decoder = frozen_system("test_cond_decoder", tokenizer)  # condition: text
    save_system(tmp_path / "text_decoder", text_model, text_decoder)
    with pytest.raises(ConfigError, match="conditioned on image features"):
        make(tokenizer, detokenizer=str(tmp_path / "text_decoder"))


def test_tiny_recipe_trains_saves_and_runs_every_capability(tmp_path):
    run = load_recipe(RECIPES_DIR / "test_seedx.yaml")
    result = train(run, tmp_path, show_progress=False)
    assert result.losses[-1] < 0.85 * result.losses[0]
    assert (tmp_path / "model" / DETOKENIZER_DIR / "encoders" / "model.safetensors").is_file()
    model, system = load_system(tmp_path / "model")
    metrics = evaluate(model, system, EvalConfig(n_prompts=4, n_images=4, steps=3, batch_size=8)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy"} <= set(metrics)
