"""MaskGIT sampler contracts: the cosine schedule reveals every token exactly once in N steps, revealed codes
never change (inpainting keeps its fixed region bit-exact), confidence decides the order, CFG s=0 = none."""

import math

import pytest
import torch

from umm import UmmError
from umm.samplers import annealed_choice_temperature, mask_schedule, maskgit_step, muse_cfg


def run_loop(logit_fn, codes, masked, steps, temperature=1.0, choice_temperature=4.5, seed=0):
    """The pipeline's loop over a logits function; records at which step each position was revealed."""
    generator = torch.Generator().manual_seed(seed)
    remaining = mask_schedule(masked.sum(-1), steps)
    revealed_at = torch.full(codes.shape, -1)
    history = []
    for i in range(steps):
        before = masked.clone()
        codes, masked = maskgit_step(logit_fn(i), codes, masked, remaining[:, i], temperature,
                                     annealed_choice_temperature(choice_temperature, i, steps), generator)
        assert torch.equal(masked.sum(-1), remaining[:, i])  # exactly the scheduled count stays masked
        assert not (masked & ~before).any()  # a revealed token is never masked again
        revealed_at[before & ~masked] = i
        history.append(codes.clone())
    return codes, masked, revealed_at, history


@pytest.mark.parametrize("n,steps", [(16, 1), (16, 4), (16, 16), (64, 12), (64, 25), (100, 18)])
def test_schedule_reveals_everything_in_exactly_n_steps(n, steps):
    remaining = mask_schedule(torch.tensor([n]), steps)[0]
    assert remaining.shape == (steps,) and int(remaining[-1]) == 0
    revealed = torch.cat([torch.tensor([n]), remaining[:-1]]) - remaining
    assert (revealed >= 1).all()  # every step reveals at least one token: none is wasted
    assert int(revealed.sum()) == n
    # it follows the cosine curve wherever the at-least-one constraints do not bind
    for i in range(steps):
        target = math.floor(n * math.cos(math.pi / 2 * (i + 1) / steps))
        assert abs(int(remaining[i]) - target) <= steps, (i, int(remaining[i]), target)
    # cosine: few tokens revealed first, many later (concave mask curve)
    if 4 <= steps <= n // 2:
        assert revealed[0] < revealed[-1]


def test_schedule_with_fewer_tokens_than_steps_and_per_row_counts():
    remaining = mask_schedule(torch.tensor([3, 0, 10]), 5)
    assert remaining[:, -1].tolist() == [0, 0, 0]
    assert (remaining[:, 1:] <= remaining[:, :-1]).all()
    assert remaining[1].tolist() == [0] * 5
    assert (torch.cat([torch.tensor([[3], [0], [10]]), remaining[:, :-1]], 1) - remaining)[2].min() >= 1
    with pytest.raises(UmmError):
        mask_schedule(torch.tensor([4]), 0)


def test_every_token_revealed_once_and_kept():
    torch.manual_seed(0)
    b, n, k, steps = 3, 64, 32, 12
    logits = torch.randn(steps, b, n, k) * 3
    codes = torch.zeros(b, n, dtype=torch.long)
    masked = torch.ones(b, n, dtype=torch.bool)
    final, still, revealed_at, history = run_loop(lambda i: logits[i], codes, masked, steps)
    assert not still.any()
    assert (revealed_at >= 0).all()  # every position was revealed, once (the loop checks never twice)
    for i in range(steps):  # a code keeps the value of the step that revealed it
        done = revealed_at <= i
        assert torch.equal(history[i][done], final[done])
    # a revealed code is the candidate sampled from that step's logits: it has positive probability there
    for i in range(steps):
        at = revealed_at == i
        probs = logits[i].softmax(-1).gather(-1, final[..., None])[..., 0]
        assert (probs[at] > 0).all()


def test_inpainting_keeps_the_unmasked_codes_bit_exact():
    torch.manual_seed(1)
    b, n, k, steps = 2, 64, 50, 8
    original = torch.randint(0, k, (b, n))
    region = torch.zeros(b, n, dtype=torch.bool)
    region[0, 10:30] = True
    region[1, ::3] = True
    logits = torch.randn(steps, b, n, k)
    logits[..., :] += 5 * torch.nn.functional.one_hot((original + 1) % k, k)  # the model wants other codes
    codes, still, revealed_at, _ = run_loop(lambda i: logits[i], original.clone(), region.clone(), steps)
    assert not still.any()
    assert torch.equal(codes[~region], original[~region])
    assert (revealed_at[~region] == -1).all()  # fixed codes are never touched
    assert (codes[region] != original[region]).float().mean() > 0.5  # the region really was regenerated


def test_confidence_orders_the_reveals_without_noise():
    # greedy candidates, no Gumbel noise: each step reveals the positions whose best code is most probable
    b, n, k = 1, 8, 4
    peak = torch.arange(n, dtype=torch.float)  # position i's confidence grows with i
    logits = torch.zeros(b, n, k)
    logits[0, :, 2] = peak
    codes = torch.zeros(b, n, dtype=torch.long)
    masked = torch.ones(b, n, dtype=torch.bool)
    codes, masked = maskgit_step(logits, codes, masked, torch.tensor([5]), temperature=0.0, choice_temperature=0.0)
    assert masked[0].tolist() == [True] * 5 + [False] * 3
    assert codes[0, 5:].tolist() == [2, 2, 2]


def test_choice_temperature_randomises_and_anneals_to_zero():
    assert annealed_choice_temperature(4.5, 0, 10) == pytest.approx(4.05)
    assert annealed_choice_temperature(4.5, 9, 10) == 0.0
    torch.manual_seed(0)
    logits = torch.randn(1, 32, 16)
    masked = torch.ones(1, 32, dtype=torch.bool)
    codes = torch.zeros(1, 32, dtype=torch.long)
    picks = set()
    for seed in range(5):
        _, m = maskgit_step(logits, codes, masked, torch.tensor([24]), 0.0, 10.0, torch.Generator().manual_seed(seed))
        picks.add(tuple((~m[0]).nonzero()[:, 0].tolist()))
    assert len(picks) > 1  # noisy confidences: different positions revealed per seed
    greedy = {tuple((~maskgit_step(logits, codes, masked, torch.tensor([24]), 0.0, 0.0)[1][0]).nonzero()[:, 0].tolist())
              for _ in range(3)}
    assert len(greedy) == 1


def test_muse_cfg_at_zero_is_no_guidance():
    torch.manual_seed(2)
    cond, uncond = torch.randn(2, 2, 16, 10).unbind(0)
    assert torch.equal(muse_cfg(cond, uncond, 0.0), cond)
    torch.testing.assert_close(muse_cfg(cond, uncond, 2.0), 3.0 * cond - 2.0 * uncond)
    masked = torch.ones(2, 16, dtype=torch.bool)
    codes = torch.zeros(2, 16, dtype=torch.long)
    rem = torch.tensor([8, 8])
    guided = maskgit_step(muse_cfg(cond, uncond, 0.0), codes, masked, rem, 1.0, 2.0, torch.Generator().manual_seed(4))
    plain = maskgit_step(cond, codes, masked, rem, 1.0, 2.0, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(guided, plain))


def test_shape_mismatch_is_one_clear_error():
    with pytest.raises(UmmError, match="maskgit_step"):
        maskgit_step(torch.zeros(1, 4, 3), torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool),
                     torch.tensor([1]))
