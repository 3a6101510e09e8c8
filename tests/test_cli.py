"""The command line: help with examples everywhere, one clear line for bad input, real commands end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

from umm.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "ls", "demo", "serve", "data", "sample", "caption", "answer", "eval"]


def umm(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "umm.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples" in out.lower() or command == "data", out
    if command == "data":
        assert "inspect" in out and "make-shapes" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "no_such_recipe"], "no recipe 'no_such_recipe'"),
        (["train", "test_transfusion", "train.stepz=2"], "unknown config key 'train.stepz'"),
        (["train", "test_transfusion", "model=no_such_model"], "unknown model 'no_such_model'"),
        (["eval", "/nonexistent/model"], "not a trained umm system"),
        (["train", "test_transfusion", "model_args.unet=true", "model_args.unet_fold=3"],
         "model_args.unet_fold=3 with patch=4"),
        (["train", "test_transfusion", "model_args.unet_blocks=2"], "set model_args.unet=true to use them"),
        (["train", "test_transfusion", "system_args.time_sampling=lognormal"], "time_sampling"),
        (["demo", "--level", "L7", "--out", "/tmp/umm_bad_demo"], "data.level"),
        (["train"], "the following arguments are required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    proc = umm(*args)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("umm: error:") and message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_ls_lists_systems_models_and_recipes():
    proc = umm("ls")
    assert proc.returncode == 0
    for name in ("transfusion", "monoformer", "test_transfusion", "transfusion_demo"):
        assert name in proc.stdout


def test_train_sample_caption_eval_end_to_end(tmp_path):
    run = tmp_path / "run"
    proc = umm("train", "test_transfusion", "train.steps=3", "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained test_transfusion: 3 steps" in proc.stdout
    proc = umm("sample", str(run / "model"), "--prompt", "a red circle", "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.png"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "s.png").stat().st_size > 0
    from umm.data.grid import save_grid
    from umm.data.shapes import ShapesWorld

    save_grid(ShapesWorld("test", canvas=16)[0]["image"][None], tmp_path / "scene.png", nrow=1, upscale=1)
    proc = umm("caption", str(run / "model"), str(tmp_path / "scene.png"))
    assert proc.returncode == 0 and str(tmp_path / "scene.png") in proc.stdout, proc.stderr[-2000:]
    proc = umm("eval", str(run / "model"), "--n-prompts", "6", "--n-images", "4", "--steps", "2", "--out", str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "geneval/overall" in proc.stdout and "caption/exact" in proc.stdout and "qa/accuracy" in proc.stdout
    assert "fidelity/fid" in proc.stdout and "fidelity/kid" in proc.stdout
    proc = umm("eval", str(run / "model"), "--n-prompts", "2", "--n-images", "2", "--steps", "1", "--no-fidelity",
               "--no-diagnostics")
    assert proc.returncode == 0 and "geneval/overall" in proc.stdout and "fidelity/" not in proc.stdout, proc.stderr[-2000:]


def test_parser_builds():
    assert build_parser().prog == "umm"
