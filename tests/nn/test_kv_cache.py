import torch

from umm.nn import Span, Transformer, TransformerConfig, build_layout


def _model(axes: int = 2) -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(dim=32, depth=2, heads=2, rope_axes=axes)).eval()


def test_chunked_decoding_with_cache_equals_full_recompute():
    model = _model()
    spans = [Span(4), Span(4, True, (2, 2)), Span(3)]
    layout = build_layout([spans, spans], axes=2)
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        full = model(x, layout)
        cache = model.new_cache(batch=2, max_len=16)
        pieces = [model(x[:, :4], layout[0:4], cache=cache)]  # prompt
        pieces.append(model(x[:, 4:8], layout[4:8], cache=cache))  # whole image span in one chunk
        for t in range(8, 11):  # then text token by token
            pieces.append(model(x[:, t : t + 1], layout[t : t + 1], cache=cache))
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_uncommitted_chunk_can_be_rewritten():
    model = _model()
    layout = build_layout([[Span(3), Span(4, True, (2, 2))]], axes=2)
    x = torch.randn(1, 7, 32)
    with torch.no_grad():
        full = model(x, layout)
        cache = model.new_cache(batch=1, max_len=8)
        model(x[:, :3], layout[0:3], cache=cache)
        # a "denoising step" on garbage, not committed, must leave no trace
        model(torch.randn(1, 4, 32), layout[3:7], cache=cache, commit=False)
        assert cache.length == 3
        out = model(x[:, 3:7], layout[3:7], cache=cache, commit=False)
    assert torch.allclose(out, full[:, 3:7], atol=1e-5)


def test_left_padded_batch_decodes_like_unpadded():
    model = _model(axes=1)
    short, long = torch.randn(1, 3, 32), torch.randn(1, 5, 32)
    padded = torch.cat([torch.cat([torch.zeros(1, 2, 32), short], 1), long])
    layout = build_layout([[Span(3)], [Span(5)]], pad_left=True)
    with torch.no_grad():
        out = model(padded, layout)
        alone = model(short, build_layout([[Span(3)]]))
    assert torch.allclose(out[0, 2:], alone[0], atol=1e-5)


def test_rope_is_relative():
    """Shifting every position by a constant leaves the output unchanged."""
    model = _model()
    layout = build_layout([[Span(2), Span(4, True, (2, 2))]], axes=2)
    x = torch.randn(1, 6, 32)
    shifted = build_layout([[Span(2), Span(4, True, (2, 2))]], axes=2)
    shifted.positions += 7
    with torch.no_grad():
        assert torch.allclose(model(x, layout), model(x, shifted), atol=1e-5)
