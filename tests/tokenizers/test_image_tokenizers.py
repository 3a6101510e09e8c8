"""Image/video tokenizers: quantizer contracts, codebook maintenance, save/load, and reconstruction after a
short real training on ShapesWorld."""

import math

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.eval.reconstruction import evaluate_reconstruction
from umm.models.factory import save_pretrained
from umm.models.system import load_system
from umm.tokenizers.image import FSQ, LFQ, ResidualQuantizer, VectorQuantizer, load_image_tokenizer
from umm.training.loop import after_optimizer_step, train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR

FAMILIES = ["test_vq", "test_rq", "test_fsq", "test_lfq", "test_vae", "test_vqvideo"]


def shapes_images(n: int, canvas: int = 16, split: str = "train") -> torch.Tensor:
    world = ShapesWorld(split, canvas=canvas, max_objects=2, modalities=("image",))
    return torch.stack([world[i]["image"] for i in range(n)])


def fit(quantizer: torch.nn.Module, data: torch.Tensor, steps: int, seed: int = 0) -> None:
    """Training forwards + the trainer's per-step hook (no optimizer: the EMA codebook needs none)."""
    quantizer.train()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        quantizer(data, generator)
        after_optimizer_step(quantizer)


# ---- quantizers -----------------------------------------------------------------------------------------


def test_fsq_codes_cover_exactly_the_levels():
    torch.manual_seed(0)
    fsq = FSQ((4, 3, 5), dim=3)
    with torch.no_grad():  # identity projection: z itself is bounded and rounded
        fsq.project_in.weight.copy_(torch.eye(3))
        fsq.project_in.bias.zero_()
    axis = torch.linspace(-4, 4, 41)
    z = torch.cartesian_prod(axis, axis, axis)  # (41^3, 3), from deep negative to deep positive
    out = fsq(z)
    assert out.codes.min() == 0 and out.codes.max() == 4 * 3 * 5 - 1
    assert len(out.codes.unique()) == 60
    digits = fsq.digits(out.codes)
    for i, level in enumerate((4, 3, 5)):
        assert set(digits[:, i].unique().tolist()) == set(range(level))
    # decoding the codes gives the vectors the decoder saw in the forward pass
    torch.testing.assert_close(fsq.lookup(out.codes), out.quantized, rtol=1e-5, atol=1e-5)
    assert out.losses == {}


def test_lfq_codes_are_the_sign_bits_and_entropy_rewards_spread():
    torch.manual_seed(0)
    lfq = LFQ(bits=5, dim=8)
    z = torch.randn(512, 8)
    out = lfq(z)
    h = lfq.project_in(z)
    expected = ((h > 0).long() * 2 ** torch.arange(5)).sum(-1)
    assert torch.equal(out.codes, expected)
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < 32
    torch.testing.assert_close(lfq.lookup(out.codes), out.quantized, rtol=1e-5, atol=1e-5)
    # all tokens on one code: the batch-entropy term gives nothing back, so the penalty is higher
    collapsed = lfq(torch.zeros(512, 8) + z[:1]).losses["entropy"]
    assert out.losses["entropy"] < collapsed


@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_restart_revives_unused_codes(ema):
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 8, ema=ema, restart_threshold=0.5)
    with torch.no_grad():
        vq.codebook.fill_(10.0)  # every code far from the data: all but one go unused
        vq.codebook[0] = 9.0
    data = torch.randn(512, 8)
    vq.train()
    used_before = len(vq(data, torch.Generator().manual_seed(0)).codes.unique())
    after_optimizer_step(vq)
    vq.eval()
    used_after = len(vq(data).codes.unique())
    assert used_before == 1
    assert used_after >= 24, f"only {used_after}/32 codes revived"


def test_restarts_need_the_generator():
    vq = VectorQuantizer(8, 4).train()
    with pytest.raises(UmmError, match="generator"):
        vq(torch.randn(16, 4))


def test_ema_codebook_converges_to_cluster_means():
    torch.manual_seed(0)
    centres = torch.tensor([[4.0, 0], [-4, 0], [0, 4], [0, -4]])
    data = (centres[torch.arange(1024) % 4] + 0.1 * torch.randn(1024, 2))
    vq = VectorQuantizer(4, 2, ema=True, decay=0.9, restart_threshold=1.0)
    fit(vq, data, steps=60)
    distance = torch.cdist(centres, vq.codebook).min(dim=1).values
    assert distance.max() < 0.1, distance


def test_training_forward_is_repeatable_and_updates_wait_for_the_step():
    vq = VectorQuantizer(16, 4)
    data = torch.randn(64, 4)
    before = vq.codebook.clone()
    vq.train()
    a = vq(data, torch.Generator().manual_seed(1))
    b = vq(data, torch.Generator().manual_seed(1))
    assert torch.equal(a.codes, b.codes) and torch.equal(vq.codebook, before)
    after_optimizer_step(vq)
    assert not torch.equal(vq.codebook, before)


def test_residual_quantization_error_falls_with_depth():
    torch.manual_seed(0)
    rq = ResidualQuantizer(16, 8, depth=4)
    data = torch.randn(1024, 8)
    fit(rq, data, steps=40)
    norms = rq.residual_norms(data)
    assert (norms[1:] < norms[:-1]).all(), norms
    assert norms[-1] < 0.6 * norms[0]
    codes = rq.eval()(data).codes
    assert codes.shape == (1024, 4)
    # the decoder's input is the sum of the depths' vectors
    torch.testing.assert_close(rq.lookup(codes), rq(data).quantized, rtol=1e-5, atol=1e-5)


# ---- tokenizers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_encode_decode_shapes_and_save_load_identical_codes(name, tmp_path):
    tokenizer = load_image_tokenizer(name)
    video = name == "test_vqvideo"
    if video:
        world = ShapesWorld("train", canvas=16, modalities=("video",), frames=8)
        pixels = torch.stack([world[i]["video"] for i in range(3)])
    else:
        pixels = shapes_images(3)
    codes = tokenizer.encode(pixels)
    if name == "test_vae":
        assert codes.shape == (3, 4, 4, 4) and codes.is_floating_point()
    elif video:
        assert codes.shape == (3, 4, 4, 4) and tokenizer.grid == (4, 4, 4)
    elif name == "test_rq":
        assert codes.shape == (3, 4, 4, 2) and tokenizer.depth == 2
    else:
        assert codes.shape == (3, 4, 4) and codes.dtype == torch.long and tokenizer.grid == (4, 4)
    if not codes.is_floating_point():
        assert 0 <= int(codes.min()) and int(codes.max()) < tokenizer.codebook_size
    decoded = tokenizer.decode(codes)
    assert decoded.shape == pixels.shape and 0 <= float(decoded.min()) and float(decoded.max()) <= 1
    save_pretrained(tokenizer, tmp_path / name)
    loaded = load_image_tokenizer(tmp_path / name)
    assert torch.equal(loaded.encode(pixels), codes)


def test_video_tokenizer_compresses_time_and_checks_frames():
    tokenizer = load_image_tokenizer("test_vqvideo")
    clips = torch.rand(2, 4, 3, 16, 16)  # any multiple of the temporal factor encodes
    assert tokenizer.encode(clips).shape == (2, 2, 4, 4)
    assert tokenizer.decode(tokenizer.encode(clips)).shape == (2, 4, 3, 16, 16)
    with pytest.raises(UmmError, match="divisible by 2"):
        tokenizer.encode(torch.rand(1, 7, 3, 16, 16))


def test_video_tokenizer_starts_from_a_trained_image_vq(tmp_path):
    """system_args.image_init copies the image VQ's encoder, decoder and codebook into the per-frame part; a
    tokenizer of another quantizer or another geometry is refused with the key named."""
    from umm.models.factory import create_model
    from umm.tokenizers.image.system import VideoReconstructionOptions, VQVideoSystem

    image = load_image_tokenizer("test_vq", seed=3)
    save_pretrained(image, tmp_path / "vq")
    video = create_model("test_vqvideo")
    assert not torch.equal(video.quantizer.codebook, image.quantizer.codebook)  # fresh weights of its own
    system = VQVideoSystem(None, video.config, VideoReconstructionOptions(image_init=str(tmp_path / "vq")))
    system.prepare_model(video)
    for part, theirs in ((video.encoder.frames, image.encoder), (video.decoder.frames, image.decoder),
                         (video.quantizer, image.quantizer)):
        for (name, a), b in zip(part.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name
    for bad, message in (("test_fsq", "is a 'fsq' tokenizer"), ("vq_s", "autoencoder or codebook size differs")):
        with pytest.raises(UmmError, match=message):
            VQVideoSystem(None, video.config, VideoReconstructionOptions(image_init=bad)).prepare_model(video)


def test_video_tokenizer_trains_on_a_fraction_of_still_clips():
    """system_args.still_fraction: that share of each batch is its clips' first frames held still (EMU3 trains its
    one tokenizer on images and videos); the rest stay moving clips; a fraction outside [0, 1] names the key."""
    from umm.data.shapes import ShapesWorld
    from umm.models.factory import create_model
    from umm.tokenizers.image.system import VideoReconstructionOptions, VQVideoSystem

    video = create_model("test_vqvideo")
    world = ShapesWorld("train", canvas=16, modalities=("video",), frames=8)
    samples = [world[i] for i in range(4)]
    system = VQVideoSystem(None, video.config, VideoReconstructionOptions(still_fraction=0.5))
    clips = system.collate(samples, "reconstruct", torch.Generator())["pixels"]  # (4, 8, 3, 16, 16)
    for i, sample in enumerate(samples):
        still = (clips[i] == sample["video"][0]).all()
        assert bool(still) == (i < 2) and (i < 2 or torch.equal(clips[i], sample["video"]))
    assert torch.equal(VQVideoSystem(None, video.config).collate(samples, "reconstruct", torch.Generator())["pixels"],
                       torch.stack([s["video"] for s in samples]))
    with pytest.raises(UmmError, match="system_args.still_fraction"):
        VQVideoSystem(None, video.config, VideoReconstructionOptions(still_fraction=1.5))


def test_vae_mean_is_deterministic_and_sampling_uses_the_generator():
    vae = load_image_tokenizer("test_vae")
    images = shapes_images(2)
    assert torch.equal(vae.encode(images), vae.encode(images))
    a = vae.encode(images, generator=torch.Generator().manual_seed(0))
    b = vae.encode(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, vae.encode(images))


def test_bad_input_is_one_clear_error():
    tokenizer = load_image_tokenizer("test_vq")
    with pytest.raises(UmmError, match=r"expects images \(B, 3, 16, 16\)"):
        tokenizer.encode(torch.rand(1, 3, 32, 32))
    with pytest.raises(UmmError, match="codes must lie in"):
        tokenizer.decode(torch.full((1, 4, 4), 64))
    with pytest.raises(UmmError, match="not an image tokenizer"):
        load_image_tokenizer("test_transfusion")
    with pytest.raises(UmmError, match="neither a trained tokenizer directory"):
        load_image_tokenizer("no_such_tokenizer")


def test_fresh_tokenizers_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a, b = load_image_tokenizer("test_vq"), load_image_tokenizer("test_vq")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---- training ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_vq(tmp_path_factory):
    """test_vq trained by the real trainer on its tiny recipe (80 steps, ~10 s)."""
    run = load_recipe(RECIPES_DIR / "test_vq.yaml")
    out = tmp_path_factory.mktemp("vq")
    result = train(run, out, show_progress=False)
    return result, out / "model"


def test_short_training_reconstructs_below_a_pinned_bound(trained_vq):
    result, model_dir = trained_vq
    model, system = load_system(model_dir)
    trained = evaluate_reconstruction(model, system, n_images=32)
    world = ShapesWorld("heldout", canvas=16, seed=1234, modalities=("image",))
    all_black = float(torch.stack([world[i]["image"] for i in range(32)]).pow(2).mean())  # ~0.02
    assert trained["recon/mse"] < 0.016, trained  # measured 0.011 (untrained: 0.32)
    assert trained["recon/mse"] < 0.75 * all_black  # it draws objects, not just the black background
    assert trained["recon/codebook_used"] > 0.3, trained  # restarts keep the codebook in use (measured 0.69)
    assert result.losses[-1] < 0.1 * result.losses[0]
    # the trainer applied the codebook's per-step updates (the usage EMA starts at zero)
    assert float(model.quantizer.usage.sum()) > 0


def test_eval_harness_scores_the_reconstruct_capability(trained_vq):
    model, system = load_system(trained_vq[1])
    metrics = evaluate(model, system, EvalConfig(n_images=8), tasks=("reconstruct",)).metrics
    for key in ("recon/mse", "recon/psnr", "recon/codebook_used", "recon/perplexity", "recon/judge_exact",
                "recon/judge_objects", "recon/bits_per_image"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["recon/bits_per_image"] == 16 * 6  # 4x4 codes of log2(64) bits
    # held out, then in distribution (the tokenizer never saw the held-out colour-shape pairs either)
    assert metrics["recon_test/bits_per_image"] == 16 * 6 and metrics["recon_test/mse"] != metrics["recon/mse"]
    alone = evaluate(model, system, EvalConfig(n_images=8, test_split=False), tasks=("reconstruct",)).metrics
    assert not any(key.startswith("recon_test/") for key in alone) and alone["recon/mse"] == metrics["recon/mse"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, max_mse, min_objects", [
    ("vq_s", 0.004, 0.2), ("fsq_s", 0.004, 0.2), ("rq_s", 0.004, 0.2), ("lfq_s", 0.008, 0.05), ("vae_s", 0.004, 0.2),
])  # fmt: skip
def test_default_tokenizers_learn_shapesworld(recipe, max_mse, min_objects, tmp_path):
    """600 steps of each default recipe (a few minutes each): reconstructions the judge reads. Measured at
    ~600 steps on one core: VQ 0.0016 / 0.48, FSQ 0.0013 / 0.55, RQ 0.0017 / 0.41, LFQ 0.0044 / 0.14 (MSE /
    objects read)."""
    run = load_recipe(RECIPES_DIR / f"{recipe}.yaml", ["train.steps=600"])
    train(run, tmp_path, show_progress=False)
    model, system = load_system(tmp_path / "model")
    metrics = evaluate_reconstruction(model, system, n_images=64)
    assert metrics["recon/mse"] < max_mse, metrics
    assert metrics["recon/judge_objects"] > min_objects, metrics


# ---- a local autoencoder ----------------------------------------------------------------------------------


@pytest.mark.parametrize("norm, padding, local", [("group", "zeros", False), ("batch", "replicate", True)])
def test_local_autoencoder_gives_an_empty_canvas_one_latent_and_keeps_far_cells(norm, padding, local):
    """With BatchNorm (frozen: its running statistics) and replicate padding every latent of an empty canvas is
    the same (so it is one code) and an object leaves far cells nearly as they were; VQGAN's GroupNorm spreads
    it over the image."""
    from umm.tokenizers.image.autoencoder import AutoencoderConfig, Encoder

    torch.manual_seed(0)
    encoder = Encoder(AutoencoderConfig(image_size=32, widths=(8, 16, 32), norm=norm, padding=padding), 8)
    with torch.no_grad():
        encoder(shapes_images(16, canvas=32) * 2 - 1)  # BatchNorm's running statistics move off their init
    encoder.eval()
    blank = -torch.ones(1, 3, 32, 32)
    one = blank.clone()
    one[:, 0, 2:8, 2:8] = 1.0  # an object in the top-left latent cell
    with torch.no_grad():
        z_blank, z_one = encoder(blank), encoder(one)  # (1, 8, 8, 8)
    spread = (z_blank - z_blank[..., :1, :1]).abs().max().item()
    far = (z_one[..., 5:, 5:] - z_blank[..., 5:, 5:]).abs().max().item()
    near = (z_one[..., 0, 0] - z_blank[..., 0, 0]).abs().max().item()
    if local:
        assert spread < 1e-5 and far < 0.05 * near
    else:
        assert spread > 1e-2 and far > 0.05 * near


def test_autoencoder_norm_and_padding_are_checked():
    from umm.config import ConfigError
    from umm.tokenizers.image.autoencoder import AutoencoderConfig

    with pytest.raises(ConfigError, match="norm='layer'"):
        AutoencoderConfig(norm="layer").check()
    with pytest.raises(ConfigError, match="padding='reflect'"):
        AutoencoderConfig(padding="reflect").check()


def test_local_vq_trains_and_saves_its_running_statistics(tmp_path):
    """A ``norm: batch`` VQ: a training forward moves BatchNorm's running statistics, which the frozen tokenizer
    then applies, and save -> load gives the same codes (the statistics are in the checkpoint)."""
    from umm.models.factory import create_model

    tokenizer = create_model("test_vq", autoencoder={"norm": "batch", "padding": "replicate"})
    pixels = shapes_images(8)
    tokenizer.train()
    tokenizer(pixels, torch.Generator().manual_seed(0))
    after_optimizer_step(tokenizer)
    tokenizer.eval()
    norm = tokenizer.encoder.mid.norm1
    assert int(norm.num_batches_tracked) == 1
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))
    codes = tokenizer.encode(pixels)
    assert len(set(tokenizer.encode(torch.zeros(1, 3, 16, 16)).flatten().tolist())) == 1  # empty canvas: one code
    save_pretrained(tokenizer, tmp_path / "vq_local")
    loaded = load_image_tokenizer(tmp_path / "vq_local")
    assert loaded.config.autoencoder.norm == "batch"
    assert torch.equal(loaded.encode(pixels), codes)
