"""MMAR's training speed beside ``autoregressive-diffusion-pytorch`` (lucidrains' causal MAR port) at equal
width, depth, heads and head size, on the same ShapesWorld images, in the same process.

Run: ``OMP_NUM_THREADS=1 python benchmarks/mmar_vs_peer.py [--dim 256 --depth 6 --heads 4 --batch 32]``
(needs the peer: ``pip install --no-deps autoregressive-diffusion-pytorch==0.4.0`` then ``pip install -c
constraints.txt einops einx ema-pytorch torchdiffeq x-transformers``: the peer pins accelerate<=1.6, which the
constraints' accelerate refuses, and its model classes never import accelerate).

What each row does per training step (forward, backward, AdamW step), all under the same autocast:

- peer: an unconditional causal decoder over the 64 patches (x-transformers, absolute positions) and an EDM
  MLP denoiser, one noise draw per token;
- umm mmar: text-to-image sequences ``[BOS] caption [BOI] patches [EOI] [EOS]`` (up to 96 slots against the
  peer's 64), a text LM loss, 2D RoPE, and the per-token diffusion head; ``mul`` is MAR's noise draws per
  token, masked rows train the head on the ~85% masked tokens, raster rows on every token. The last row
  drops every caption (``cfg_dropout=1``): ``[BOS] [BOI] patches [EOI] [EOS]``, unconditional like the peer.

The ratio column is umm's samples/s over the peer's; ``raster, mul 1, no caption, head <matched>, no QK-norm`` is
the like-for-like row: no caption, one draw, no QK-norm (the peer has none; umm's MMAR keeps Chameleon's)
and umm's head narrowed to the peer's parameter count. The ``GELU MLP`` rows also take the peer's (and MAR's)
feed-forward, ``model_args.transformer.mlp=gelu``, in place of MMAR's SwiGLU: the same architecture as the peer's.
The machine may be shared, so the systems take turns step by step (``--rounds`` times) and each reports
its median step time, and the median and quartiles over rounds of its ratio to the peer's step in that round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from contextlib import nullcontext

import torch

import umm.models  # noqa: F401  (registers every family)
from umm.data.shapes import ShapesWorld
from umm.models.factory import build_model, model_config
from umm.models.mmar import MMAROptions, MMARSystem
from umm.tokenizers.text import TextTokenizer, shapes_corpus


def import_peer():
    """The peer's ``__init__`` imports its trainer, which imports torchvision (absent here; the model classes
    never use it). Stub torchvision for that import only, then remove the stubs so that later imports (e.g.
    ``transformers``) still see no torchvision (reference/env_probe.md sec. 4)."""
    stubs = {n: types.ModuleType(n) for n in ("torchvision", "torchvision.utils", "torchvision.transforms")}
    stubs["torchvision"].utils = stubs["torchvision.utils"]
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]
    stubs["torchvision.utils"].save_image = None
    sys.modules.update(stubs)
    try:
        from autoregressive_diffusion_pytorch import ImageAutoregressiveDiffusion
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return ImageAutoregressiveDiffusion


def step_seconds(steps: list, rounds: int, warmup: int) -> list[list[float]]:
    """Seconds of each call of each ``steps[i]()`` (a list per step, a value per round), calling them in turn so
    that load drift hits all alike."""
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
    return times


def train_step(model, loss_fn, optimizer, precision: str):
    def step() -> None:
        context = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        with context:
            loss = loss_fn()
        loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args()

    world = ShapesWorld("train", canvas=32)
    samples = [world[i] for i in range(args.batch)]
    images = torch.stack([s["image"] for s in samples])  # (B, 3, 32, 32) in [0, 1]

    names, params, steps = [], [], []
    torch.manual_seed(0)
    Peer = import_peer()
    peer = Peer(image_size=32, patch_size=4, model=dict(dim=args.dim, depth=args.depth, heads=args.heads,
                                                        dim_head=args.dim // args.heads, mlp_depth=args.head_depth,
                                                        mlp_width=args.dim))
    names.append("autoregressive-diffusion-pytorch (causal, 1 draw)")
    params.append(sum(p.numel() for p in peer.parameters()))
    steps.append(train_step(peer, lambda: peer(images), torch.optim.AdamW(peer.parameters(), lr=1e-4), args.precision))

    tokenizer = TextTokenizer.train(shapes_corpus(2000), 512)

    def overrides(head_width: int, qk_norm: bool = True, mlp: str = "swiglu") -> dict:
        return {"vocab_size": tokenizer.vocab_size, "head_width": head_width, "head_depth": args.head_depth,
                "transformer": {"dim": args.dim, "depth": args.depth, "heads": args.heads, "rope_axes": 2,
                                "qk_norm": qk_norm, "mlp": mlp}}

    # equal size: MAR's head (umm's) keeps its residual stream at the head width with W x 3W AdaLN projections,
    # the peer's at the token width (48) with W-wide hidden layers, so at equal width umm's model is ~1.3M
    # parameters larger. The last rows narrow umm's head until the whole model has the peer's parameter count.
    # The matched rows also drop QK-norm, which the peer (and MMAR's Qwen2) does not have; umm's MMAR keeps it.
    def count(head_width: int) -> int:
        return sum(p.numel() for p in build_model(model_config("mmar_s", overrides(head_width, False))).parameters())

    matched = min(range(16, args.dim + 1, 8), key=lambda w: abs(count(w) - params[0]))
    rows = [("masked", 4, 0.1, args.dim, "swiglu"), ("raster", 4, 0.1, args.dim, "swiglu"),
            ("raster", 1, 0.1, args.dim, "swiglu"), ("raster", 1, 1.0, args.dim, "swiglu"),
            ("raster", 1, 1.0, matched, "swiglu"), ("masked", 1, 1.0, matched, "swiglu"),
            ("masked", 4, 0.1, matched, "swiglu"), ("raster", 1, 1.0, matched, "gelu"),
            ("masked", 1, 1.0, matched, "gelu")]
    for order, mul, dropout, head_width, mlp in rows:
        torch.manual_seed(0)
        qk_norm = head_width != matched
        model = build_model(model_config("mmar_s", overrides(head_width, qk_norm, mlp))).train()
        system = MMARSystem(tokenizer, model.config, MMAROptions(order=order, diffusion_batch_mul=mul,
                                                                 cfg_dropout=dropout))
        batch = system.collate(samples, "t2i", torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(0)

        def loss_fn(model=model, system=system, batch=batch, generator=generator):
            losses = system.losses(model, batch, generator)
            return sum(v for k, v in losses.items() if k.endswith("_loss"))

        caption = "no caption" if dropout == 1.0 else "t2i"
        names.append(f"umm mmar ({order}, mul {mul}, {caption}, {batch['tokens'].shape[1]} slots, head {head_width}"
                     f"{'' if qk_norm else ', no QK-norm'}{', GELU MLP' if mlp == 'gelu' else ''})")
        params.append(sum(p.numel() for p in model.parameters()))
        steps.append(train_step(model, loss_fn, torch.optim.AdamW(model.parameters(), lr=1e-4), args.precision))

    times = step_seconds(steps, args.rounds, args.warmup)
    rates = [args.batch / statistics.median(t) for t in times]
    # the ratio to the peer per round (the peer stepped just before), then its median and quartiles: a drift in
    # the machine's speed between rounds moves both sides of a round's ratio alike
    ratios = [[peer / own for peer, own in zip(times[0], t)] for t in times]
    quartiles = [statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3 for r in ratios]
    print(f"training samples/s, 32x32 images as 64 patches of 48, dim {args.dim}, depth {args.depth}, heads "
          f"{args.heads}, head depth {args.head_depth}, batch {args.batch}, {args.precision}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"| {'system':<84} | {'params':>9} | {'samples/s':>9} | {'vs peer':>7} | {'per round: median [quartiles]':>29} |")
    print(f"|{'-' * 86}|{'-' * 11}|{'-' * 11}|{'-' * 9}|{'-' * 31}|")
    for name, size, rate, (low, mid, high) in zip(names, params, rates, quartiles):
        print(f"| {name:<84} | {size / 1e6:>8.2f}M | {rate:>9.1f} | {rate / rates[0]:>6.2f}x | "
              f"{f'{mid:.2f}x [{low:.2f}, {high:.2f}]':>29} |")


if __name__ == "__main__":
    main()
