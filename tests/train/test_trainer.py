"""The training loop on a tiny real model and real ShapesWorld data: learning, exact resume, save/load,
clear failures."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from umm import UmmError
from umm.config import ConfigError
from umm.models.system import load_system
from umm.training.loop import train
from umm.training.recipe import load_recipe
from umm.recipes import RECIPES_DIR

RECIPE = RECIPES_DIR / "test_transfusion.yaml"


@pytest.fixture(autouse=True)
def _peak_cache(tmp_path_factory, monkeypatch):
    # the MFU peak is measured once per machine; keep the tests' measurement out of the user's cache
    monkeypatch.setenv("UMM_CACHE", str(tmp_path_factory.getbasetemp() / "umm-cache"))


def recipe(*overrides: str):
    return load_recipe(RECIPE, list(overrides))


def test_loss_falls_in_a_few_dozen_steps(tmp_path):
    result = train(recipe("train.steps=40"), tmp_path / "run", show_progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert (tmp_path / "run" / "train.csv").is_file()
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert result.flops_per_step > 0 and result.mfu > 0
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["family"] == "transfusion" and summary["parameters"] > 0
    assert summary["peak_rss_mb"] > 0 and summary["samples_per_second"] > 0


def test_resume_continues_exactly(tmp_path):
    straight = train(recipe("train.steps=12"), tmp_path / "straight", show_progress=False)
    first = train(recipe("train.steps=12"), tmp_path / "cut", show_progress=False, stop_after=5)
    assert first.stopped == "stop_after" and first.step == 5
    resumed = train(recipe("train.steps=12"), tmp_path / "cut", resume=True, show_progress=False)
    assert resumed.step == 12
    assert first.losses + resumed.losses == pytest.approx(straight.losses, rel=0, abs=0), "resume must be exact"


def test_saved_system_reloads_identically(tmp_path):
    train(recipe("train.steps=3"), tmp_path / "run", show_progress=False)
    model_a, system_a = load_system(tmp_path / "run" / "model")
    model_b, system_b = load_system(tmp_path / "run" / "model")
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)
    images = torch.rand(2, 3, 16, 16)
    assert system_a.caption(model_a, images, precision="fp32") == system_b.caption(model_b, images, precision="fp32")
    assert system_a.tokenizer.encode("a red circle") == system_b.tokenizer.encode("a red circle")


def test_divergence_stops_with_a_clear_message(tmp_path):
    with pytest.raises(UmmError, match="became (nan|inf)"):
        train(recipe("train.steps=30", "train.lr=1.0e+6", "train.warmup_steps=1", "train.grad_clip=1.0e+12"),
              tmp_path / "run", show_progress=False)


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    train(recipe("train.steps=2"), tmp_path / "run", show_progress=False)
    with pytest.raises(UmmError, match="--resume"):
        train(recipe("train.steps=2"), tmp_path / "run", show_progress=False)


def test_bad_config_names_the_key_and_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match="'train.stepz'.*did you mean 'steps'"):
        recipe("train.stepz=3")
    with pytest.raises(ConfigError, match="precision.*'bf16', 'fp32'"):
        recipe("train.precision=fp8")
    with pytest.raises(ConfigError, match="system_args.schedul"):
        train(recipe("system_args.schedul=flow"), tmp_path / "run", show_progress=False)
    with pytest.raises(UmmError, match="unknown model 'no_such_model'"):
        train(recipe("model=no_such_model"), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists(), "a rejected recipe must not leave a run directory behind"


def test_sigterm_checkpoints_then_exits(tmp_path):
    env = {**os.environ, "UMM_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "umm.cli", "train", str(RECIPE), "train.steps=100000", "train.log_every=1",
           "--out", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / "train.csv").is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped at step" in out
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


def test_ema_weights_are_exported_and_checkpointed(tmp_path):
    import safetensors.torch

    train(recipe("train.steps=4", "train.ema_decay=0.5"), tmp_path / "run", show_progress=False)
    state = safetensors.torch.load_file(str(tmp_path / "run" / "checkpoints" / "step_00000004" / "state.safetensors"))
    exported = safetensors.torch.load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    key = "trunk.blocks.0.attn.qkv.weight"
    assert torch.equal(exported[key], state[f"ema.{key}"]), "the exported model holds the EMA weights"
    assert not torch.equal(state[f"ema.{key}"], state[f"model.{key}"]), "EMA lags the raw weights"


def test_a_staged_task_joins_the_step_after_its_start(tmp_path):
    """``tasks.start`` (staged training, as Show-o and Janus first train generation): the caption task adds
    its loss from half the budget on, and a run cut before the change resumes exactly."""
    import csv

    staged = tmp_path / "staged.yaml"
    staged.write_text(RECIPE.read_text().replace("{name: caption, weight: 1.0, batch_size: 4}",
                                                 "{name: caption, weight: 1.0, batch_size: 4, start: 0.5}"))
    run = load_recipe(staged, ["train.steps=12", "train.log_every=1"])
    straight = train(run, tmp_path / "straight", show_progress=False)
    rows = list(csv.DictReader((tmp_path / "straight" / "train.csv").open()))
    with_caption = [int(r["step"]) for r in rows if r.get("caption/lm_loss")]
    assert with_caption == list(range(7, 13)), with_caption  # steps 6..11 (logged as 7..12) have fraction >= 0.5
    first = train(run, tmp_path / "cut", show_progress=False, stop_after=4)
    resumed = train(run, tmp_path / "cut", resume=True, show_progress=False)
    assert first.losses + resumed.losses == pytest.approx(straight.losses, rel=0, abs=0)
    # cut after the caption task joined: the resumed run prefetches both tasks from its first step
    first = train(run, tmp_path / "cut_late", show_progress=False, stop_after=8)
    resumed = train(run, tmp_path / "cut_late", resume=True, show_progress=False)
    assert first.losses + resumed.losses == pytest.approx(straight.losses, rel=0, abs=0)
    with pytest.raises(ConfigError, match="tasks.start"):
        load_recipe(staged, []).tasks[0].__class__(name="t2i", start=1.0)
    staged.write_text(staged.read_text().replace("{name: t2i, weight: 1.0, batch_size: 8}",
                                                 "{name: t2i, weight: 1.0, batch_size: 8, start: 0.2}"))
    with pytest.raises(ConfigError, match="at least one task must start at 0"):
        load_recipe(staged, [])


def test_a_process_clock_budget_stops_on_cpu_time(tmp_path):
    """``train.budget_clock=process``: the time budget counts this process's CPU time (what a run beside other
    jobs on a shared core is given), and the summary reports the same clock."""
    import json

    cpu_before = time.process_time()
    result = train(recipe("train.steps=100000", "train.time_budget_minutes=0.02", "train.budget_clock=process",
                          "train.threads=1"), tmp_path / "run", show_progress=False)
    cpu_spent = time.process_time() - cpu_before
    assert result.stopped == "time budget" and 0 < result.step < 100000
    assert 1.2 <= result.seconds <= cpu_spent, (result.seconds, cpu_spent)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == result.step
    # resumed once the budget has run out (the bench re-scoring a finished row): no further step, same throughput
    again = train(recipe("train.steps=100000", "train.time_budget_minutes=0.02", "train.budget_clock=process",
                         "train.threads=1"), tmp_path / "run", resume=True, show_progress=False)
    assert (again.stopped, again.step, again.losses) == ("time budget", result.step, [])
    resumed = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert resumed["steps"] == result.step and resumed["samples_per_second"] == summary["samples_per_second"] > 0
    with pytest.raises(ConfigError, match="wall"):
        recipe("train.budget_clock=cpu")


def test_snapshots_export_the_ema_model_at_budget_fractions_and_survive_a_resume(tmp_path):
    """train.snapshots: the points of a time-to-quality curve. Each is a loadable system holding the EMA
    weights of its step, taken once even when the run is cut and resumed; training itself is unchanged."""
    import json

    overrides = ("train.steps=12", "train.ema_decay=0.9", "train.snapshots=[0.25, 0.5]")
    plain = train(recipe("train.steps=12", "train.ema_decay=0.9"), tmp_path / "plain", show_progress=False)
    first = train(recipe(*overrides), tmp_path / "cut", show_progress=False, stop_after=4)
    assert sorted(p.name for p in (tmp_path / "cut" / "snapshots").iterdir()) == ["0.25"]
    resumed = train(recipe(*overrides), tmp_path / "cut", resume=True, show_progress=False)
    assert first.losses + resumed.losses == pytest.approx(plain.losses, rel=0, abs=0)  # snapshots change nothing
    meta = {p.name: json.loads((p / "snapshot.json").read_text()) for p in (tmp_path / "cut" / "snapshots").iterdir()}
    assert {k: v["step"] for k, v in meta.items()} == {"0.25": 3, "0.5": 6}
    early, _ = load_system(tmp_path / "cut" / "snapshots" / "0.25" / "model")
    final, _ = load_system(tmp_path / "cut" / "model")
    assert any(not torch.equal(a, b) for a, b in zip(early.state_dict().values(), final.state_dict().values()))
    assert (tmp_path / "cut" / "snapshots" / "0.5" / "recipe.yaml").is_file()  # umm eval reads its sampling settings
    with pytest.raises(ConfigError, match="train.snapshots"):
        recipe("train.snapshots=[0.5, 0.25]")
    with pytest.raises(ConfigError, match="train.snapshots"):
        recipe("train.snapshots=[1.0]")


def test_a_task_not_yet_started_draws_no_data():
    """Staged training skips a task's data until it starts (EMU3's clips cost half its step), and a task's
    samples are the same whichever other tasks are read with them, so staging changes no task's stream."""
    from umm.data.shapes import ShapesWorld
    from umm.training.data import BatchSource
    from umm.training.recipe import TaskConfig

    class CountingWorld(ShapesWorld):
        reads = 0

        def __getitem__(self, index):
            CountingWorld.reads += 1
            return super().__getitem__(index)

    world = CountingWorld("train", canvas=16)
    tasks = (TaskConfig("t2i", batch_size=4), TaskConfig("caption", batch_size=2, start=0.5))
    source = BatchSource(world, tasks, rank=0, world=1, seed=0)
    both = source.samples(3)
    assert CountingWorld.reads == 6
    only = source.samples(3, ("t2i",))
    assert CountingWorld.reads == 10 and set(only) == {"t2i"}
    assert [s["caption"] for s in only["t2i"]] == [s["caption"] for s in both["t2i"]]
    assert [s["caption"] for s in source.samples(3, ("caption",))["caption"]] == [s["caption"] for s in both["caption"]]
