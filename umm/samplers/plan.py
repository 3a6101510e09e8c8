"""What an autoregressive sampler may emit after a prompt: the slots of one generated span (a token plan).

A system describes its generated image as a :class:`TokenPlan` (``image_plan`` for a plain grid of codes);
the loops in ``umm/pipelines/ar.py`` and ``ar_video.py`` follow it slot by slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from umm import UmmError
from umm.nn import Layout, Span, continue_layout


@dataclass(frozen=True)
class TokenPlan:
    """The slots of one generated span.

    ``forced[i] >= 0`` is emitted as is (EOI; EMU3's end-of-row); ``forced[i] == -1`` is sampled, restricted to
    the tokens ``[low, high)`` (Chameleon samples only image codes inside an image). ``spans`` lay the slots
    out (an image grid for 2D RoPE, then text-like slots) and must cover ``len(forced)`` slots.

    Chameleon: ``image_plan((h, w), text_vocab, text_vocab + K, end=(eoi,))``. A layout with end-of-row tokens
    (EMU3) forces them between rows: ``forced = ((-1,) * w + (eol,)) * h + (eof, eoi)``, laid out for example
    as ``(Span(h * (w + 1), False, (h, w + 1)), Span(2))`` so that each row's EOL sits in an extra column.
    """

    forced: tuple[int, ...]
    low: int
    high: int
    spans: tuple[Span, ...]

    def __post_init__(self) -> None:
        if sum(s.length for s in self.spans) != len(self.forced):
            raise UmmError(f"token plan: spans cover {sum(s.length for s in self.spans)} slots, forced lists {len(self.forced)}")
        if not 0 <= self.low < self.high:
            raise UmmError(f"token plan: empty sampling range [{self.low}, {self.high})")

    def layout(self, next_position: torch.Tensor) -> Layout:
        """The layout of all planned slots appended after a prefix whose next position is ``next_position``."""
        parts = []
        for span in self.spans:
            parts.append(continue_layout(next_position, span))
            next_position = parts[-1].next_position
        return concat_layouts(parts)


def image_plan(grid: tuple[int, int], low: int, high: int, end: tuple[int, ...] = ()) -> TokenPlan:
    """``h * w`` codes sampled from ``[low, high)`` in raster order, then the forced ``end`` tokens (EOI ...).

    The image slots are one causal span carrying its grid, so a model with 2D RoPE sees (row, column)."""
    h, w = grid
    spans = (Span(h * w, False, (h, w)),) + ((Span(len(end)),) if end else ())
    return TokenPlan((-1,) * (h * w) + tuple(end), low, high, spans)


def concat_layouts(parts: list[Layout]) -> Layout:
    """Layouts of consecutive chunks as one; ``next_position`` is the last chunk's."""
    return Layout(torch.cat([p.block for p in parts], 1), torch.cat([p.positions for p in parts], 1),
                  torch.cat([p.valid for p in parts], 1), parts[-1].next_position)


def grid_plan(frames: int, height: int, width: int, low: int, high: int, row_end: int | None = None,
              frame_ends: tuple[int, ...] = (), end: tuple[int, ...] = ()) -> TokenPlan:
    """Slots of a ``frames x height x width`` grid in raster order, codes sampled from ``[low, high)``.

    ``row_end`` (EMU3's EOL) follows every row; ``frame_ends[f]`` closes frame ``f`` (EMU3: EOF after every
    frame; LWM: EOF after each frame but the last, EOV after the last), then the ``end`` tokens (EOI ...).
    Each frame is one causal span that keeps its grid (``(height, width + 1)`` with EOL, which sits in an extra
    column); each frame end and the ``end`` tokens are text-like slots. With 1D RoPE (EMU3 and LWM as published)
    that is the flattened stream's positions; with ``rope_axes=2`` a code sees its (row, column), and the same
    cell of consecutive frames is one fixed offset apart on both axes (M-RoPE: a span starts after the largest
    position before it). Lay a stream out with :func:`append_planned`, so that training sees what sampling does.
    """
    if min(frames, height, width) < 1:
        raise UmmError(f"a grid needs at least one frame, row and column, got {frames}x{height}x{width}")
    if frame_ends and len(frame_ends) != frames:
        raise UmmError(f"{len(frame_ends)} end-of-frame tokens for {frames} frames")
    row = (-1,) * width + ((row_end,) if row_end is not None else ())
    grid = (height, len(row))
    forced: tuple[int, ...] = ()
    spans: tuple[Span, ...] = ()
    for f in range(frames):
        forced += row * height + ((frame_ends[f],) if frame_ends else ())
        spans += (Span(height * len(row), False, grid),) + ((Span(1),) if frame_ends else ())
    forced += tuple(end)
    spans += (Span(len(end)),) if end else ()
    return TokenPlan(forced, low, high, spans)


def append_planned(seq, plan: TokenPlan, stream: list[int], loss: bool):
    """Append ``stream`` (one token per slot of ``plan``) to the :class:`~umm.data.sequence.Sequence` ``seq``
    with the plan's layout: a span with a grid stays a causal grid span, the others are text slots."""
    if len(stream) != len(plan.forced):
        raise UmmError(f"a stream of {len(stream)} tokens for a plan of {len(plan.forced)} slots")
    start = 0
    for span in plan.spans:
        ids = list(stream[start : start + span.length])
        start += span.length
        if span.grid is None:
            seq.text(ids, loss=loss)
        else:
            seq.image(None, span.grid, loss=loss, token_ids=ids, bidirectional=False)
    return seq
