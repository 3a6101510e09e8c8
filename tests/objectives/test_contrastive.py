"""Contrastive and alignment objectives on one process: values against hand computations, gradients,
the logit-scale clamp, and the multi-positive (centre) loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from umm.objectives.alignment import cosine_alignment_loss, l2_alignment_loss, mse_alignment_loss
from umm.objectives.contrastive import (
    INFONCE_LOG_SCALE,
    LogitScale,
    infonce_loss,
    multi_positive_loss,
    siglip_loss,
)


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_infonce_matches_a_hand_computation():
    a, b = unit(6, 8, 0), unit(6, 8, 1)
    scale = torch.tensor(10.0)
    logits = scale * a @ b.T
    expected = 0.0
    for i in range(6):
        expected += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    assert infonce_loss(a, b, scale).item() == pytest.approx(expected.item() / 12, rel=1e-5)
    # one process: the local loss is the global loss
    assert infonce_loss(a, b, scale, local_loss=True).item() == pytest.approx(expected.item() / 12, rel=1e-5)


def test_infonce_is_low_for_aligned_pairs_and_high_for_shuffled():
    a = unit(16, 32, 2)
    scale = torch.tensor(50.0)
    aligned = infonce_loss(a, a, scale).item()
    shuffled = infonce_loss(a, a.roll(1, 0), scale).item()
    assert aligned < 0.05 and shuffled > 5.0


def test_siglip_matches_a_hand_computation():
    a, b = unit(5, 8, 3), unit(5, 8, 4)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    logits = scale * a @ b.T + bias
    labels = 2 * torch.eye(5) - 1
    expected = -F.logsigmoid(labels * logits).sum() / 5
    assert siglip_loss(a, b, scale, bias).item() == pytest.approx(expected.item(), rel=1e-5)


def test_logit_scale_init_and_clamp():
    scale, bias = LogitScale()()
    assert bias is None and scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    module = LogitScale(log_scale=10.0, bias=-10.0)
    scale, bias = module()
    assert scale.item() == pytest.approx(100.0, rel=1e-5) and bias.item() == -10.0
    (scale + bias).backward()
    assert module.log_scale.grad.item() == 0.0 and module.bias.grad.item() == 1.0  # clamped: no gradient
    inside = LogitScale(INFONCE_LOG_SCALE)
    inside()[0].backward()
    assert inside.log_scale.grad.item() == pytest.approx(1 / 0.07, rel=1e-5)  # d exp(x)/dx = exp(x)


def test_gradients_flow_to_both_sides_and_the_scale():
    a = unit(8, 16, 5).requires_grad_()
    b = unit(8, 16, 6).requires_grad_()
    module = LogitScale()
    infonce_loss(a, b, module()[0]).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0 and module.log_scale.grad.abs() > 0


def test_bad_shapes_raise_one_clear_error():
    with pytest.raises(ValueError, match="contrastive pairs"):
        infonce_loss(unit(4, 8, 0), unit(5, 8, 0), torch.tensor(1.0))


def test_multi_positive_reduces_to_infonce_with_one_positive_each():
    a, b = unit(6, 8, 7), unit(6, 8, 8)
    scale = torch.tensor(5.0)
    assert multi_positive_loss(a, b, torch.eye(6, dtype=torch.bool), scale).item() == pytest.approx(
        infonce_loss(a, b, scale).item(), rel=1e-5)


def test_multi_positive_prefers_embeddings_near_their_centres():
    centres = unit(3, 16, 9)  # three concepts, one centre each
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    positive = labels[:, None] == torch.arange(3)[None]
    near = F.normalize(centres[labels] + 0.05 * unit(6, 16, 10), dim=-1)
    far = F.normalize(centres[(labels + 1) % 3], dim=-1)
    scale = torch.tensor(20.0)
    assert multi_positive_loss(near, centres, positive, scale) < multi_positive_loss(far, centres, positive, scale) - 1


def test_alignment_losses():
    a, b = unit(4, 8, 11), unit(4, 8, 12)
    cos = (a * b).sum(-1)
    assert l2_alignment_loss(a, b).item() == pytest.approx((2 - 2 * cos).mean().item(), rel=1e-5)
    assert mse_alignment_loss(a, b).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-5)
    assert cosine_alignment_loss(a, b).item() == pytest.approx((1 - cos).mean().item(), rel=1e-5)
    mask = torch.tensor([True, False, False, False])
    assert l2_alignment_loss(a, b, mask).item() == pytest.approx((2 - 2 * cos[0]).item(), rel=1e-5)
    assert l2_alignment_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(l2_alignment_loss(a, b).item())
