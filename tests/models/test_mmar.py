"""What is specific to MMAR: masked vs raster layouts, the masked-AR sampler's schedule and loop, the head's
targets, clean images for understanding, KV cache = recompute, a tiny recipe whose loss falls."""

import math
from pathlib import Path

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.sequence import PATCH, Sequence, batch_rng, collate, drop_final_slot
from umm.data.shapes import ShapesWorld
from umm.models.factory import build_model, model_config
from umm.models.mmar import MMAROptions, MMARSystem
from umm.nn import Layout, attention_mask
from umm.pipelines import masked_ar
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.recipes import RECIPES_DIR

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


@pytest.fixture(scope="module")
def samples():
    world = ShapesWorld("train", canvas=16)
    return [world[i] for i in range(4)]


def make(tokenizer, pooled_text: bool = False, **options):
    torch.manual_seed(0)
    model = build_model(model_config("test_mmar", {"vocab_size": tokenizer.vocab_size, "pooled_text": pooled_text}))
    if pooled_text:  # a trained pool: its last layer is not zero, so a wrong running mean would show
        torch.nn.init.normal_(model.text_pool.mlp[-1].weight, std=0.5)
    return model.eval(), MMARSystem(tokenizer, model.config, MMAROptions(**options))


def layout_of(batch) -> Layout:
    return Layout(batch["block"], batch["positions"], batch["valid"], batch["next_position"])


def forward(model, batch, patches=None):
    return model(batch["tokens"], batch["kinds"], batch["patches"] if patches is None else patches, batch["masked"],
                 layout_of(batch))


# ---- the masked-AR schedule and loop ------------------------------------------------------------------------


@pytest.mark.parametrize("n, iterations", [(16, 4), (64, 16), (64, 64), (64, 1), (256, 64)])
def test_unmask_counts_follow_the_cosine_schedule(n, iterations):
    counts = masked_ar.unmask_counts(n, iterations)
    assert len(counts) == iterations and sum(counts) == n and min(counts) >= 1
    remaining = n - torch.tensor(counts).cumsum(0)
    for i, left in enumerate(remaining.tolist()[:-1]):
        ideal = math.floor(n * math.cos(math.pi / 2 * (i + 1) / iterations))
        assert left == min(max(ideal, iterations - 1 - i), n - sum(counts[:i]) - 1)
    if 1 < iterations < n // 2:
        assert counts[0] < counts[-1], "MaskGIT's cosine schedule samples few tokens first, many last"


def test_unmask_counts_reject_more_iterations_than_tokens():
    with pytest.raises(UmmError, match="iterations"):
        masked_ar.unmask_counts(16, 17)


def test_masked_sampler_unmasks_every_token_once_in_its_iterations(tokenizer):
    """Record the canvas each image-span forward sees: [MASK] count falls by the schedule, a revealed patch
    never changes afterwards, and the image is complete after exactly ``iterations`` forwards."""
    model, system = make(tokenizer, iterations=5)
    seen = []

    def record(module, args):
        tokens, kinds, patches, masked = args[:4]
        if bool((kinds == PATCH).all()):  # the image span (the prompt prefill is text only)
            seen.append((patches.clone(), masked.clone()))

    handle = model.register_forward_pre_hook(record)
    images = system.generate_images(model, ["a red circle", "a blue star"], steps=3, cfg_scale=2.0, precision="fp32")
    handle.remove()
    n = system.config.grid**2
    assert images.shape == (2, 3, 16, 16)
    assert len(seen) == 5, "one forward of the image span per iteration"
    expected_masked = n - torch.tensor([0] + masked_ar.unmask_counts(n, 5)[:-1]).cumsum(0)
    for (patches, masked), count in zip(seen, expected_masked.tolist()):
        assert patches.shape[0] == 4, "conditional and unconditional rows share one batch"
        assert torch.equal(masked[:2], masked[2:]) and torch.equal(patches[:2], patches[2:])
        assert (masked.sum(1) == count).all()
        assert (patches[masked] == 0).all() and (patches[~masked].abs().sum(-1) > 0).all()
    for (before, m_before), (after, _) in zip(seen[:-1], seen[1:]):
        assert torch.equal(before[~m_before], after[~m_before]), "revealed tokens are final"
    # the last iteration samples exactly the tokens still masked: the image is then complete
    assert int(seen[-1][1][0].sum()) == masked_ar.unmask_counts(n, 5)[-1]


def test_sampling_is_seeded_and_bad_options_are_one_clear_error(tokenizer):
    model, system = make(tokenizer, iterations=4)
    a = system.generate_images(model, ["a red circle"], steps=2, seed=3, precision="fp32")
    b = system.generate_images(model, ["a red circle"], steps=2, seed=3, precision="fp32")
    c = system.generate_images(model, ["a red circle"], steps=2, seed=4, precision="fp32")
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(UmmError, match="iterations"):
        system.generate_images(model, ["x"], iterations=17)
    with pytest.raises(UmmError, match="temperature"):
        system.generate_images(model, ["x"], sampler="ddim", temperature=0.5)
    with pytest.raises(UmmError, match="head sampler"):
        system.generate_images(model, ["x"], sampler="euler")
    with pytest.raises(UmmError, match="order"):
        make(tokenizer, order="zigzag")
    _, raster = make(tokenizer, order="raster")
    with pytest.raises(UmmError, match="raster"):
        raster.generate_images(model, ["x"], iterations=4)


# ---- layouts: masked is bidirectional in the image, raster is causal ------------------------------------------


@pytest.mark.parametrize("task", ["t2i", "caption"])
def test_scoring_only_text_target_slots_gives_the_full_next_token_loss(tokenizer, samples, task):
    """``logit_rows``: training scores the LM head only where a text target is; the loss is the one of scoring
    every slot, and the logits of those rows are the full forward's."""
    from umm.objectives import IGNORE, next_token_loss

    model, system = make(tokenizer)
    batch = system.collate(samples, task, torch.Generator().manual_seed(0))
    full = forward(model, batch).logits  # (B, T, V)
    text = batch["text_targets"] != IGNORE
    rows = model(batch["tokens"], batch["kinds"], batch["patches"], batch["masked"], layout_of(batch),
                 logit_rows=text).logits  # (R, V)
    torch.testing.assert_close(rows, full[text])
    lm = system.losses(model, batch, torch.Generator().manual_seed(0))["lm_loss"]
    torch.testing.assert_close(lm, next_token_loss(full, batch["text_targets"]))


@pytest.mark.parametrize("task", ["t2i", "caption"])
def test_the_final_eos_slot_is_not_fed_and_no_output_changes(tokenizer, samples, task):
    """Training batches drop the last slot ([EOS] or padding: no target, and no causal slot reads it), so every
    kept slot's hidden state is the one of the full sequence, and a batch whose last slot is read is refused."""
    model, system = make(tokenizer, order="raster")
    tokens = system.image_tokens(torch.stack([s["image"] for s in samples]))
    rng = batch_rng(torch.Generator().manual_seed(0))
    seqs = [system.build(s, x, task, rng) for s, x in zip(samples, tokens)]
    config = system.config
    full = collate(seqs, None, config.patch_dim, config.transformer.rope_axes, pad_id=tokenizer.pad_id)
    full["masked"] = torch.zeros_like(full["image_loss"])
    trimmed = drop_final_slot(full)
    assert trimmed["tokens"].shape[1] == max(len(s) for s in seqs) - 1
    assert system.collate(samples, task, torch.Generator().manual_seed(0))["tokens"].shape == trimmed["tokens"].shape
    torch.testing.assert_close(forward(model, trimmed).hidden, forward(model, full).hidden[:, :-1])
    # a sequence that ends inside an image span (its last patch carries a loss) cannot lose its last slot
    open_image = Sequence(pad_id=tokenizer.pad_id).text([tokenizer.bos_id, tokenizer.boi_id], loss=True)
    open_image.image(tokens[0], (config.grid, config.grid), loss=True)
    batch = collate([open_image], None, config.patch_dim, config.transformer.rope_axes, pad_id=tokenizer.pad_id)
    with pytest.raises(ValueError, match="cannot be dropped"):
        drop_final_slot(batch)


def test_masked_training_hides_a_truncated_normal_share_of_each_target_image(tokenizer, samples):
    _, system = make(tokenizer)
    ratios = system.mask_ratios(2000, torch.Generator().manual_seed(0))
    assert ratios.min() >= 0.7 and ratios.max() <= 1.0 and ratios.mean() > 0.85  # mass piles up near 1
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    n = system.config.grid**2
    counts = batch["masked"].sum(1)
    assert (counts >= math.ceil(0.7 * n)).all() and (counts <= n).all()
    assert not (batch["masked"] & ~batch["image_loss"]).any(), "only target image slots are masked"
    caption = system.collate(samples, "caption", torch.Generator().manual_seed(0))
    assert not caption["masked"].any() and not caption["image_loss"].any(), "understanding sees the clean image"


def test_raster_variant_matches_a_causal_layout(tokenizer, samples):
    model, system = make(tokenizer, order="raster")
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    assert (batch["block"] == -1).all() and not batch["masked"].any()
    t = batch["tokens"].shape[1]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))[None] & batch["valid"][:, None, :]
    causal = causal | torch.eye(t, dtype=torch.bool)[None]
    assert torch.equal(attention_mask(batch["block"], batch["block"], batch["valid"])[:, 0], causal)
    # the image keeps its 2D grid positions (row, col) although it is causal
    grid = system.config.grid
    image = batch["kinds"][0] == PATCH
    pos = batch["positions"][0][image]
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    assert torch.equal(pos - pos[0], torch.stack([rows.flatten(), cols.flatten()], -1))
    # perturbing a patch changes no output before it (raster) but does change earlier image slots (masked)
    slots = image.nonzero().squeeze(1)
    j = int(slots[grid**2 // 2])
    bumped = batch["patches"].clone()
    bumped[0, j] += 1.0
    with torch.no_grad():
        a, b = forward(model, batch).hidden, forward(model, batch, bumped).hidden
    assert torch.allclose(a[0, :j], b[0, :j], atol=1e-6) and not torch.allclose(a[0, j], b[0, j])
    masked_model, masked_system = make(tokenizer, order="masked")
    mbatch = masked_system.collate(samples, "caption", torch.Generator().manual_seed(0))
    slots = (mbatch["kinds"][0] == PATCH).nonzero().squeeze(1)
    j = int(slots[grid**2 // 2])
    bumped = mbatch["patches"].clone()
    bumped[0, j] += 1.0
    with torch.no_grad():
        a, b = forward(masked_model, mbatch).hidden, forward(masked_model, mbatch, bumped).hidden
    assert not torch.allclose(a[0, slots[0]], b[0, slots[0]], atol=1e-6), "bidirectional inside the image"


def test_head_targets_are_masked_slots_or_the_next_patch(tokenizer, samples):
    _, masked = make(tokenizer)
    batch = masked.collate(samples, "t2i", torch.Generator().manual_seed(0))
    rows, x0 = masked.head_targets(batch)
    assert torch.equal(rows, batch["masked"]) and torch.equal(x0, batch["patches"][rows])
    _, raster = make(tokenizer, order="raster")
    batch = raster.collate(samples, "t2i", torch.Generator().manual_seed(0))
    rows, x0 = raster.head_targets(batch)
    n = raster.config.grid**2
    assert (rows.sum(1) == n).all()
    first = (batch["kinds"][0] == PATCH).nonzero()[0, 0]
    assert rows[0, first - 1] and batch["tokens"][0, first - 1] == tokenizer.boi_id, "[BOI] models the first patch"
    assert not rows[0, first + n - 1], "the last patch models no patch"
    torch.testing.assert_close(x0[:n], batch["patches"][0, first : first + n])


def test_trunk_never_sees_noise_only_clean_patches_or_mask(tokenizer, samples):
    """The trunk's input is a deterministic function of the clean batch: the head's noise cannot reach it."""
    model, system = make(tokenizer)
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = system.losses(model, batch, torch.Generator().manual_seed(1))
        b = system.losses(model, batch, torch.Generator().manual_seed(2))
    assert torch.equal(a["lm_loss"], b["lm_loss"]) and not torch.equal(a["diffusion_mse"], b["diffusion_mse"])


# ---- KV cache = recompute ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order,pooled", [("masked", False), ("raster", False), ("masked", True)])
def test_caption_with_cache_matches_recompute(tokenizer, samples, order, pooled):
    model, system = make(tokenizer, pooled_text=pooled, order=order)
    images = torch.stack([s["image"] for s in samples[:2]])
    cached = system.caption(model, images, max_new_tokens=6, precision="fp32")
    for image, text in zip(images, cached):
        ids = []
        for _ in range(6):  # greedy, re-running the whole sequence every step
            seq = system.image_prompt(system.image_tokens(image[None])[0], None).text(ids, loss=False)
            full = collate([seq], patch_dim=system.config.patch_dim, rope_axes=2, pad_id=tokenizer.pad_id)
            full["masked"] = torch.zeros_like(full["image_loss"])
            with torch.no_grad():
                token = int(forward(model, full).logits[0, -1].argmax())
            if token == tokenizer.eos_id:
                break
            ids.append(token)
        assert text == tokenizer.decode(ids)


@pytest.mark.parametrize("pooled", [False, True])
def test_masked_image_span_with_cache_matches_full_forward(tokenizer, samples, pooled):
    """With ``pooled_text`` the text's running mean must also carry over from the cached prompt to the span."""
    model, system = make(tokenizer, pooled_text=pooled)
    batch = system.collate(samples[:2], "t2i", torch.Generator().manual_seed(0))
    start = int((batch["kinds"][0] == PATCH).nonzero()[0, 0])
    n = system.config.grid**2
    one = {k: v[:1] for k, v in batch.items()}
    assert (one["kinds"][0, start : start + n] == PATCH).all() and one["masked"][0].any()
    with torch.no_grad():
        full = forward(model, one).hidden[0, start : start + n]
        cache = model.new_cache(1, start + n)
        prefix = layout_of(one)[:start]
        model(one["tokens"][:, :start], one["kinds"][:, :start], one["patches"][:, :start], one["masked"][:, :start],
              prefix, cache=cache)
        span = layout_of(one)[start : start + n]
        for _ in range(2):  # commit=False: a second run overwrites the same slots
            chunk = model(one["tokens"][:, start : start + n], one["kinds"][:, start : start + n],
                          one["patches"][:, start : start + n], one["masked"][:, start : start + n], span,
                          cache=cache, commit=False).hidden[0]
    torch.testing.assert_close(chunk, full, atol=1e-5, rtol=1e-5)


# ---- the tiny recipe ---------------------------------------------------------------------------------------


def test_tiny_recipe_loss_falls(tmp_path):
    from umm.training.loop import train
    from umm.training.recipe import load_recipe

    run = load_recipe(RECIPES_DIR / "test_mmar.yaml", ["train.steps=30", "train.log_every=30"])
    result = train(run, tmp_path / "run", show_progress=False)
    assert result.step == 30
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    from umm.models.system import load_system

    model, system = load_system(tmp_path / "run" / "model")
    assert system.options.parameterization == "v" and system.options.order == "masked"
    images = system.generate_images(model, ["a red circle"], steps=2)
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()


# ---- VAE latents as image tokens ------------------------------------------------------------------------------


def test_vae_latents_are_the_image_tokens(tokenizer, samples, tmp_path):
    from umm.models.system import load_system, save_system

    options = MMAROptions(image_tokenizer="test_vae", latent_scale=0.5, iterations=4)
    overrides = MMARSystem.model_overrides(tokenizer, options)
    assert overrides["latent_channels"] == 4 and overrides["latent_grid"] == 4 and overrides["image_size"] == 16
    torch.manual_seed(0)
    model = build_model(model_config("test_mmar", overrides)).eval()
    system = MMARSystem(tokenizer, model.config, options)
    images = torch.stack([s["image"] for s in samples])
    tokens = system.image_tokens(images)  # (B, 16 latent positions, 4 channels)
    latents = system.image_tokenizer.encode(images)
    assert tokens.shape == (4, 16, 4) and torch.allclose(tokens[0, 5], 0.5 * latents[0, :, 1, 1])
    decoded = system.tokens_to_images(tokens)
    assert torch.allclose(decoded, system.image_tokenizer.decode(latents), atol=1e-6)
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    assert torch.equal(batch["patches"][batch["image_loss"]], tokens.flatten(0, 1)), "clean latents in the sequence"
    losses = system.losses(model, batch, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values()) and losses["diffusion_mse"] > 0
    generated = system.generate_images(model, ["a red circle"], steps=2, precision="fp32")
    assert generated.shape == (1, 3, 16, 16) and generated.min() >= 0 and generated.max() <= 1
    assert len(system.caption(model, images[:2], max_new_tokens=3, precision="fp32")) == 2
    save_system(tmp_path / "m", model, system)
    loaded, loaded_system = load_system(tmp_path / "m")
    again = loaded_system.losses(loaded, batch, torch.Generator().manual_seed(0))
    assert all(torch.equal(losses[k], again[k]) for k in losses), "the VAE is saved with the system"
    # MAR's patch over latents: a 2x2 block of latents a token, a 2x2 grid of 16-d tokens, decoded back exactly
    blocks = build_model(model_config("test_mmar", {**overrides, "latent_patch": 2}))
    block_system = MMARSystem(tokenizer, blocks.config, MMAROptions(image_tokenizer="test_vae", latent_scale=0.5,
                                                                     iterations=4))
    block_tokens = block_system.image_tokens(images)  # (B, 4 blocks, 4 channels x 2 x 2)
    assert block_tokens.shape == (4, 4, 16)
    assert torch.allclose(block_tokens[0, 3].view(4, 2, 2), 0.5 * latents[0, :, 2:, 2:])  # the bottom-right block
    assert torch.allclose(block_system.tokens_to_images(block_tokens), decoded, atol=1e-6)
    block_batch = block_system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    assert int(block_batch["image_loss"][0].sum()) == 4
    assert torch.isfinite(block_system.losses(blocks, block_batch, torch.Generator().manual_seed(0))["diffusion_loss"])
    assert block_system.generate_images(blocks, ["a red circle"], steps=2, precision="fp32").shape == (1, 3, 16, 16)
    with pytest.raises(UmmError, match="latent_patch must divide"):
        MMARSystem(tokenizer, model_config("test_mmar", {**overrides, "latent_patch": 3}),
                   MMAROptions(image_tokenizer="test_vae"))
    with pytest.raises(UmmError, match="is a 'vq'; diffusion needs continuous latents"):
        MMARSystem.model_overrides(tokenizer, MMAROptions(image_tokenizer="test_vq"))
    with pytest.raises(UmmError, match="image_tokenizer is unset"):
        MMARSystem(tokenizer, model.config, MMAROptions())
