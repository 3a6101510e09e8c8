"""RMSNorm on CPU writes its gradient out (torch 2.13 has no fused CPU backward): it must be the same function,
forward and backward, as ``F.rms_norm`` differentiated by autograd."""

import pytest
import torch
import torch.nn.functional as F

from umm.nn.norm import CPURMSNorm, RMSNorm


@pytest.mark.parametrize("affine", [True, False])
def test_cpu_rms_norm_passes_gradcheck_in_float64(affine):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(8, dtype=torch.float64, generator=g, requires_grad=True) if affine else None
    assert torch.autograd.gradcheck(lambda x, w: CPURMSNorm.apply(x, w, 1e-6), (x, weight))


def test_rms_norm_matches_the_composite_forward_and_backward_in_float32():
    g = torch.Generator().manual_seed(1)
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=g))
    x = torch.randn(4, 7, 16, generator=g, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    w_ref = norm.weight.detach().clone().requires_grad_()
    upstream = torch.randn(4, 7, 16, generator=g)
    (norm(x) * upstream).sum().backward()
    (F.rms_norm(x_ref, (16,), w_ref, norm.eps) * upstream).sum().backward()
    torch.testing.assert_close(norm(x), F.rms_norm(x_ref, (16,), w_ref, norm.eps))
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.weight.grad, w_ref.grad, rtol=1e-5, atol=1e-5)


def test_rms_norm_keeps_bf16_in_bf16_and_close_to_float32():
    x = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(2))
    norm = RMSNorm(32)
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), norm(x), rtol=2e-2, atol=2e-2)
