"""Reconstruction error and codebook usage of every image tokenizer vs codebook size, trained alike.

Feeds the survey's claim that continuous latents avoid the quantisation error of discrete codes: every
discrete tokenizer (VQ, FSQ, LFQ, RQ) is trained with the same autoencoder, data, optimizer and number of
steps at several codebook sizes, next to the KL-VAE (continuous, no codebook), and scored on held-out
ShapesWorld images. The ``vs VAE`` column is each row's MSE over the VAE's in the same run.

Run: ``OMP_NUM_THREADS=1 python benchmarks/tokenizer_recon.py [--steps 300] [--sizes 64,256,1024]
[--families vq,fsq,lfq,rq] [--canvas 32]``. ~20 s per row per 100 steps on one core at canvas 32.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

import umm.models  # noqa: F401  (registers every family)
from umm.eval.reconstruction import evaluate_reconstruction
from umm.models.system import load_system
from umm.training.loop import train
from umm.training.recipe import load_recipe

# FSQ levels per codebook size (Mentzer et al. 2023, table 1, and nearby products for 64)
FSQ_LEVELS = {64: (4, 4, 4), 256: (8, 6, 5), 1024: (8, 5, 5, 5), 4096: (7, 5, 5, 5, 5), 16384: (8, 8, 8, 6, 5)}


def model_args(family: str, size: int) -> dict:
    if family in ("vq", "rq"):
        return {"codebook_size": size}
    if family == "fsq":
        if size not in FSQ_LEVELS:
            raise SystemExit(f"no FSQ levels for {size} codes; choose from {sorted(FSQ_LEVELS)}")
        return {"levels": list(FSQ_LEVELS[size])}
    if family == "lfq":
        bits = int(math.log2(size))
        if 2**bits != size:
            raise SystemExit(f"LFQ needs a power-of-two codebook, got {size}")
        return {"bits": bits}
    return {}


def run_one(family: str, size: int | None, steps: int, canvas: int, batch: int) -> dict[str, float]:
    recipe = {
        "model": f"{family}_s",
        "model_args": {**model_args(family, size or 0), "autoencoder": {"image_size": canvas}},
        "data": {"name": "shapes", "canvas": canvas, "modalities": ["image"]},
        "tokenizer": {"corpus_size": 200},
        "tasks": [{"name": "reconstruct", "batch_size": batch}],
        "train": {"steps": steps, "lr": 3e-3, "warmup_steps": min(50, steps // 5), "weight_decay": 0.0,
                  "log_every": max(1, steps), "save_every": steps},
    }
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(load_recipe(None, base=recipe), out, show_progress=False)
        seconds = time.perf_counter() - start
        model, system = load_system(f"{out}/model")
        metrics = evaluate_reconstruction(model, system, n_images=100)
    return {**metrics, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sizes", default="64,256,1024", help="codebook sizes (comma-separated)")
    parser.add_argument("--families", default="vq,fsq,lfq,rq", help="discrete families; the VAE always runs")
    parser.add_argument("--canvas", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [("vae", None)] + [(f, s) for f in args.families.split(",") for s in sizes]
    results = []
    for family, size in rows:
        results.append((family, size, run_one(family, size, args.steps, args.canvas, args.batch)))
        print(f"  done {family} {size or '-'} in {results[-1][2]['seconds']:.0f} s", flush=True)
    vae_mse = results[0][2]["recon/mse"]
    print(f"\nTokenizers on ShapesWorld {args.canvas}x{args.canvas}, {args.steps} steps of batch {args.batch} each, "
          "100 held-out images (RQ: depth 4, so 4x the bits)")
    print(f"{'family':7s} {'codes':>6s} {'bits/img':>9s} {'MSE':>8s} {'PSNR':>6s} {'vs VAE':>7s} {'used':>6s} "
          f"{'perplex':>8s} {'judge obj':>9s} {'exact':>6s} {'train s':>8s}")
    for family, size, m in results:
        bits = f"{m['recon/bits_per_image']:9.0f}" if "recon/bits_per_image" in m else f"{'(float)':>9s}"
        used = f"{m['recon/codebook_used']:6.1%}" if "recon/codebook_used" in m else f"{'-':>6s}"
        perplexity = f"{m['recon/perplexity']:8.1f}" if "recon/perplexity" in m else f"{'-':>8s}"
        print(f"{family:7s} {size or '-':>6} {bits} {m['recon/mse']:8.5f} {m['recon/psnr']:6.2f} "
              f"{m['recon/mse'] / vae_mse:7.2f} {used} {perplexity} {m['recon/judge_objects']:9.2f} "
              f"{m['recon/judge_exact']:6.2f} {m['seconds']:8.0f}")


if __name__ == "__main__":
    main()
