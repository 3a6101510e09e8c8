"""Modality layouts: which tokens of a sequence attend causally and which see their whole span.

A sequence is a list of :class:`Span`s. A causal span (text) lets each token see itself and everything
before it. A bidirectional span (an image, a video, a masked-token canvas) additionally lets every token
see every other token of the same span. This one rule is Transfusion's attention (Zhou et al. 2024,
sec. 2.2: "causal attention for the whole sequence, bidirectional within each image") and Show-o's
omni-attention (Xie et al. 2024, fig. 4); all-bidirectional sequences give encoders (ViT, MAR).

The layout of a batch is three tensors: ``block`` (B, T) holds -1 for causal tokens and the span's id for
bidirectional ones, ``positions`` (B, T, A) the RoPE coordinates, ``valid`` (B, T) marks real tokens
(padding is excluded from every key set). :func:`attention_mask` turns query/key layouts into the boolean
SDPA mask, with or without a KV cache in front.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Span:
    """A run of ``length`` tokens. ``grid`` is (H, W) for an image or (T, H, W) for a video, raster order,
    after ``prefix`` leading tokens that are not on the grid (MonoFormer's time token, EMU3's size prefix)."""

    length: int
    bidirectional: bool = False
    grid: tuple[int, ...] | None = None
    prefix: int = 0


@dataclass
class Layout:
    """Per-token layout of a padded batch. ``next_position`` (B, A) is where a following token would go."""

    block: torch.Tensor  # (B, T) long: -1 causal, >= 0 id of the bidirectional span
    positions: torch.Tensor  # (B, T, A) long: RoPE coordinates
    valid: torch.Tensor  # (B, T) bool: False on padding
    next_position: torch.Tensor  # (B, A) long

    @classmethod
    def of(cls, batch: dict) -> Layout:
        """The layout of a collated batch (``umm.data.sequence.collate``: its block, positions, valid and
        next_position entries)."""
        return cls(batch["block"], batch["positions"], batch["valid"], batch["next_position"])

    def to(self, device: torch.device | str) -> Layout:
        return Layout(*(t.to(device) for t in (self.block, self.positions, self.valid, self.next_position)))

    def rows(self, n: int) -> Layout:
        """The layout of the first ``n`` rows of the batch."""
        return Layout(self.block[:n], self.positions[:n], self.valid[:n], self.next_position[:n])

    def __getitem__(self, index: slice) -> Layout:
        """Slice along the sequence (``layout[:, a:b]`` style, given as a slice of T)."""
        return Layout(self.block[:, index], self.positions[:, index], self.valid[:, index], self.next_position)


def _span_positions(span: Span, start: int, axes: int) -> tuple[torch.Tensor, int]:
    """RoPE coordinates (L, A) of one span starting at 1D position ``start``, and the next free position."""
    if span.prefix:
        head = torch.arange(start, start + span.prefix)[:, None].expand(-1, axes)
        rest = Span(span.length - span.prefix, span.bidirectional, span.grid)
        tail, end = _span_positions(rest, start + span.prefix, axes)
        return torch.cat([head, tail]), end
    if span.grid is None or axes == 1:
        pos = torch.arange(start, start + span.length)[:, None].expand(-1, axes)
        return pos, start + span.length
    if len(span.grid) == 2:
        h, w = span.grid
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        frames = torch.zeros_like(rows)
    else:
        t, h, w = span.grid
        frames, rows, cols = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
        if axes == 2:  # no time axis: stack frames vertically, as one tall image
            rows = frames * h + rows
    coords = {2: (rows, cols), 3: (frames, rows, cols)}[axes]
    pos = start + torch.stack([c.flatten() for c in coords], dim=-1)
    # M-RoPE: the next token continues after the largest coordinate used, not after L tokens.
    return pos, int(pos.max()) + 1


def build_layout(samples: list[list[Span]], axes: int = 1, length: int | None = None, pad_left: bool = False) -> Layout:
    """Layout of a batch whose sample ``b`` is the span list ``samples[b]``.

    Sequences are padded to ``length`` (default: the longest). Right padding suits training; left padding
    suits batched generation, where every prompt must end at the same slot so new tokens line up.
    """
    lengths = [sum(s.length for s in spans) for spans in samples]
    total = length if length is not None else max(lengths)
    assert max(lengths) <= total, f"a sequence of {max(lengths)} tokens does not fit in length {total}"
    b = len(samples)
    block = torch.full((b, total), -1, dtype=torch.long)
    positions = torch.zeros((b, total, axes), dtype=torch.long)
    valid = torch.zeros((b, total), dtype=torch.bool)
    next_position = torch.zeros((b, axes), dtype=torch.long)
    for i, spans in enumerate(samples):
        slot = total - lengths[i] if pad_left else 0
        position = 0
        for span_id, span in enumerate(spans):
            end = slot + span.length
            pos, position = _span_positions(span, position, axes)
            positions[i, slot:end] = pos
            if span.bidirectional:
                block[i, slot:end] = span_id
            valid[i, slot:end] = True
            slot = end
        next_position[i] = position
    return Layout(block, positions, valid, next_position)


def continue_layout(next_position: torch.Tensor, span: Span, block_id: int = -1) -> Layout:
    """Layout of a chunk appended after a cached prefix whose next free position is ``next_position`` (B, A).

    Used while decoding: one text token (``Span(1)``) or one whole image span (``block_id`` must differ from
    the ids of cached spans so that the new span does not merge with an earlier one).
    """
    b, axes = next_position.shape
    relative, end = _span_positions(span, 0, axes)  # (L, A)
    start = next_position[:, :1]  # text and finished spans leave every axis at the same value
    positions = start[:, None, :] + relative[None].to(next_position.device)
    block = torch.full((b, span.length), block_id if span.bidirectional else -1, dtype=torch.long, device=next_position.device)
    valid = torch.ones((b, span.length), dtype=torch.bool, device=next_position.device)
    return Layout(block, positions, valid, (start + end).expand(-1, axes).clone())


def attention_mask(
    query_block: torch.Tensor, key_block: torch.Tensor, key_valid: torch.Tensor, query_offset: int = 0
) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, Tq, Tk); True = may attend.

    Queries occupy slots ``query_offset .. query_offset + Tq - 1`` of the key sequence (the offset is the
    KV cache length when decoding). Query i sees key j when j <= i (causal) or both lie in the same
    bidirectional span, and never sees padding. Each query always sees its own slot so that padding rows
    are not empty (an all-False row would make SDPA return NaN).
    """
    tq, tk = query_block.shape[1], key_block.shape[1]
    device = query_block.device
    q_slot = torch.arange(query_offset, query_offset + tq, device=device)[:, None]  # (Tq, 1)
    k_slot = torch.arange(tk, device=device)[None, :]  # (1, Tk)
    causal = (k_slot <= q_slot)[None]  # (1, Tq, Tk)
    same_span = (query_block[:, :, None] == key_block[:, None, :]) & (query_block[:, :, None] >= 0)
    allowed = (causal | same_span) & key_valid[:, None, :]
    allowed = allowed | (k_slot == q_slot)[None]
    return allowed[:, None]  # (B, 1, Tq, Tk)
