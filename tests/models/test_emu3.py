"""EMU3: visual spans with a resolution prefix and end-of-row / end-of-frame tokens, two canvas sizes in one
model, the structure processor (valid grids whatever the model wants, malformed streams refused), negative-prompt
guidance, cache = recompute, text -> video frame counts, and a tiny recipe end to end."""

import warnings

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.emu3 import EOF, EOL, IMG, Emu3Options, Emu3System, decode_canvas, encode_canvas
from umm.models.factory import build_model, model_config
from umm.models.system import load_system, save_system
from umm.nn import Layout
from umm.pipelines import ar, ar_video
from umm.samplers import cfg
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



TOKENIZERS = {"image_tokenizer": "test_vq", "video_tokenizer": "test_vqvideo"}  # frozen parts, named explicitly


def make_system(tokenizer, options: Emu3Options, seed: int = 0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained test tokenizers warn
        torch.manual_seed(seed)
        model = build_model(model_config("test_emu3", Emu3System.model_overrides(tokenizer, options))).eval()
        return model, Emu3System(tokenizer, model.config, options)


@pytest.fixture(scope="module")
def tiny():
    tokenizer = TextTokenizer.train(shapes_corpus(2000), 384)
    model, system = make_system(tokenizer, Emu3Options(**TOKENIZERS, canvas_scales=(1, 2)))
    world = ShapesWorld("train", canvas=16, max_objects=2, modalities=Emu3System.modalities)
    return model, system, [world[i] for i in range(4)]


def span_of(system, row: list[int], opener: int) -> tuple[list[int], list[int]]:
    """(prefix between the opener and IMG, the stream after IMG up to and including the closer)."""
    start = row.index(opener)
    img = row.index(system.config.text_vocab + IMG, start)
    closer = system.tokenizer.eov_id if opener == system.tokenizer.bov_id else system.tokenizer.eoi_id
    return row[start + 1 : img], row[img + 1 : row.index(closer, img) + 1]


def expected_stream(system, codes: torch.Tensor, low: int, closer: int) -> list[int]:
    """Rows of codes + EOL, EOF after each frame, then the closer: built by hand from (t, h, w) codes."""
    eol, eof = system.config.text_vocab + EOL, system.config.text_vocab + EOF
    out = []
    for frame in codes:
        for row in frame:
            out += (row + low).tolist() + [eol]
        out.append(eof)
    return out + [closer]


def test_image_span_has_resolution_prefix_rows_and_frame_end(tiny):
    model, system, samples = tiny
    tok, c = system.tokenizer, system.config
    for seed in range(6):  # both canvases come up
        batch = system.collate(samples, "t2i", torch.Generator().manual_seed(seed))
        prefix, stream = span_of(system, batch["tokens"][0].tolist(), tok.boi_id)
        side = int(tok.decode(prefix).split("*")[0])
        assert tok.decode(prefix) == f"{side}*{side}" and side in (4, 8)
        images = system.resize(torch.stack([s["image"] for s in samples]), side // 4)
        codes = encode_canvas(system.image_tokenizer, images)[0]
        assert stream == expected_stream(system, codes[None], c.image_low, tok.eoi_id)
        assert (batch["block"] == -1).all()  # causal attention everywhere
        # text -> image trains every token: caption, prefix, codes and structure tokens
        targets, tokens = batch["text_targets"][0], batch["tokens"][0]
        n = int((tokens != tok.pad_id).sum())
        assert (targets[: n - 1] == tokens[1:n]).all()


def test_video_span_has_t_frames_each_closed_by_eof(tiny):
    _, system, samples = tiny
    tok, c = system.tokenizer, system.config
    batch = system.collate(samples, "t2v", torch.Generator().manual_seed(0))
    prefix, stream = span_of(system, batch["tokens"][1].tolist(), tok.bov_id)
    codes = system.video_tokenizer.encode(torch.stack([s["video"] for s in samples]))[1]  # (t, h, w): 8 frames -> 4
    assert codes.shape == (4, 4, 4) and tok.decode(prefix) == "4*4*4"
    assert stream == expected_stream(system, codes, c.video_low, tok.eov_id)
    assert stream.count(c.text_vocab + EOF) == 4 and stream.count(c.text_vocab + EOL) == 16


def test_understanding_and_vision_only_losses(tiny):
    model, system, samples = tiny
    tok, c = system.tokenizer, system.config
    for task in ("caption", "qa", "v2t"):
        targets = system.collate(samples, task, torch.Generator())["text_targets"]
        assert not (targets >= c.text_vocab).any(), task  # the visual span is context, not a target
        assert (targets == tok.eos_id).sum() == len(samples)
    vision_only = Emu3System(tok, c, Emu3Options(**TOKENIZERS, vision_loss_only=True), system.image_tokenizer, system.video_tokenizer)
    for task, closer in (("t2i", tok.eoi_id), ("t2v", tok.eov_id)):
        batch = vision_only.collate(samples, task, torch.Generator())
        targets = batch["text_targets"][batch["text_targets"] != -100]
        assert ((targets >= c.text_vocab) | (targets == closer)).all(), task  # codes, EOL/EOF and the closer only
        assert (targets == closer).sum() == len(samples)
        assert torch.isfinite(vision_only.losses(model, batch, torch.Generator())["lm_loss"])


def test_two_canvas_sizes_in_one_model(tiny):
    model, system, samples = tiny
    # tiles: a 32 px canvas is four 16 px tokenizer canvases, coded and decoded in place
    images = torch.stack([s["image"] for s in samples])  # (4, 3, 16, 16)
    canvas = torch.cat([torch.cat([images[0], images[1]], 2), torch.cat([images[2], images[3]], 2)], 1)[None]
    codes = encode_canvas(system.image_tokenizer, canvas)  # (1, 8, 8)
    tiles = system.image_tokenizer.encode(images)  # (4, 4, 4)
    assert torch.equal(codes[0, :4, 4:], tiles[1]) and torch.equal(codes[0, 4:, :4], tiles[2])
    decoded = decode_canvas(system.image_tokenizer, codes)
    assert decoded.shape == (1, 3, 32, 32)
    torch.testing.assert_close(decoded[0, :, 16:, 16:], system.image_tokenizer.decode(tiles[3:]).float()[0])
    # one model trains on both sizes and generates either, each with its own grid
    lengths = {system.collate(samples, "t2i", torch.Generator().manual_seed(s))["tokens"].shape[1] for s in range(6)}
    assert len(lengths) == 2
    for scale, side in ((1, 16), (2, 32)):
        out = system.generate_images(model, ["a red circle"], cfg_scale=1.0, scale=scale, precision="fp32")
        assert out.shape == (1, 3, side, side)
        codes = system.generate_images(model, ["a red circle"], scale=scale, return_codes=True)
        assert codes.shape == (1, side // 4, side // 4)
        assert len(system.caption(model, out, precision="fp32")) == 1  # captions read either canvas


def test_structure_processor_yields_valid_grids_from_an_untrained_model(tiny):
    model, system, _ = tiny
    c = system.config
    for video, grid in ((False, (1, 8, 8)), (True, (4, 4, 4))):
        plan = system.grid_plan(grid, video)
        seqs = [system.generation_prompt(p, grid, video) for p in ("a red circle", "two blue squares")]
        tokens = ar_video.generate_plan(model, system, seqs, plan, temperature=1.0, seed=1, precision="fp32")
        t, h, w = grid
        frames = tokens[:, :-1].view(2, t, h * (w + 1) + 1)
        rows = frames[:, :, :-1].reshape(2, t, h, w + 1)
        assert (rows[..., -1] == c.text_vocab + EOL).all() and (frames[:, :, -1] == c.text_vocab + EOF).all()
        low, high = (c.video_low, c.vocab_size) if video else (c.image_low, c.video_low)
        assert ((rows[..., :-1] >= low) & (rows[..., :-1] < high)).all()
        closer = system.tokenizer.eov_id if video else system.tokenizer.eoi_id
        assert (tokens[:, -1] == closer).all()
        assert ar_video.plan_codes(plan, tokens, grid).shape == (2, *grid)


def test_structure_processor_wins_against_a_model_that_wants_anything_else(tiny):
    _, system, _ = tiny
    c = system.config
    plan = system.grid_plan((1, 4, 4), video=False)

    def step(token: torch.Tensor, layout: Layout) -> torch.Tensor:
        logits = torch.zeros(token.shape[0], c.vocab_size)
        logits[:, : c.image_low] = 100.0  # text and structure tokens everywhere
        logits[:, c.video_low :] = 100.0  # or video codes
        return logits

    tokens, _ = ar.sample_plan(step, step(torch.zeros(2, 1), None), torch.zeros(2, 1, dtype=torch.long), plan,
                               generator=torch.Generator().manual_seed(0))
    codes = ar_video.plan_codes(plan, tokens, (1, 4, 4))  # raises if the stream were malformed
    assert ((codes >= 0) & (codes < c.image_codes)).all()


def test_malformed_streams_are_refused_with_one_clear_error(tiny):
    _, system, _ = tiny
    c = system.config
    plan = system.grid_plan((1, 4, 4), video=False)
    good = torch.tensor([plan.forced]).clone()
    good[good < 0] = c.image_low + 3
    assert ar_video.plan_codes(plan, good, (1, 4, 4)).eq(3).all()
    missing_eol = good.clone()
    missing_eol[0, 4] = c.image_low  # a code where the first row must end
    with pytest.raises(UmmError, match="slot 4 .* expected structure token"):
        ar_video.plan_codes(plan, missing_eol, (1, 4, 4))
    video_code = good.clone()
    video_code[0, 0] = c.video_low  # a video code inside an image
    with pytest.raises(UmmError, match=r"slot 0 .* expected a code in"):
        ar_video.plan_codes(plan, video_code, (1, 4, 4))
    with pytest.raises(UmmError, match="has 22 slots"):
        ar_video.plan_codes(plan, good[:, :-1], (1, 4, 4))


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_generation_equals_full_recompute(tiny, cfg_scale):
    model, system, _ = tiny
    prompts = ["a red circle moves up", "a blue star moves left"]
    for sampling in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 20, "top_p": 0.9}):
        for make in (lambda **k: system.generate_images(model, prompts, scale=2, **k),
                     lambda **k: system.generate_videos(model, prompts, frames=4, **k)):
            cached = make(cfg_scale=cfg_scale, seed=3, use_cache=True, precision="fp32", return_codes=True, **sampling)
            full = make(cfg_scale=cfg_scale, seed=3, use_cache=False, precision="fp32", return_codes=True, **sampling)
            assert torch.equal(cached, full), (cfg_scale, sampling)


def test_negative_prompt_is_the_unconditional_branch(tiny):
    model, system, _ = tiny
    c, grid = system.config, (1, 4, 4)
    # the first code under guidance, computed by hand from the prompt and the negative prompt
    seqs = [system.generation_prompt(text, grid, False) for text in ("a red circle", "a blue square")]
    tokens, layout = ar.prompt_batch(system, seqs, "cpu")
    with torch.no_grad():
        logp = model(tokens, layout).logits[:, -1].float().log_softmax(-1)
    guided = cfg(logp[0], logp[1], 4.0)[c.image_low : c.video_low]
    codes = system.generate_images(model, ["a red circle"], cfg_scale=4.0, negative_prompt="a blue square",
                                   temperature=0.0, precision="fp32", return_codes=True)
    assert int(codes[0, 0, 0]) == int(guided.argmax())
    # the option is the default negative prompt; a different negative prompt steers elsewhere
    steered = Emu3System(system.tokenizer, c, Emu3Options(**TOKENIZERS, negative_prompt="a blue square"), system.image_tokenizer,
                         system.video_tokenizer)
    assert torch.equal(codes, steered.generate_images(model, ["a red circle"], cfg_scale=4.0, temperature=0.0,
                                                      precision="fp32", return_codes=True))
    plain = system.generate_images(model, ["a red circle"], cfg_scale=4.0, temperature=0.0, precision="fp32",
                                   return_codes=True)
    assert not torch.equal(plain, codes)


def test_text_to_video_gives_the_asked_frame_count(tiny):
    model, system, samples = tiny
    clips = system.generate_videos(model, ["a red circle moves up"], cfg_scale=1.0, precision="fp32")
    assert clips.shape == (1, 8, 3, 16, 16)  # 4 latent frames, temporal downsampling x2
    short = system.generate_videos(model, ["a red circle moves up"], frames=4, precision="fp32")
    assert short.shape == (1, 4, 3, 16, 16)
    with pytest.raises(UmmError, match="multiple of 2 frames"):
        system.generate_videos(model, ["a red circle"], frames=3)
    captions = system.caption_videos(model, torch.stack([s["video"] for s in samples[:2]]), precision="fp32")
    assert len(captions) == 2 and all(isinstance(t, str) for t in captions)


def test_bad_configuration_is_one_clear_error(tiny):
    _, system, _ = tiny
    with pytest.raises(UmmError, match="video tokenizer"):
        Emu3System.model_overrides(system.tokenizer, Emu3Options(image_tokenizer="test_vq", video_tokenizer="test_vq"))
    with pytest.raises(UmmError, match="one code per position"):
        Emu3System.model_overrides(system.tokenizer, Emu3Options(image_tokenizer="test_rq", video_tokenizer="test_vqvideo"))
    with pytest.raises(UmmError, match="canvas_scales"):
        Emu3System(system.tokenizer, system.config, Emu3Options(**TOKENIZERS, canvas_scales=()), system.image_tokenizer,
                   system.video_tokenizer)
    no_video = [ShapesWorld("train", canvas=16)[0]]  # image, caption and qa only
    with pytest.raises(UmmError, match="add video to data.modalities"):
        system.collate(no_video, "t2v", torch.Generator())


def test_tiny_recipe_trains_saves_and_runs_every_capability(tmp_path):
    run = load_recipe(RECIPES_DIR / "test_emu3.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(run, tmp_path, show_progress=False)
    assert result.losses[-1] < 0.9 * result.losses[0]  # measured 31.3 -> 25.1 in 30 steps (5 tasks)
    model, system = load_system(tmp_path / "model")
    assert system.options.canvas_scales == (1, 2)
    metrics = evaluate(model, system, EvalConfig(n_prompts=6, n_images=4, n_videos=3, batch_size=8)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy", "t2v/score", "t2v/direction_accuracy",
            "v2t/direction_accuracy", "v2t/exact"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("t2v/score", "t2v/direction_accuracy", "v2t/direction_accuracy"))


def test_frames_keep_their_grid_with_eol_for_2d_rope(tiny):
    """``rope_axes=2``: each frame of a clip is one grid span whose EOL tokens sit in an extra column; the same
    cell of consecutive frames is one fixed offset apart, and cached sampling equals recompute."""
    from dataclasses import replace

    _, system, samples = tiny
    c = system.config
    config = replace(c, transformer=replace(c.transformer, rope_axes=2))
    torch.manual_seed(0)
    model = build_model(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained test tokenizers warn
        system2 = Emu3System(system.tokenizer, config, system.options)
    batch = system2.collate(samples[:1], "t2v", torch.Generator())
    row = batch["tokens"][0].tolist()
    start = row.index(config.text_vocab + IMG, row.index(system.tokenizer.bov_id)) + 1  # first code slot
    t, h, w = system2.video_tokenizer.grid
    per = h * (w + 1) + 1  # a frame: rows of codes and EOL, then EOF
    frames = batch["positions"][0, start : start + t * per].view(t, per, 2)[:, :-1].reshape(t, h, w + 1, 2)
    assert torch.equal(frames[0, :, :, 1] - frames[0, 0, 0, 1], torch.arange(w + 1)[None].expand(h, w + 1))
    assert (torch.tensor(row[start : start + t * per]).view(t, per)[:, :-1].view(t, h, w + 1)[..., -1]
            == config.text_vocab + EOL).all()  # the extra column holds the EOLs
    step = frames[1:] - frames[:-1]
    assert (step == step[0, 0, 0, 0]).all() and step[0, 0, 0, 0] > 0
    make = lambda **k: system2.generate_videos(model, ["a red circle moves up"], frames=4, cfg_scale=3.0, seed=1,  # noqa: E731
                                               precision="fp32", return_codes=True, **k)
    assert torch.equal(make(use_cache=True), make(use_cache=False))


def test_shared_tokenizer_codes_images_as_still_clips_in_the_video_codebook(tiny, tmp_path):
    """``shared_tokenizer``: EMU3's one tokenizer. No image codebook in the vocabulary; an image span holds the
    video tokenizer's codes of the image as a still clip, generation samples them from the video codebook and
    decodes the still clip's first frame; naming an image tokenizer as well is one clear error."""
    _, system, samples = tiny
    video = {"video_tokenizer": "test_vqvideo"}
    model, shared = make_system(system.tokenizer, Emu3Options(**video, shared_tokenizer=True))
    c, tok = shared.config, shared.tokenizer
    assert c.image_codes == 0 and c.image_low == c.video_low
    assert c.vocab_size == system.config.vocab_size - system.config.image_codes
    batch = shared.collate(samples, "t2i", torch.Generator().manual_seed(0))
    _, stream = span_of(shared, batch["tokens"][0].tolist(), tok.boi_id)
    images = torch.stack([s["image"] for s in samples])
    k = shared.video_tokenizer.config.temporal_downsample
    still = shared.video_tokenizer.encode(images[:, None].expand(-1, k, -1, -1, -1))  # (B, 1, h, w)
    assert stream == expected_stream(shared, still[0], c.video_low, tok.eoi_id)
    codes = shared.generate_images(model, ["a red circle"], seed=0, precision="fp32", return_codes=True)
    assert codes.shape == (1, *shared.video_tokenizer.grid[1:]) and codes.max() < c.video_codes
    drawn = shared.generate_images(model, ["a red circle"], seed=0, precision="fp32")
    first = shared.video_tokenizer.decode(codes[:, None])[:, 0].float()
    assert torch.allclose(drawn, first)
    save_system(tmp_path / "model", model, shared)  # saved without an image tokenizer, loaded the same
    loaded_model, loaded = load_system(tmp_path / "model")
    assert not (tmp_path / "model" / "image_tokenizer").exists() and loaded.options.shared_tokenizer
    assert torch.equal(loaded.generate_images(loaded_model, ["a red circle"], seed=0, precision="fp32",
                                              return_codes=True), codes)
    with pytest.raises(UmmError, match="must be unset with system_args.shared_tokenizer"):
        Emu3System.model_overrides(tok, Emu3Options(**TOKENIZERS, shared_tokenizer=True))
    with pytest.raises(UmmError, match="system_args.image_tokenizer is unset"):
        Emu3System.model_overrides(tok, Emu3Options(**video))
    # the same two mistakes when a system is built from modules (a loaded run, a test's tiny model)
    with pytest.raises(UmmError, match="takes no image tokenizer"):
        Emu3System(tok, c, Emu3Options(**video, shared_tokenizer=True), image_tokenizer=system.image_tokenizer,
                   video_tokenizer=shared.video_tokenizer)
    with pytest.raises(UmmError, match="system_args.image_tokenizer is unset"):
        Emu3System(tok, system.config, Emu3Options(**video), video_tokenizer=shared.video_tokenizer)


def test_video_temperature_samples_clips_on_their_own_and_zero_is_greedy(tiny):
    """``video_temperature`` (as LWM's) sets generate_videos' default temperature only: at 0 a clip is the greedy one
    whatever the seed, while images keep ``temperature`` and still vary with it; a negative value is refused."""
    from dataclasses import replace

    model, system, _ = tiny
    greedy = Emu3System(system.tokenizer, system.config, replace(system.options, video_temperature=0.0))
    assert greedy.sampling_defaults("generate_videos")["temperature"] == 0.0
    assert greedy.sampling_defaults("generate_images")["temperature"] == system.options.temperature == 1.0
    assert system.sampling_defaults("generate_videos")["temperature"] == 1.0  # unset: the one temperature
    clip = lambda s, seed: s.generate_videos(model, ["a red circle moves up"], frames=4, seed=seed, precision="fp32",
                                             return_codes=True)  # noqa: E731
    assert torch.equal(clip(greedy, 1), clip(greedy, 2))
    assert not torch.equal(clip(system, 1), clip(system, 2))  # sampled at 1.0: the seed matters
    image = lambda seed: greedy.generate_images(model, ["a red circle"], seed=seed, precision="fp32",
                                                return_codes=True)  # noqa: E731
    assert not torch.equal(image(1), image(2))
    with pytest.raises(UmmError, match="video_temperature must be >= 0"):
        Emu3System(system.tokenizer, system.config, replace(system.options, video_temperature=-1.0))
