"""Every registered ``test_*`` model, through its own system, on real ShapesWorld samples (timm-style).

Adding a family with a ``test_<family>`` size makes it run here automatically: each of its training tasks
collates real samples, the losses are finite and backpropagate to every trainable parameter, the same seed
gives the same losses, and save -> load gives identical outputs.
"""

import math

import pytest
import torch

import umm.models  # noqa: F401  (registers every family)
from umm import UmmError
from umm.data.shapes import ShapesWorld
from umm.models.factory import build_model, model_config
from umm.models.system import load_system, save_system
from umm.recipes import RECIPES_DIR
from umm.registry import MODELS, SYSTEMS
from umm.tokenizers.text import TextTokenizer, shapes_corpus
from umm.training.recipe import read_recipe

TEST_MODELS = MODELS.names("test_")


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


def make(name: str, tokenizer):
    base = MODELS.get(name)()
    system_cls = SYSTEMS.get(base.family)
    # the frozen parts (image tokenizers) the family's tiny recipe names explicitly; nothing defaults to one
    recipe = RECIPES_DIR / f"{name}.yaml"
    options = system_cls.parse_options(read_recipe(recipe).get("system_args") or {} if recipe.is_file() else {})
    torch.manual_seed(0)
    model = build_model(model_config(name, system_cls.model_overrides(tokenizer, options)))
    return model, system_cls(tokenizer, model.config, options)


def samples_for(system, n: int = 4) -> list[dict]:
    canvas = getattr(system.config, "image_size", 16)
    world = ShapesWorld("train", canvas=canvas, modalities=getattr(system, "modalities", ("image", "caption", "qa")),
                        frames=getattr(system.config, "frames", 8))
    return [world[i] for i in range(n)]


def run_losses(model, system, samples, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for task in system.tasks:
        batch = system.collate(samples, task, torch.Generator().manual_seed(seed))
        out[task] = system.losses(model, batch, torch.Generator().manual_seed(seed))
    return out


def test_registry_has_test_models():
    assert TEST_MODELS, "no test_* model is registered"


@pytest.mark.parametrize("name", TEST_MODELS)
def test_forward_backward_no_nan(name, tokenizer):
    model, system = make(name, tokenizer)
    samples = samples_for(system)
    losses = run_losses(model, system, samples)
    total = 0.0
    for task, named in losses.items():
        assert any(k.endswith("_loss") for k in named), f"{task} returned no *_loss"
        for key, value in named.items():
            assert torch.isfinite(value).all(), f"{name}/{task}/{key} = {value}"
        total = total + sum(v for k, v in named.items() if k.endswith("_loss"))
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(torch.isfinite(p.grad).all() for _, p in trainable if p.grad is not None)
    # zero-initialised output layers (DiT's AdaLN-zero, MAR's head) pass no gradient through them until
    # they have moved once, so the parameters are counted after one SGD step, on a second backward
    torch.optim.SGD([p for _, p in trainable], lr=1e-2).step()
    model.zero_grad(set_to_none=True)
    sum(v for named in run_losses(model, system, samples).values() for k, v in named.items() if k.endswith("_loss")).backward()
    with_grad = [n for n, p in trainable if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(with_grad) >= 0.5 * len(trainable), f"only {len(with_grad)}/{len(trainable)} parameters got gradients"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable if p.grad is not None)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_seeded_losses_are_deterministic(name, tokenizer):
    model, system = make(name, tokenizer)
    samples = samples_for(system)
    a, b = run_losses(model, system, samples, 3), run_losses(model, system, samples, 3)
    for task in a:
        for key in a[task]:
            assert torch.equal(a[task][key], b[task][key]), f"{task}/{key}"


@pytest.mark.parametrize("name", TEST_MODELS)
def test_save_load_gives_identical_outputs(name, tokenizer, tmp_path):
    model, system = make(name, tokenizer)
    save_system(tmp_path / "m", model, system)
    loaded, loaded_system = load_system(tmp_path / "m")
    assert type(loaded_system) is type(system) and loaded_system.options == system.options
    for (ka, a), (kb, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    model.eval()
    samples = samples_for(system)
    a, b = run_losses(model, system, samples, 1), run_losses(loaded, loaded_system, samples, 1)
    for task in a:
        for key in a[task]:
            assert torch.equal(a[task][key], b[task][key]), f"{task}/{key}"
    assert math.isfinite(sum(p.sum().item() for p in loaded.parameters()))


# every frozen part a family reads, by the system_args key that names it and the recipe that trains one
FROZEN_KEYS = [("test_chameleon", "image_tokenizer", "vq_s"), ("test_showo", "image_tokenizer", "fsq_s"),
               ("test_vila_u", "vision_tower", "vila_u_tower_s"), ("test_textbind", "encoders", "imagebind_s"),
               ("test_textbind", "generator", "cond_decoder_s"), ("test_nextgpt", "encoders", "imagebind_s"),
               ("test_nextgpt", "decoder", "cond_decoder_s"), ("test_seedx", "detokenizer", "seedx_detokenizer_s"),
               ("test_cond_decoder", "encoders", "imagebind_s")]


@pytest.mark.parametrize("name, key, recipe", FROZEN_KEYS)
def test_an_unset_frozen_part_is_an_error_naming_its_key_and_recipe(tokenizer, name, key, recipe):
    system_cls = SYSTEMS.get(MODELS.get(name)().family)
    args = dict(read_recipe(RECIPES_DIR / f"{name}.yaml").get("system_args") or {})
    complete = system_cls.parse_options(args)
    model = build_model(model_config(name, system_cls.model_overrides(tokenizer, complete)))
    args.pop(key)
    options = system_cls.parse_options(args)
    with pytest.raises(UmmError, match=rf"system_args\.{key} is unset.*umm train {recipe}"):
        system_cls.model_overrides(tokenizer, options)
        system_cls(tokenizer, model.config, options)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_a_system_on_a_mechanism_has_what_its_loops_read_and_every_capability_has_a_loop(name, tokenizer):
    """The system <-> pipeline contract (umm/pipelines/protocols.py): a system that names a mechanism satisfies
    that mechanism's Protocol, and each capability it lists runs a registered loop (or a method of its own)."""
    import warnings

    from umm.pipelines.protocols import PROTOCOLS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained test tokenizers warn
        _, system = make(name, tokenizer)
    if not system.mechanism:
        pytest.skip(f"{system.family} still runs its own capability methods (issue 17)")
    assert isinstance(system, PROTOCOLS[system.mechanism]), f"{system.family} lacks what {system.mechanism} loops read"
    loop_of = {"t2i": "generate_images", "caption": "caption", "qa": "answer", "interleaved": "generate_interleaved",
               "inpaint": "inpaint", "t2v": "generate_videos", "v2t": "caption_videos"}
    for capability in system.capabilities:
        if capability in loop_of:
            assert system.has_loop(loop_of[capability]), f"{system.family}: {capability} has no loop"
    with pytest.raises(UmmError, match="has no no_such_thing loop"):
        system.run_loop("no_such_thing", None)
    if "t2i" in system.capabilities:  # a registered loop runs without autograd (no graph kept across its steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, system = make(name, tokenizer)
        grad_on = []
        model.register_forward_pre_hook(lambda module, args: grad_on.append(torch.is_grad_enabled()))
        images = system.generate_images(model, ["a red circle"], steps=2, seed=0, precision="fp32")
        assert images.ndim == 4 and grad_on and not any(grad_on), "the loop ran the model with autograd on"
