"""Sampling latency vs tokens per image: autoregressive (Chameleon, with and without KV cache), MaskGIT
(Show-o) and diffusion (Transfusion), at 16², 32² and 64² images.

Feeds the survey's claim "diffusion inference is faster than AR": an AR model runs its network once per
image token (N = 16, 64, 256 here), MaskGIT and diffusion a fixed number of times (``--steps``) over all N
tokens at once. Every method runs the systems' own pipelines on freshly initialised models of the same
width and depth (latency does not depend on training; ``umm.bench.latency`` builds them), all with
classifier-free guidance (two branches), generating ``--images`` images per call; the best of ``--repeats``
timed calls after a warm-up is kept. Columns: ms per image, network evaluations per image (NFE, both CFG
branches counted), tokens x steps (N x the number of sequential steps), and the speed-up over cached AR at
the same size, measured in this run.

Run: ``OMP_NUM_THREADS=1 python benchmarks/sampling_latency.py [--sizes 16,32,64] [--dim 256] [--depth 6]
[--steps 25] [--images 4] [--repeats 2]``; ``--quick`` is a seconds-long smoke run (16², tiny model).
"""

from __future__ import annotations

import argparse
import time

import torch

import umm.models  # noqa: F401  (registers every family)
from umm.bench.latency import measure_latency

LABELS = {"ar_cached": "AR + KV cache (Chameleon)", "ar_uncached": "AR, no cache (Chameleon)",
          "maskgit": "MaskGIT (Show-o)", "diffusion": "diffusion (Transfusion)"}


def table(rows: list[dict]) -> str:
    head = f"{'method':28s} {'image':>6s} {'tokens':>6s} {'ms/image':>10s} {'NFE/image':>10s} {'tokens x steps':>15s} " \
           f"{'vs AR+cache':>12s}"
    lines = [head, "-" * len(head)]
    cached = {r["size"]: r["ms_per_image"] for r in rows if r["method"] == "ar_cached"}
    for r in sorted(rows, key=lambda r: (r["size"], list(LABELS).index(r["method"]))):
        speedup = cached[r["size"]] / r["ms_per_image"] if r["size"] in cached else float("nan")
        lines.append(f"{LABELS[r['method']]:28s} {str(r['size']) + '²':>6s} {r['tokens']:6d} {r['ms_per_image']:10.1f} "
                     f"{r['nfe_per_image']:10d} {r['token_steps']:15d} {speedup:11.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,32,64", help="image sides in pixels (tokens = (side / 4)^2)")
    parser.add_argument("--dim", type=int, default=256, help="transformer width of every method")
    parser.add_argument("--depth", type=int, default=6, help="transformer depth of every method")
    parser.add_argument("--steps", type=int, default=25, help="MaskGIT iterations and diffusion steps")
    parser.add_argument("--images", type=int, default=4, help="images generated per timed call")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per method (the best is kept)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run (16², dim 32, depth 1)")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    setting = "quick: 16², dim 32, depth 1, 2 steps, 2 images per call" if args.quick else \
        f"dim {args.dim}, depth {args.depth}, steps {args.steps}, {args.images} images per call"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {setting}; CFG on (2 branches)", flush=True)
    start = time.perf_counter()
    rows = measure_latency(sizes, args.dim, args.depth, args.images, args.steps, args.repeats, quick=args.quick)
    print(table(rows))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
