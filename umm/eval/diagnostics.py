"""Diagnostics that name the cause of a generator's failure, beside its GenEval-like score.

A low score alone does not say whether a model ignores its text, cannot draw through its tokenizer,
or cannot denoise. Each diagnostic below answers one of those questions:

- ``adherence``: per stated attribute (shape, colour, cell, count), how often the judge reads what the
  prompt asked, with the confusion of asked vs read values; and the mean pixel change between the
  images of two *different* prompts drawn from the *same* noise, against the change between two seeds
  of the *same* prompt. A model that ignores its text has ``prompt_change / seed_change`` near 0.
- ``ceiling``: the judge's acceptance of the system's own tokenizer/VAE reconstructions: the best
  any generator that draws through it can score.
- ``denoise``: for diffusion systems, the judge's acceptance of the one-step x0 prediction from the
  true x_t at t = 0.1, 0.3, 0.5, 0.7, and its pixel error.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import torch

from umm.data.shapes import ShapesWorld
from umm.data.shapes.vocab import CELL_NAMES
from umm.eval.judge import SceneSpec, parse_image, satisfies, scene_of
from umm.eval.judge.scores import GenEvalPrompt
from umm.eval.judge.spec import best_alignment
import umm.pipelines  # noqa: F401  (registers the loops that run every system's capabilities)

DENOISE_TIMES: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)


def attribute_confusion(images, prompts: list[GenEvalPrompt]) -> tuple[dict[str, float], dict[str, Counter]]:
    """Per attribute a prompt states: accuracy of the judge's reading, and Counter{(asked, read)}.

    Objects are matched to the prompt's by the assignment that agrees most; an asked object with no
    drawn partner reads as "missing". Count compares the number of objects."""
    confusion: dict[str, Counter] = defaultdict(Counter)
    for image, prompt in zip(images, prompts):
        read = scene_of(parse_image(image))
        spec = prompt.spec
        confusion["count"][(spec.count, len(read))] += 1
        pairs = dict(best_alignment(spec, read))
        for i, obj in enumerate(spec.objects):
            got = read[pairs[i]] if i in pairs else None
            for attribute in ("shape", "colour"):
                asked = getattr(obj, attribute)
                if asked is not None:
                    confusion[attribute][(asked, got[attribute] if got else "missing")] += 1
            if obj.row is not None:
                cell = CELL_NAMES[(obj.row, obj.col)]
                confusion["cell"][(cell, CELL_NAMES[(got["row"], got["col"])] if got else "missing")] += 1
    accuracy = {k: sum(v for (a, b), v in table.items() if a == b) / sum(table.values()) for k, table in confusion.items()}
    return accuracy, dict(confusion)


def pixel_changes(system, model, prompts: list[str], seed: int, **kwargs) -> dict[str, float]:
    """Mean |a - b| between images of different prompts from the same noise (row i of two calls with
    one seed draws the same noise) and between two seeds of the same prompts. ``kwargs`` go to every
    ``generate_images`` call (steps, cfg_scale, batch_size, precision, sampler)."""
    if len(prompts) < 2:
        raise ValueError("pixel_changes needs at least two prompts")
    base = system.generate_images(model, prompts, seed=seed, **kwargs).float()
    other_prompt = system.generate_images(model, prompts[1:] + prompts[:1], seed=seed, **kwargs).float()
    other_seed = system.generate_images(model, prompts, seed=seed + 1, **kwargs).float()
    prompt_change = float((base - other_prompt).abs().mean())
    seed_change = float((base - other_seed).abs().mean())
    return {"prompt_change": prompt_change, "seed_change": seed_change,
            "prompt_vs_seed": prompt_change / max(seed_change, 1e-8), "brightness": float(base.mean())}  # fmt: skip


def generator_tokenizer(system):
    """The frozen tokenizer or VAE a system draws images through (``image_coder``: EMU3's image VQ or its video
    VQ on still clips; ``image_tokenizer``; ``vae``), or None for a system that generates pixels directly."""
    for name in ("image_coder", "image_tokenizer", "vae"):
        module = getattr(system, name, None)
        if module is not None:
            return module
    return None


@torch.no_grad()
def ceiling(tokenizer, level: str, canvas: int, n: int = 100, seed: int = 1234, split: str = "test") -> dict[str, float]:
    """Judge acceptance of reconstructions through ``tokenizer`` (encode then decode) of ``n`` images."""
    world = ShapesWorld(split, canvas=canvas, seed=seed, level=level, modalities=("image",))
    samples = [world[i] for i in range(n)]
    pixels = torch.stack([s["image"] for s in samples])
    device = next(tokenizer.parameters()).device
    recon = torch.cat([tokenizer.decode(tokenizer.encode(pixels[i : i + 32].to(device))).float().cpu()
                       for i in range(0, n, 32)])  # fmt: skip
    hits = [satisfies(scene_of(parse_image(img.clamp(0, 1))), SceneSpec.from_scene(s["scene"])) for img, s in zip(recon, samples)]
    return {"accepted": float(np.mean(hits)), "mse": float((recon - pixels).pow(2).mean())}


@torch.no_grad()
def denoise_check(system, model, level: str, canvas: int, n: int = 48, seed: int = 1234,
                  split: str = "test", precision: str = "bf16") -> dict[str, float]:  # fmt: skip
    """Judge acceptance and pixel MSE of the one-step x0 from x_t at each of ``DENOISE_TIMES``."""
    world = ShapesWorld(split, canvas=canvas, seed=seed, level=level, modalities=("image", "caption"))
    samples = [world[i] for i in range(n)]
    images = torch.stack([s["image"] for s in samples])
    captions = [s["caption_full"] for s in samples]
    out = {}
    for t in DENOISE_TIMES:
        x0 = system.predict_x0(model, images, captions, t, seed=seed, precision=precision).float()
        hits = [satisfies(scene_of(parse_image(img)), SceneSpec.from_scene(s["scene"])) for img, s in zip(x0, samples)]
        out[f"t{t:g}"] = float(np.mean(hits))
        out[f"t{t:g}_mse"] = float((x0 - images).pow(2).mean())
    return out


def confusion_table(table: Counter) -> str:
    """A Markdown confusion table (rows: asked/true value, columns: read value) from Counter{(a, b)}."""
    rows = sorted({a for a, _ in table}, key=str)
    cols = sorted({b for _, b in table} | set(rows), key=lambda v: (v == "missing", str(v)))
    lines = ["| asked \\ read | " + " | ".join(map(str, cols)) + " |", "|---" * (len(cols) + 1) + "|"]
    for a in rows:
        lines.append(f"| {a} | " + " | ".join(str(table.get((a, b), 0) or ".") for b in cols) + " |")
    return "\n".join(lines)
