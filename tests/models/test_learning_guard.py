"""The learning guard: a tiny Transfusion at L1 must learn to draw its one object in the prompt's colour.

"Loss falls" passes for a model that ignores its text (the demo model once drew the same picture for "a red
circle" and "three white stars"). This test fails then: the colour of the one drawn object must follow the
prompt far above chance (1 in 8). The colour is what the judge reads exactly at any object size, and it is the
first attribute a text path carries (benchmarks/RESULTS.md, "The 60-second learning guard")."""


import pytest
import torch

import umm.models  # noqa: F401
from umm.data.shapes.levels import get_level
from umm.eval.judge.image import parse_image
from umm.models.system import load_system
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR



def colour_accuracy(model, system, **sampling) -> tuple[float, int]:
    """Share of one-object L1 prompts (every seen colour-shape pair) whose drawn object has the prompt's colour."""
    pairs = get_level("L1").seen_combinations  # (colour, shape) pairs of the training split
    prompts = [f"a {colour} {shape}" for colour, shape in pairs]
    images = system.generate_images(model, prompts, seed=0, precision="fp32", **sampling)
    drawn = [parse_image(image) for image in images]
    right = [any(obj.colour == colour for obj in objects) for objects, (colour, _) in zip(drawn, pairs)]
    return sum(right) / len(right), len(right)


@pytest.mark.slow
def test_tiny_chameleon_follows_the_prompt_colour(tmp_path):
    """The discrete autoregressive family's guard: a tiny VQ, then a tiny Chameleon on its codes."""
    torch.set_num_threads(1)
    train(load_recipe(RECIPES_DIR / "test_vq_guard.yaml"), tmp_path / "vq", show_progress=False)
    run = load_recipe(RECIPES_DIR / "test_chameleon_guard.yaml",
                      [f"system_args.image_tokenizer={tmp_path / 'vq' / 'model'}"])
    train(run, tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    accuracy, n = colour_accuracy(model, system, cfg_scale=1.0)  # chameleon_l1's sampling: no guidance
    # measured 0.68 here (0.46 at CFG 3); 0.14 with the text always dropped (cfg_dropout=1), chance 1 in 8;
    # test_vq at 16 px (4x4 codes from 64) gave 0.14: its reconstructions keep the colour in 0.17 of images
    assert accuracy >= 0.4, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


def test_tiny_transfusion_follows_the_prompt_colour(tmp_path):
    torch.set_num_threads(1)
    run = load_recipe(RECIPES_DIR / "test_transfusion_guard.yaml")
    train(run, tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    accuracy, n = colour_accuracy(model, system, steps=10, cfg_scale=3.0)
    # measured 0.46-0.54 over three seeds here (53-59 s of training on one thread); 0.09-0.16 without the
    # text path (RESULTS.md)
    assert accuracy >= 0.35, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"
