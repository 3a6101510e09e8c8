import torch

from umm.nn import Span, attention_mask, build_layout


def test_text_is_causal_and_image_span_is_bidirectional():
    layout = build_layout([[Span(3), Span(4, True, (2, 2)), Span(2)]])
    mask = attention_mask(layout.block, layout.block, layout.valid)[0, 0]  # (T, T)
    text = [0, 1, 2, 7, 8]
    image = [3, 4, 5, 6]
    for i in text:
        for j in range(9):
            assert mask[i, j] == (j <= i), f"text token {i} vs key {j}"
    for i in image:
        for j in image:
            assert mask[i, j], f"image token {i} must see image token {j} of its own span"
        for j in text:
            assert mask[i, j] == (j < 3), f"image token {i} sees the text before it only"


def test_two_images_do_not_see_each_others_future():
    layout = build_layout([[Span(1), Span(2, True, (1, 2)), Span(2, True, (1, 2))]])
    mask = attention_mask(layout.block, layout.block, layout.valid)[0, 0]
    assert not mask[1, 3] and not mask[2, 4], "first image must not see the second"
    assert mask[3, 1] and mask[4, 2] and mask[3, 4] and mask[4, 3]


def test_padding_is_never_a_key_and_rows_are_not_empty():
    layout = build_layout([[Span(2)], [Span(4)]], pad_left=True)
    mask = attention_mask(layout.block, layout.block, layout.valid)[:, 0]
    assert layout.valid[0].tolist() == [False, False, True, True]
    assert not mask[0, 2:, :2].any(), "real tokens must not attend to left padding"
    assert mask.any(-1).all(), "every row keeps at least its own slot"


def test_grid_positions_follow_mrope():
    layout = build_layout([[Span(2), Span(6, True, (2, 3)), Span(1)]], axes=2)
    pos = layout.positions[0]
    assert pos[:2].tolist() == [[0, 0], [1, 1]]
    assert pos[2:8].tolist() == [[2, 2], [2, 3], [2, 4], [3, 2], [3, 3], [3, 4]]
    assert pos[8].tolist() == [5, 5], "text after the grid continues after its largest coordinate"
    video = build_layout([[Span(8, True, (2, 2, 2))]], axes=3).positions[0]
    assert video[-1].tolist() == [1, 1, 1] and video[4].tolist() == [1, 0, 0]


def test_all_bidirectional_sequence_is_full_attention():
    layout = build_layout([[Span(9, True, (3, 3))]])
    mask = attention_mask(layout.block, layout.block, layout.valid)
    assert mask.all()


def test_mask_with_cache_offset_matches_full_mask_rows():
    layout = build_layout([[Span(3), Span(4, True, (2, 2)), Span(2)]])
    full = attention_mask(layout.block, layout.block, layout.valid)
    chunk = attention_mask(layout.block[:, 3:7], layout.block[:, :7], layout.valid[:, :7], query_offset=3)
    assert torch.equal(chunk, full[:, :, 3:7, :7])
