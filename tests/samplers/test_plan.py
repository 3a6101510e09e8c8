"""Token plans of grid streams: every frame is one causal grid span, and a stream is laid out by its plan."""

import pytest
import torch

from umm import UmmError
from umm.data.sequence import Sequence
from umm.nn import Span
from umm.samplers.plan import append_planned, grid_plan


def test_grid_plan_gives_each_frame_a_grid_span_with_its_end_token():
    plan = grid_plan(2, 3, 4, low=100, high=110, row_end=7, frame_ends=(8, 8), end=(9,))
    assert plan.spans == (Span(15, False, (3, 5)), Span(1), Span(15, False, (3, 5)), Span(1), Span(1))
    assert plan.forced[:5] == (-1, -1, -1, -1, 7) and plan.forced[15] == 8 and plan.forced[-1] == 9


def test_append_planned_keeps_the_grids_and_refuses_a_stream_of_another_length():
    plan = grid_plan(2, 2, 2, low=100, high=110, frame_ends=(8, 9))
    stream = torch.tensor(plan.forced)
    stream[stream < 0] = torch.arange(100, 108)
    seq = append_planned(Sequence().text([1], loss=False), plan, stream.tolist(), loss=True)
    assert seq.tokens == [1] + stream.tolist()
    assert [s.grid for s in seq.spans] == [None, (2, 2), None, (2, 2), None]
    with pytest.raises(UmmError, match="a stream of 9 tokens for a plan of 10 slots"):
        append_planned(Sequence(), plan, stream.tolist()[:-1], loss=True)
