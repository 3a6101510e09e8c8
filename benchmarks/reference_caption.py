"""The reference captioner: a small CNN + Transformer decoder, the yardstick for umm's captioners.

Outside umm's model zoo (it uses umm only for ShapesWorld and the judge):

- image: four conv stages (48 -> 24 -> 12 -> 6 px, widths 32/64/128/128, GroupNorm + SiLU), whose 6x6
  feature map plus a learned position embedding is the memory;
- text: a 2-layer Transformer decoder (d 128) over the words of the caption language, cross-attending to
  the memory, trained with next-word cross-entropy on the complete caption (``caption_full``: every
  object's size, colour, shape and cell), greedy decoding.

At fixed training CPU-minutes it captions held-out and test images and the judge scores them
(``caption_scores``: exact, and per attribute); one JSON line per checkpoint:

    python benchmarks/reference_caption.py --level L1 --minutes 2 5 10 --out runs/reference_caption/L1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_t2i import WordVocab  # noqa: E402

from umm.data.shapes import ShapesWorld  # noqa: E402
from umm.data.shapes.levels import DEFAULT_CANVAS, LEVELS  # noqa: E402
from umm.eval.judge import caption_scores  # noqa: E402

BOS, EOS, LENGTH = "<s>", "</s>", 40


class Captioner(nn.Module):
    def __init__(self, vocab: int, dim: int = 128, widths=(32, 64, 128, 128)):
        super().__init__()
        layers, cin = [], 3
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(cin, w, 3, stride=stride, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU()]  # fmt: skip
            cin = w
        self.cnn = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, dim)
        self.memory_pos = nn.Parameter(torch.zeros(1, 64, dim))
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, LENGTH, dim))
        layer = nn.TransformerDecoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def memory(self, images: torch.Tensor) -> torch.Tensor:
        f = self.cnn(images * 2 - 1)  # (B, C, 6, 6) for 48 px
        m = self.proj(f.flatten(2).transpose(1, 2))  # (B, 36, D)
        return m + self.memory_pos[:, : m.shape[1]]

    def forward(self, memory: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        causal = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
        h = self.decoder(self.embed(ids) + self.pos[:, :n], memory, tgt_mask=causal)
        return self.head(self.norm(h))  # (B, T, V)


def encode(vocab: WordVocab, texts: list[str]) -> torch.Tensor:
    out = torch.zeros(len(texts), LENGTH + 1, dtype=torch.long)  # 0 pads (ignored by the loss)
    for i, text in enumerate(texts):
        ids = [vocab.index[BOS]] + [vocab.index.get(w, 1) for w in vocab.split(text)][: LENGTH - 1] + [vocab.index[EOS]]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


@torch.no_grad()
def greedy(model: Captioner, vocab: WordVocab, images: torch.Tensor) -> list[str]:
    model.eval()
    words = {i: w for w, i in vocab.index.items()}
    memory = model.memory(images)
    ids = torch.full((len(images), 1), vocab.index[BOS])
    for _ in range(LENGTH - 1):
        nxt = model(memory, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if (ids == vocab.index[EOS]).any(dim=1).all():
            break
    out = []
    for row in ids[:, 1:].tolist():
        text = []
        for i in row:
            if i == vocab.index[EOS]:
                break
            text.append(words.get(i, ""))
        out.append(" ".join(text))
    model.train()
    return out


def evaluate(model, vocab, level: str, n: int, canvas: int) -> dict:
    scores = {}
    for split in ("test", "heldout"):
        world = ShapesWorld(split, canvas=canvas, seed=1234, level=level, modalities=("image", "caption"))
        samples = [world[i] for i in range(n)]
        predictions = greedy(model, vocab, torch.stack([s["image"] for s in samples]))
        result = caption_scores(predictions, [s["scene"] for s in samples])
        # position is nan where the level never names it (L1): average what the captions can say
        attrs = [v for v in (getattr(result, k) for k in ("shape", "colour", "size", "position")) if v == v]
        scores[split] = result.exact
        scores.update({f"{split}/{k}": round(v, 4) for k, v in result.to_dict().items() if k not in ("n", "reference_match")})
        scores[f"{split}/attributes"] = round(sum(attrs) / len(attrs), 4)
        scores[f"{split}/example"] = f"{predictions[0]} || {samples[0]['caption_full']}"
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--level", default="L1", choices=list(LEVELS))
    ap.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10, 30], help="checkpoint times (training CPU-minutes)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--canvas", type=int, default=DEFAULT_CANVAS)
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    world = ShapesWorld("train", canvas=args.canvas, level=args.level, modalities=("image", "caption"), seed=args.seed)
    vocab = WordVocab(ShapesWorld("train", level="L4", size=4000).text_corpus(4000))
    vocab.index.setdefault(BOS, len(vocab))
    vocab.index.setdefault(EOS, len(vocab))
    model = Captioner(len(vocab))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"level": args.level, "params": sum(p.numel() for p in model.parameters())}), flush=True)
    marks = sorted(args.minutes)
    trained, step, index = 0.0, 0, 0
    while marks:
        start = time.process_time()
        batch = [world[index + k] for k in range(args.batch)]
        index += args.batch
        images = torch.stack([s["image"] for s in batch])
        ids = encode(vocab, [s["caption_full"] for s in batch])
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 100)
        logits = model(model.memory(images), ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        trained += time.process_time() - start
        if trained / 60 >= marks[0]:
            minute = marks.pop(0)
            t0 = time.perf_counter()
            record = {"level": args.level, "minutes": minute, "steps": step, "loss": round(float(loss.detach()), 4),
                      **evaluate(model, vocab, args.level, args.n_images, args.canvas),
                      "eval_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            print(json.dumps(record), flush=True)
            if out:
                with (out / "scores.jsonl").open("a") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
