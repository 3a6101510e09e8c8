"""The learning guards: a tiny model of each generating family at L1 (Transfusion and MMAR on pixel patches;
Chameleon, LWM, EMU3 and Show-o on one tiny VQ; LaVIT on a tiny dynamic tokenizer; VILA-U on a tiny tower) must
learn to draw its one object in the prompt's colour within a minute of one thread.

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


@pytest.fixture(scope="module")
def guard_vq(tmp_path_factory):
    """The tiny L1 VQ (24 px, 6x6 codes from 128) the discrete families' guards draw with, trained once."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("guard") / "vq"
    train(load_recipe(RECIPES_DIR / "test_vq_guard.yaml"), out, show_progress=False)
    return out / "model"


def discrete_guard(recipe: str, vq, tmp_path, overrides: list[str] = (), **sampling) -> tuple[float, int]:
    """Train a discrete family's guard recipe on ``vq``'s codes; the colour accuracy of its samples."""
    torch.set_num_threads(1)
    run = load_recipe(RECIPES_DIR / recipe, [f"system_args.image_tokenizer={vq}", *overrides])
    train(run, tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    return colour_accuracy(model, system, **sampling)


@pytest.mark.slow
def test_tiny_chameleon_follows_the_prompt_colour(guard_vq, tmp_path):
    """The discrete autoregressive family's guard: a tiny VQ, then a tiny Chameleon on its codes."""
    accuracy, n = discrete_guard("test_chameleon_guard.yaml", guard_vq, tmp_path, cfg_scale=1.0)  # chameleon_l1's: no CFG
    # measured 0.68 here (0.46 at CFG 3); 0.14 with the text always dropped (cfg_dropout=1), chance 1 in 8;
    # test_vq at 16 px (4x4 codes from 64) gave 0.14: its reconstructions keep the colour in 0.17 of images
    assert accuracy >= 0.4, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


@pytest.mark.slow
def test_tiny_lwm_follows_the_prompt_colour(guard_vq, tmp_path):
    """LWM's guard (its own vision embedding and head, frames of one) on the same codes."""
    accuracy, n = discrete_guard("test_lwm_guard.yaml", guard_vq, tmp_path, cfg_scale=1.0)
    # measured 0.61 here (400 steps, 14 s of training on one thread); chance 1 in 8
    assert accuracy >= 0.4, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


@pytest.mark.slow
def test_tiny_showo_follows_the_prompt_colour(guard_vq, tmp_path):
    """Show-o's guard (masked-token prediction, MaskGIT sampling) on the same codes."""
    accuracy, n = discrete_guard("test_showo_guard.yaml", guard_vq, tmp_path, steps=8, cfg_scale=1.0)
    # measured 0.75 here (1,200 steps, 37 s; CFG 3: 0.82); 0.21 after 400 steps; chance 1 in 8
    assert accuracy >= 0.4, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


@pytest.mark.slow
def test_tiny_emu3_follows_the_prompt_colour(guard_vq, tmp_path):
    """EMU3's guard (rows of codes closed by end-of-line tokens, one vocabulary, one loss) on the same codes; its
    video tokenizer is the guard VQ's geometry on clips, started from the guard VQ (system_args.image_init)."""
    torch.set_num_threads(1)
    video = tmp_path / "vqvideo"
    train(load_recipe(RECIPES_DIR / "test_vqvideo_guard.yaml", [f"system_args.image_init={guard_vq}"]), video,
          show_progress=False)
    accuracy, n = discrete_guard("test_emu3_guard.yaml", guard_vq, tmp_path,
                                 [f"system_args.video_tokenizer={video / 'model'}"], cfg_scale=1.0)
    # measured 0.68 / 0.61 at seeds 0 / 1 (400 steps, ~14 s; the video tokenizer takes 20 steps); chance 1 in 8
    assert accuracy >= 0.4, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


@pytest.mark.slow
def test_tiny_lavit_follows_the_prompt_colour(tmp_path):
    """LaVIT's guard: a tiny dynamic tokenizer (positional codes, a quarter of the cells kept), then a tiny LaVIT
    whose code sequences end where the model puts EOI."""
    torch.set_num_threads(1)
    train(load_recipe(RECIPES_DIR / "test_lavit_tokenizer_guard.yaml"), tmp_path / "tok", show_progress=False)
    accuracy, n = discrete_guard("test_lavit_guard.yaml", tmp_path / "tok" / "model", tmp_path, cfg_scale=1.0)
    # measured 0.89 at seeds 0 and 1 (1,200 steps, 31 s, after the tokenizer's 800 steps, 55 s: it reads 0.56
    # of test reconstructions exactly); 0.04 with the text always dropped; chance 1 in 8
    assert accuracy >= 0.4, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


@pytest.mark.slow
def test_tiny_vila_u_follows_the_prompt_colour(tmp_path):
    """VILA-U's guard: a tiny vision tower (residual codes aligned with text), then a tiny VILA-U that predicts one
    slot per grid position and its residual codes with the depth transformer."""
    torch.set_num_threads(1)
    train(load_recipe(RECIPES_DIR / "test_vila_u_tower_guard.yaml"), tmp_path / "tower", show_progress=False)
    tower = tmp_path / "tower" / "model"
    run = load_recipe(RECIPES_DIR / "test_vila_u_guard.yaml", [f"system_args.vision_tower={tower}"])
    train(run, tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    accuracy, n = colour_accuracy(model, system, cfg_scale=1.0)
    # measured 0.68 / 0.61 at seeds 0 / 1 (1,200 steps, ~50 s, after the tower's 1,200 steps, 75 s: its
    # reconstructions keep the colour in 0.50 of test images at 600 steps); 0.50 after 800 steps; 0.29 with the
    # text always dropped; chance 1 in 8
    assert accuracy >= 0.45, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


@pytest.mark.slow
def test_tiny_mmar_follows_the_prompt_colour(tmp_path):
    """MMAR's guard: masked-order AR with the per-token diffusion head, on pixel patches."""
    torch.set_num_threads(1)
    train(load_recipe(RECIPES_DIR / "test_mmar_guard.yaml"), tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    accuracy, n = colour_accuracy(model, system, cfg_scale=3.0)
    # measured 0.96 / 0.82 / 0.86 at seeds 0 / 1 / 2 (2,000 steps, 58 s; 0.29 at seed 2 after 1,000 steps); 0.29
    # with the text always dropped (it draws several blobs, so "any object of the colour" sits above 1 in 8)
    assert accuracy >= 0.5, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"


@pytest.mark.slow
def test_a_guard_fails_when_the_text_is_ignored(guard_vq, tmp_path):
    """The guard's floor: with the caption always dropped (cfg_dropout=1) the same Chameleon draws colours near
    chance, so the 0.4 the guards ask for is a property of the text path, not of the data."""
    torch.set_num_threads(1)
    run = load_recipe(RECIPES_DIR / "test_chameleon_guard.yaml",
                      [f"system_args.image_tokenizer={guard_vq}", "system_args.cfg_dropout=1.0"])
    train(run, tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    accuracy, n = colour_accuracy(model, system, cfg_scale=1.0)
    assert accuracy < 0.3, f"a model that never read its text matched the colour in {accuracy:.2f} of {n} images"


def test_tiny_transfusion_follows_the_prompt_colour(tmp_path):
    torch.set_num_threads(1)
    run = load_recipe(RECIPES_DIR / "test_transfusion_guard.yaml")
    train(run, tmp_path / "run", show_progress=False)
    model, system = load_system(tmp_path / "run" / "model")
    accuracy, n = colour_accuracy(model, system, steps=10, cfg_scale=3.0)
    # measured 0.46-0.54 over three seeds here (53-59 s of training on one thread); 0.09-0.16 without the
    # text path (RESULTS.md)
    assert accuracy >= 0.35, f"the object's colour follows the prompt in {accuracy:.2f} of {n} images (chance 0.125)"
