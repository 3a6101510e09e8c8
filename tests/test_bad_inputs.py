"""Every bad input gets one `umm: error:` line, a non-zero exit and no traceback, and loses nothing: a run
that exists before the command is byte-for-byte the same after it.

Each case is (arguments, a fragment the one line must contain). ``{run}`` is a trained tiny run with
checkpoints, ``{model}`` its model, ``{trunc}`` a copy with a truncated model.safetensors, ``{foreign}`` a
directory that is not an umm model, ``{fake}`` a text file named .png, ``{file}`` a plain file,
``{badjson}`` a model whose system.json is cut short, ``{badyaml}`` / ``{binyaml}`` recipes that are not YAML, ``{fresh}`` a directory with no checkpoint.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from umm.cli import main

ROOT = Path(__file__).resolve().parents[1]
LONG = "a red circle " * 40

CASES = [
    # recipes and their keys: wrong types, ranges and names
    (["train", "test_transfusion", "data.canvas=7"], "'data.canvas' = 7 is out of range; allowed: 16 <= value <= 128"),
    (["train", "test_transfusion", "data.max_objects=0"], "'data.max_objects' = 0 is out of range"),
    (["train", "test_transfusion", "data.level=L9"], "choose one of ['L1', 'L2', 'L3', 'L4']"),
    (["train", "test_transfusion", "data.canvas=big"], "'data.canvas' expects int, got 'big'"),
    (["train", "test_transfusion", "train.snapshots=[0.5, 0.2]"], "'train.snapshots' expects increasing fractions"),
    (["train", "test_transfusion", "model_args.unet=true", "model_args.unet_text_attn=9"], "unet_text_attn=9"),
    (["train", "test_transfusion", "model_args.adaln_text=true", "model_args.transformer.cond_dim=7"],
     "adaln_text with transformer.cond_dim=7"),
    (["train", "test_transfusion", "model_args.adaln_clean=false"], "model_args.adaln_clean=false says which images"),
    (["bench", "--snapshots", "2"], "a snapshot is a fraction of the budget in (0, 1)"),
    (["train", "test_transfusion", "data.name=nope"], "unknown dataset 'nope'"),
    (["train", "test_transfusion", "train.steps=0"], "'train.steps' = 0 is out of range; allowed: 1 <= value"),
    (["train", "test_transfusion", "train.steps=abc"], "'train.steps' expects int, got 'abc'"),
    (["train", "test_transfusion", "train.lr=-1"], "'train.lr' = -1.0 is out of range; allowed: 0 < value"),
    (["train", "test_transfusion", "train.ema_decay=1.5"], "'train.ema_decay' = 1.5 is out of range"),
    (["train", "test_transfusion", "train.precision=fp64"], "choose one of ['bf16', 'fp32']"),
    (["train", "test_mmar_guard", "model_args.transformer.mlp=relu"], "choose one of ['swiglu', 'gelu']"),
    (["train", "test_transfusion", "train.stepz=3"], "unknown config key 'train.stepz'"),
    (["train", "test_transfusion", "tasks=5"], "'tasks' expects a list of tasks"),
    (["train", "test_transfusion", "tasks=[{name: frob}]"], "has no task 'frob'"),
    (["train", "test_transfusion", "tasks=[{name: t2i, batch_size: 0}]"], "'tasks.batch_size' = 0 is out of range"),
    (["train", "test_transfusion", "model=no_such_model"], "unknown model 'no_such_model'"),
    (["train", "no_such_recipe"], "no recipe 'no_such_recipe'"),
    (["train", "missing.yaml"], "recipe file 'missing.yaml' does not exist"),
    (["train", "{badyaml}"], "is not valid YAML (line"),
    (["train", "{binyaml}"], "is not valid YAML"),
    (["train", "{nobase}"], "config key 'base' = 'base/nonesuch'"),
    (["train", "{loop}"], "inherits from itself (loop.yaml -> loop.yaml)"),
    # run directories: a file, an existing run, --resume with nothing to resume
    (["train", "test_transfusion", "--out", "{file}"], "is a file; choose another --out"),
    (["train", "test_transfusion", "--out", "{run}", "--quiet"], "already holds checkpoints; pass --resume"),
    (["train", "test_transfusion", "--out", "{run}", "--resume", "data.canvas=7"], "'data.canvas' = 7"),
    (["train", "test_transfusion", "--out", "{fresh}", "--resume"], "--resume: no checkpoint in"),
    # model directories: missing, not umm, truncated
    (["sample", "{trunc}", "--prompt", "a red circle"], "the file is corrupt or truncated"),
    (["eval", "{trunc}"], "the file is corrupt or truncated"),
    (["sample", "{foreign}", "--prompt", "a red circle"], "is not a trained umm system"),
    (["sample", "{badjson}", "--prompt", "a red circle"], "is not valid JSON"),
    (["sample", "/nonexistent/model", "--prompt", "a red circle"], "is not a trained umm system"),
    (["caption", "{run}", "{fake}"], "is not a trained umm system"),  # the run, not its model/
    # prompts, counts, images, choices
    (["sample", "{model}", "--prompt", ""], "non-empty prompt"),
    (["sample", "{model}", "--prompt", LONG], "tokens; this model reads at most 16"),
    (["sample", "{model}", "--prompt", "a red circle", "--n", "-3"], "argument --n: expects an integer >= 1, got -3"),
    (["sample", "{model}", "--prompt", "a red circle", "--n", "0"], "argument --n: expects an integer >= 1, got 0"),
    (["sample", "{model}", "--prompt", "a red circle", "--steps", "0"], "argument --steps: expects an integer >= 1"),
    (["sample", "{model}", "--prompt", "a red circle", "--cfg", "strong"], "argument --cfg: invalid float value"),
    (["caption", "{model}", "{fake}"], "cannot read image"),
    (["caption", "{model}", "missing.png"], "cannot read image"),
    (["answer", "{model}", "{fake}", "what shape is it?"], "cannot read image"),
    (["embed", "{model}", "--modality", "text", "hello"], "cannot embed; it can: t2i, caption, qa"),
    (["embed", "{model}", "--modality", "smell", "hello"], "argument --modality: invalid choice: 'smell'"),
    (["eval", "{model}", "--n-prompts", "0"], "argument --n-prompts: expects an integer >= 1"),
    (["eval", "{model}", "--split", "nope"], "argument --split: invalid choice: 'nope'"),
    (["eval", "{model}", "--level", "L0"], "argument --level: invalid choice: 'L0'"),
    (["demo", "--minutes", "-1"], "argument --minutes: expects a number > 0"),
    (["data", "inspect", "missing_path"], "'missing_path' does not exist"),
    (["frobnicate"], "invalid choice"),
]


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    run = tmp / "run"
    proc = subprocess.run([sys.executable, "-m", "umm.cli", "train", "test_transfusion", "train.steps=2", "--out", str(run),
                           "--quiet"], capture_output=True, text=True, cwd=tmp, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    trunc = tmp / "trunc"
    shutil.copytree(run / "model", trunc)
    weights = trunc / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("not a model")
    (tmp / "fake.png").write_text("not an image")
    (tmp / "a_file").write_text("a file, not a directory")
    (tmp / "bad.yaml").write_text("model: [unclosed\n  - : :\n")
    (tmp / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81binary")
    (tmp / "nobase.yaml").write_text("base: base/nonesuch\nmodel: test_transfusion\n")
    (tmp / "loop.yaml").write_text("base: loop\nmodel: test_transfusion\n")
    (tmp / "fresh").mkdir()
    badjson = tmp / "badjson"  # a model whose system.json was cut short
    shutil.copytree(run / "model", badjson)
    (badjson / "system.json").write_text('{"family": "transf')
    return {"run": run, "model": run / "model", "trunc": trunc, "foreign": tmp / "foreign", "fake": tmp / "fake.png",
            "file": tmp / "a_file", "badjson": badjson, "badyaml": tmp / "bad.yaml", "binyaml": tmp / "bin.yaml", "fresh": tmp / "fresh",
            "nobase": tmp / "nobase.yaml", "loop": tmp / "loop.yaml",
            "cwd": tmp}  # fmt: skip


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_clear_line_and_loses_nothing(places, args, message, monkeypatch, capsys):
    # in-process (`main` is what `umm` runs): an exception that escaped would fail this test with its traceback
    before = {k: _digest(places[k]) for k in ("run", "trunc", "fresh")}
    file_before = places["file"].read_bytes()
    argv = [a.format(**places) if a.startswith("{") else a for a in args]
    monkeypatch.chdir(places["cwd"])
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None)
    assert len(lines) == 1 and lines[0].startswith("umm: error:"), err[-2000:]
    assert message in lines[0], lines[0]
    assert {k: _digest(places[k]) for k in ("run", "trunc", "fresh")} == before
    assert places["file"].read_bytes() == file_before


def test_a_bad_input_in_a_real_process_prints_no_traceback(places):
    proc = subprocess.run([sys.executable, "-m", "umm.cli", "sample", str(places["trunc"]), "--prompt", "a red circle"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("umm: error: cannot read"), proc.stderr


def test_overrides_are_accepted_anywhere(places, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "umm.cli", "train", "test_transfusion", "--out", str(tmp_path / "r"),
                           "train.steps=2", "--quiet", "train.log_every=1"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained test_transfusion: 2 steps" in proc.stdout
    assert "log_every: 1" in (tmp_path / "r" / "recipe.yaml").read_text()
