"""eps- vs v-prediction for MMAR's per-token diffusion head under bf16 autocast (MMAR, arXiv 2410.10798,
sec. 3.3: v-prediction minimises the error that bf16 rounding of the head's output causes in the image).

Run: ``OMP_NUM_THREADS=1 python benchmarks/mmar_eps_vs_v.py [--steps 300 --dim 128 --depth 4]``

Part 1, numbers only: the exact target of each parameterisation, rounded to bf16 (the best a bf16 network
can output), is turned back into x0 the way the sampler does; the x0 error per noise level shows eps's
growing like sigma/alpha while v's stays bounded.

Part 2, training: two identical small MMARs (same seed, data and steps, bf16 autocast, text-to-image on
ShapesWorld 32x32) differ only in the head's parameterisation. Reported: the final training MSE in each
target's own units (not comparable across rows), the x0 error of the head's one-step prediction on held-out
images at several noise levels (bf16 autocast, comparable), and the judge's GenEval-like score of sampled
images with the non-finite share.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import umm.models  # noqa: F401  (registers every family)
from umm.data.shapes import ShapesWorld
from umm.eval.judge import geneval_prompts, geneval_score
from umm.models.mmar import HeadInput
from umm.models.system import load_system
from umm.nn import Layout
from umm.paths import GaussianPath
from umm.training.loop import train
from umm.training.recipe import load_recipe
import umm.pipelines  # noqa: F401  (registers the loops that run every system's capabilities)

LEVELS = (0.1, 0.5, 0.9, 0.99, 0.999)


def rounding_error(param: str, t: float) -> float:
    """MSE of x0 implied by the bf16-rounded exact target at time t (pixel patches in [-1, 1])."""
    x0 = torch.rand(8192, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    path = GaussianPath("cosine", param)
    tt = torch.full((x0.shape[0],), min(t, path.t_max))
    x_t = path.add_noise(x0, noise, tt)
    x0_hat, _ = path.to_x0_eps(path.target(x0, noise, tt).bfloat16().float(), x_t, tt)
    return (x0_hat - x0).pow(2).mean().item()


@torch.no_grad()
def x0_error(model, system, samples: list[dict], t: float) -> float:
    """Held-out MSE of the head's one-step x0 prediction (under bf16 autocast) for every masked token at t."""
    batch = system.collate(samples, "t2i", torch.Generator().manual_seed(7))
    layout = Layout(batch["block"], batch["positions"], batch["valid"], batch["next_position"])
    rows, x0 = system.head_targets(batch)
    tt = torch.full((x0.shape[0], 1), min(t, system.path.t_max))
    noise = torch.randn((x0.shape[0], 1, x0.shape[1]), generator=torch.Generator().manual_seed(8))
    x_t = system.path.add_noise(x0[:, None], noise, tt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch["tokens"], batch["kinds"], batch["patches"], batch["masked"], layout,
                    HeadInput(rows, x_t, tt))
    x0_hat, _ = system.path.to_x0_eps(out.head.float(), x_t, tt)
    return (x0_hat.clamp(-1, 1) - x0[:, None]).pow(2).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--head-steps", type=int, default=25)
    parser.add_argument("--out", default=None, help="keep the two runs here (default: a temporary directory)")
    args = parser.parse_args()

    print("Part 1: x0 MSE implied by the exact target rounded to bf16 (pixel patches in [-1, 1])")
    print(f"| {'t':>6} | {'eps':>10} | {'v':>10} |")
    print(f"|{'-' * 8}|{'-' * 12}|{'-' * 12}|")
    for t in LEVELS:
        print(f"| {t:>6} | {rounding_error('eps', t):>10.3g} | {rounding_error('v', t):>10.3g} |")

    held_out = [ShapesWorld("heldout", canvas=32, seed=1234)[i] for i in range(64)]
    prompts = geneval_prompts(args.prompts, "heldout", 1234)
    results = {}
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mmar_eps_vs_v-"))
    for param in ("eps", "v"):
        run = load_recipe(None, base={
            "model": "mmar_s", "name": f"eps_vs_v_{param}",
            "model_args": {"head_width": args.dim,
                           "transformer": {"dim": args.dim, "depth": args.depth, "heads": 4, "rope_axes": 2}},
            "system_args": {"parameterization": param},
            "data": {"name": "shapes", "canvas": 32},
            "tokenizer": {"vocab_size": 512, "corpus_size": 5000},
            "tasks": [{"name": "t2i", "batch_size": args.batch}],
            "train": {"steps": args.steps, "lr": 1e-3, "warmup_steps": 20, "precision": "bf16", "log_every": 25,
                      "save_every": args.steps, "seed": 0},
        })
        start = time.perf_counter()
        result = train(run, root / param, show_progress=False)
        seconds = time.perf_counter() - start
        model, system = load_system(root / param / "model")
        errors = [x0_error(model, system, held_out, t) for t in LEVELS]
        images = system.generate_images(model, [p.prompt for p in prompts], steps=args.head_steps, cfg_scale=3.0,
                                        seed=1234, batch_size=16)
        finite = torch.isfinite(images).all(dim=(1, 2, 3))
        scores = geneval_score(torch.nan_to_num(images).clamp(0, 1), prompts).to_dict()
        last = sum(result.losses[-10:]) / len(result.losses[-10:])
        results[param] = (last, errors, scores["overall"], 1 - finite.float().mean().item(), seconds)

    print(f"\nPart 2: two small MMARs (dim {args.dim}, depth {args.depth}), {args.steps} steps of t2i at batch "
          f"{args.batch}, bf16 autocast; runs in {root}")
    header = " | ".join(f"x0 MSE t={t}" for t in LEVELS)
    print(f"| param | final train loss (LM + diffusion, own units) | {header} | GenEval overall | non-finite "
          "| train s |")
    print("|---|---|" + "---|" * len(LEVELS) + "---|---|---|")
    for param, (last, errors, overall, bad, seconds) in results.items():
        cells = " | ".join(f"{e:.4f}" for e in errors)
        print(f"| {param} | {last:.4f} | {cells} | {overall:.3f} | {bad:.1%} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
