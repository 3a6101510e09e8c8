"""Quantizers that turn a grid of continuous encoder outputs into discrete codes.

Every quantizer maps tokens ``z`` (N, C) to a :class:`QuantizerOutput`: the vectors the decoder reads
(straight-through: the forward value is the quantized vector, the gradient flows to ``z`` unchanged,
Bengio et al. 2013), the integer codes, and its unweighted auxiliary losses. ``lookup(codes)`` maps codes
back to decoder vectors, which is all that decoding a generated grid needs.

- :class:`VectorQuantizer`: nearest codebook vector (VQ-VAE, van den Oord et al. 2017, arXiv 1711.00937),
  codebook learned by EMA (their app. A.1) or by the codebook loss through straight-through gradients,
  commitment loss, and dead-code restarts.
- :class:`FSQ`: finite scalar quantization (Mentzer et al. 2023, arXiv 2309.15505): project to a few
  dimensions, bound each, round to a fixed number of levels; no codebook, no auxiliary loss.
- :class:`LFQ`: lookup-free quantization (MAGVIT-v2, Yu et al. 2023, arXiv 2310.05737, sec. 3.1): the sign of
  each of ``bits`` dimensions, with an entropy penalty that makes codes confident and used evenly.
- :class:`ResidualQuantizer`: residual quantization of depth D (RQ-VAE, Lee et al. 2022, arXiv 2203.01941,
  sec. 3.1; VILA-U's tokenizer): each depth quantizes what the previous depths left over.

Why umm owns these (~300 lines) instead of depending on ``vector-quantize-pytorch``: its EMA update and
dead-code restarts happen inside ``forward`` and draw from the global RNG, so two forwards of the same batch
disagree and a resumed run cannot repeat the random draws; umm's contract is that randomness comes from the
generator the trainer passes and that state changes happen once per optimizer step. It would also add
``einops``/``einx`` as dependencies for a few reshapes. Here the EMA statistics and restart candidates are
recorded in ``forward`` and applied in ``after_optimizer_step()``, which the trainer calls on every module
that has it, right after ``optimizer.step()``.

Distances are computed in float32 even under bf16 autocast: the argmin over a codebook is sensitive to the
rounding of ``z . e``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from umm import UmmError


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (N, C) vectors for the decoder; straight-through gradient to z
    codes: torch.Tensor  # (N,) long, or (N, D) for residual quantization
    losses: dict[str, torch.Tensor]  # unweighted auxiliary losses: commitment, codebook, entropy


def _fp32(device: torch.device):
    return torch.autocast(device.type, enabled=False)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantization with an EMA or a straight-through codebook.

    Args:
        codebook_size: K codes.
        dim: C, the width of the vectors.
        ema: learn the codebook as the EMA of the encodings assigned to each code (van den Oord et al. 2017,
            app. A.1; a buffer, untouched by the optimizer); else the codebook is a parameter trained by the
            codebook loss ``|sg(z) - e|^2``.
        decay: EMA decay of the codebook and of the per-code usage counts.
        restart_threshold: a code whose EMA usage (assignments per step) falls below this is moved onto an
            encoding of the current batch, drawn with probability proportional to its squared distance to
            its nearest code (k-means++ seeding, Arthur & Vassilvitskii 2007): poorly represented encodings
            get codes, the black background that every image shares does not. 0 disables restarts.
    """

    depth = 1

    def __init__(self, codebook_size: int, dim: int, ema: bool = True, decay: float = 0.99,
                 restart_threshold: float = 0.03, eps: float = 1e-5):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.ema, self.decay, self.restart_threshold, self.eps = ema, decay, restart_threshold, eps
        init = torch.randn(codebook_size, dim) / math.sqrt(dim)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_sum", init.clone())  # EMA of the sum of encodings per code
        else:
            self.codebook = nn.Parameter(init)
        # EMA of assignments per step; starts at 0 so that codes no encoding picks are restarted from data
        # after the first step (a data-dependent initialisation for free)
        self.register_buffer("usage", torch.zeros(codebook_size))
        self._pending: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C) -> squared distances (N, K) to every code, in float32."""
        with _fp32(z.device):
            z, e = z.float(), self.codebook.float()
            return z.pow(2).sum(-1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (...) -> vectors (..., C) in float32."""
        return F.embedding(codes, self.codebook).float()

    def assign(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Nearest codes (N,) of ``z`` (N, C); in a training forward, also record the statistics that
        :meth:`after_optimizer_step` applies."""
        dist_ = self.distances(z.detach())
        codes = dist_.argmin(-1)
        if self.training and torch.is_grad_enabled():
            self._record(z.detach().float(), codes, dist_.gather(1, codes[:, None])[:, 0], generator)
        return codes

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        codes = self.assign(z, generator)
        vectors = self.lookup(codes)  # (N, C); carries the codebook's gradient when it is a parameter
        # commitment (VQ-VAE eq. 3, beta term): keep the encoder's outputs near the codes they chose
        losses = {"commitment": F.mse_loss(z.float(), vectors.detach())}
        if not self.ema:
            losses["codebook"] = F.mse_loss(vectors, z.detach().float())
        quantized = z.float() + (vectors - z.float()).detach()
        return QuantizerOutput(quantized, codes, losses)

    # -- non-gradient updates, once per optimizer step ---------------------------------------------------

    def _record(self, z: torch.Tensor, codes: torch.Tensor, error: torch.Tensor, generator) -> None:
        k = self.codebook_size
        counts = torch.bincount(codes, minlength=k).float()
        sums = torch.zeros(k, self.dim, device=z.device).index_add_(0, codes, z) if self.ema else None
        candidates = None
        if self.restart_threshold > 0:
            if generator is None:
                raise UmmError("a training forward of a quantizer with dead-code restarts needs generator=")
            weights = error.clamp_min(0) + 1e-12  # D^2 sampling
            candidates = z[torch.multinomial(weights, k, replacement=True, generator=generator)]
        if self._pending is not None:  # several forwards in one step (residual depths, several tasks)
            old_counts, old_sums, old_candidates = self._pending
            counts = counts + old_counts
            sums = sums + old_sums if sums is not None else None
            candidates = candidates if candidates is not None else old_candidates
        self._pending = (counts, sums, candidates)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Apply the recorded EMA statistics and restart dead codes (called by the trainer)."""
        if self._pending is None:
            return
        counts, sums, candidates = self._pending
        self._pending = None
        if _distributed():  # every rank must end the step with the same codebook
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
            if candidates is not None:
                dist.broadcast(candidates, src=0)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            # Laplace smoothing keeps a code with ~0 usage from dividing by zero (Razavi et al. 2019)
            n = self.usage.sum()
            smoothed = (self.usage + self.eps) / (n + self.codebook_size * self.eps) * n
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if candidates is not None:
            dead = (self.usage < self.restart_threshold).nonzero()[:, 0]
            if len(dead):
                new = candidates[: len(dead)].to(self.codebook.dtype)
                self.codebook.data[dead] = new
                self.usage[dead] = self.restart_threshold
                if self.ema:
                    self.embed_sum[dead] = new * self.restart_threshold


class FSQ(nn.Module):
    """Finite scalar quantization (Mentzer et al. 2023, arXiv 2309.15505, sec. 3).

    ``z`` is projected to ``len(levels)`` dimensions; dimension i is squashed by tanh into a range that rounds
    to exactly ``levels[i]`` integers, and rounded with a straight-through gradient. The code is the
    mixed-radix number of the digits, so the implicit codebook has ``prod(levels)`` entries and every one is
    reachable by construction (the paper's argument for full codebook usage without auxiliary losses).
    The paper recommends levels (8, 5, 5, 5) for ~1k codes.
    """

    depth = 1

    def __init__(self, levels: tuple[int, ...], dim: int):
        super().__init__()
        if any(level < 2 for level in levels):
            raise UmmError(f"FSQ levels must all be >= 2, got {levels}")
        self.levels_list = tuple(levels)
        self.codebook_size = math.prod(levels)
        self.project_in = nn.Linear(dim, len(levels))
        self.project_out = nn.Linear(len(levels), dim)
        self.register_buffer("levels", torch.tensor(levels), persistent=False)
        basis = torch.cumprod(torch.tensor((1,) + tuple(levels[:-1])), 0)
        self.register_buffer("basis", basis, persistent=False)

    def bound(self, h: torch.Tensor) -> torch.Tensor:
        """Squash (N, d) so that rounding yields ``levels`` integers per dimension: L odd -> -(L-1)/2..(L-1)/2,
        L even -> -L/2..L/2-1 (the half-step offset keeps an even count symmetric around the tanh)."""
        levels = self.levels.float()
        half = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(h + shift) * half - offset

    def _values(self, digits: torch.Tensor) -> torch.Tensor:
        """Digits in [0, L) -> values in [-1, 1] (the paper's normalisation by L // 2)."""
        half_width = (self.levels // 2).float()
        return (digits.float() - half_width) / half_width

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        with _fp32(z.device):
            bounded = self.bound(self.project_in(z.float()))  # (N, d)
            rounded = bounded + (bounded.round() - bounded).detach()
            half_width = (self.levels // 2).float()
            digits = (rounded.detach() + half_width).round().long()  # (N, d) in [0, L)
            codes = (digits * self.basis).sum(-1)
            quantized = self.project_out(rounded / half_width)
        return QuantizerOutput(quantized, codes, {})

    def digits(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (...) -> digits (..., d), each in [0, levels[i])."""
        return (codes[..., None] // self.basis) % self.levels

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        with _fp32(codes.device):
            return self.project_out(self._values(self.digits(codes)))


class LFQ(nn.Module):
    """Lookup-free quantization (MAGVIT-v2, Yu et al. 2023, arXiv 2310.05737, sec. 3.1).

    ``z`` is projected to ``bits`` dimensions and each becomes +1 or -1 by its sign (straight-through); the
    code is the binary number of the signs, so the implicit codebook has 2^bits entries and no lookup.
    The entropy penalty (their eq. 4) is E[H(q(z))] - gamma * H(E[q(z)]) with q(z) = softmax over all codes
    of -|z - c|^2 / temperature: each token's assignment should be confident, while the batch as a whole
    should spread over the codebook. It is computed against all 2^bits codes, fine up to ~2^12 on a CPU.
    """

    depth = 1

    def __init__(self, bits: int, dim: int, temperature: float = 0.01, batch_entropy_weight: float = 1.0):
        super().__init__()
        if not 1 <= bits <= 16:
            raise UmmError(f"LFQ bits must be in 1..16, got {bits}")
        self.bits, self.codebook_size = bits, 2**bits
        self.temperature, self.batch_entropy_weight = temperature, batch_entropy_weight
        self.project_in = nn.Linear(dim, bits)
        self.project_out = nn.Linear(bits, dim)
        self.register_buffer("basis", 2 ** torch.arange(bits), persistent=False)
        codes = torch.arange(self.codebook_size)
        self.register_buffer("corners", self._signs(codes), persistent=False)  # (2^bits, bits) of +-1

    def _signs(self, codes: torch.Tensor) -> torch.Tensor:
        return ((codes[..., None] // self.basis) % 2).float() * 2 - 1

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        with _fp32(z.device):
            h = self.project_in(z.float())  # (N, bits)
            signs = torch.where(h > 0, 1.0, -1.0)
            codes = ((signs > 0).long() * self.basis).sum(-1)
            quantized = self.project_out(h + (signs - h).detach())
            # -|h - c|^2 = 2 h.c - const: the code distribution of every token
            logits = 2 * h @ self.corners.t() / self.temperature  # (N, 2^bits)
            log_probs = logits.log_softmax(-1)
            probs = log_probs.exp()
            token_entropy = -(probs * log_probs).sum(-1).mean()
            mean_probs = probs.mean(0)
            batch_entropy = -(mean_probs * (mean_probs + 1e-12).log()).sum()
            losses = {
                "commitment": F.mse_loss(h, signs),
                "entropy": token_entropy - self.batch_entropy_weight * batch_entropy,
            }
        return QuantizerOutput(quantized, codes, losses)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        with _fp32(codes.device):
            return self.project_out(self._signs(codes))


class ResidualQuantizer(nn.Module):
    """Residual vector quantization of depth D (RQ-VAE, Lee et al. 2022, arXiv 2203.01941, sec. 3.1).

    r_0 = z; code_d = Q(r_d); r_{d+1} = r_d - e(code_d); the decoder reads the sum of the D code vectors, a
    coarse-to-fine approximation of z. With ``shared=True`` (the paper's choice) one codebook serves every
    depth. The commitment loss is the paper's eq. 5, sum_d |z - sg(sum_{i<=d} e_i)|^2, averaged over depths
    so its scale does not grow with D.
    """

    def __init__(self, codebook_size: int, dim: int, depth: int, shared: bool = True, ema: bool = True,
                 decay: float = 0.99, restart_threshold: float = 0.03):
        super().__init__()
        if depth < 1:
            raise UmmError(f"residual quantization needs depth >= 1, got {depth}")
        self.depth, self.codebook_size, self.shared = depth, codebook_size, shared
        self.stages = nn.ModuleList(
            VectorQuantizer(codebook_size, dim, ema, decay, restart_threshold) for _ in range(1 if shared else depth)
        )

    def stage(self, d: int) -> VectorQuantizer:
        return self.stages[0 if self.shared else d]

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        residual = z.detach().float()
        partial = torch.zeros_like(residual)
        codes, commitment, codebook = [], 0.0, 0.0
        for d in range(self.depth):
            stage = self.stage(d)
            code = stage.assign(residual, generator)
            vector = stage.lookup(code)  # (N, C)
            if not stage.ema:
                codebook = codebook + F.mse_loss(vector, residual)
            partial = partial + vector
            commitment = commitment + F.mse_loss(z.float(), partial.detach())
            residual = residual - vector.detach()
            codes.append(code)
        losses = {"commitment": commitment / self.depth}
        if not self.stage(0).ema:
            losses["codebook"] = codebook / self.depth
        quantized = z.float() + (partial - z.float()).detach()
        return QuantizerOutput(quantized, torch.stack(codes, dim=-1), losses)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., D) -> the sum of their vectors (..., C)."""
        return sum(self.stage(d).lookup(codes[..., d]) for d in range(codes.shape[-1]))

    @torch.no_grad()
    def residual_norms(self, z: torch.Tensor) -> torch.Tensor:
        """Mean norm of the residual after 0, 1, ..., D depths: (D + 1,), for diagnostics and tests."""
        residual = z.float()
        norms = [residual.norm(dim=-1).mean()]
        for d in range(self.depth):
            stage = self.stage(d)
            residual = residual - stage.lookup(stage.distances(residual).argmin(-1))
            norms.append(residual.norm(dim=-1).mean())
        return torch.stack(norms)
