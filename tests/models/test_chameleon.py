"""Chameleon: one vocabulary, causal attention inside images, the AR pipeline's contracts (cache = recompute,
exactly grid^2 image codes then EOI, guidance), and a tiny recipe end to end."""

import warnings

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.chameleon import ChameleonOptions, ChameleonSystem
from umm.models.factory import build_model, model_config
from umm.models.system import load_system, save_system
from umm.nn import Layout
from umm.pipelines import ar
from umm.samplers import three_way_cfg
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



@pytest.fixture(scope="module")
def tiny():
    tokenizer = TextTokenizer.train(shapes_corpus(2000), 384)
    options = ChameleonOptions(image_tokenizer="test_vq")  # a frozen part is named explicitly, never defaulted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained test tokenizer warns
        torch.manual_seed(0)
        model = build_model(model_config("test_chameleon", ChameleonSystem.model_overrides(tokenizer, options))).eval()
        system = ChameleonSystem(tokenizer, model.config, options)
    world = ShapesWorld("train", canvas=16, max_objects=2)
    return model, system, [world[i] for i in range(4)]


def test_image_codes_are_tokens_of_the_shared_vocabulary(tiny):
    model, system, samples = tiny
    config, tok = system.config, system.tokenizer
    assert config.vocab_size == tok.vocab_size + system.image_tokenizer.codebook_size
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(1))
    codes = system.image_tokenizer.encode(torch.stack([s["image"] for s in samples]))
    row = batch["tokens"][0].tolist()
    boi = row.index(tok.boi_id)
    assert row[boi + 1 : boi + 17] == (codes[0].flatten() + config.text_vocab).tolist()
    assert row[boi + 17] == tok.eoi_id
    assert (batch["block"] == -1).all()  # causal attention everywhere: no bidirectional span
    # every image code and EOI is a training target of text-to-image; the BOS is not
    targets = batch["text_targets"][0]
    assert (targets[boi : boi + 17] == torch.tensor(row[boi + 1 : boi + 18])).all()


def test_understanding_puts_the_loss_on_the_text_only(tiny):
    _, system, samples = tiny
    for task in ("caption", "qa"):
        batch = system.collate(samples, task, torch.Generator())
        targets = batch["text_targets"]
        assert not (targets >= system.config.text_vocab).any(), task  # no image-code targets
        assert (targets == system.tokenizer.eos_id).sum() == len(samples)


def test_attention_is_causal_inside_an_image(tiny):
    model, system, samples = tiny
    batch = system.collate(samples[:1], "t2i", torch.Generator().manual_seed(1))
    layout = Layout(batch["block"], batch["positions"], batch["valid"], batch["next_position"])
    tokens = batch["tokens"]
    boi = tokens[0].tolist().index(system.tokenizer.boi_id)
    changed = tokens.clone()
    changed[0, boi + 10] = system.config.text_vocab + (int(tokens[0, boi + 10]) - system.config.text_vocab + 1) % 64
    with torch.no_grad():
        a, b = model(tokens, layout).logits, model(changed, layout).logits
    assert torch.equal(a[0, : boi + 10], b[0, : boi + 10])  # earlier codes never see later ones
    assert not torch.allclose(a[0, boi + 10], b[0, boi + 10])


@pytest.mark.parametrize("guidance", ["none", "cfg", "three_way"])
def test_cached_generation_equals_full_recompute(tiny, guidance):
    model, system, samples = tiny
    prompts = [s["caption"] for s in samples[:3]]
    kwargs = {"none": {"cfg_scale": 1.0}, "cfg": {"cfg_scale": 3.0},
              "three_way": {"cfg_scale": 2.0, "image_cfg_scale": 1.5,
                            "context": torch.stack([s["image"] for s in samples[:3]])}}[guidance]
    for sampling in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 20, "top_p": 0.9}):
        cached = ar.generate_images(model, system, prompts, seed=3, use_cache=True, precision="fp32", return_codes=True,
                                    **sampling, **kwargs)
        full = ar.generate_images(model, system, prompts, seed=3, use_cache=False, precision="fp32", return_codes=True,
                                  **sampling, **kwargs)
        assert cached.shape == (3, 4, 4)
        assert torch.equal(cached, full), (guidance, sampling)


def test_cached_step_logits_match_recompute(tiny):
    model, system, samples = tiny
    seqs = [system.t2i_prompt(s["caption"]) for s in samples[:2]]
    tokens, layout = ar.prompt_batch(system, seqs, "cpu")
    plan = system.image_plan()
    cached, first_cached = ar.cached_steps(model, tokens, layout, len(plan.forced))
    full, first_full = ar.recompute_steps(model, tokens, layout)
    torch.testing.assert_close(first_cached, first_full, rtol=1e-4, atol=1e-4)
    chunk = plan.layout(layout.next_position)
    for i, token in enumerate([system.config.text_vocab + 5, system.config.text_vocab + 9, system.config.text_vocab]):
        fed = torch.full((2, 1), token)
        torch.testing.assert_close(cached(fed, chunk[i : i + 1]), full(fed, chunk[i : i + 1]), rtol=1e-4, atol=1e-4)


def test_image_span_is_exactly_grid_codes_then_eoi_whatever_the_logits(tiny):
    _, system, _ = tiny
    text_vocab, vocab = system.config.text_vocab, system.config.vocab_size
    plan = system.image_plan()
    fed = []

    def step(token: torch.Tensor, layout: Layout) -> torch.Tensor:
        fed.append(token)
        logits = torch.zeros(token.shape[0], vocab)
        logits[:, :text_vocab] = 100.0  # a model that wants text (EOS, EOI, words) everywhere
        return logits

    first = torch.zeros(2, vocab)
    first[:, system.tokenizer.eos_id] = 100.0
    generator = torch.Generator().manual_seed(0)
    tokens, span = ar.sample_plan(step, first, torch.zeros(2, 1, dtype=torch.long), plan, generator=generator)
    assert tokens.shape == (2, 17)
    assert ((tokens[:, :16] >= text_vocab) & (tokens[:, :16] < vocab)).all()
    assert (tokens[:, 16] == system.tokenizer.eoi_id).all()
    assert len(fed) == 16 and span.positions.shape[1] == 17  # the last slot (EOI) is left for the caller


def test_guides_combine_branches_as_specified():
    torch.manual_seed(0)
    full, image, uncond = torch.randn(3, 2, 10).unbind(0)
    guided = ar.three_way_guide(3.0, 1.2)(torch.cat([full, image, uncond]))
    lp = lambda x: x.log_softmax(-1)  # noqa: E731
    torch.testing.assert_close(guided, three_way_cfg(lp(full), lp(image), lp(uncond), 3.0, 1.2))
    torch.testing.assert_close(guided, lp(uncond) + 1.2 * (lp(image) - lp(uncond)) + 3.0 * (lp(full) - lp(image)))
    torch.testing.assert_close(ar.cfg_guide(1.0)(torch.cat([full, uncond])), lp(full))  # scale 1: no guidance


def test_z_loss_is_an_option(tiny):
    model, system, samples = tiny
    batch = system.collate(samples, "t2i", torch.Generator())
    with_z = system.losses(model, batch, torch.Generator())
    assert {"lm_loss", "z_loss", "image_ce", "text_ce"} <= set(with_z)
    off = ChameleonSystem(system.tokenizer, system.config, ChameleonOptions(image_tokenizer="test_vq", z_loss_weight=0.0),
                          image_tokenizer=system.image_tokenizer)
    assert "z_loss" not in off.losses(model, batch, torch.Generator())


def test_an_unset_image_tokenizer_is_an_error_that_names_the_key_and_recipe(tiny):
    _, system, _ = tiny
    with pytest.raises(UmmError, match=r"system_args.image_tokenizer is unset.*umm train vq_s"):
        ChameleonSystem.model_overrides(system.tokenizer, ChameleonOptions())
    with pytest.raises(UmmError, match="system_args.image_tokenizer is unset"):
        ChameleonSystem(system.tokenizer, system.config, ChameleonOptions())


def test_a_saved_system_without_its_frozen_tokenizer_is_refused(tiny, tmp_path):
    import shutil

    model, system, _ = tiny
    save_system(tmp_path / "model", model, system)
    shutil.rmtree(tmp_path / "model" / "image_tokenizer")
    with pytest.raises(UmmError, match="lacks its frozen image tokenizer"):
        load_system(tmp_path / "model")


def test_tokenizers_without_one_code_per_position_are_refused(tiny):
    _, system, _ = tiny
    for name in ("test_rq", "test_vae"):
        with pytest.raises(UmmError, match="one code per position"):
            ChameleonSystem.model_overrides(system.tokenizer, ChameleonOptions(image_tokenizer=name))


def test_tiny_recipe_trains_saves_and_runs_every_capability(tmp_path):
    run = load_recipe(RECIPES_DIR / "test_chameleon.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(run, tmp_path, show_progress=False)
    assert result.losses[-1] < 0.85 * result.losses[0]  # measured 18.3 -> 14.4 in 30 steps
    assert (tmp_path / "model" / "image_tokenizer" / "model.safetensors").is_file()  # the system carries its tokenizer
    model, system = load_system(tmp_path / "model")
    images = system.generate_images(model, ["a red circle", "two blue squares"], cfg_scale=2.0, seed=0)
    assert images.shape == (2, 3, 16, 16) and 0 <= float(images.min()) and float(images.max()) <= 1
    world = ShapesWorld("heldout", canvas=16, max_objects=2)
    pics = torch.stack([world[i]["image"] for i in range(2)])
    assert all(isinstance(c, str) for c in system.caption(model, pics))
    assert len(system.answer(model, pics, ["how many shapes are there?"] * 2)) == 2
    segments = system.generate_interleaved(model, "a red circle", max_new_tokens=8)
    assert all(isinstance(s, str) or s.shape == (3, 16, 16) for s in segments)
    metrics = evaluate(model, system, EvalConfig(n_prompts=6, n_images=4, batch_size=8)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy"} <= set(metrics)
