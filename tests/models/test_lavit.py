"""LaVIT: the dynamic tokenizer (variable-length codes, padding contract, keep ratio follows its target), the
model's variable-length sequences (collate, train), generation until EOI (cache = recompute), recipes."""

import warnings

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.factory import build_model, create_model, model_config
from umm.models.lavit import LavitOptions, LavitSystem
from umm.pipelines.ar_dynamic import PAD_CODE, allowed_tokens, generate_images
from umm.tokenizers.image import dynamic
from umm.models.showo import ShowoOptions, ShowoSystem
from umm.models.system import load_system
from umm.tokenizers.image.dynamic import PAD_CODE, DynamicOptions, DynamicTokenizerSystem
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import after_optimizer_step, train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



@pytest.fixture(scope="module")
def tiny():
    tokenizer = TextTokenizer.train(shapes_corpus(2000), 384)
    options = LavitOptions(image_tokenizer="test_lavit_tokenizer")  # a frozen part is named explicitly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained test tokenizer warns
        torch.manual_seed(0)
        model = build_model(model_config("test_lavit", LavitSystem.model_overrides(tokenizer, options))).eval()
        system = LavitSystem(tokenizer, model.config, options)
    world = ShapesWorld("train", canvas=16, max_objects=2)
    return model, system, [world[i] for i in range(6)]


def images_of(samples) -> torch.Tensor:
    return torch.stack([s["image"] for s in samples])


def test_dynamic_codes_are_kept_tokens_then_padding(tiny):
    _, system, samples = tiny
    tokenizer = system.image_tokenizer
    codes = tokenizer.encode(images_of(samples))  # (B, N)
    assert codes.shape == (6, tokenizer.tokens_per_image)
    valid = codes != PAD_CODE
    counts = valid.sum(1)
    assert (counts >= 1).all() and len(set(counts.tolist())) > 1  # variable length, never empty
    assert not (valid[:, 1:] & ~valid[:, :-1]).any()  # padding only at the end
    assert ((codes[valid] >= 0) & (codes[valid] < tokenizer.codebook_size)).all()
    pictures = tokenizer.decode(codes)
    assert pictures.shape == (6, 3, 16, 16)
    width = int(counts.max())
    torch.testing.assert_close(tokenizer.decode(codes[:, :width]), pictures)  # trailing padding changes nothing
    bad = codes.clone()
    bad[0, 0], bad[0, 1] = PAD_CODE, 3
    with pytest.raises(UmmError, match="padded at the end"):
        tokenizer.decode(bad)


@pytest.mark.parametrize("positional", [False, True])
def test_reconstruction_alone_reaches_the_selector(positional):
    """The straight-through keep value weights what the decoder reads *after* the quantizer's L2 normalisation:
    before it, the normalisation cancelled it and only the keep-ratio loss moved the selector (measured: logits
    within +-0.06 after 1,500 steps). With ``to_code``'s bias at zero the old wiring gave exactly no gradient."""
    torch.manual_seed(0)
    tokenizer = build_model(model_config("test_lavit_tokenizer", {"positional_codes": positional}))
    torch.nn.init.zeros_(tokenizer.to_code.bias)
    world = ShapesWorld("train", canvas=16, max_objects=2, modalities=("image",))
    images = torch.stack([world[i]["image"] for i in range(4)])
    out = tokenizer(images, torch.Generator().manual_seed(0))
    (out.reconstruction.float() - (images * 2 - 1)).pow(2).mean().backward()
    assert tokenizer.selector[-1].weight.grad.abs().sum() > 1e-4


def test_positional_codes_name_their_cells_and_decode_in_any_order():
    """model_args.positional_codes: code = cell * K + content; the kept cells come in raster order, the
    decoder puts each code on its cell (so the order of the codes changes nothing), and a LaVIT system over
    such a tokenizer has N * K image codes."""
    torch.manual_seed(0)
    tokenizer = build_model(model_config("test_lavit_tokenizer", {"positional_codes": True})).eval()
    k, n = tokenizer.config.codebook_size, tokenizer.tokens_per_image
    assert tokenizer.codebook_size == n * k
    world = ShapesWorld("train", canvas=16, max_objects=2, modalities=("image",))
    images = torch.stack([world[i]["image"] for i in range(4)])
    codes = tokenizer.encode(images)
    keep, _ = tokenizer.select(tokenizer.features(images), None)
    for row, kept in zip(codes, keep):
        cells = row[row != PAD_CODE] // k
        assert cells.tolist() == kept.nonzero()[:, 0].tolist()  # exactly the kept cells, in raster order
    pictures = tokenizer.decode(codes)
    count = int((codes[0] != PAD_CODE).sum())
    reversed_row = codes[:1].clone()
    reversed_row[0, :count] = codes[0, :count].flip(0)
    torch.testing.assert_close(tokenizer.decode(reversed_row), pictures[:1])
    repeated = codes[:1].clone()
    if count < n:  # the same code twice on its cell: the cell's vector is their mean, i.e. unchanged
        repeated[0, count] = codes[0, 0]
        torch.testing.assert_close(tokenizer.decode(repeated), pictures[:1])
    # a cell that no code names reads "merged away": dropping a code changes the picture
    assert not torch.allclose(tokenizer.decode(codes[:1, : max(1, count - 1)]), pictures[:1]) or count == 1


def test_systems_needing_a_code_per_position_refuse_it(tiny):
    _, system, _ = tiny
    with pytest.raises(UmmError, match="one code per position"):
        ShowoSystem.model_overrides(system.tokenizer, ShowoOptions(image_tokenizer="test_lavit_tokenizer"))
    with pytest.raises(UmmError, match="dynamic"):
        LavitSystem.model_overrides(system.tokenizer, LavitOptions(image_tokenizer="test_vq"))


def keep_fraction_after_training(target: float, steps: int = 12) -> float:
    torch.manual_seed(0)
    model = create_model("test_lavit_tokenizer")
    system = DynamicTokenizerSystem(None, model.config, DynamicOptions(keep_ratio=target, keep_weight=4.0))
    world = ShapesWorld("train", canvas=16, max_objects=2, modalities=("image",))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = system.collate([world[8 * step + i] for i in range(8)], "reconstruct", torch.Generator())
        losses = system.losses(model, batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        sum(v for k, v in losses.items() if k.endswith("_loss")).backward()
        optimizer.step()
        after_optimizer_step(model)
    held = system.collate([world[10_000 + i] for i in range(64)], "reconstruct", torch.Generator())
    with torch.no_grad():
        return float(model(held["pixels"], torch.Generator().manual_seed(0)).keep_fraction.mean())


def test_keep_ratio_follows_its_target():
    low, high = keep_fraction_after_training(0.2), keep_fraction_after_training(0.8)
    assert low < 0.35 and high > 0.65, (low, high)


def test_variable_length_sequences_collate(tiny):
    _, system, samples = tiny
    tok, text_vocab = system.tokenizer, system.config.text_vocab
    codes = system.image_tokenizer.encode(images_of(samples))
    batch = system.collate(samples, "caption", torch.Generator())
    assert (batch["block"] == -1).all()  # causal everywhere
    for i, row in enumerate(batch["tokens"].tolist()):
        boi, eoi = row.index(tok.boi_id), row.index(tok.eoi_id)
        n = int((codes[i] != PAD_CODE).sum())
        assert eoi - boi - 1 == n  # exactly the kept tokens, in order
        assert row[boi + 1 : eoi] == (codes[i, :n] + text_vocab).tolist()
    lengths = batch["valid"].sum(1)
    assert len(set(lengths.tolist())) > 1  # the sequences really differ in length
    t2i = system.collate(samples, "t2i", torch.Generator().manual_seed(2))
    targets = t2i["text_targets"]
    assert int((targets >= text_vocab).sum()) == int((codes != PAD_CODE).sum())  # every code is a target
    assert int((targets == tok.eoi_id).sum()) == len(samples)  # and so is each image's end: the model learns n


def test_allowed_tokens_force_at_least_one_code_and_at_most_n(tiny):
    _, system, _ = tiny
    config, eoi = system.config, system.tokenizer.eoi_id
    first = allowed_tokens(config, eoi, 0)
    assert not first[eoi] and first[config.text_vocab :].all() and not first[: config.text_vocab].any()
    assert allowed_tokens(config, eoi, 3)[eoi]
    last = allowed_tokens(config, eoi, config.max_image_tokens)
    assert last.sum() == 1 and last[eoi]


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_generation_until_eoi_cache_equals_recompute(tiny, scale):
    model, system, samples = tiny
    prompts = [s["caption"] for s in samples[:3]]
    kwargs = dict(cfg_scale=scale, temperature=1.0, top_k=20, seed=4, precision="fp32", return_codes=True)
    cached = generate_images(model, system, prompts, use_cache=True, **kwargs)
    full = generate_images(model, system, prompts, use_cache=False, **kwargs)
    assert torch.equal(cached, full)
    valid = cached != PAD_CODE
    assert (valid.sum(1) >= 1).all() and not (valid[:, 1:] & ~valid[:, :-1]).any()
    pictures = system.generate_images(model, prompts, cfg_scale=scale, seed=4)
    assert pictures.shape == (3, 3, 16, 16)


def test_variable_length_batches_train(tiny):
    _, system, samples = tiny
    torch.manual_seed(1)
    model = build_model(system.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = [system.collate(samples, task, torch.Generator()) for task in system.tasks]
    first = None
    for _ in range(20):
        loss = sum(system.losses(model, b, torch.Generator())["lm_loss"] for b in batches)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.7 * first, (first, loss.item())  # measured 18.3 -> 11.0


@pytest.mark.slow
def test_recipes_end_to_end(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer_run = train(load_recipe(RECIPES_DIR / "test_lavit_tokenizer.yaml"), tmp_path / "tok", show_progress=False)
        assert tokenizer_run.losses[-1] < 0.5 * tokenizer_run.losses[0]
        run = load_recipe(RECIPES_DIR / "test_lavit.yaml", [f"system_args.image_tokenizer={tmp_path / 'tok' / 'model'}"])
        result = train(run, tmp_path / "lm", show_progress=False)  # variable-length batches train
    assert result.losses[-1] < 0.85 * result.losses[0]
    assert (tmp_path / "lm" / "model" / "image_tokenizer" / "model.safetensors").is_file()
    model, system = load_system(tmp_path / "lm" / "model")
    metrics = evaluate(model, system, EvalConfig(n_prompts=6, n_images=4, batch_size=8)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy"} <= set(metrics)
    tok_model, tok_system = load_system(tmp_path / "tok" / "model")
    recon = evaluate(tok_model, tok_system, EvalConfig(n_images=8)).metrics
    assert 1 <= recon["recon/tokens_per_image"] <= 16 and recon["recon/mse"] < 0.2


def test_the_loops_pad_code_is_the_tokenizers():
    assert PAD_CODE == dynamic.PAD_CODE  # umm/pipelines/ar_dynamic.py keeps its own copy (no import cycle)
