"""Gaussian noise paths x_t = alpha(t) * x_0 + sigma(t) * eps, shared by training and sampling.

Time is continuous, t in [0, 1]: t = 0 is data, t = 1 is (almost) pure noise. Three schedules:

- ``cosine``  (Nichol & Dhariwal 2021): alpha^2 = cos^2(pi/2 * (t + s) / (1 + s)), variance preserving. This
  is Transfusion's schedule (Zhou et al. 2024, sec. 2.1).
- ``linear``  (Ho et al. 2020): the DDPM linear-beta schedule over 1000 steps, read in continuous time;
  DiT and MonoFormer use it.
- ``flow``    (rectified flow, Liu et al. 2022; Lipman et al. 2022): alpha = 1 - t, sigma = t.

The network predicts one of four targets (``parameterization``): ``eps`` (noise), ``v``
(alpha * eps - sigma * x_0, Salimans & Ho 2022; MMAR's choice for bf16 stability), ``x0``, or ``flow``
(the velocity eps - x_0 of the straight path). :meth:`GaussianPath.to_x0_eps` converts any of them back
to (x_0, eps), which is all a sampler needs.

Training times are uniform, or logit-normal (``time_sampling="logit_normal"``: t = sigmoid(N(mean, std)),
Esser et al. 2024, "Scaling Rectified Flow Transformers", sec. 3.1). A positive mean spends the steps at the
noisy end (mean 1: 59% of them at t in (0.6, 0.95) against 35% for uniform), where the image is too noisy
to show its shape and the caption must say it. On ShapesWorld L1 it raised the reference model's 10-minute
GenEval-like from 0.27 to 0.68 (benchmarks/RESULTS.md, "Second round"). It gives the very noisiest end
(t > 0.95) fewer steps than uniform does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Schedule = Literal["cosine", "linear", "flow"]
Parameterization = Literal["eps", "v", "x0", "flow"]
TimeSampling = Literal["uniform", "logit_normal"]


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) or (B, N) time -> broadcastable against ``like`` (B, N, C) or (B, C, H, W)."""
    while t.ndim < like.ndim:
        t = t[..., None]
    return t


@dataclass(frozen=True)
class GaussianPath:
    schedule: Schedule = "flow"
    parameterization: Parameterization = "flow"
    cosine_offset: float = 0.008  # s in Nichol & Dhariwal's cosine schedule
    t_max: float = 0.999  # cosine/linear: alpha(1) = 0 would make eps -> x0 conversion divide by zero
    time_sampling: TimeSampling = "uniform"
    time_mean: float = 0.0  # logit_normal: location and scale of logit(t)
    time_std: float = 1.0

    def __post_init__(self):
        if (self.parameterization == "flow") != (self.schedule == "flow"):
            raise ValueError(
                f"parameterization {self.parameterization!r} does not suit schedule {self.schedule!r}: "
                "use parameterization='flow' with schedule='flow', and eps/v/x0 with cosine/linear"
            )
        if self.time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"time_sampling {self.time_sampling!r}: choose 'uniform' or 'logit_normal'")

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.float()
        if self.schedule == "flow":
            return 1 - t, t
        if self.schedule == "cosine":
            s = self.cosine_offset
            f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
            alpha_bar = f(t) / f(torch.zeros_like(t))
        else:  # linear betas 1e-4 .. 0.02 over 1000 steps; log alpha_bar integrates beta(t) in closed form
            b0, b1, n = 1e-4, 0.02, 1000
            alpha_bar = torch.exp(-n * (b0 * t + 0.5 * (b1 - b0) * t**2))
        alpha_bar = alpha_bar.clamp(1e-8, 1.0)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def sample_time(self, shape: tuple[int, ...], generator: torch.Generator | None = None, device=None,
                    max_t: float = 1.0) -> torch.Tensor:
        """Training times in [0, min(max_t, t_max)], uniform or logit-normal (``max_t`` caps noise, e.g. for
        captioning data: the distribution is scaled into the capped range)."""
        upper = min(max_t, 1.0 if self.schedule == "flow" else self.t_max)
        if self.time_sampling == "uniform":
            return torch.rand(shape, generator=generator, device=device) * upper
        z = torch.randn(shape, generator=generator, device=device)
        return torch.sigmoid(self.time_mean + self.time_std * z) * upper

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return _expand(alpha, x0) * x0 + _expand(sigma, x0) * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output at (x_t, t)."""
        if self.parameterization == "eps":
            return noise
        if self.parameterization == "x0":
            return x0
        if self.parameterization == "flow":
            return noise - x0
        alpha, sigma = self.alpha_sigma(t)
        return _expand(alpha, x0) * noise - _expand(sigma, x0) * x0

    def to_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, eps) implied by a network ``output`` at (x_t, t)."""
        alpha, sigma = (_expand(v, x_t) for v in self.alpha_sigma(t))
        output = output.float()
        if self.parameterization == "eps":
            return (x_t - sigma * output) / alpha, output
        if self.parameterization == "x0":
            return output, (x_t - alpha * output) / sigma.clamp_min(1e-8)
        if self.parameterization == "flow":
            t_ = _expand(t.float(), x_t)
            return x_t - t_ * output, x_t + (1 - t_) * output
        return alpha * x_t - sigma * output, sigma * x_t + alpha * output  # v (variance preserving)

    def sampling_times(self, steps: int) -> torch.Tensor:
        """``steps + 1`` times from the noisiest ``t_max`` (1 for flow) down to 0."""
        top = 1.0 if self.schedule == "flow" else self.t_max
        return torch.linspace(top, 0.0, steps + 1)
