"""Gather-with-gradient: two gloo processes give the loss and the (DDP-averaged) gradients of one process
on the concatenated batch, for global InfoNCE, local-loss InfoNCE and SigLIP."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from umm.objectives.contrastive import LogitScale, infonce_loss, siglip_loss

ROOT = Path(__file__).resolve().parents[2]
N, D_IN, D = 8, 12, 6  # global batch, input width, embedding width

# Each rank embeds its half of a fixed global batch with the same weights, computes the loss, backpropagates
# and averages gradients over ranks (what DDP does); rank 0 saves the results.
SCRIPT = """
import sys, torch, torch.distributed as dist, torch.nn.functional as F
sys.path.insert(0, sys.argv[2])
from test_contrastive_distributed import make_problem, loss_of
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
out = {}
for variant in ("infonce_global", "infonce_local", "siglip"):
    x, y, wx, wy, scale = make_problem(variant)
    n = x.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    loss = loss_of(variant, x[sl], y[sl], wx, wy, scale)
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    out[variant + "/loss"] = mean_loss / world
    out[variant + "/rank_loss"] = torch.stack([loss.detach()])
    for name, p in (("wx", wx), ("wy", wy), ("scale", scale.log_scale)) + ((("bias", scale.bias),) if scale.bias is not None else ()):
        g = p.grad.clone()
        dist.all_reduce(g)
        out[f"{variant}/grad_{name}"] = g / world
if rank == 0:
    torch.save(out, sys.argv[1])
dist.barrier()
dist.destroy_process_group()  # a gloo group left open can abort the process at exit
# even destroyed, gloo's worker threads can still hold tensors when the interpreter finalises, which aborts the
# process now and then ("terminate called without an active exception", pytorch/pytorch#179291): the results are
# saved, so leave without finalising
import os
os._exit(0)
"""


def make_problem(variant: str):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, D_IN, generator=g), torch.randn(N, D_IN, generator=g)
    wx = torch.randn(D_IN, D, generator=g).requires_grad_()
    wy = torch.randn(D_IN, D, generator=g).requires_grad_()
    scale = LogitScale(log_scale=1.0, bias=-2.0) if variant == "siglip" else LogitScale(log_scale=1.5)
    return x, y, wx, wy, scale


def loss_of(variant: str, x, y, wx, wy, scale):
    a, b = F.normalize(x @ wx, dim=-1), F.normalize(y @ wy, dim=-1)
    s, bias = scale()
    if variant == "siglip":
        return siglip_loss(a, b, s, bias)
    return infonce_loss(a, b, s, local_loss=variant == "infonce_local")


@pytest.mark.distributed
def test_two_gloo_ranks_match_one_process_on_the_concatenated_batch(tmp_path):
    result = tmp_path / "dist.pt"
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(result), str(Path(__file__).parent)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dist_out = torch.load(result)
    for variant in ("infonce_global", "infonce_local", "siglip"):
        x, y, wx, wy, scale = make_problem(variant)
        loss = loss_of(variant, x, y, wx, wy, scale)
        loss.backward()
        assert dist_out[f"{variant}/loss"].item() == pytest.approx(loss.item(), rel=1e-5), variant
        params = {"wx": wx, "wy": wy, "scale": scale.log_scale, "bias": scale.bias}
        for name, p in params.items():
            if p is None:
                continue
            got = dist_out[f"{variant}/grad_{name}"]
            assert torch.allclose(got, p.grad, rtol=1e-4, atol=1e-6), f"{variant} grad {name}: {got} vs {p.grad}"
    # the global loss is the same on every rank; the local loss of rank 0 is only its rows' share
    x, y, wx, wy, scale = make_problem("infonce_global")
    assert dist_out["infonce_global/rank_loss"].item() == pytest.approx(loss_of("infonce_global", x, y, wx, wy, scale).item(), rel=1e-5)
    assert dist_out["infonce_local/rank_loss"].item() != pytest.approx(dist_out["infonce_local/loss"].item(), rel=1e-3)
