"""Transfusion and MonoFormer: attention layout of real sequences, cached sampling = full recompute, cached
captioning = full recompute, seeded sampling, interleaved generation, and loss falling on tiny recipes."""

from pathlib import Path

import pytest
import torch

import umm.models  # noqa: F401
from umm.data.sequence import TEXT, Sequence, collate
from umm.models.system import load_system
from umm.nn import Layout, attention_mask, unpatchify
from umm.pipelines.diffusion_lm import make_sampler
from umm.samplers import cfg
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



# the U-Net + pooled-text variants keep the pooled text in the KV cache, and the text-attention ones the text
# states their U-Net decoder reads: cached = full recompute checks both
UNET_POOLED = ["model_args.unet=true", "model_args.unet_width=8", "model_args.pooled_text=true"]
TEXT_ATTN = ["model_args.unet=true", "model_args.unet_width=8", "model_args.unet_text_attn=2"]
VARIANTS = {"transfusion": [], "monoformer": [], "transfusion_unet_pooled_textattn": UNET_POOLED + TEXT_ATTN[2:],
            "monoformer_unet_pooled": UNET_POOLED, "monoformer_unet_textattn": TEXT_ATTN,
            # AdaLN-zero in every trunk block: the per-slot condition must follow the cache chunk by chunk
            "transfusion_adaln": ["model_args.pooled_text=true", "model_args.adaln_text=true"],
            "monoformer_adaln": ["model_args.pooled_text=true", "model_args.adaln_text=true"],
            # ... and with clean images (captioning's, committed ones) left unmodulated
            "transfusion_adaln_noisy": ["model_args.pooled_text=true", "model_args.adaln_text=true",
                                        "model_args.adaln_clean=false"]}


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request, tmp_path_factory):
    """A tiny model trained for a few dozen steps (text-to-image and captioning)."""
    out = tmp_path_factory.mktemp(request.param)
    family = request.param.split("_")[0]
    run = load_recipe(RECIPES_DIR / f"test_{family}.yaml", ["train.steps=40", *VARIANTS[request.param]])
    result = train(run, out / "run", show_progress=False)
    model, system = load_system(out / "run" / "model")
    return request.param, model, system, result


def test_loss_falls(trained):
    _, _, _, result = trained
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_image_span_is_bidirectional_and_text_causal(trained):
    _, _, system, _ = trained
    from umm.data.shapes import ShapesWorld

    sample = ShapesWorld("train", canvas=system.config.image_size)[0]
    batch = system.collate([sample], "t2i", torch.Generator().manual_seed(0))
    mask = attention_mask(batch["block"], batch["block"], batch["valid"])[0, 0]
    kinds, block = batch["kinds"][0], batch["block"][0]
    image = (block >= 0).nonzero().flatten()
    text = ((kinds == TEXT) & batch["valid"][0]).nonzero().flatten()
    assert len(image) == system.config.grid**2 + len(system.image_prefix())
    assert mask[image][:, image].all(), "every image slot sees its whole image"
    for i in text:
        visible = mask[i].nonzero().flatten()
        assert visible.max() <= i, "a text token never sees the future"
    after = text[text > image.max()]
    assert mask[after][:, image].all(), "text after the image sees all of it"


def _uncached_images(model, system, prompts, steps, scale, seed, interval=None):
    """Reference: recompute the whole sequence (prompt + image) at every denoising step, no KV cache; guidance
    only at times inside ``interval`` when one is given."""
    tok, config = system.tokenizer, system.config
    generator = torch.Generator().manual_seed(seed)
    n, prefix = config.grid**2, system.image_prefix()
    rows = []
    for p in prompts:
        rows.append([tok.bos_id] + system.text_ids(p) + [tok.boi_id])
    if scale != 1.0:
        rows += [[tok.bos_id, tok.boi_id] for _ in prompts]
    seqs = []
    for ids in rows:
        s = Sequence(pad_id=tok.pad_id).text(ids, loss=False)
        s.image(torch.zeros(n, config.patch_dim), (config.grid, config.grid), loss=False, prefix=prefix)
        seqs.append(s)
    batch = collate(seqs, patch_dim=config.patch_dim, rope_axes=config.transformer.rope_axes, pad_left=True, pad_id=tok.pad_id)
    layout = Layout(batch["block"], batch["positions"], batch["valid"], batch["next_position"])
    x = torch.randn((len(prompts), n, config.patch_dim), generator=generator)

    def denoise(x, t):
        x_in = torch.cat([x, x]) if scale != 1.0 else x
        patches = batch["patches"].clone()
        patches[:, -n:] = x_in
        times = (batch["block"] >= 0) * t[0]
        out = model(batch["tokens"], batch["kinds"], patches, times.float(), layout).image[:, -n:].float()
        if scale != 1.0:
            c, u = out.chunk(2)
            inside = interval is None or interval[0] <= float(t[0]) <= interval[1]
            return cfg(c, u, scale) if inside else c
        return out

    sampler = make_sampler(None, system.path)
    times = system.path.sampling_times(steps)
    for t, t_next in zip(times[:-1], times[1:]):
        x = sampler.step(denoise, x, t, t_next, generator)
    return unpatchify(x.clamp(-1, 1), config.patch, config.channels, config.image_size, config.image_size) * 0.5 + 0.5


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_cached_sampling_equals_full_recompute(trained, scale):
    _, model, system, _ = trained
    prompts = ["a red circle", "two blue squares above a star"]
    cached = system.generate_images(model, prompts, steps=6, cfg_scale=scale, seed=5, precision="fp32")
    full = _uncached_images(model, system, prompts, 6, scale, 5)
    assert cached.shape == (2, 3, system.config.image_size, system.config.image_size)
    assert torch.allclose(cached, full, atol=1e-4), (cached - full).abs().max()


def test_guidance_on_an_interval_equals_its_recompute_and_changes_the_image(trained):
    """cfg_interval: the unguided steps run on the conditional rows alone, through a row view of the cache."""
    _, model, system, _ = trained
    prompts = ["a red circle", "two blue squares above a star"]
    part = system.generate_images(model, prompts, steps=6, cfg_scale=3.0, seed=5, precision="fp32", cfg_interval=(0.4, 1.0))
    full = _uncached_images(model, system, prompts, 6, 3.0, 5, interval=(0.4, 1.0))
    assert torch.allclose(part, full, atol=1e-4), (part - full).abs().max()
    everywhere = system.generate_images(model, prompts, steps=6, cfg_scale=3.0, seed=5, precision="fp32")
    assert not torch.allclose(part, everywhere, atol=1e-4)


def test_seeded_sampling_is_deterministic_and_seeds_differ(trained):
    _, model, system, _ = trained
    a = system.generate_images(model, ["a green star"], steps=4, seed=1, precision="fp32")
    b = system.generate_images(model, ["a green star"], steps=4, seed=1, precision="fp32")
    c = system.generate_images(model, ["a green star"], steps=4, seed=2, precision="fp32")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cached_captioning_equals_greedy_recompute(trained):
    _, model, system, _ = trained
    from umm.data.shapes import ShapesWorld

    tok, config = system.tokenizer, system.config
    images = torch.stack([ShapesWorld("test", canvas=config.image_size)[i]["image"] for i in range(2)])
    cached = system.caption(model, images, max_new_tokens=6, precision="fp32")
    for image, text in zip(images, cached):
        ids: list[int] = []
        for _ in range(6):  # greedy, recomputing the whole sequence every token
            s = Sequence(pad_id=tok.pad_id).text([tok.bos_id, tok.boi_id], loss=False)
            s.image(system.image_patches(image), (config.grid, config.grid), loss=False, prefix=system.image_prefix())
            s.text([tok.eoi_id] + ids, loss=False)
            b = collate([s], patch_dim=config.patch_dim, rope_axes=config.transformer.rope_axes, pad_id=tok.pad_id)
            layout = Layout(b["block"], b["positions"], b["valid"], b["next_position"])
            logits = model(b["tokens"], b["kinds"], b["patches"], torch.zeros(b["tokens"].shape), layout).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eos_id:
                break
            ids.append(nxt)
        assert text == tok.decode(ids)


def test_interleaved_generation_puts_an_image_in_the_stream(trained):
    """BOI opens an image span that is denoised in place and committed clean; decoding then goes on after EOI."""
    name, model, system, _ = trained
    segments = system.generate_interleaved(model, "a red circle", max_new_tokens=6, steps=4, precision="fp32",
                                           force_image=True)
    images = [s for s in segments if torch.is_tensor(s)]
    assert torch.is_tensor(segments[0]), f"{name}: the stream must open with the forced image; got {segments}"
    assert images[0].shape == (3, system.config.image_size, system.config.image_size)
    assert 0.0 <= float(images[0].min()) and float(images[0].max()) <= 1.0


@pytest.mark.parametrize("fold", [1, 2])
def test_unet_patchification_trains_and_samples(tmp_path, fold):
    """Transfusion's U-Net down/up blocks (paper sec. 3.3) in place of the linear patch projection; with
    ``unet_fold`` 2 the U-Net starts on 2x2 pixel blocks (one level fewer for the same patch)."""
    run = load_recipe(RECIPES_DIR / "test_transfusion.yaml",
                      ["train.steps=12", "model_args.unet=true", "model_args.unet_width=8", f"model_args.unet_fold={fold}"])
    result = train(run, tmp_path / "run", show_progress=False)
    assert sum(result.losses[-3:]) < sum(result.losses[:3])
    model, system = load_system(tmp_path / "run" / "model")
    assert model.config.unet and len(model.image_io.unet_in.down) == 3 - fold
    images = system.generate_images(model, ["a red circle"], steps=3, precision="fp32")
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()


@pytest.mark.parametrize("family", ["transfusion", "monoformer"])
def test_vae_latent_option_trains_and_samples_images(family, tmp_path):
    """Diffusion in a frozen KL-VAE's latent space: the model's tokens are latents, outputs are decoded pixels,
    and the saved system carries its VAE."""
    run = load_recipe(RECIPES_DIR / f"test_{family}.yaml",
                      ["train.steps=3", "system_args.image_tokenizer=test_vae", "system_args.latent_scale=1.5",
                       "model_args.patch=1"])
    train(run, tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    assert (tmp_path / "run" / "model" / "image_tokenizer" / "model.safetensors").is_file()
    assert system.image_tokenizer is not None and model.config.latent_channels == system.image_tokenizer.latent_channels
    assert model.config.patch_dim == system.image_tokenizer.latent_channels  # patch 1 over the latent grid
    images = system.generate_images(model, ["a red circle"], steps=2, precision="fp32")
    assert images.shape == (1, 3, model.config.image_size, model.config.image_size)
    captions = system.caption(model, images, max_new_tokens=3, precision="fp32")
    assert len(captions) == 1


def test_understanding_images_can_skip_the_diffusion_loss(trained):
    """``understanding_image_loss=False`` keeps caption/QA images as pure conditions (no diffusion loss on
    them, clean with caption_max_t=0), while text-to-image images keep theirs."""
    import dataclasses

    from umm.data.shapes import ShapesWorld

    name, model, system, _ = trained
    samples = [ShapesWorld("train", canvas=system.config.image_size)[i] for i in range(2)]
    gen = torch.Generator().manual_seed(0)
    assert system.collate(samples, "caption", gen)["image_loss"].any()  # the paper's default
    original = system.options
    system.options = dataclasses.replace(original, understanding_image_loss=False, caption_max_t=0.0)
    try:
        for task in ("caption", "qa"):
            batch = system.collate(samples, task, gen)
            assert not batch["image_loss"].any() and (batch["max_t"] == 0).all()
            losses = system.losses(model, batch, gen)
            assert losses["diffusion_mse"] == 0 and losses["lm_ce"] > 0
        assert system.collate(samples, "t2i", gen)["image_loss"].any()
    finally:
        system.options = original


def test_understanding_times_are_uniform_under_the_cap_even_with_logit_normal(trained):
    from umm.paths import GaussianPath

    _, _, system, _ = trained
    original = system.path
    system.path = GaussianPath(schedule="cosine", parameterization="v", time_sampling="logit_normal", time_mean=3.0)  # t ~ 0.95 typically
    try:
        gen = torch.Generator().manual_seed(0)
        times = system.block_times(torch.tensor([1.0] * 2000 + [0.5] * 2000), 1, gen)
        generated, understood = times[:2000], times[2000:]
        assert generated.mean() > 0.9  # generation keeps its logit-normal weighting
        assert understood.max() <= 0.5 and abs(understood.mean().item() - 0.25) < 0.02  # uniform in [0, 0.5]
    finally:
        system.path = original


def test_adaln_text_lets_the_image_condition_change_every_block(trained):
    """With ``adaln_text`` the image's condition reaches every trunk block: after training, a different
    condition at the image slots changes the trunk's output there, and text slots (condition 0) are untouched
    by it before the image. Without it, the trunk takes no condition at all."""
    name, model, system, _ = trained
    if "adaln" not in name:
        assert model.slot_condition(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.bool), None) is None
        return
    assert all(block.modulation.proj.weight.abs().sum() > 0 for block in model.trunk.blocks), "AdaLN weights stayed 0"
    from umm.data.shapes import ShapesWorld

    sample = ShapesWorld("train", canvas=system.config.image_size)[0]
    batch = system.collate([sample], "t2i", torch.Generator().manual_seed(0))
    layout = Layout.of(batch)
    x = torch.randn(*batch["tokens"].shape, model.config.transformer.dim)
    image = batch["block"] >= 0
    cond = torch.randn(1, x.shape[-1])
    noisy = torch.tensor([0.5])  # the image's diffusion time
    h = [model.trunk(x, layout, cond=model.slot_condition(x, image, cond * s, noisy)) for s in (0.0, 3.0)]
    first_image = int(image[0].nonzero()[0])
    assert (h[0][image] - h[1][image]).abs().max() > 1e-3, "the condition does not reach the image slots"
    assert torch.equal(h[0][0, :first_image], h[1][0, :first_image]), "text before the image read the image's condition"
    clean = [model.trunk(x, layout, cond=model.slot_condition(x, image, cond * s, torch.zeros(1))) for s in (0.0, 3.0)]
    if model.config.adaln_clean:
        assert (clean[0][image] - clean[1][image]).abs().max() > 1e-3, "a clean image's condition does not reach it"
    else:  # a clean image (t = 0) is read as text is: its condition changes nothing
        assert torch.equal(clean[0], clean[1]), "a clean image was modulated with adaln_clean=false"
        assert torch.equal(clean[0], h[0]), "a clean image is not read as a zero condition"
