"""The conditional diffusion decoder: one bidirectional span of condition + patches, frozen conditions (fixed
shape, zero after the caption, cache = fresh), CFG's null condition, a decoder that learns a conditional
mapping and samples it back, and the tiny recipe end to end through the eval harness."""


import pytest
import torch
import torch.nn.functional as F

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.config import ConfigError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.cond_decoder import ENCODERS_DIR, CondDecoderOptions, CondDecoderSystem
from umm.models.factory import build_model, model_config
from umm.models.system import load_system
from umm.nn import patchify
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


# the bench-level design: U-Net patchification and the pooled condition in every AdaLN (model_args)
UNET_POOLED = {"unet": True, "unet_width": 16, "patch": 4, "unet_fold": 1, "pooled_context": True}


def make(tokenizer, model_args: dict | None = None, **options):
    opts = CondDecoderOptions(**{"encoders": "test_imagebind", **options})
    torch.manual_seed(0)
    overrides = {**CondDecoderSystem.model_overrides(tokenizer, opts), **(model_args or {})}
    model = build_model(model_config("test_cond_decoder", overrides))
    return model.eval(), CondDecoderSystem(tokenizer, model.config, opts)


@pytest.fixture(scope="module")
def world():
    w = ShapesWorld("train", canvas=16, max_objects=2, modalities=("image", "caption"))
    return [w[i] for i in range(6)]


def test_condition_and_patches_form_one_bidirectional_span(tokenizer):
    model, system = make(tokenizer)
    config = model.config
    x = torch.randn(2, config.grid**2, config.patch_dim)
    t = torch.tensor([0.5, 0.5])
    ctx = torch.randn(2, config.context_tokens, config.context_dim)
    base = model(x, t, ctx)
    # the condition reaches every patch
    other = model(x, t, ctx + torch.randn_like(ctx))
    assert ((other - base).abs().amax(-1) > 0).all()
    # the last patch is seen by the first (no causal order inside the image)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert (model(x2, t, ctx)[:, 0] - base[:, 0]).abs().amax() > 0
    # rows are independent
    x3 = x.clone()
    x3[1] += 1.0
    assert torch.equal(model(x3, t, ctx)[0], base[0])


def test_text_condition_has_a_fixed_shape_and_is_zero_after_the_caption(tokenizer):
    _, system = make(tokenizer, max_text_tokens=12)
    texts = ["a red circle", "there is a large green square in the bottom left corner and a small star"]
    ctx = system.text_condition(texts)
    assert ctx.shape == (2, 13, system.encoders.text_dim)
    n = len(tokenizer.encode(texts[0]))
    assert ctx[0, : 1 + n].abs().sum(-1).gt(0).all() and ctx[0, 1 + n :].abs().sum() == 0
    assert ctx[1].abs().sum(-1).gt(0).all()  # cut at 12 tokens, none left over


def test_cached_text_condition_equals_a_fresh_one_in_any_batch(tokenizer):
    _, system = make(tokenizer)
    first = system.text_condition(["a red circle", "two blue squares"])
    misses = system.encoders.cache_misses
    again = system.text_condition(["a yellow star", "two blue squares", "a red circle"])
    assert system.encoders.cache_misses == misses + 1 and system.encoders.cache_hits >= 2
    _, fresh_system = make(tokenizer)
    fresh = fresh_system.text_condition(["a red circle"])
    assert torch.equal(again[2], first[0]) and torch.equal(fresh[0], first[0])


def test_image_condition_is_cls_plus_the_pooled_feature_grid(tokenizer, world):
    _, system = make(tokenizer, condition="image", image_pool=2)
    images = torch.stack([s["image"] for s in world[:2]])
    ctx = system.image_condition(images)
    features = system.encoders.image_features(images)  # (B, 1 + 16, E) for a 4x4 grid
    grid = features[:, 1:].reshape(2, 4, 4, -1)
    manual = grid.reshape(2, 2, 2, 2, 2, -1).mean(dim=(2, 4)).reshape(2, 4, -1)
    assert ctx.shape == (2, 5, features.shape[-1])
    assert torch.equal(ctx[:, 0], features[:, 0]) and torch.allclose(ctx[:, 1:], manual, atol=1e-6)
    assert system.tasks == ("detokenize",) and "t2i" not in system.capabilities
    with pytest.raises(UmmError, match="conditioned on image"):
        system.text_condition(["a red circle"])


def test_condition_dropout_gives_the_all_zero_null_condition(tokenizer, world):
    _, system = make(tokenizer, cfg_dropout=1.0)
    batch = system.collate(world, "t2i", torch.Generator().manual_seed(0))
    assert batch["context"].abs().sum() == 0
    _, system = make(tokenizer, cfg_dropout=0.0)
    batch = system.collate(world, "t2i", torch.Generator().manual_seed(0))
    assert batch["context"].abs().sum(dim=(1, 2)).gt(0).all()
    assert torch.equal(batch["patches"][0], patchify(world[0]["image"][None] * 2 - 1, 4)[0])


@pytest.mark.slow
@pytest.mark.parametrize("model_args", [None, UNET_POOLED], ids=["linear", "unet_pooled"])
def test_decoder_learns_a_conditional_mapping_and_samples_it_back(tokenizer, model_args):
    """Two fixed (caption, image) pairs: after training, sampling each caption draws its own image (~30 s:
    the decoder first learns the mean image and separates the conditions after ~150 steps)."""
    world = ShapesWorld("train", canvas=16, max_objects=1, modalities=("image", "caption"))
    pairs = [world[0], world[1]]  # a large square lower left; an orange diamond
    model, system = make(tokenizer, model_args, cfg_dropout=0.0)
    model.train()
    batch = system.collate(pairs * 8, "t2i", torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = system.losses(model, batch, generator)["diffusion_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images = system.generate_images(model, [p["caption"] for p in pairs], steps=20, cfg_scale=1.0, seed=0,
                                    precision="fp32")
    targets = torch.stack([p["image"] for p in pairs])
    own = F.mse_loss(images, targets).item()
    swapped = F.mse_loss(images, targets.flip(0)).item()
    assert own < 0.01 and own < 0.5 * swapped, (own, swapped)  # the two targets differ by 0.026


def test_one_guided_euler_step_is_uncond_plus_scale_times_the_difference(tokenizer):
    model, system = make(tokenizer)
    ctx = system.text_condition(["a red circle"])
    n, p = model.config.grid**2, model.config.patch_dim
    noise = torch.randn((1, n, p), generator=torch.Generator().manual_seed(5))
    one = torch.ones(1)
    with torch.no_grad():
        velocity = 3.0 * model(noise, one, ctx) - 2.0 * model(noise, one, torch.zeros_like(ctx))
    expected = (noise - velocity).clamp(-1, 1)  # Euler from t = 1 to 0: x_0 = x_1 - v
    image = system.render(model, ctx, steps=1, cfg_scale=3.0, seed=5, precision="fp32")
    assert torch.allclose(image, expected.reshape(1, 4, 4, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(1, 3, 16, 16)
                          * 0.5 + 0.5, atol=1e-5)


def test_guidance_of_scale_one_is_the_conditional_sample(tokenizer):
    model, system = make(tokenizer)
    ctx = system.text_condition(["a red circle", "a blue star"])
    a = system.render(model, ctx, steps=4, cfg_scale=1.0, seed=3)
    b = system.render(model, ctx, steps=4, cfg_scale=1.0, seed=3)
    c = system.render(model, ctx, steps=4, cfg_scale=4.0, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 3, 16, 16) and 0 <= float(a.min()) and float(a.max()) <= 1


def test_bad_inputs_are_one_clear_error(tokenizer):
    model, system = make(tokenizer)
    with pytest.raises(UmmError, match="decoder condition"):
        model(torch.zeros(1, 16, 48), torch.zeros(1), torch.zeros(1, 3, model.config.context_dim))
    with pytest.raises(ConfigError, match="neither a trained model directory"):
        CondDecoderSystem.model_overrides(tokenizer, CondDecoderOptions(encoders="runs/no_such_run/model"))
    with pytest.raises(ConfigError, match="cond_dim == dim"):
        build_model(model_config("test_cond_decoder", {"transformer": {"cond_dim": 0}}))


def test_tiny_recipe_trains_saves_and_is_scored_by_the_judge(tmp_path):
    run = load_recipe(RECIPES_DIR / "test_cond_decoder.yaml")
    result = train(run, tmp_path, show_progress=False)
    assert result.losses[-1] < 0.8 * result.losses[0]
    assert (tmp_path / "model" / ENCODERS_DIR / "model.safetensors").is_file()  # frozen encoders travel along
    model, system = load_system(tmp_path / "model")
    metrics = evaluate(model, system, EvalConfig(n_prompts=6, steps=4, batch_size=8)).metrics
    assert "geneval/overall" in metrics and 0 <= metrics["geneval/overall"] <= 1


def test_unet_pooled_decoder_reads_its_condition_and_loads_linear_weights_saved_before(tokenizer):
    """The U-Net + pooled-condition decoder maps (B, N, P) to (B, N, P) and its loss reaches the pooled path (the
    condition drives every AdaLN through it); a linear decoder saved with the old parameter names (patch_in /
    patch_out) loads into today's."""
    model, system = make(tokenizer, UNET_POOLED)
    for p in model.image_io.unet_out.out.parameters():  # as trained: not the zero-initialised output conv
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, system.config.grid**2, system.config.patch_dim), torch.full((2,), 0.5)
    context = system.text_condition(["a red circle", "a blue square"])
    out = model(x, t, context)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.context_pool.parameters()), \
        "the pooled condition does not reach the output"
    linear, _ = make(tokenizer)
    old = {k.replace("image_io.", ""): v for k, v in linear.state_dict().items()}
    assert any(k.startswith("patch_in.") for k in old) and any(k.startswith("patch_out.") for k in old)
    fresh, _ = make(tokenizer)
    fresh.load_state_dict(old)
    for key, value in linear.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
