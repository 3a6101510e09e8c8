"""Contrastive objectives over unit-vector embeddings: symmetric InfoNCE (CLIP) and the sigmoid loss (SigLIP),
with negatives gathered across ranks *with* gradient.

Conventions (open_clip's, see /work/shared/reference/multi_expert.md sec. 4):

- embeddings are always unit vectors; the temperature is a separate learnable :class:`LogitScale`, never
  baked into the embeddings (ImageBind bakes it in, which confuses users: its issues #19 and #72);
- the logit scale is stored as a log, initialised at log(1/0.07) for InfoNCE (Radford et al. 2021,
  arXiv 2103.00020 sec. 2.5) or log(10) with a bias of -10 for SigLIP (Zhai et al. 2023, arXiv 2303.15343
  sec. 3), and clamped to [0, log 100] *in forward*, as torchmultimodal does: a system never sees the
  optimizer step, so it cannot clamp the parameter after it the way open_clip's trainer does.

Distributed: :func:`gather` is an autograd-aware all-gather (functional collectives' ``all_gather_single_autograd``),
so every rank's embeddings receive gradient from the negatives they provide to the other ranks. With the
global loss every rank computes the whole (N, N) matrix; with ``local_loss`` a rank computes only its own
rows (n, N), labels offset by ``rank * n``. In both cases the all-gather backward sums each rank's feature
gradients over ranks (W times the gradient of the global mean loss) and DDP then averages parameter
gradients over the W ranks, so the update equals single-process training on the concatenated batch
(tested with two gloo processes in tests/objectives/test_contrastive_distributed.py).

Shapes: n local batch, N = W * n global batch, D embedding width.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

INFONCE_LOG_SCALE = math.log(1 / 0.07)
SIGLIP_LOG_SCALE = math.log(10.0)
SIGLIP_BIAS = -10.0
MAX_LOG_SCALE = math.log(100.0)


class LogitScale(nn.Module):
    """A learnable temperature (as log scale) and optional logit bias; ``forward()`` -> (scale, bias).

    ``scale = exp(clamp(log_scale, 0, log 100))``; ``bias`` is None unless created with one (SigLIP).
    """

    def __init__(self, log_scale: float = INFONCE_LOG_SCALE, bias: float | None = None):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.log_scale.clamp(0.0, MAX_LOG_SCALE).exp(), self.bias


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on every rank -> (W * n, ...) in rank order, differentiable; identity on one process.

    Every rank must pass the same n (the trainer splits each task's batch evenly).
    """
    _, size = world()
    if size == 1:
        return x
    from torch.distributed._functional_collectives import all_gather_single_autograd

    # backward: the gradients of the N rows are summed over ranks and each rank keeps its own n rows
    return all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)


def check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"contrastive pairs need two (n, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def infonce_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    local_loss: bool = False,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Symmetric InfoNCE between paired unit vectors ``a`` (n, D) and ``b`` (n, D): row i of ``a`` should
    pick row i of ``b`` among every ``b`` of the global batch, and vice versa; (CE_ab + CE_ba) / 2.

    ``local_loss``: this rank's rows only, against the gathered columns (open_clip's ``--local-loss``); the
    mean of the ranks' losses is the global loss. Otherwise every rank computes the full global loss.
    """
    check_pair(a, b)
    rank, _ = world()
    all_a, all_b = gather(a), gather(b)  # (N, D)
    if local_loss:
        logits_ab = logit_scale * a @ all_b.T  # (n, N)
        logits_ba = logit_scale * b @ all_a.T  # (n, N)
        labels = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]
    else:
        logits_ab = logit_scale * all_a @ all_b.T  # (N, N)
        logits_ba = logits_ab.T
        labels = torch.arange(all_a.shape[0], device=a.device)
    ce_ab = F.cross_entropy(logits_ab.float(), labels, label_smoothing=label_smoothing)
    ce_ba = F.cross_entropy(logits_ba.float(), labels, label_smoothing=label_smoothing)
    return (ce_ab + ce_ba) / 2


def siglip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP): every (i, j) is a binary problem, positive iff i == j;
    -sum log sigmoid(y_ij * (scale * a_i . b_j + bias)) / n over this rank's rows and all N columns.

    Each rank scores its own rows against the gathered ``b``; the mean over ranks is the loss of the global
    (N, N) matrix divided by N, which is the single-process loss on the concatenated batch. (open_clip
    exchanges ``b`` between neighbours to save memory; one all-gather is simpler and equal in value.)
    """
    check_pair(a, b)
    rank, _ = world()
    n = a.shape[0]
    all_b = gather(b)  # (N, D)
    logits = (logit_scale * a @ all_b.T + logit_bias).float()  # (n, N)
    labels = -torch.ones_like(logits)
    labels[torch.arange(n, device=a.device), torch.arange(n, device=a.device) + rank * n] = 1.0
    return -F.logsigmoid(labels * logits).sum() / n


def multi_positive_loss(
    a: torch.Tensor, b: torch.Tensor, positive: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row (LAVIS' ``image_id`` targets, UniBind's centres).

    ``a`` (n, D), ``b`` (m, D), ``positive`` (n, m) bool. Each row of ``a`` puts a uniform target on its
    positive columns, each column of ``b`` on its positive rows; rows or columns without a positive are
    left out of their direction. Single-process (centres are the same on every rank).
    """
    if positive.shape != (a.shape[0], b.shape[0]):
        raise ValueError(f"positive mask {tuple(positive.shape)} does not match ({a.shape[0]}, {b.shape[0]})")
    logits = (logit_scale * a @ b.T).float()  # (n, m)
    target = positive.float()
    losses = []
    for lg, tg in ((logits, target), (logits.T, target.T)):
        has = tg.sum(1) > 0
        if has.any():
            tg = tg[has] / tg[has].sum(1, keepdim=True)
            losses.append(-(tg * F.log_softmax(lg[has], dim=1)).sum(1).mean())
    if not losses:
        raise ValueError("multi_positive_loss: no row or column has a positive")
    return sum(losses) / len(losses)
