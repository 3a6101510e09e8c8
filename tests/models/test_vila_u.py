"""VILA-U: the tower (RQ codes + contrastive alignment), the model's sequences (a position = the sum of its
code embeddings, causal everywhere), the depth head (cached/iterative = teacher forced), cached generation =
teacher-forced recompute under guidance, and the two recipes end to end (tower, then the model on it)."""

import warnings

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.sequence import Sequence
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.factory import build_model, model_config
from umm.models.system import load_system
from umm.models.vila_u import VilaUOptions, VilaUSystem, VilaUTowerOptions, VilaUTowerSystem, load_vision_tower
from umm.pipelines.ar_depth import generate_images
from umm.nn import Layout
from umm.objectives import IGNORE
from umm.samplers import cfg
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    options = VilaUOptions(vision_tower="test_vila_u_tower")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained test tower warns
        torch.manual_seed(0)
        model = build_model(model_config("test_vila_u", VilaUSystem.model_overrides(tokenizer, options))).eval()
        system = VilaUSystem(tokenizer, model.config, options)
    world = ShapesWorld("train", canvas=16, max_objects=2)
    return model, system, [world[i] for i in range(4)]


def test_tower_codes_are_its_rq_codes_and_alignment_learns(tokenizer):
    torch.manual_seed(0)
    tower = build_model(model_config("test_vila_u_tower", {"vocab_size": tokenizer.vocab_size}))
    system = VilaUTowerSystem(tokenizer, tower.config, VilaUTowerOptions())
    world = ShapesWorld("train", canvas=16, max_objects=2, modalities=("image", "caption"))
    samples = [world[i] for i in range(8)]
    batch = system.collate(samples, "align", torch.Generator())
    out = tower(batch["pixels"], batch["text"], batch["text_valid"], torch.Generator())
    tower.eval()
    assert torch.equal(out.codes, tower.encode(batch["pixels"]))  # the codes VILA-U's model will read
    assert out.codes.shape == (8, 4, 4, 2)
    torch.testing.assert_close(out.image_embed.norm(dim=-1), torch.ones(8))
    # the contrastive term alone pulls matching (image, caption) pairs together through the quantized features
    tower.train()
    optimizer = torch.optim.Adam(tower.parameters(), lr=3e-3)
    history = []
    # the path is not monotonic (codebook restarts move the codes): on one CPU 60 steps ended at 0.57x the first
    # loss after touching 0.28x at step 30, on another below 0.5x; 150 steps end near 0.05x on both
    for _ in range(150):
        losses = system.losses(tower, batch, torch.Generator().manual_seed(0))
        history.append((float(losses["contrastive_loss"].detach()), float(losses["align_top1"])))
        optimizer.zero_grad()
        losses["contrastive_loss"].backward()
        optimizer.step()
    last = history[-10:]
    assert sum(loss for loss, _ in last) / len(last) < 0.5 * history[0][0], history[::10]
    assert sum(top1 for _, top1 in last) / len(last) > 0.5, history[::10]


def test_vision_tower_sources(tokenizer, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_vision_tower("test_rq").depth == 2  # a plain RQ tokenizer works (no text alignment)
        with pytest.raises(UmmError, match="vila_u_tower or rq"):
            load_vision_tower("test_vq")
        with pytest.raises(UmmError, match="neither"):
            load_vision_tower(str(tmp_path / "missing"))


def test_t2i_sequence_positions_and_targets(tiny):
    model, system, samples = tiny
    codes = system.image_tokenizer.encode(torch.stack([s["image"] for s in samples]))  # (B, 4, 4, 2)
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(1))
    assert (batch["block"] == -1).all()  # causal everywhere
    row = batch["tokens"][0].tolist()
    boi = row.index(system.tokenizer.boi_id)
    image = slice(boi + 1, boi + 17)
    assert batch["is_image"][0, image].all() and int(batch["is_image"][0].sum()) == 16
    assert torch.equal(batch["codes"][0, image], codes[0].view(16, 2))
    assert row[boi + 17] == system.tokenizer.eoi_id
    # text targets: the caption, BOI, EOI (predicted from the last position) and EOS; never inside the image
    targets = batch["text_targets"][0]
    assert (targets[boi : boi + 16] == IGNORE).all() and int(targets[boi + 16]) == system.tokenizer.eoi_id
    # a position's input embedding is the sum of its D code embeddings
    x = model.embed(batch["tokens"], batch["codes"], batch["is_image"])
    expected = model.code_embed.weight[codes[0, 0, 0]].sum(0)
    torch.testing.assert_close(x[0, boi + 1], expected)


def test_depth_head_iterative_with_cache_equals_teacher_forced(tiny):
    model = tiny[0]
    torch.manual_seed(3)
    context = torch.randn(5, model.config.transformer.dim)
    codes = torch.randint(0, model.config.image_codes, (5, model.config.code_depth))
    with torch.no_grad():
        forced = model.depth_logits(context, codes)  # (5, D, K)
        cache = model.new_depth_cache(5)
        steps = []
        for d in range(model.config.code_depth):
            x = model.depth_inputs(context, codes[:, :d])[:, -1:]  # only the new step enters the cache
            steps.append(model.depth_step(x, d, cache))
    torch.testing.assert_close(torch.stack(steps, 1), forced, rtol=1e-5, atol=1e-5)
    # the first code depends on the context only; later codes on the codes before them
    changed = codes.clone()
    changed[:, 0] = (changed[:, 0] + 1) % model.config.image_codes
    with torch.no_grad():
        other = model.depth_logits(context, changed)
    assert torch.equal(other[:, 0], forced[:, 0]) and not torch.allclose(other[:, 1], forced[:, 1])


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_cached_generation_equals_teacher_forced_recompute(tiny, scale):
    """Greedy codes from the cached loop are the argmax of the guided logits of one teacher-forced pass over
    the finished sequences (main transformer and depth head, both branches)."""
    model, system, samples = tiny
    prompts = [s["caption"] for s in samples[:2]]
    codes = generate_images(model, system, prompts, cfg_scale=scale, temperature=0.0, precision="fp32",
                            return_codes=True)  # (2, 4, 4, 2)
    tok = system.tokenizer
    texts = prompts + ([None, None] if scale != 1.0 else [])
    seqs = []
    for text, c in zip(texts, torch.cat([codes, codes]) if scale != 1.0 else codes):
        seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id] + ([] if text is None else system.text_ids(text)), loss=False)
        seqs.append(system.add_image(seq, c, loss=True))
    batch = system.batch_of(seqs, pad_left=True)
    predict = torch.zeros_like(batch["image_loss"])
    predict[:, :-1] = batch["image_loss"][:, 1:]
    with torch.no_grad():
        out = model(batch["tokens"], batch["codes"], batch["is_image"], Layout.of(batch), predict=predict)
    logits = out.code_logits.view(len(seqs), 16, 2, -1).float()  # (rows, N, D, K)
    if scale != 1.0:
        logits = cfg(*logits.log_softmax(-1).chunk(2), scale)
    assert torch.equal(logits.argmax(-1), codes.view(2, 16, 2))


def test_understanding_uses_the_cache_consistently(tiny):
    model, system, samples = tiny
    images = torch.stack([s["image"] for s in samples[:2]])
    a = system.caption(model, images, precision="fp32", max_new_tokens=6)
    b = system.answer(model, images, None, max_new_tokens=6, precision="fp32", batch_size=1)  # other padding
    assert a == b and all(isinstance(t, str) for t in a)


@pytest.mark.slow
def test_tower_and_model_recipes_end_to_end(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tower = train(load_recipe(RECIPES_DIR / "test_vila_u_tower.yaml"), tmp_path / "tower", show_progress=False)
        assert tower.losses[-1] < 0.8 * tower.losses[0]
        run = load_recipe(RECIPES_DIR / "test_vila_u.yaml", [f"system_args.vision_tower={tmp_path / 'tower' / 'model'}"])
        result = train(run, tmp_path / "lm", show_progress=False)
    assert result.losses[-1] < 0.85 * result.losses[0]
    assert (tmp_path / "lm" / "model" / "image_tokenizer" / "model.safetensors").is_file()
    model, system = load_system(tmp_path / "lm" / "model")
    trained_tower = load_vision_tower(tmp_path / "tower" / "model")
    pics = torch.stack([ShapesWorld("heldout", canvas=16, max_objects=2)[i]["image"] for i in range(2)])
    assert torch.equal(system.image_tokenizer.encode(pics), trained_tower.encode(pics))  # the saved system keeps it
    metrics = evaluate(model, system, EvalConfig(n_prompts=6, n_images=4, batch_size=8)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy"} <= set(metrics)
    tower_model, tower_system = load_system(tmp_path / "tower" / "model")
    recon = evaluate(tower_model, tower_system, EvalConfig(n_images=8)).metrics
    assert 0 < recon["recon/mse"] < 0.2 and "recon/codebook_used" in recon
