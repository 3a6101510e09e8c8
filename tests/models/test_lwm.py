"""LWM: frames with end-of-frame / end-of-video tokens inside <vision> ... </vision>, a separate vision embedding and
head, 0.5 text + 0.5 vision cross-entropies, valid grids from the sampler, cache = recompute, text -> video frame
counts, and a tiny recipe end to end."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.factory import build_model, model_config
from umm.models.lwm import LWMOptions, LWMSystem
from umm.models.system import load_system
from umm.nn import Layout
from umm.objectives import IGNORE
from umm.pipelines import ar_video
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR


@pytest.fixture(scope="module")
def tiny():
    tokenizer = TextTokenizer.train(shapes_corpus(2000), 384)
    options = LWMOptions(image_tokenizer="test_vq", frames=4, frame_stride=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained test tokenizer warns
        torch.manual_seed(0)
        model = build_model(model_config("test_lwm", LWMSystem.model_overrides(tokenizer, options))).eval()
        system = LWMSystem(tokenizer, model.config, options)
    world = ShapesWorld("train", canvas=16, max_objects=2, modalities=LWMSystem.modalities)
    return model, system, [world[i] for i in range(4)]


def test_clip_is_frames_with_eof_then_eov_inside_vision_tags(tiny):
    _, system, samples = tiny
    tok, c = system.tokenizer, system.config
    batch = system.collate(samples, "t2v", torch.Generator().manual_seed(0))
    row = batch["tokens"][0].tolist()
    start, end = row.index(tok.boi_id), row.index(tok.eoi_id)
    frames = torch.stack([s["video"] for s in samples])[:1, [0, 2, 4, 6]]  # 4 frames, every 2nd
    codes = system.image_tokenizer.encode(frames[0])  # (4, 4, 4): each frame on its own
    expected = []
    for f, frame in enumerate(codes):
        expected += (frame.flatten() + c.text_vocab).tolist() + [c.eov_id if f == 3 else c.eof_id]
    assert row[start + 1 : end] == expected
    assert row[:start] == [tok.bos_id] + system.text_ids(samples[0]["video_caption"])
    assert row[end + 1] == tok.eos_id and (batch["block"] == -1).all()
    image = system.collate(samples, "t2i", torch.Generator().manual_seed(0))["tokens"][0].tolist()
    span = image[image.index(tok.boi_id) + 1 : image.index(tok.eoi_id)]
    assert len(span) == 17 and span[-1] == c.eov_id  # an image is a one-frame video


def test_vision_slots_use_their_own_embedding_and_head(tiny):
    model, system, samples = tiny
    c = system.config
    assert model.text_embed.num_embeddings == c.text_vocab and model.vision_embed.num_embeddings == c.vision_codes + 2
    assert model.text_head.out_features == c.text_vocab and model.vision_head.out_features == c.vision_codes + 2
    batch = system.collate(samples[:1], "t2i", torch.Generator().manual_seed(0))
    tokens, layout = batch["tokens"], Layout.of(batch)
    first_vision = int((tokens[0] >= c.text_vocab).nonzero()[0])
    with torch.no_grad():
        before = model(tokens, layout)
        saved = model.vision_embed.weight.clone()
        model.vision_embed.weight.add_(torch.randn_like(saved))
        after = model(tokens, layout)
        model.vision_embed.weight.copy_(saved)
    assert before.vision_logits.shape == (1, tokens.shape[1], c.vision_codes + 2)
    # text slots before the first vision slot are untouched, later ones read the vision embeddings
    assert torch.equal(before.text_logits[0, :first_vision], after.text_logits[0, :first_vision])
    assert not torch.allclose(before.text_logits[0, first_vision:], after.text_logits[0, first_vision:])
    # the shared loops see each head's own distribution over its own range
    logp = before.logits[0, 0]
    torch.testing.assert_close(logp[: c.text_vocab].exp().sum(), torch.tensor(1.0))
    torch.testing.assert_close(logp[c.text_vocab :].exp().sum(), torch.tensor(1.0))


def test_text_and_vision_losses_are_separate_and_weighted(tiny):
    model, system, samples = tiny
    c = system.config
    batch = system.collate(samples, "t2v", torch.Generator().manual_seed(0))
    losses = system.losses(model, batch, torch.Generator())
    assert {k for k in losses if k.endswith("_loss")} == {"text_loss", "vision_loss"}
    with torch.no_grad():
        out = model(batch["tokens"], Layout.of(batch))
    targets = batch["text_targets"]
    vision, text = targets >= c.text_vocab, (targets != IGNORE) & (targets < c.text_vocab)
    text_ce = F.cross_entropy(out.text_logits[text], targets[text])  # LM head, text vocabulary only
    vision_ce = F.cross_entropy(out.vision_logits[vision], targets[vision] - c.text_vocab)  # vision head only
    torch.testing.assert_close(losses["text_loss"], 0.5 * text_ce)
    torch.testing.assert_close(losses["vision_loss"], 0.5 * vision_ce)
    # each term is a mean over its own targets: not the pooled mean a shared head would give
    assert vision.sum() > 3 * text.sum()
    pooled = (text_ce * text.sum() + vision_ce * vision.sum()) / (text.sum() + vision.sum())
    assert not torch.allclose(losses["text_loss"] + losses["vision_loss"], pooled)
    reweighted = LWMSystem(system.tokenizer, c, LWMOptions(image_tokenizer="test_vq", frames=4, frame_stride=2, text_loss_weight=0.2,
                                                           vision_loss_weight=0.8), system.image_tokenizer)
    other = reweighted.losses(model, batch, torch.Generator())
    torch.testing.assert_close(other["text_loss"], 0.2 * text_ce)
    torch.testing.assert_close(other["vision_loss"], 0.8 * vision_ce)
    # captioning has text targets only: the vision term is absent, not a zero that dilutes
    captioning = system.collate(samples, "v2t", torch.Generator())
    assert set(system.losses(model, captioning, torch.Generator())) == {"text_loss", "text_ce"}


def test_sampled_clips_are_valid_grids_from_an_untrained_model(tiny):
    model, system, _ = tiny
    c = system.config
    plan = system.vision_plan(3)
    seqs = [system.generation_prompt(p) for p in ("a red circle moves up", "two stars")]
    tokens = ar_video.generate_plan(model, system, seqs, plan, temperature=1.0, seed=2, precision="fp32")
    frames = tokens[:, :-1].view(2, 3, 17)
    assert (frames[:, :2, -1] == c.eof_id).all() and (frames[:, 2, -1] == c.eov_id).all()
    assert ((frames[..., :-1] >= c.text_vocab) & (frames[..., :-1] < c.eof_id)).all()
    assert (tokens[:, -1] == system.tokenizer.eoi_id).all()
    broken = tokens.clone()
    broken[0, 16] = c.eov_id  # the first frame closed as if it were the last
    with pytest.raises(UmmError, match="malformed grid stream: sequence 0, slot 16"):
        ar_video.plan_codes(plan, broken, (3, 4, 4))


@pytest.mark.parametrize("cfg_scale", [1.0, 5.0])
def test_cached_generation_equals_full_recompute(tiny, cfg_scale):
    model, system, _ = tiny
    prompts = ["a red circle moves up", "a blue star moves left"]
    for sampling in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 20}):
        for make in (lambda **k: system.generate_images(model, prompts, **k),
                     lambda **k: system.generate_videos(model, prompts, frames=3, **k)):
            cached = make(cfg_scale=cfg_scale, seed=3, use_cache=True, precision="fp32", return_codes=True, **sampling)
            full = make(cfg_scale=cfg_scale, seed=3, use_cache=False, precision="fp32", return_codes=True, **sampling)
            assert torch.equal(cached, full), (cfg_scale, sampling)


def test_text_to_video_gives_the_asked_frame_count(tiny):
    model, system, samples = tiny
    assert system.generate_videos(model, ["a red circle moves up"], precision="fp32").shape == (1, 4, 3, 16, 16)
    longer = system.generate_videos(model, ["a red circle moves up"], frames=6, precision="fp32")
    assert longer.shape == (1, 6, 3, 16, 16)
    images = system.generate_images(model, ["a red circle"], precision="fp32")
    assert images.shape == (1, 3, 16, 16)
    captions = system.caption_videos(model, torch.stack([s["video"] for s in samples[:2]]), precision="fp32")
    assert len(captions) == 2 and len(system.answer(model, images, ["what colour is it?"], precision="fp32")) == 1
    with pytest.raises(UmmError, match=r"clips need >= 7 frames"):
        system.caption_videos(model, torch.zeros(1, 6, 3, 16, 16))


def test_tiny_recipe_trains_saves_and_runs_every_capability(tmp_path):
    run = load_recipe(RECIPES_DIR / "test_lwm.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(run, tmp_path, show_progress=False)
    assert result.losses[-1] < 0.85 * result.losses[0]  # measured 19.1 -> 14.7 in 30 steps (5 tasks)
    model, system = load_system(tmp_path / "model")
    assert (system.options.frames, system.options.frame_stride) == (4, 2)
    metrics = evaluate(model, system, EvalConfig(n_prompts=6, n_images=4, n_videos=3, batch_size=8)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy", "t2v/score", "t2v/object_accuracy",
            "v2t/direction_accuracy", "v2t/colour"} <= set(metrics)
    # video on the in-distribution test split too, as images and captions (the default split is held-out)
    assert {"t2v_test/direction_accuracy", "t2v_test/object_accuracy", "v2t_test/direction_accuracy"} <= set(metrics)


def test_frames_keep_their_grid_for_2d_rope_in_training_and_sampling(tiny):
    """``rope_axes=2``: each frame's codes carry (row, column), the same cell of consecutive frames sits one fixed
    offset apart on both axes, the training layout is the one sampling continues, and cache = recompute."""
    from dataclasses import replace

    _, system, samples = tiny
    c = system.config
    config = replace(c, transformer=replace(c.transformer, rope_axes=2))
    torch.manual_seed(0)
    model = build_model(config).eval()
    system2 = LWMSystem(system.tokenizer, config, system.options, system.image_tokenizer)
    batch = system2.collate(samples[:1], "t2v", torch.Generator())
    tokens = batch["tokens"][0]
    start = int((tokens == system.tokenizer.boi_id).nonzero()[0, 0]) + 1  # first code slot
    h, w = system.image_tokenizer.grid
    per = h * w + 1  # a frame's codes and its end token
    trained = batch["positions"][0, start : start + 4 * per]  # (4 * per, 2)
    frames = trained.view(4, per, 2)[:, :-1].view(4, h, w, 2)
    assert torch.equal(frames[0, :, :, 0] - frames[0, 0, 0, 0], torch.arange(h)[:, None].expand(h, w))  # rows
    assert torch.equal(frames[0, :, :, 1] - frames[0, 0, 0, 1], torch.arange(w)[None].expand(h, w))  # columns
    step = frames[1:] - frames[:-1]  # (3, h, w, 2): one offset for every cell and both axes
    assert (step == step[0, 0, 0, 0]).all() and step[0, 0, 0, 0] > 0
    # sampling lays the plan out after the prompt exactly as training did
    prompt = system2.generation_prompt(samples[0]["video_caption"])
    prompt_layout = ar_video.ar.prompt_batch(system2, [prompt], "cpu")[1]
    planned = system2.vision_plan(4).layout(prompt_layout.next_position).positions[0]
    assert torch.equal(planned[: 4 * per], trained)
    for cfg_scale in (1.0, 3.0):
        make = lambda **k: system2.generate_videos(model, ["a red circle moves up"], frames=3, cfg_scale=cfg_scale,
                                                   seed=1, precision="fp32", return_codes=True, **k)  # noqa: E731
        assert torch.equal(make(use_cache=True), make(use_cache=False))


def test_video_temperature_samples_clips_on_their_own_and_zero_is_greedy(tiny):
    """``video_temperature`` sets generate_videos' default temperature only: at 0 a clip is the greedy one whatever
    the seed, while images keep ``temperature`` and still vary with it; a negative value is a config error."""
    from dataclasses import replace

    model, system, _ = tiny
    greedy = LWMSystem(system.tokenizer, system.config, replace(system.options, video_temperature=0.0),
                       system.image_tokenizer)
    assert greedy.sampling_defaults("generate_videos")["temperature"] == 0.0
    assert greedy.sampling_defaults("generate_images")["temperature"] == system.options.temperature == 1.0
    assert system.sampling_defaults("generate_videos")["temperature"] == 1.0  # unset: the one temperature
    clip = lambda s, seed: s.generate_videos(model, ["a red circle moves up"], frames=2, seed=seed, precision="fp32",
                                             return_codes=True)  # noqa: E731
    assert torch.equal(clip(greedy, 1), clip(greedy, 2))
    explicit = system.generate_videos(model, ["a red circle moves up"], frames=2, seed=5, temperature=0.0,
                                      precision="fp32", return_codes=True)
    assert torch.equal(clip(greedy, 1), explicit)  # the default is what an explicit temperature 0 gives
    assert not torch.equal(clip(system, 1), clip(system, 2))  # sampled at 1.0: the seed matters
    image = lambda seed: greedy.generate_images(model, ["a red circle"], seed=seed, precision="fp32",
                                                return_codes=True)  # noqa: E731
    assert not torch.equal(image(1), image(2))
    with pytest.raises(UmmError, match="video_temperature must be >= 0"):
        LWMSystem(system.tokenizer, system.config, replace(system.options, video_temperature=-1.0),
                  system.image_tokenizer)
