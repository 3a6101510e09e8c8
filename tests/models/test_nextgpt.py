"""NExT-GPT: signal tokens after the text vocabulary, the L2 target is the decoder's own text condition,
routing by the first signal token (malformed streams give a clear result), the training stages (what each
trains, starting from the previous run), free generation that routes into the decoder, and the tiny
recipe end to end."""


import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm.config import ConfigError
from umm.data.shapes import ShapesWorld
from umm.eval.harness import EvalConfig, evaluate
from umm.models.factory import build_model, model_config
from umm.models.nextgpt import DECODER_DIR, STAGES, NextGPTOptions, NextGPTSystem, route
from umm.models.system import load_system
from umm.objectives import IGNORE
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


def make(tokenizer, **options):
    opts = NextGPTOptions(**{"encoders": "test_imagebind", "decoder": "test_cond_decoder", **options})
    torch.manual_seed(0)
    model = build_model(model_config("test_nextgpt", NextGPTSystem.model_overrides(tokenizer, opts))).eval()
    return model, NextGPTSystem(tokenizer, model.config, opts)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    world = ShapesWorld("train", canvas=16, max_objects=2)
    return (*make(tokenizer), [world[i] for i in range(4)])


def test_signal_tokens_are_rows_after_the_text_vocabulary(tiny):
    model, system, _ = tiny
    v, k = system.tokenizer.vocab_size, model.config.signal_tokens
    assert system.signals == {"image": (v, v + 1), "audio": (v + 2, v + 3), "video": (v + 4, v + 5)}
    assert model.lm.token_embed.num_embeddings == v + 3 * k == model.lm.lm_head.out_features
    assert [system.token_name(i) for i in system.signals["video"]] == ["[VID0]", "[VID1]"]


def test_t2i_regresses_the_decoders_own_condition_from_the_signal_tokens(tiny):
    model, system, samples = tiny
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    image = list(system.signals["image"])
    for row in range(len(samples)):
        assert batch["tokens"][row, batch["out_slots"][row]].tolist() == image
        targets = [int(t) for t in batch["text_targets"][row] if t != IGNORE]
        assert targets == image + [system.tokenizer.eos_id]  # the caption itself is the prompt, not a target
    assert torch.equal(batch["target"], system.decoder.text_condition([s["caption"] for s in samples]))
    losses = system.losses(model, batch, torch.Generator().manual_seed(0))
    assert set(losses) >= {"lm_loss", "l2_loss"}
    # the output projector learns from the L2 loss alone
    model.zero_grad()
    losses["lm_loss"].backward()
    assert all(p.grad is None for p in model.output_projector.parameters())


def test_routing_follows_the_first_signal_token_and_explains_malformed_streams(tiny):
    _, system, _ = tiny
    img, aud, vid = system.signals["image"], system.signals["audio"], system.signals["video"]
    text = system.tokenizer.encode("here it is")

    def go(ids):
        return route(ids, system.signals, system.decoders, system.token_name)

    ok = go(text + list(img) + [2])
    assert (ok.kind, ok.modality, ok.start) == ("image", "image", len(text))
    assert go(text).kind == "none" and "no signal token" in go(text).reason
    partial = go(text + [img[0]])
    assert partial.kind == "none" and "partial or out of order" in partial.reason and "[IMG0]" in partial.reason
    swapped = go([img[1], img[0]])
    assert swapped.kind == "none" and swapped.start == 0 and "got [[IMG1] [IMG0]]" in swapped.reason
    interrupted = go([img[0]] + text + [img[1]])
    assert interrupted.kind == "none" and "partial or out of order" in interrupted.reason
    audio = go(list(aud) + list(img))  # the first signal decides, even when a valid image group follows
    assert (audio.kind, audio.modality) == ("none", "audio") and "no decoder for audio" in audio.reason
    assert go(list(vid)).reason == "no decoder for video is attached to this system"
    assert go([]).kind == "none"


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_trains_only_its_parts(tokenizer, stage):
    model, system = make(tokenizer, stage=stage)
    system.prepare_model(model)
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("lm.") else "")
                 for n, p in model.named_parameters() if p.requires_grad}
    expected = {
        "all": {"lm.token_embed", "lm.input_projector", "lm.trunk", "lm.lm_head", "output_projector"},
        "text": {"lm.token_embed", "lm.trunk", "lm.lm_head"},
        "input": {"lm.input_projector"},
        "output": {"output_projector"},
        "instruct": {"lm.token_embed", "lm.input_projector", "lm.trunk", "lm.lm_head", "output_projector"},
    }[stage]
    assert trainable == expected


def test_a_stage_starts_from_the_previous_run_and_changes_only_its_parts(tmp_path):
    first = load_recipe(RECIPES_DIR / "test_nextgpt.yaml", ["train.steps=4", "tasks=[{name: caption, batch_size: 4}]",
                                                        "system_args.stage=input"])
    train(first, tmp_path / "stage1", show_progress=False)
    previous, _ = load_system(tmp_path / "stage1" / "model")
    second = load_recipe(RECIPES_DIR / "test_nextgpt.yaml", [
        "train.steps=4", "tasks=[{name: t2i, batch_size: 4}]", "system_args.stage=output",
        f"system_args.init_from={tmp_path / 'stage1' / 'model'}", f"tokenizer.path={tmp_path / 'stage1' / 'model'}"])
    train(second, tmp_path / "stage2", show_progress=False)
    after, _ = load_system(tmp_path / "stage2" / "model")
    before, after = previous.state_dict(), after.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("output_projector.") for name in changed)
    # a stage on another tokenizer is refused (its token ids would mean something else)
    third = load_recipe(RECIPES_DIR / "test_nextgpt.yaml", ["train.steps=1", f"system_args.init_from={tmp_path / 'stage1' / 'model'}",
                                                        "tokenizer.corpus_size=500"])
    with pytest.raises(ConfigError, match="init_from"):
        train(third, tmp_path / "stage3", show_progress=False)


def test_free_generation_routes_signal_tokens_into_the_image_decoder(tokenizer):
    """A tiny LM taught that a caption is followed by [IMG0] [IMG1] [EOS] asks for an image by itself."""
    model, system = make(tokenizer, max_new_tokens=6)
    world = ShapesWorld("train", canvas=16, max_objects=1)
    samples = [world[i] for i in range(8)]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
    for _ in range(40):
        loss = system.losses(model, batch, torch.Generator().manual_seed(0))["lm_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    results = system.generate(model, [s["caption"] for s in samples[:2]], steps=2, precision="fp32")
    for result in results:
        assert (result.kind, result.start, result.reason) == ("image", 0, "") and result.image.shape == (3, 16, 16)
    fresh, fresh_system = make(tokenizer, max_new_tokens=6)  # an untrained LM: a result, never an exception
    assert all(r.kind in ("image", "none") for r in fresh_system.generate(fresh, ["a red circle"], steps=2))


def test_tiny_recipe_trains_saves_and_runs_every_capability(tmp_path):
    run = load_recipe(RECIPES_DIR / "test_nextgpt.yaml")
    result = train(run, tmp_path, show_progress=False)
    assert result.losses[-1] < 0.85 * result.losses[0]
    assert (tmp_path / "model" / DECODER_DIR / "encoders" / "model.safetensors").is_file()
    model, system = load_system(tmp_path / "model")
    metrics = evaluate(model, system, EvalConfig(n_prompts=4, n_images=4, steps=3, batch_size=8)).metrics
    assert {"geneval/overall", "caption/exact", "qa/accuracy"} <= set(metrics)
