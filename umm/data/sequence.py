"""Build mixed-modal sequences and collate them into padded batches.

Every single-model system (Transfusion, MonoFormer, MMAR, Chameleon, Show-o, ...) writes a sample as one
sequence of *slots*. A slot holds a text token, a continuous image patch, or a special embedding (a
diffusion time token); spans of slots form the :class:`~umm.nn.layout.Layout` that decides attention.
The builder records which slots carry a text loss and which image spans carry an image loss, so the
system's ``losses`` never re-derives the layout::

    seq = Sequence()
    seq.text([bos] + caption_ids + [boi], loss=True)
    seq.image(patches, grid=(8, 8), loss=True)      # bidirectional span
    seq.text([eoi, eos], loss=True)
    batch = collate([seq, ...], length=96, patch_dim=48)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from umm.nn.layout import Span, build_layout
from umm.objectives.next_token import shift_targets

TEXT, PATCH, SPECIAL = 0, 1, 2  # slot kinds


@dataclass
class Sequence:
    tokens: list[int] = field(default_factory=list)  # token id per slot (pad id on image slots)
    kinds: list[int] = field(default_factory=list)  # TEXT | PATCH | SPECIAL per slot
    text_loss: list[bool] = field(default_factory=list)  # this slot's token is a prediction target
    image_loss: list[bool] = field(default_factory=list)  # this slot's patch is a denoising target
    spans: list[Span] = field(default_factory=list)
    patches: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (first slot, (N, P) patches)
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def text(self, ids: list[int], loss: bool) -> Sequence:
        """Causal text slots; ``loss`` makes each of these tokens a next-token target."""
        if not ids:
            return self
        self.tokens += list(ids)
        self.kinds += [TEXT] * len(ids)
        self.text_loss += [loss] * len(ids)
        self.image_loss += [False] * len(ids)
        # extend a preceding text span; never a causal image span (it must keep its grid for 2D RoPE)
        if self.spans and not self.spans[-1].bidirectional and self.spans[-1].grid is None:
            self.spans[-1] = Span(self.spans[-1].length + len(ids))
        else:
            self.spans.append(Span(len(ids)))
        return self

    def image(self, patches: torch.Tensor | None, grid: tuple[int, ...], loss: bool, prefix: list[int] = (),
              token_ids: list[int] | None = None, bidirectional: bool = True) -> Sequence:
        """One image (or video) span: optional SPECIAL ``prefix`` slots (e.g. a time token) then the grid.

        ``patches`` (N, P) are continuous tokens; for discrete systems pass ``patches=None`` and the codes as
        ``token_ids`` (they then are TEXT-kind slots in one vocabulary, and ``loss`` marks them as targets).
        """
        n = 1
        for g in grid:
            n *= g
        start = len(self.tokens)
        for special in prefix:
            self.tokens.append(special)
            self.kinds.append(SPECIAL)
            self.text_loss.append(False)
            self.image_loss.append(False)
        if patches is not None:
            assert patches.shape[0] == n, f"{patches.shape[0]} patches for a grid of {n}"
            self.patches.append((len(self.tokens), patches))
            self.tokens += [self.pad_id] * n
            self.kinds += [PATCH] * n
            self.text_loss += [False] * n
            self.image_loss += [loss] * n
        else:
            assert token_ids is not None and len(token_ids) == n, f"need {n} image token ids"
            self.tokens += list(token_ids)
            self.kinds += [TEXT] * n
            self.text_loss += [loss] * n
            self.image_loss += [False] * n
        length = len(self.tokens) - start
        # the prefix belongs to the span: a time token sees, and is seen by, the whole image
        self.spans.append(Span(length, bidirectional, tuple(grid), prefix=len(prefix)))
        return self


# decoding lengths of every system's captioning and QA: the longest complete caption (L4, three objects) is
# 31 BPE tokens + EOS; the longest answer ("bottom right") is 3
CAPTION_TOKENS = 32
ANSWER_TOKENS = 8


def batch_rng(generator: torch.Generator) -> random.Random:
    """The Python RNG of one collated batch (the question each QA sample asks), drawn from the batch's torch
    generator, so it is a pure function of (seed, step, rank) like the rest of the batch."""
    return random.Random(int(torch.randint(0, 2**31, (1,), generator=generator)))


def understanding_turn(sample: dict, task: str, rng: random.Random) -> tuple[str | None, str]:
    """(question or None, target text) of an understanding task on one sample: every system's captioning and
    QA sequences take their text from here, so all of them train on the same turns.

    caption: ShapesWorld's complete caption when the sample has one (it names every object's size, colour,
    shape and cell, which is what the caption scores read), else the caption; v2t: the video's caption;
    qa: one of the sample's question/answer pairs, drawn with ``rng`` (:func:`batch_rng`).
    """
    if task == "caption":
        return None, sample.get("caption_full", sample["caption"])
    if task == "v2t":
        return None, sample["video_caption"]
    if task == "qa":
        qa = rng.choice(sample["qa"])
        return qa["question"], qa["answer"]
    raise ValueError(f"{task!r} is not an understanding task (caption, v2t, qa)")


def ar_sequence(tokenizer, sample: dict, task: str, add_visual, text_ids, rng: random.Random,
                drop_caption: bool = False, text_loss: bool = True) -> Sequence:
    """The autoregressive formats shared by Chameleon, EMU3, LWM, VILA-U and LaVIT:

        t2i / t2v            [BOS] caption <visual> [EOS]         (caption dropped for CFG)
        caption / v2t / qa   [BOS] <visual> [question] target [EOS]   (loss on the target only)

    ``add_visual(seq, loss)`` appends the system's own visual span (BOI codes EOI, frames with EOF, ...);
    ``text_ids(text)`` tokenises (and truncates) text; ``rng`` picks the question (:func:`understanding_turn`);
    ``text_loss=False`` trains generation on the visual
    tokens only (EMU3's vision_loss_only).
    """
    seq = Sequence(pad_id=tokenizer.pad_id)
    if task in ("t2i", "t2v"):
        caption = sample["caption"] if task == "t2i" else sample["video_caption"]
        seq.text([tokenizer.bos_id] + ([] if drop_caption else text_ids(caption)), loss=text_loss)
        add_visual(seq, True)
        return seq.text([tokenizer.eos_id], loss=text_loss)
    question, target = understanding_turn(sample, task, rng)
    seq.text([tokenizer.bos_id], loss=False)
    add_visual(seq, False)
    if question is not None:
        seq.text(text_ids(question), loss=False)
    return seq.text(text_ids(target) + [tokenizer.eos_id], loss=True)


def collate(seqs: list[Sequence], length: int | None = None, patch_dim: int = 0, rope_axes: int = 1,
            pad_left: bool = False, pad_id: int = 0, multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Pad ``seqs`` to ``length`` (default: the longest, rounded up to ``multiple_of``) and stack.

    Returns tensors (B = len(seqs), T = length):
        tokens (B, T) long, kinds (B, T) long, patches (B, T, P) float (zeros off image slots),
        text_targets (B, T) long (shifted: position t predicts slot t + 1; IGNORE where no loss),
        image_loss (B, T) bool, and the layout: block (B, T), positions (B, T, A), valid (B, T),
        next_position (B, A).
    """
    longest = max(len(s) for s in seqs)
    total = length or -(-longest // multiple_of) * multiple_of
    if longest > total:
        raise ValueError(f"a sequence of {longest} slots does not fit the collate length {total}")
    b = len(seqs)
    tokens = torch.full((b, total), pad_id, dtype=torch.long)
    kinds = torch.zeros((b, total), dtype=torch.long)
    text_loss = torch.zeros((b, total), dtype=torch.bool)
    image_loss = torch.zeros((b, total), dtype=torch.bool)
    patches = torch.zeros((b, total, patch_dim)) if patch_dim else torch.zeros((b, total, 0))
    for i, s in enumerate(seqs):
        offset = total - len(s) if pad_left else 0
        sl = slice(offset, offset + len(s))
        tokens[i, sl] = torch.tensor(s.tokens)
        kinds[i, sl] = torch.tensor(s.kinds)
        text_loss[i, sl] = torch.tensor(s.text_loss)
        image_loss[i, sl] = torch.tensor(s.image_loss)
        for start, p in s.patches:
            patches[i, offset + start : offset + start + p.shape[0]] = p
    layout = build_layout([s.spans for s in seqs], axes=rope_axes, length=total, pad_left=pad_left)
    return {
        "tokens": tokens, "kinds": kinds, "patches": patches, "text_targets": shift_targets(tokens, text_loss),
        "image_loss": image_loss, "block": layout.block, "positions": layout.positions, "valid": layout.valid,
        "next_position": layout.next_position,
    }


def drop_final_slot(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A collated training batch without its last slot, when that slot only ends text: a decoder LM is trained
    on ``inputs = sequence[:-1]`` because the final token ([EOS] or padding) predicts nothing and, in a causal
    stretch, no earlier slot reads it. Raises if some row's last slot carries a loss of its own or sits in a
    bidirectional span, which earlier slots would read.
    """
    if batch["image_loss"][:, -1].any() or (batch["valid"][:, -1] & (batch["block"][:, -1] >= 0)).any():
        raise ValueError("the last slot carries an image loss or a bidirectional span: it cannot be dropped")
    trimmed = {key: value[:, :-1] for key, value in batch.items() if key != "next_position"}
    return {**trimmed, "next_position": batch["next_position"]}
