"""Samplers for Gaussian paths: DDPM, DDIM, DPM-Solver++(2M), Euler and Heun.

Single-step samplers keep no state between calls; the multistep DPM-Solver++(2M) remembers its previous
prediction, so it is built fresh for each sampling loop (``make_sampler`` in the pipelines does). Each ``step`` takes ``denoise(x, t) -> network output`` (already
guided, if CFG is used), the current sample ``x`` at time ``t`` and the next time ``t_next``, and returns the
sample at ``t_next``. The loop lives in the pipeline, in plain sight::

    times = path.sampling_times(steps)
    for t, t_next in zip(times[:-1], times[1:]):
        x = sampler.step(denoise, x, t, t_next, generator)

``clip`` bounds the predicted x_0 (images live in [-1, 1]); DDPM's "clip_denoised" does the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from umm.paths.gaussian import GaussianPath

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _time(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device)


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM (Song et al. 2021): x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, c = eta * DDPM std.

    ``eta=0`` is deterministic (for the flow path it is exactly Euler on the velocity); ``eta=1`` is DDPM.
    ``noise_scale`` multiplies the fresh noise c z of each stochastic step only: MAR's sampling
    temperature (Li et al. 2024, arXiv 2406.11838, sec. 3.4), which sharpens (< 1) the sampled distribution.
    """

    path: GaussianPath
    eta: float = 0.0
    clip: float | None = 1.0
    noise_scale: float = 1.0

    def predict(self, denoise: Denoise, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_vec = _time(t, x)
        x0, eps = self.path.to_x0_eps(denoise(x, t_vec), x, t_vec)
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
            alpha, sigma = self.path.alpha_sigma(t_vec)
            shape = (-1,) + (1,) * (x.ndim - 1)
            eps = (x - alpha.view(shape) * x0) / sigma.view(shape).clamp_min(1e-8)
        return x0, eps

    def step(self, denoise: Denoise, x: torch.Tensor, t, t_next, generator: torch.Generator | None = None) -> torch.Tensor:
        x0, eps = self.predict(denoise, x, t)
        return self.update(x0, eps, x, t, t_next, generator)

    def update(self, x0, eps, x, t, t_next, generator=None) -> torch.Tensor:
        if float(t_next) <= 0:
            return x0
        (alpha_t, sigma_t), (alpha_s, sigma_s) = (self.path.alpha_sigma(torch.tensor(float(v))) for v in (t, t_next))
        c = torch.zeros(())
        if self.eta > 0:
            # std of the DDPM posterior q(x_s | x_t, x_0)
            alpha_ts = alpha_t / alpha_s
            var = (sigma_t**2 - alpha_ts**2 * sigma_s**2) * sigma_s**2 / sigma_t**2
            c = self.eta * var.clamp_min(0).sqrt()
        out = alpha_s * x0 + (sigma_s**2 - c**2).clamp_min(0).sqrt() * eps
        if self.eta > 0:
            out = out + self.noise_scale * c * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out


@dataclass
class DPMSolverSampler:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2): a second-order multistep solver of
    the diffusion ODE in data-prediction form, in the half-log-SNR lambda = log(alpha / sigma).

    With h = lambda_s - lambda_t, one step is x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D, where D is
    the current x0 prediction at the first step and the extrapolation (1 + 1/2r) x0_t - (1/2r) x0_prev with
    r = h_prev / h afterwards. One network evaluation per step, like DDIM (its first-order special case), but
    second order: the paper reaches DDIM's 20-step quality in about 10. The step into t = 0 returns the
    prediction itself (the paper's "lower order final" for few steps). Stateful: one instance per loop.
    """

    path: GaussianPath
    clip: float | None = 1.0
    _prev: tuple[torch.Tensor, float] | None = None  # (x0 prediction, lambda) of the previous step

    def _lambda(self, t) -> tuple[float, float, float]:
        alpha, sigma = (float(v) for v in self.path.alpha_sigma(torch.tensor(float(t))))
        return alpha, sigma, math.log(max(alpha, 1e-12) / max(sigma, 1e-12))

    def step(self, denoise: Denoise, x: torch.Tensor, t, t_next, generator: torch.Generator | None = None) -> torch.Tensor:
        x0, _ = DDIMSampler(self.path, clip=self.clip).predict(denoise, x, t)
        if float(t_next) <= 0:
            self._prev = None
            return x0
        _, sigma_t, lam_t = self._lambda(t)
        alpha_s, sigma_s, lam_s = self._lambda(t_next)
        h = lam_s - lam_t
        d = x0
        if self._prev is not None:
            x0_prev, lam_prev = self._prev
            r = (lam_t - lam_prev) / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        self._prev = (x0, lam_t)
        return (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * d


def DDPMSampler(path: GaussianPath, clip: float | None = 1.0, noise_scale: float = 1.0) -> DDIMSampler:
    """Ancestral DDPM sampling (Ho et al. 2020) = DDIM with eta = 1."""
    return DDIMSampler(path, eta=1.0, clip=clip, noise_scale=noise_scale)


@dataclass(frozen=True)
class EulerSampler:
    """First-order ODE step on the straight (flow) path: x_s = x_t + (s - t) * u."""

    path: GaussianPath
    clip: float | None = None

    def __post_init__(self):
        assert self.path.schedule == "flow", "Euler/Heun integrate the flow path; use DDIM for cosine/linear"

    def velocity(self, denoise: Denoise, x: torch.Tensor, t) -> torch.Tensor:
        t_vec = _time(t, x)
        x0, eps = self.path.to_x0_eps(denoise(x, t_vec), x, t_vec)
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
            eps = (x - (1 - float(t)) * x0) / max(float(t), 1e-8)
        return eps - x0

    def step(self, denoise: Denoise, x: torch.Tensor, t, t_next, generator: torch.Generator | None = None) -> torch.Tensor:
        return x + (float(t_next) - float(t)) * self.velocity(denoise, x, t)


@dataclass(frozen=True)
class HeunSampler(EulerSampler):
    """Second-order Heun step (Karras et al. 2022): average the velocity at t and at the Euler guess at s.

    Two network evaluations per step except the last (to t = 0), which is a plain Euler step.
    """

    def step(self, denoise: Denoise, x: torch.Tensor, t, t_next, generator: torch.Generator | None = None) -> torch.Tensor:
        dt = float(t_next) - float(t)
        u = self.velocity(denoise, x, t)
        guess = x + dt * u
        if float(t_next) <= 0:
            return guess
        return x + dt * 0.5 * (u + self.velocity(denoise, guess, t_next))


def network_evaluations(sampler, steps: int) -> int:
    """Network calls for ``steps`` steps (before CFG doubling): what "NFE" means in speed tables."""
    return 2 * steps - 1 if isinstance(sampler, HeunSampler) else steps
