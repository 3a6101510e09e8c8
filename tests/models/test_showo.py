"""Show-o: omni-attention, masked-token batches, the MaskGIT pipeline (cache = recompute, CFG s=0 = none,
inpainting keeps the unmasked codes), KV-cache captioning = full recompute, and a tiny recipe end to end."""

import warnings

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.sequence import collate
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.factory import build_model, model_config
from umm.models.showo import ShowoOptions, ShowoSystem
from umm.models.system import load_system
from umm.nn import Layout
from umm.objectives import IGNORE
from umm.pipelines import ar, maskgit
from umm.pipelines.decode import decode_tokens
from umm.samplers import annealed_choice_temperature, mask_schedule, maskgit_step, muse_cfg
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR


@pytest.fixture(scope="module", params=[False, True], ids=["rope", "grid_embedding"])
def tiny(request):
    """An untrained tiny Show-o, with RoPE alone and with MaskGIT's learned grid embedding (model_args.grid_embedding):
    the cache and recompute tests check that a left-padded full recompute puts every code in the same cell."""
    tokenizer = TextTokenizer.train(shapes_corpus(2000), 384)
    options = ShowoOptions(image_tokenizer="test_lfq")  # a frozen part is named explicitly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained test tokenizer warns
        torch.manual_seed(0)
        overrides = {**ShowoSystem.model_overrides(tokenizer, options), "grid_embedding": request.param}
        model = build_model(model_config("test_showo", overrides)).eval()
        if request.param:
            with torch.no_grad():
                model.grid_embed.normal_(std=1.0)  # large enough that a wrong cell would change the logits
        system = ShowoSystem(tokenizer, model.config, options)
    world = ShapesWorld("train", canvas=16, max_objects=2)
    return model, system, [world[i] for i in range(6)]


def test_t2i_batch_masks_codes_and_targets_the_originals(tiny):
    _, system, samples = tiny
    tok, text_vocab = system.tokenizer, system.config.text_vocab
    codes = system.image_tokenizer.encode(torch.stack([s["image"] for s in samples])).flatten(1)  # (B, 16)
    fractions = []
    for seed in range(10):
        batch = system.collate(samples, "t2i", torch.Generator().manual_seed(seed))
        for i in range(len(samples)):
            row = batch["tokens"][i].tolist()
            boi = row.index(tok.boi_id)
            image = batch["tokens"][i, boi + 1 : boi + 17]
            targets = batch["image_targets"][i, boi + 1 : boi + 17]
            masked = image == tok.mask_id
            assert masked.any()  # at least one code is masked
            assert torch.equal(targets[masked], codes[i][masked])  # masked slots predict their own code
            assert (targets[~masked] == IGNORE).all()
            assert torch.equal(image[~masked], codes[i][~masked] + text_vocab)  # the rest are visible codes
            assert (batch["image_targets"][i, : boi + 1] == IGNORE).all()
            assert (batch["block"][i, boi + 1 : boi + 17] >= 0).all()  # one bidirectional span
            assert (batch["block"][i, : boi + 1] == -1).all()
            fractions.append(float(masked.float().mean()))
    assert min(fractions) < 0.4 and max(fractions) > 0.8  # the cosine ratio spans the range


def test_caption_dropout_and_the_lm_part(tiny):
    _, system, samples = tiny
    batch = system.collate(samples * 8, "t2i", torch.Generator().manual_seed(0))
    lengths = [row.tolist().index(system.tokenizer.boi_id) for row in batch["tokens"]]
    dropped = sum(n == 1 for n in lengths)  # "<t2i> <boi>": no caption
    assert 0 < dropped < len(lengths) // 3  # ~10% of 48
    # the caption tokens (and BOI after a caption) are NTP targets; nothing after BOI is a text target
    targets = batch["text_targets"]
    for i, boi in enumerate(lengths):
        assert (targets[i, boi:] == IGNORE).all()
        assert (targets[i, :boi] != IGNORE).all() == (boi > 1)


def test_understanding_batches_show_clean_images_and_train_text(tiny):
    _, system, samples = tiny
    codes = system.image_tokenizer.encode(torch.stack([s["image"] for s in samples])).flatten(1)
    for task in ("caption", "qa"):
        batch = system.collate(samples, task, torch.Generator().manual_seed(3))
        assert (batch["image_targets"] == IGNORE).all()
        assert not (batch["tokens"] == system.tokenizer.mask_id).any()
        row = batch["tokens"][0].tolist()
        assert row[0] == system.tokenizer.mmu_id
        boi = row.index(system.tokenizer.boi_id)
        assert torch.equal(batch["tokens"][0, boi + 1 : boi + 17], codes[0] + system.config.text_vocab)
        assert (batch["text_targets"] == system.tokenizer.eos_id).sum() == len(samples)
        assert not (batch["text_targets"] >= system.config.text_vocab).any()


def test_omni_attention_bidirectional_image_causal_text(tiny):
    model, system, samples = tiny
    batch = system.collate(samples[:1], "caption", torch.Generator())
    tokens, layout = batch["tokens"], Layout.of(batch)
    boi = tokens[0].tolist().index(system.tokenizer.boi_id)
    changed = tokens.clone()
    last = boi + 16  # the last code of the image
    changed[0, last] = system.config.text_vocab + (int(tokens[0, last]) - system.config.text_vocab + 1) % 64
    with torch.no_grad():
        a, b = model(tokens, layout).logits, model(changed, layout).logits
    assert torch.equal(a[0, : boi + 1], b[0, : boi + 1])  # text before the image never sees it
    assert not torch.allclose(a[0, boi + 1], b[0, boi + 1])  # the first code sees the last one
    assert not torch.allclose(a[0, last + 1], b[0, last + 1])  # text after the image sees it


def test_losses_are_named_by_show_o_objective(tiny):
    model, system, samples = tiny
    t2i = system.losses(model, system.collate(samples, "t2i", torch.Generator()), torch.Generator())
    assert {"t2i_loss", "lm_loss"} <= set(t2i)
    torch.testing.assert_close(t2i["lm_loss"], 0.1 * t2i["lm_ce"])
    assert set(system.losses(model, system.collate(samples, "qa", torch.Generator()), torch.Generator())) == {"mmu_loss"}
    off = ShowoSystem(system.tokenizer, system.config, ShowoOptions(lm_weight=0.0), image_tokenizer=system.image_tokenizer)
    assert set(off.losses(model, off.collate(samples, "t2i", torch.Generator()), torch.Generator())) == {"t2i_loss"}


def test_kv_cache_captioning_equals_full_recompute(tiny):
    model, system, samples = tiny
    images = torch.stack([s["image"] for s in samples[:3]])
    codes = ar.encode_images(system, images)
    seqs = [system.understanding_prompt(c, q) for c, q in zip(codes, [None, "what colour is the shape?", None])]
    tokens, layout = ar.prompt_batch(system, seqs, "cpu")
    with torch.no_grad():
        cached, first_cached = ar.cached_steps(model, tokens, layout, 12)
        full, first_full = ar.recompute_steps(model, tokens, layout)
        torch.testing.assert_close(first_cached, first_full, rtol=1e-4, atol=1e-4)
        ids_cached = decode_tokens(cached, first_cached, layout.next_position, 12, -1)  # never stops: 12 tokens
        ids_full = decode_tokens(full, first_full, layout.next_position, 12, -1)
    assert ids_cached == ids_full and len(ids_cached[0]) == 12
    assert system.caption(model, images[:1], precision="fp32", max_new_tokens=12) == [
        system.tokenizer.decode(ids_cached[0][: ids_cached[0].index(system.tokenizer.eos_id)]
                                if system.tokenizer.eos_id in ids_cached[0] else ids_cached[0])]


def recompute_maskgit(model, system, prompts, codes, masked, steps, scale, seed, guided):
    """MaskGIT without a cache: every iteration re-reads prompt + canvas (Show-o's released loop)."""
    generator = torch.Generator().manual_seed(seed)
    low, high = system.code_range()
    remaining = mask_schedule(masked.sum(-1), steps)
    for i in range(steps):
        seqs = []
        for branch in ([prompts, [None] * len(prompts)] if guided else [prompts]):
            for p, c, m in zip(branch, codes, masked):
                seq = system.t2i_prompt(p)
                seq.image(None, (system.config.grid,) * 2, loss=False, bidirectional=True,
                          token_ids=torch.where(m, system.tokenizer.mask_id, c + low).tolist())
                seqs.append(seq)
        batch = collate(seqs, rope_axes=2, pad_left=True, pad_id=system.tokenizer.pad_id)
        with torch.no_grad():
            logits = model(batch["tokens"], Layout.of(batch)).logits[:, -codes.shape[1]:, low:high].float()
        if guided:
            logits = muse_cfg(*logits.chunk(2), scale)
        codes, masked = maskgit_step(logits, codes, masked, remaining[:, i], 1.0,
                                     annealed_choice_temperature(4.5, i, steps), generator)
    return codes


@pytest.mark.parametrize("scale", [0.0, 50.0])  # an untrained model barely separates the branches
def test_cached_maskgit_equals_full_recompute_and_s0_is_no_guidance(tiny, scale):
    model, system, samples = tiny
    prompts = [s["caption"] for s in samples[:3]]
    cached = maskgit.generate_images(model, system, prompts, steps=6, cfg_scale=scale, seed=5, precision="fp32",
                                     return_codes=True).flatten(1)
    start = torch.zeros(3, 16, dtype=torch.long)
    full = recompute_maskgit(model, system, prompts, start, torch.ones(3, 16, dtype=torch.bool), 6, scale, 5,
                             guided=scale != 0.0)
    assert torch.equal(cached, full)
    if scale == 0.0:  # running the unconditional branch and combining with s = 0 changes nothing
        both = recompute_maskgit(model, system, prompts, start, torch.ones(3, 16, dtype=torch.bool), 6, 0.0, 5,
                                 guided=True)
        assert torch.equal(both, cached)
    else:
        unguided = maskgit.generate_images(model, system, prompts, steps=6, cfg_scale=0.0, seed=5, precision="fp32",
                                           return_codes=True).flatten(1)
        assert not torch.equal(unguided, cached)


def test_inpainting_regenerates_only_the_region(tiny):
    model, system, samples = tiny
    images = torch.stack([s["image"] for s in samples[:3]])
    region = torch.zeros(3, 16, 16, dtype=torch.bool)
    region[0, :8, :8] = True  # top-left quarter: code rows/cols 0-1
    region[1, 5, 5] = True  # one pixel: its code cell (1, 1) only
    region[2, :, 12:] = True  # right column of codes
    original = ar.encode_images(system, images)  # (3, 4, 4)
    out = system.inpaint(model, images, region, [s["caption"] for s in samples[:3]], steps=4, cfg_scale=1.5,
                         precision="fp32", return_codes=True)
    grid_region = maskgit.region_to_grid(region, 4).view(3, 4, 4)
    assert int(grid_region[0].sum()) == 4 and int(grid_region[1].sum()) == 1 and int(grid_region[2].sum()) == 4
    assert torch.equal(out[~grid_region], original[~grid_region])  # bit-exact outside the region
    assert not torch.equal(out[grid_region], original[grid_region])  # an untrained model does change the region
    pictures = system.inpaint(model, images, region, steps=4, precision="fp32")  # unconditional, as images
    assert pictures.shape == images.shape
    with pytest.raises(UmmError, match="guidance needs text"):
        system.inpaint(model, images, region, steps=4, cfg_scale=2.0)
    with pytest.raises(UmmError, match="inpainting region"):
        system.inpaint(model, images, region[:, :15], [""] * 3, steps=4)


def test_sampler_and_tokenizer_choices_are_checked(tiny):
    model, system, _ = tiny
    with pytest.raises(UmmError, match="MaskGIT"):
        system.generate_images(model, ["a star"], sampler="ddim")
    for name in ("test_rq", "test_vae"):
        with pytest.raises(UmmError, match="one code per position"):
            ShowoSystem.model_overrides(system.tokenizer, ShowoOptions(image_tokenizer=name))


def test_tiny_recipe_trains_saves_and_runs_every_capability(tmp_path):
    run = load_recipe(RECIPES_DIR / "test_showo.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(run, tmp_path, show_progress=False)
    assert result.losses[-1] < 0.85 * result.losses[0]
    assert (tmp_path / "model" / "image_tokenizer" / "model.safetensors").is_file()
    model, system = load_system(tmp_path / "model")
    images = system.generate_images(model, ["a red circle", "two blue squares"], steps=4, cfg_scale=2.0, seed=0)
    assert images.shape == (2, 3, 16, 16) and 0 <= float(images.min()) and float(images.max()) <= 1
    world = ShapesWorld("heldout", canvas=16, max_objects=2)
    pics = torch.stack([world[i]["image"] for i in range(2)])
    assert all(isinstance(c, str) for c in system.caption(model, pics))
    assert len(system.answer(model, pics, ["how many shapes are there?"] * 2)) == 2
    metrics = evaluate(model, system, EvalConfig(n_prompts=6, n_images=4, batch_size=8, steps=4)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy"} <= set(metrics)
