"""The recipes that ship with umm: one YAML per system and size (``test_*`` are the tiny ones the tests run).

They are package data, found through ``importlib.resources``, so a plain (non-editable) ``pip install``
lists them (``umm ls``) and runs them by name (``umm train transfusion_s``, ``umm demo``). A recipe file of
your own is passed by path instead.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from umm import UmmError

# umm is installed unzipped (setuptools' default), so the package data is a real directory
RECIPES_DIR = Path(str(files(__name__)))


def recipe_names() -> list[str]:
    """Every shipped recipe, by name (the file's stem)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The shipped recipe ``name`` (``transfusion_s`` -> .../umm/recipes/transfusion_s.yaml)."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UmmError(f"no shipped recipe {name!r}; choose one of: {', '.join(recipe_names())}")
    return path


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe YAML path, or the name of a shipped recipe."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if (RECIPES_DIR / f"{name_or_path}.yaml").is_file():
        return RECIPES_DIR / f"{name_or_path}.yaml"
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise UmmError(f"recipe file {str(path)!r} does not exist")
    raise UmmError(f"no recipe {name_or_path!r}: not a file, and not a shipped recipe ({', '.join(recipe_names())})")
