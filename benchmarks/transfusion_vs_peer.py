"""umm's Transfusion vs lucidrains' transfusion-pytorch, at the same width/depth, on the same batches.

    pip install -c constraints.txt transfusion-pytorch==0.20.0      # the peer (bench extra)
    python benchmarks/transfusion_vs_peer.py --minutes 3 --dim 256 --depth 6
    python benchmarks/transfusion_vs_peer.py --minutes 10 --dim 128 --depth 4 --level L1 --precision fp32

Both models see the same text-to-image batches ([BOS] caption [BOI] image) from ShapesWorld, tokenised by
the same BPE, in the same precision (``--precision``; bf16 autocast pays only on CPUs with AMX), AdamW at the
same learning rate, both with the paper's linear patches (4x4 pixels; umm's U-Net and pooled-text options stay off,
so the two implement the same mechanism). Each trains for the same budget, one after the other, on the wall
clock (``--clock wall``, the default: for throughput on an idle core) or on this process's CPU time
(``--clock process``: the same budget and rates when other jobs share the core); the script prints training samples/s of each and
their ratio, then the judge's GenEval-like scores of images each generates for the same prompts of
``--split`` at ``--level`` (20 ODE steps, CFG 3).
"""

from __future__ import annotations

import argparse
import time

import torch

from umm.data.shapes import ShapesWorld
from umm.eval.judge import geneval_prompts, geneval_score
from umm.models.factory import create_model
from umm.models.transfusion import TransfusionSystem
from umm.nn import autocast
from umm.tokenizers.text import TextTokenizer, shapes_corpus
import umm.pipelines  # noqa: F401  (registers the loops that run every system's capabilities)


def batches(args, batch_size: int, seed: int = 0):
    """Yields lists of ShapesWorld samples (caption, image in [0, 1]) from the train split, the same for both models."""
    world = ShapesWorld("train", seed=seed, canvas=32, level=args.level)
    index = 0
    while True:
        samples = [world[index + i] for i in range(batch_size)]
        index += batch_size
        yield samples


def clock(args):
    return time.process_time if args.clock == "process" else time.perf_counter


def train_umm(args, tokenizer, minutes: float):
    torch.manual_seed(0)
    model = create_model("transfusion_s", vocab_size=tokenizer.vocab_size,
                         transformer=dict(dim=args.dim, depth=args.depth, heads=args.dim // 64, rope_axes=2))
    system = TransfusionSystem(tokenizer, model.config)
    now = clock(args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), foreach=True)
    gen = torch.Generator().manual_seed(0)
    seen, steps, start = 0, 0, now()
    source = batches(args, args.batch_size)
    timed_start, timed_seen = None, 0
    while now() - start < minutes * 60:
        batch = system.collate(next(source), "t2i", gen)
        with autocast(args.precision, "cpu"):
            losses = system.losses(model, batch, gen)
        sum(v for k, v in losses.items() if k.endswith("_loss")).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        seen += args.batch_size
        if steps == 3:  # skip warm-up steps in the rate
            timed_start, timed_seen = now(), seen
    rate = (seen - timed_seen) / (now() - timed_start)
    model.eval()
    return model, system, rate, steps, sum(p.numel() for p in model.parameters())


def train_peer(args, tokenizer, minutes: float):
    from einops.layers.torch import Rearrange
    from transfusion_pytorch import Transfusion

    now = clock(args)
    torch.manual_seed(0)
    p, g = 4, 32 // 4
    model = Transfusion(
        num_text_tokens=tokenizer.vocab_size, dim_latent=3 * p * p, channel_first_latent=True,
        modality_default_shape=(g, g),
        modality_encoder=Rearrange("b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p),
        modality_decoder=Rearrange("b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p),
        add_pos_emb=True, modality_num_dim=2,
        transformer=dict(dim=args.dim, depth=args.depth, heads=args.dim // 64, dim_head=64),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), foreach=True)
    seen, steps, start = 0, 0, now()
    source = batches(args, args.batch_size)
    timed_start, timed_seen = None, 0
    while now() - start < minutes * 60:
        samples = next(source)
        batch = [[torch.tensor(tokenizer.encode(s["caption"])), s["image"] * 2 - 1] for s in samples]
        with autocast(args.precision, "cpu"):
            loss = model(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        seen += args.batch_size
        if steps == 3:
            timed_start, timed_seen = now(), seen
    rate = (seen - timed_seen) / (now() - timed_start)
    model.eval()
    return model, rate, steps, sum(q.numel() for q in model.parameters())


@torch.no_grad()
def peer_images(model, tokenizer, prompts: list[str], steps: int) -> torch.Tensor:
    images = []
    for prompt in prompts:
        ids = torch.tensor(tokenizer.encode(prompt))
        out = model.sample(ids, force_modality_at_start=0, modality_steps=steps, cfg_scale=3.0, cache_kv=True,
                           return_without_prompt=True, max_length=64)
        image = next((seg.tensor for seg in out if hasattr(seg, "tensor")), None)
        images.append(torch.zeros(3, 32, 32) if image is None else image.float().clamp(-1, 1) * 0.5 + 0.5)
    return torch.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of each model")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--level", default="L4", help="ShapesWorld level of the training data and the prompts")
    parser.add_argument("--split", default="heldout", help="split of the scored prompts (test: in distribution)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--clock", default="wall", choices=["wall", "process"],
                        help="budget and rates in wall time (idle core) or this process's CPU time (shared core)")
    args = parser.parse_args()

    tokenizer = TextTokenizer.train(shapes_corpus(20000), 512)
    prompts = geneval_prompts(args.prompts, args.split, seed=1234, level=args.level)
    texts = [p.prompt for p in prompts]

    umm_model, system, umm_rate, umm_steps, umm_params = train_umm(args, tokenizer, args.minutes)
    umm_images = system.generate_images(umm_model, texts, steps=args.steps, cfg_scale=3.0, precision=args.precision)
    umm_scores = geneval_score(umm_images, prompts)
    del umm_model

    peer_model, peer_rate, peer_steps, peer_params = train_peer(args, tokenizer, args.minutes)
    peer_scores = geneval_score(peer_images(peer_model, tokenizer, texts, args.steps), prompts)

    print(f"\nsame width/depth: dim {args.dim}, depth {args.depth}, batch {args.batch_size}, {args.minutes:g} min each, "
          f"{args.precision}, level {args.level}, {args.prompts} {args.split} prompts")
    print(f"{'':22s} {'umm':>12s} {'peer':>12s} {'ratio':>8s}")
    print(f"{'parameters (M)':22s} {umm_params / 1e6:12.2f} {peer_params / 1e6:12.2f}")
    print(f"{'train samples/s':22s} {umm_rate:12.1f} {peer_rate:12.1f} {umm_rate / peer_rate:8.2f}x")
    print(f"{'steps in budget':22s} {umm_steps:12d} {peer_steps:12d}")
    for key in ["overall", *umm_scores.per_category]:
        a = umm_scores.overall if key == "overall" else umm_scores.per_category[key]
        b = peer_scores.overall if key == "overall" else peer_scores.per_category[key]
        print(f"{'geneval ' + key:22s} {a:12.3f} {b:12.3f}")


if __name__ == "__main__":
    main()
