"""How LWM's cost grows with context: training step time, activation memory and AR sampling time vs frames per clip.

LWM (Liu et al. 2024, arXiv 2402.08268) trains on sequences of many frames, each a grid of VQ codes closed by an
end-of-frame token; its answer to the growing cost is Blockwise RingAttention. This script measures the plain
trunk umm uses, on ShapesWorld clips at 32x32 (8x8 codes + 1 EOF per frame), for 1, 2, 4, 8, 16 frames:

- ``train s``: one forward + backward of a text -> video batch (median of ``--repeats``), and per token;
- ``act MiB``: bytes the forward saves for the backward (the activation memory, counted with autograd's
  saved-tensor hooks: on a CPU there is no allocator peak to read);
- ``sample s``: generating one clip token by token with the KV cache, and without it (``--no-cache-max``
  frames at most: the re-reading costs grow quadratically).

Weights are fresh (cost does not depend on them). Attention is quadratic in the tokens and the MLP linear, so
at these lengths the step time grows roughly linearly and then bends upwards; the ratio columns compare each
row with the one-frame row of the same run.

Run: ``OMP_NUM_THREADS=1 python benchmarks/lwm_context_cost.py [--model lwm_s] [--frames 1,2,4,8,16]
[--batch 4] [--repeats 3] [--no-cache-max 4] [--precision bf16] [--device cpu]``. ~2 minutes on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import umm.models  # noqa: F401  (registers every family)
from umm.data.shapes import ShapesWorld
from umm.models.factory import build_model, model_config
from umm.models.lwm import LWMOptions, LWMSystem
from umm.nn import Layout
from umm.pipelines import ar
from umm.tokenizers.text import TextTokenizer, shapes_corpus


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward while ``fn`` runs."""
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lwm_s")
    p.add_argument("--frames", default="1,2,4,8,16")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cache-max", type=int, default=4, help="largest frame count sampled without the KV cache")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    frame_counts = [int(f) for f in args.frames.split(",")]
    if max(frame_counts) > 16:
        raise SystemExit("ShapesWorld clips hold at most 16 frames")

    tokenizer = TextTokenizer.train(shapes_corpus(2000), 512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fresh tokenizer weights warn; cost does not depend on them
        base = LWMOptions(image_tokenizer="vq_s")  # 32x32 frames -> 8x8 codes
        torch.manual_seed(0)
        model = build_model(model_config(args.model, LWMSystem.model_overrides(tokenizer, base))).to(device)
        images = LWMSystem(tokenizer, model.config, base).image_tokenizer
    world = ShapesWorld("train", canvas=32, modalities=("video",), frames=16)
    samples = [world[i] for i in range(args.batch)]
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {params / 1e6:.1f}M parameters, batch {args.batch}, {args.precision}, {device}, "
          f"{torch.get_num_threads()} thread(s)")

    rows = []
    for n in frame_counts:
        options = LWMOptions(image_tokenizer="vq_s", frames=n)
        system = LWMSystem(tokenizer, model.config, options, image_tokenizer=images)
        batch = {k: v.to(device) for k, v in system.collate(samples, "t2v", torch.Generator().manual_seed(0)).items()}
        clip_tokens = n * (64 + 1)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            with ar.autocast(args.precision, device):
                losses = system.losses(model, batch, None)
            sum(v for k, v in losses.items() if k.endswith("_loss")).backward()

        model.train()
        step()  # warm-up
        train_s = median_seconds(step, args.repeats)
        with ar.autocast(args.precision, device):
            act = saved_bytes(lambda: model(batch["tokens"], Layout(batch["block"], batch["positions"], batch["valid"],
                                                                     batch["next_position"])))
        model.eval()
        def sample(cache: bool) -> None:
            system.generate_videos(model, ["a red circle moves up"], cfg_scale=1.0, seed=0, use_cache=cache,
                                   precision=args.precision, return_codes=True)

        cached_s = median_seconds(lambda: sample(True), max(1, args.repeats // 2))
        full_s = median_seconds(lambda: sample(False), 1) if n <= args.no_cache_max else float("nan")
        rows.append((n, clip_tokens, batch["tokens"].shape[1], train_s, act / 2**20, cached_s, full_s))
        print(f"  measured {n} frame(s)", flush=True)

    first = rows[0]
    print(f"\n{'frames':>6} {'tok/clip':>8} {'seq':>5} {'train s':>8} {'x1f':>6} {'us/tok':>7} {'act MiB':>8} "
          f"{'x1f':>6} {'sample s':>9} {'ms/tok':>7} {'no-cache s':>10} {'x cache':>7}")
    for n, clip, seq, train_s, act, cached_s, full_s in rows:
        per_token = 1e6 * train_s / (args.batch * seq)
        print(f"{n:>6} {clip:>8} {seq:>5} {train_s:>8.3f} {train_s / first[3]:>6.1f} {per_token:>7.1f} "
              f"{act:>8.1f} {act / first[4]:>6.1f} {cached_s:>9.2f} {1e3 * cached_s / clip:>7.2f} {full_s:>10.2f} "
              f"{full_s / cached_s:>7.1f}")


if __name__ == "__main__":
    main()
