"""The same recipe under ``torchrun --nproc_per_node=2`` (DDP, gloo on CPU) and in one process: the losses
of a deterministic objective on the same global batch agree."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from umm.training.loop import train
from umm.recipes import RECIPES_DIR
from umm.training.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = RECIPES_DIR / "test_transfusion.yaml"
# Captioning with clean images and no diffusion term: the loss has no random draw, so one process and two
# ranks (each drawing its own noise) see exactly the same objective.
OVERRIDES = ["train.steps=6", "tasks=[{name: caption, batch_size: 8}]", "system_args.caption_max_t=0.0",
             "system_args.lambda_diffusion=0.0", "train.log_every=1"]

SCRIPT = """
import json, sys
from umm.training.loop import train
from umm.training.recipe import load_recipe
import torch.distributed as dist
from umm.training import distributed
run = load_recipe(sys.argv[1], sys.argv[3:])
result = train(run, sys.argv[2], show_progress=False)
if dist.get_rank() == 0:
    print("LOSSES " + json.dumps(result.losses), flush=True)
distributed.cleanup()  # as `umm train` does: a gloo group left open can abort the process at exit
"""


def torchrun(tmp_path, out_name, overrides):
    """Run SCRIPT under ``torchrun --nproc_per_node=2``; returns (its run directory, rank 0's losses).

    A gloo rank has twice aborted in CI (never in 55 local launches) at exit, 'terminate called without an
    active exception', after training had finished and rank 0 had printed its losses. That abort is in the gloo
    teardown, not in what this test checks, so such a run is tried once more in a fresh directory, with a
    warning that carries its stderr (Python's fault handler prints every thread's stack at the abort). Any other
    failure, or a second abort, fails the test."""
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UMM_CACHE": str(tmp_path / "cache"), "PYTHONFAULTHANDLER": "1"}
    for attempt in (1, 2):
        out = tmp_path / f"{out_name}{'' if attempt == 1 else '_retry'}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(RECIPE), str(out), *overrides]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        printed = [l for l in proc.stdout.splitlines() if l.startswith("LOSSES ")]
        aborted_at_exit = proc.returncode != 0 and printed and "exitcode  : -6" in proc.stderr
        if attempt == 1 and aborted_at_exit:
            warnings.warn("a torchrun rank aborted at exit after training; rerun once:\n" + proc.stderr[-3000:])
            continue
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return out, json.loads(printed[0][len("LOSSES "):])


@pytest.mark.distributed
def test_two_process_ddp_matches_single_process(tmp_path):
    single = train(load_recipe(RECIPE, OVERRIDES), tmp_path / "single", show_progress=False)
    _, ddp = torchrun(tmp_path, "ddp", OVERRIDES)
    assert len(ddp) == len(single.losses) == 6
    # Each rank averages over its own caption tokens; the global mean weighs tokens slightly differently,
    # so the two agree to within a fraction of a percent, not bit for bit.
    assert ddp == pytest.approx(single.losses, rel=2e-2)
    assert ddp[-1] < ddp[0]


@pytest.mark.distributed
def test_two_process_fsdp_matches_single_process_and_resumes_in_one(tmp_path):
    overrides = OVERRIDES + ["train.save_every=3"]
    single = train(load_recipe(RECIPE, overrides), tmp_path / "single", show_progress=False)
    fsdp_dir, fsdp = torchrun(tmp_path, "fsdp", [*overrides, "train.parallel=fsdp"])
    assert fsdp == pytest.approx(single.losses, rel=2e-2)
    # the exported model is whole: it loads in one process and matches the single-process run's closely
    from umm.models.factory import from_pretrained

    sharded_model, plain_model = from_pretrained(fsdp_dir / "model"), from_pretrained(tmp_path / "single" / "model")
    for (name, a), (_, b) in zip(sharded_model.state_dict().items(), plain_model.state_dict().items()):
        assert a.shape == b.shape and torch.allclose(a, b, atol=5e-3), name
    # its checkpoint holds the gathered optimizer moments keyed by parameter name, and resumes in one process
    state = json.loads((fsdp_dir / "checkpoints" / "step_00000006" / "state.json").read_text())
    assert all(isinstance(p, str) for group in state["optimizer"]["param_groups"] for p in group["params"])
    more = train(load_recipe(RECIPE, [*overrides[1:], "train.steps=8"]), fsdp_dir, resume=True, show_progress=False)
    assert more.step == 8 and len(more.losses) == 2
