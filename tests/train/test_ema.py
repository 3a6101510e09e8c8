import torch
from torch import nn

from umm.training.ema import EMA


def test_ema_decay_warms_up_and_forgets_the_initial_weights():
    model = nn.Linear(2, 2, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, 0.999)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(10_000) == 0.999
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(1000):
        ema.update(model, step)
    # a constant 0.999 would leave 0.999^1000 = 37% of the initial zeros in the average
    assert ema.shadow["weight"].min() > 0.9
