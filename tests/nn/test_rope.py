"""RoPE: the written-out rotation and its gradient against the plain formula."""

import torch

from umm.nn.rope import RotaryEmbedding, apply_rope


def reference_rope(x, cos, sin):
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def test_rotation_and_its_gradient_match_the_formula_on_a_strided_view():
    torch.manual_seed(0)
    cos, sin = RotaryEmbedding(16, axes=2)(torch.randint(0, 9, (2, 7, 2)))  # (B, 1, T, 8) each
    qkv = torch.randn(2, 7, 9, 16, dtype=torch.float64).transpose(1, 2)  # (B, 9, T, 16): a view, as in Attention
    x = qkv[:, :3].clone().requires_grad_()
    strided = qkv[:, 3:6]
    assert not strided.is_contiguous()
    cos, sin = cos.double(), sin.double()
    torch.testing.assert_close(apply_rope(strided, cos, sin), reference_rope(strided, cos, sin))
    assert torch.autograd.gradcheck(lambda v: apply_rope(v, cos, sin), (x,))


def test_rotation_keeps_the_norm_and_is_undone_by_the_opposite_angle():
    torch.manual_seed(1)
    cos, sin = RotaryEmbedding(8)(torch.arange(5)[None, :, None])
    x = torch.randn(1, 2, 5, 8)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_rope(y, cos, -sin), x)
    assert not torch.allclose(y[..., 1:, :], x[..., 1:, :])  # every position past 0 is turned
