"""A plain (non-editable) install carries its recipes: build umm's wheel, install it into a fresh venv and
run `umm ls` and a tiny train from a directory outside the repository.

The fresh venv gets its third-party packages (torch, ...) from this venv's site-packages through a path
line, so nothing downloads; umm itself comes only from the wheel (a path line does not run this venv's
editable-install hook, and the test checks where umm was imported from).
"""

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", "docs", "tests")


def _run(*cmd, cwd, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)  # build from a copy: the wheel build writes build/ and egg-info
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("umm-*.whl")
    env = tmp / "env"
    venv.create(env, with_pip=True)  # ensurepip: offline
    python = env / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).strip())
    (site / "zz_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", wheel, cwd=tmp)
    outside = tmp / "elsewhere"
    outside.mkdir()
    return env, site, outside


def test_a_wheel_install_lists_its_recipes_and_trains_one_from_outside_the_repo(installed):
    env, site, outside = installed
    python = env / "bin" / "python"
    where = _run(python, "-c", "import umm, umm.recipes; print(umm.__file__); print(umm.recipes.RECIPES_DIR)", cwd=outside)
    assert all(Path(line).is_relative_to(site) for line in where.split()), where  # not the repository's umm
    umm = env / "bin" / "umm"  # the console script the wheel installs
    listing = _run(umm, "ls", cwd=outside)
    for name in ("transfusion_demo", "transfusion_s", "test_transfusion", "chameleon_s"):
        assert f"  {name}\n" in listing
    out = _run(umm, "train", "test_transfusion", "train.steps=2", "--out", outside / "run", "--quiet",
               cwd=outside)
    assert "trained" in out and (outside / "run" / "model" / "model.safetensors").is_file()
    # a recipe with a shipped base (base/image_tokenizer_test) resolves from the installed package too
    out = _run(umm, "train", "test_vq", "train.steps=2", "--out", outside / "vq", "--quiet", cwd=outside)
    assert "trained" in out and "steps: 2" in (outside / "vq" / "recipe.yaml").read_text()
