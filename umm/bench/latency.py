"""Sampling latency vs tokens per image: autoregressive (with and without KV cache), MaskGIT and diffusion.

Every method runs the systems' own pipelines on freshly initialised models of the same width and depth
(latency does not depend on training), generating a batch of images at 16², 32² and 64² pixels, i.e.
16, 64 and 256 image tokens with a /4 tokenizer or 4-pixel patches. Reported: milliseconds per image,
network evaluations (NFE) per image and tokens x steps, the survey's "diffusion inference is faster than
AR" in numbers. ``benchmarks/sampling_latency.py`` prints the same table from the command line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from umm.models.factory import create_model
from umm.registry import SYSTEMS
from umm.tokenizers.text import TextTokenizer, shapes_corpus
import umm.pipelines  # noqa: F401  (registers the loops that run every system's capabilities)

PROMPT = "a red circle above a blue square"


def _timed(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _transformer(dim: int, depth: int, axes: int = 2) -> dict:
    return {"dim": dim, "depth": depth, "heads": max(1, dim // 64), "rope_axes": axes}


def diffusion_method(tokenizer, size: int, dim: int, depth: int, steps: int):
    from umm.models.transfusion import TransfusionSystem

    model = create_model("transfusion_s", vocab_size=tokenizer.vocab_size, image_size=size, transformer=_transformer(dim, depth)).eval()
    system = TransfusionSystem(tokenizer, model.config)
    return (lambda prompts: system.generate_images(model, prompts, steps=steps, cfg_scale=3.0)), 2 * steps


def ar_method(tokenizer, size: int, dim: int, depth: int, use_cache: bool):
    from umm.models.chameleon import ChameleonSystem
    from umm.pipelines import ar

    images = create_model("vq_s", autoencoder={"image_size": size}).eval()
    model = create_model("chameleon_s", text_vocab=tokenizer.vocab_size, image_codes=images.codebook_size,
                         image_size=size, grid=images.grid[0], transformer=_transformer(dim, depth, 1)).eval()
    system = ChameleonSystem(tokenizer, model.config, ChameleonSystem.Options(), image_tokenizer=images)
    nfe = 2 * images.grid[0] * images.grid[1]  # one forward per code, two branches for guidance
    return (lambda prompts: ar.generate_images(model, system, prompts, cfg_scale=3.0, use_cache=use_cache)), nfe


def maskgit_method(tokenizer, size: int, dim: int, depth: int, steps: int):
    system_cls = SYSTEMS.get("showo")
    images = create_model("lfq_s", autoencoder={"image_size": size}).eval()
    base = create_model("showo_s").config
    overrides = system_cls.model_overrides(tokenizer, system_cls.Options(image_tokenizer="lfq_s"))
    overrides.update(image_size=size, grid=images.grid[0], image_codes=images.codebook_size)
    model = create_model("showo_s", transformer=_transformer(dim, depth), **{k: v for k, v in overrides.items()
                                                                            if hasattr(base, k)}).eval()
    system = system_cls(tokenizer, model.config, system_cls.Options(image_tokenizer="lfq_s"), image_tokenizer=images)
    return (lambda prompts: system.generate_images(model, prompts, steps=steps, cfg_scale=3.0)), 2 * steps


@torch.no_grad()
def measure_latency(sizes: tuple[int, ...] = (16, 32, 64), dim: int = 256, depth: int = 6, images: int = 4,
                    steps: int = 25, repeats: int = 2, quick: bool = False) -> list[dict]:
    """Rows {method, size, tokens, ms_per_image, nfe_per_image, token_steps}; ``quick`` = tiny and fast."""
    if quick:
        sizes, dim, depth, images, steps, repeats = (16,), 32, 1, 2, 2, 1
    tokenizer = TextTokenizer.train(shapes_corpus(2000), 384)
    prompts = [PROMPT] * images
    methods: dict[str, Callable] = {
        "diffusion": lambda size: diffusion_method(tokenizer, size, dim, depth, steps),
        "ar_cached": lambda size: ar_method(tokenizer, size, dim, depth, True),
        "ar_uncached": lambda size: ar_method(tokenizer, size, dim, depth, False),
    }
    if "showo" in SYSTEMS:
        methods["maskgit"] = lambda size: maskgit_method(tokenizer, size, dim, depth, steps)
    rows = []
    for size in sizes:
        tokens = (size // 4) ** 2
        for name, build in methods.items():
            torch.manual_seed(0)
            generate, nfe = build(size)
            seconds = _timed(lambda: generate(prompts), repeats)
            steps_per_image = tokens if name.startswith("ar") else steps
            rows.append({"method": name, "size": size, "tokens": tokens, "ms_per_image": 1000 * seconds / images,
                         "nfe_per_image": nfe, "token_steps": tokens * steps_per_image})
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m umm.bench.latency --out latency.json [--quick]``: the sweep as its own process, so ``umm bench``
    runs it in its pool, pinned to a free core beside a training row (``umm.bench.runner.latency_job``)."""
    import argparse
    import json
    from pathlib import Path

    import umm.models  # noqa: F401  (registers every family: the MaskGIT method needs Show-o)

    parser = argparse.ArgumentParser(prog="python -m umm.bench.latency", description=main.__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the JSON file of rows to write")
    parser.add_argument("--quick", action="store_true", help="tiny and fast (the quick bench)")
    args = parser.parse_args(argv)
    rows = measure_latency(quick=args.quick)
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    tmp.replace(out)  # atomic: a sweep cut off leaves no half-written file to be reused
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
