"""Sampler contracts: shapes, seeded determinism, guidance scale 1 = no guidance, exact denoisers converge."""

import pytest
import torch

from umm.paths import GaussianPath
from umm.samplers import DDIMSampler, DDPMSampler, DPMSolverSampler, EulerSampler, HeunSampler, cfg, muse_cfg

PATHS = {
    "flow": GaussianPath("flow", "flow"),
    "cosine-eps": GaussianPath("cosine", "eps"),
    "cosine-v": GaussianPath("cosine", "v"),
    "linear-x0": GaussianPath("linear", "x0"),
}


def oracle(path: GaussianPath, x0: torch.Tensor):
    """The exact network for a point-mass data distribution at ``x0``: returns the path's target."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (v[:, None, None] for v in path.alpha_sigma(t))
        eps = (x - alpha * x0) / sigma.clamp_min(1e-8)
        return path.target(x0.expand_as(x), eps, t)

    return denoise


def samplers_for(path):
    out = [DDIMSampler(path, clip=None), DDPMSampler(path, clip=None), DPMSolverSampler(path, clip=None)]
    if path.schedule == "flow":
        out += [EulerSampler(path), HeunSampler(path)]
    return out


def run(sampler, path, denoise, x, steps, generator=None):
    times = path.sampling_times(steps)
    for t, t_next in zip(times[:-1], times[1:]):
        x = sampler.step(denoise, x, t, t_next, generator)
    return x


@pytest.mark.parametrize("name", PATHS)
def test_exact_denoiser_recovers_the_data_point(name):
    path = PATHS[name]
    x0 = torch.tensor([[[0.5, -0.25, 0.9]]])
    for sampler in samplers_for(path):
        x = torch.randn(4, 1, 3, generator=torch.Generator().manual_seed(0))
        out = run(sampler, path, oracle(path, x0), x, steps=20, generator=torch.Generator().manual_seed(1))
        assert out.shape == x.shape
        assert torch.allclose(out, x0.expand_as(out), atol=1e-3), f"{type(sampler).__name__} on {name}"


@pytest.mark.parametrize("name", PATHS)
def test_seeded_sampling_is_deterministic(name):
    path = PATHS[name]
    denoise = lambda x, t: 0.1 * x  # noqa: E731  (any fixed function)
    for sampler in samplers_for(path):
        a = run(sampler, path, denoise, torch.ones(2, 4, 3), 5, torch.Generator().manual_seed(3))
        b = run(sampler, path, denoise, torch.ones(2, 4, 3), 5, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_ddpm_is_stochastic_and_ddim_is_not():
    path = PATHS["cosine-eps"]
    denoise = lambda x, t: 0.5 * x  # noqa: E731
    x = torch.zeros(1, 4, 3)
    ddpm = [run(DDPMSampler(path), path, denoise, x, 5, torch.Generator().manual_seed(s)) for s in (0, 1)]
    ddim = [run(DDIMSampler(path), path, denoise, x, 5, torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert not torch.equal(*ddpm) and torch.equal(*ddim)


def test_guidance_scale_one_is_no_guidance():
    cond, uncond = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(cfg(cond, uncond, 1.0), cond)
    assert torch.equal(muse_cfg(cond, uncond, 0.0), cond)
    assert torch.allclose(cfg(cond, uncond, 3.0), uncond + 3 * (cond - uncond))


def test_heun_is_more_accurate_than_euler_on_a_curved_flow():
    """Data = {-1, +1}: the exact velocity field bends, so 6 Heun steps land nearer the modes than 6 Euler steps."""
    path = PATHS["flow"]

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None, None].clamp_min(1e-4)
        x0_hat = torch.tanh((1 - t) * x / t**2)  # E[x0 | x_t] for x0 = +-1 with equal odds
        eps_hat = (x - (1 - t) * x0_hat) / t
        return eps_hat - x0_hat

    x = torch.randn(256, 1, 1, generator=torch.Generator().manual_seed(0))
    error = lambda out: (out.abs() - 1).abs().mean()  # noqa: E731  distance to the nearest mode
    euler, heun = (error(run(s, path, denoise, x, 6)) for s in (EulerSampler(path), HeunSampler(path)))
    reference = error(run(HeunSampler(path), path, denoise, x, 200))
    assert reference < 0.02
    assert heun < euler, (heun, euler)


def test_mismatched_path_is_rejected():
    with pytest.raises(ValueError, match="does not suit"):
        GaussianPath("cosine", "flow")
    with pytest.raises(AssertionError, match="flow path"):
        EulerSampler(PATHS["cosine-eps"])


def test_logit_normal_time_sampling_weights_the_high_noise_end():
    from umm.paths import GaussianPath

    gen = torch.Generator().manual_seed(0)
    uniform = GaussianPath("cosine", "v").sample_time((20000,), gen)
    shifted = GaussianPath("cosine", "v", time_sampling="logit_normal", time_mean=1.0).sample_time((20000,), gen)
    assert abs(uniform.median() - 0.5) < 0.02
    assert abs(shifted.median() - torch.sigmoid(torch.tensor(1.0))) < 0.02  # median of sigmoid(N(1, 1))
    in_upper_middle = lambda t: ((t > 0.6) & (t < 0.95)).float().mean()  # noqa: E731
    assert in_upper_middle(shifted) > 1.5 * in_upper_middle(uniform)  # 0.59 vs 0.35
    capped = GaussianPath("cosine", "v", time_sampling="logit_normal", time_mean=1.0).sample_time((1000,), gen, max_t=0.5)
    assert capped.max() <= 0.5 and capped.min() >= 0.0
    with pytest.raises(ValueError, match="time_sampling"):
        GaussianPath("cosine", "v", time_sampling="lognormal")


def gaussian_oracle(path: GaussianPath, scale: float):
    """The exact network for data N(0, scale^2): E[x0 | x_t] = alpha s^2 x_t / (alpha^2 s^2 + sigma^2)."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (v[:, None, None] for v in path.alpha_sigma(t))
        x0 = alpha * scale**2 * x / (alpha**2 * scale**2 + sigma**2)
        return path.target(x0, (x - alpha * x0) / sigma.clamp_min(1e-8), t)

    return denoise


@pytest.mark.parametrize("name", ["cosine-v", "flow"])
def test_dpm_solver_is_second_order_where_ddim_is_first(name):
    """On Gaussian data the probability-flow ODE is linear: x_t = x_T * std(x_t) / std(x_T). Integrated to
    t = 0.05 (before the last step, which both samplers take as the x0 prediction), DPM-Solver++(2M)
    (Lu et al. 2022) lands at least 2.5x nearer than DDIM at every step count, and once its steps are small
    doubling them cuts its error by more than 3x where DDIM's only halves."""
    path, scale, end = PATHS[name], 0.3, 0.05
    x = torch.randn(64, 1, 4, generator=torch.Generator().manual_seed(0))
    top = float(path.sampling_times(1)[0])

    def std(t: float) -> float:
        alpha, sigma = (float(v) for v in path.alpha_sigma(torch.tensor(t)))
        return (alpha**2 * scale**2 + sigma**2) ** 0.5

    exact = x * std(end) / std(top)
    denoise = gaussian_oracle(path, scale)

    def error(sampler, steps):
        times = torch.linspace(top, end, steps + 1)
        y = x
        for t, t_next in zip(times[:-1], times[1:]):
            y = sampler.step(denoise, y, t, t_next)
        return float((y - exact).abs().mean())

    counts = (8, 16, 32, 64)
    ddim = [error(DDIMSampler(path, clip=None), n) for n in counts]
    dpm = [error(DPMSolverSampler(path, clip=None), n) for n in counts]
    assert all(a < b / 2.5 for a, b in zip(dpm, ddim)), (dpm, ddim)
    assert ddim[2] / ddim[3] < 2.1 and dpm[2] / dpm[3] > 3, (dpm, ddim)
