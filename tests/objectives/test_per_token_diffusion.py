"""MAR's per-token diffusion head and loss: it learns a fixed target, its samples recover a known 1-D
Gaussian mixture, its draws are consistent with the path, and v-prediction beats eps under bf16 rounding."""

import pytest
import torch

from umm.nn.diffusion_head import DiffusionHead
from umm.objectives.per_token_diffusion import draw_noise, per_token_diffusion_loss
from umm.paths import GaussianPath
from umm.pipelines.masked_ar import make_head_sampler, sample_with_head


def head_loss(head, x0, z, path, generator, mul=4):
    draws = draw_noise(x0, path, mul, generator)
    out = head(draws.x_t, draws.t, z[:, None, :].expand(-1, mul, -1))
    return per_token_diffusion_loss(out, draws.target)


@pytest.mark.parametrize("parameterization", ["v", "eps"])
def test_loss_falls_on_a_fixed_target(parameterization):
    torch.manual_seed(0)
    path = GaussianPath("cosine", parameterization)
    head = DiffusionHead(channels=6, cond_dim=8, width=64, depth=2)
    x0 = torch.rand(32, 6) * 2 - 1
    z = torch.randn(32, 8)

    def evaluate() -> float:
        with torch.no_grad():
            return head_loss(head, x0, z, path, torch.Generator().manual_seed(123), mul=16).item()

    before = evaluate()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = head_loss(head, x0, z, path, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < 0.5 * before, (before, after)


def test_sampling_recovers_a_conditional_gaussian_mixture():
    """Condition a: modes at -0.6 and +0.6 (equal weights); condition b: one mode at +0.3. After training,
    100 DDPM steps of the head put (almost) every sample near a mode of its own condition, both modes of a."""
    torch.manual_seed(0)
    path = GaussianPath("cosine", "v")
    head = DiffusionHead(channels=1, cond_dim=2, width=64, depth=2)
    cond_a, cond_b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    gen = torch.Generator().manual_seed(0)

    def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        is_a = torch.rand(n, generator=gen) < 0.5
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        mean = torch.where(is_a, 0.6 * sign, torch.full((n,), 0.3))
        x0 = mean + 0.03 * torch.randn(n, generator=gen)
        return x0[:, None], torch.where(is_a[:, None], cond_a, cond_b)

    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    for _ in range(600):
        x0, z = data(256)
        loss = head_loss(head, x0, z, path, gen, mul=2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    sampler = make_head_sampler("ddpm", path, temperature=1.0)
    with torch.no_grad():
        a, b = (sample_with_head(head, cond.expand(400, 2), None, 1.0, path, sampler, 100,
                                 torch.Generator().manual_seed(seed))[:, 0]
                for cond, seed in ((cond_a, 5), (cond_b, 6)))
    near_a = ((a - 0.6).abs() < 0.15) | ((a + 0.6).abs() < 0.15)
    assert near_a.float().mean() > 0.9, a[~near_a][:10]
    assert 0.3 < (a > 0).float().mean() < 0.7, "both modes of condition a must be sampled"
    assert ((b - 0.3).abs() < 0.15).float().mean() > 0.9, b[:10]


def test_noise_draws_are_independent_and_consistent_with_the_path():
    path = GaussianPath("cosine", "v")
    x0 = torch.rand(5, 3) * 2 - 1
    draws = draw_noise(x0, path, 4, torch.Generator().manual_seed(0))
    assert draws.x_t.shape == (5, 4, 3) and draws.t.shape == (5, 4) and draws.target.shape == (5, 4, 3)
    assert len(set(draws.t.flatten().tolist())) == 20, "every draw has its own time"
    recovered, _ = path.to_x0_eps(draws.target, draws.x_t, draws.t)  # the v target implies x0 exactly
    torch.testing.assert_close(recovered, x0[:, None].expand(-1, 4, -1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        draw_noise(x0, path, 0, torch.Generator())


def test_empty_loss_is_zero_with_a_graph():
    out = torch.zeros(0, 4, 3, requires_grad=True)
    loss = per_token_diffusion_loss(out, torch.zeros(0, 4, 3))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError):
        per_token_diffusion_loss(torch.zeros(2, 4, 3), torch.zeros(2, 4, 2))


def test_v_prediction_bounds_bf16_error_where_eps_blows_up():
    """MMAR sec. 3.3: an exact target rounded to bf16 (what a bf16 network can at best output) implies an x0
    whose error grows like sigma/alpha under eps-prediction but stays bounded under v-prediction."""
    x0 = torch.rand(4096, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    errors = {}
    for param in ("eps", "v"):
        path = GaussianPath("cosine", param)
        t = torch.full((x0.shape[0],), 0.99)  # low SNR: alpha ~ 0.016
        x_t = path.add_noise(x0, noise, t)
        rounded = path.target(x0, noise, t).bfloat16().float()
        errors[param] = (path.to_x0_eps(rounded, x_t, t)[0] - x0).pow(2).mean().item()
    assert errors["v"] < 1e-4 and errors["eps"] > 100 * errors["v"], errors


def test_head_condition_broadcasts_over_noise_draws():
    """One z per token for its K noise draws (what training passes) gives the head's output for z repeated K
    times, so the cheaper call is the same model."""
    from umm.nn.diffusion_head import DiffusionHead

    torch.manual_seed(0)
    head = DiffusionHead(8, 16, 32, 2)
    for p in head.parameters():  # a trained head: the zero-initialised layers would hide a wrong condition
        torch.nn.init.normal_(p, std=0.1)
    x, t, z = torch.randn(5, 4, 8), torch.rand(5, 4), torch.randn(5, 16)
    torch.testing.assert_close(head(x, t, z[:, None]), head(x, t, z[:, None].expand(-1, 4, -1)))
    assert not torch.allclose(head(x, t, z[:, None]), head(x, t, z.roll(1, 0)[:, None])), "z does not reach the output"
