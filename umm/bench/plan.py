"""What ``umm bench`` trains: one entry per registered system, its recipe, and the runs it depends on.

A system's bench recipe is ``umm/recipes/<family>_s.yaml``; at a bench level (``umm bench --level L1``) it is the
level's recipe ``umm/recipes/<family>_l1.yaml`` (a family without one is reported, not trained); in quick mode
``umm/recipes/test_<family>.yaml``. A recipe
that names another run's output in its ``system_args`` (``image_tokenizer: runs/vq_s/model``) depends on that
run: the bench trains the dependency first, inside its own output directory, and points the system at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umm import UmmError
from umm.training.recipe import read_recipe

RUN_REFERENCE = re.compile(r"^runs/([A-Za-z0-9_.-]+)/model$")

# The survey's systems, in the order of its taxonomy; registered families not listed here (the image
# tokenizers) follow in name order.
SURVEY_ORDER = (
    "chameleon", "emu3", "lwm", "vila_u", "lavit",  # AR, discrete
    "mmar",  # AR, continuous
    "showo",  # AR + discrete diffusion
    "transfusion", "monoformer",  # AR + continuous diffusion
    "imagebind", "textbind", "nextgpt", "seedx", "unibind",  # multi-expert
)
CELLS = {
    "chameleon": "AR / discrete", "emu3": "AR / discrete", "lwm": "AR / discrete", "vila_u": "AR / discrete",
    "lavit": "AR / discrete", "mmar": "AR / continuous", "showo": "AR+diffusion / discrete",
    "transfusion": "AR+diffusion / continuous", "monoformer": "AR+diffusion / continuous",
    "imagebind": "multi-expert / image-centric", "textbind": "multi-expert / text-centric",
    "nextgpt": "multi-expert / text-centric", "seedx": "multi-expert / text-centric",
    "unibind": "multi-expert / generalised",
    # sub-models other systems read (not survey systems themselves)
    "cond_decoder": "decoder", "seedx_detokenizer": "decoder",
    "imagebind_extend": "multi-expert / image-centric (a new expert)",
}
# Runs that test a claim on a trained system (not a family of their own): listed after the systems at a level that
# has their recipe, always trained by the bench (they build on its own runs) and given time-to-quality curves.
# imagebind_extend: a new audio expert bound to the bench's trained ImageBind (the "easily extendable" claim).
CLAIM_RUNS = ("imagebind_extend",)


@dataclass(frozen=True)
class Dependency:
    key: str  # dotted recipe key holding the reference, e.g. "system_args.image_tokenizer", "tokenizer.path"
    run: str  # the referenced run's recipe name, e.g. "vq_s"


@dataclass
class Entry:
    name: str  # the system family (or, for a dependency, the recipe name)
    recipe: Path | None  # None: no recipe for this family (reported, not trained)
    dependencies: list[Dependency] = field(default_factory=list)
    cell: str = "tokenizer"
    looked_for: Path | None = None  # the recipe file that was not there (recipe None)


def _references(node: Any, prefix: str) -> list[Dependency]:
    if isinstance(node, dict):
        return [d for k, v in node.items() for d in _references(v, f"{prefix}.{k}")]
    if isinstance(node, str) and (m := RUN_REFERENCE.match(node)):
        return [Dependency(prefix, m.group(1))]
    return []


def recipe_name(name: str, quick: bool, level: str | None = None) -> str:
    """The bench recipe of family ``name``: its test recipe (quick), its recipe at ``level``, else its survey size."""
    return f"test_{name}" if quick else f"{name}_{level.lower()}" if level else f"{name}_s"


def cell_of(name: str) -> str:
    """The survey cell of an entry: its family's, with a level's recipe suffix (``cond_decoder_l1``) dropped."""
    return CELLS.get(re.sub(r"_l[1-4]$", "", name), "tokenizer")


def entry_for(name: str, configs: Path, quick: bool, is_recipe: bool = False, level: str | None = None) -> Entry:
    recipe = configs / (f"{name}.yaml" if is_recipe else f"{recipe_name(name, quick, level)}.yaml")
    if not recipe.is_file():
        return Entry(name, None, cell=cell_of(name), looked_for=recipe)
    data = read_recipe(recipe)  # with its bases: an inherited system_args entry is a dependency too
    # a recipe names other runs in its system_args (sub-models), tokenizer.path (a shared tokenizer) and
    # train.init_from (a trained system it extends)
    sections = ("system_args", "tokenizer", "train")
    deps = [] if quick else [d for section in sections for d in _references(data.get(section, {}), section)]
    return Entry(name, recipe, deps, cell_of(name))


def _families() -> set[str]:
    from umm.registry import SYSTEMS  # filled once umm.models is imported (the bench command does)

    return set(SYSTEMS.names()) | set(SURVEY_ORDER)


def dependency_name(dep: Dependency, level: str | None = None) -> str:
    """``runs/vq_s/model`` is the ``vq`` family's default run; at a bench level, ``runs/<family>_l1/model`` is that
    family's own entry of the level (``runs/imagebind_l1/model``: the imagebind entry, trained once;
    ``runs/vq_l1/model``: the vq entry); other run names are recipes of their own (``cond_decoder_l1``)."""
    if dep.run.endswith("_s"):
        return dep.run[: -len("_s")]
    suffix = f"_{level.lower()}" if level else None
    if suffix and dep.run.endswith(suffix) and dep.run[: -len(suffix)] in _families():
        return dep.run[: -len(suffix)]
    return dep.run


def plan(systems: list[str], configs: Path, quick: bool, level: str | None = None) -> list[Entry]:
    """Entries in training order: every dependency before the systems that use it, each once."""
    ordered: list[Entry] = []
    seen: set[str] = set()

    def visit(entry: Entry, stack: tuple[str, ...]) -> None:
        if entry.name in stack:
            raise UmmError(f"bench recipes depend on each other in a cycle: {' -> '.join(stack + (entry.name,))}")
        for dep in entry.dependencies:
            name = dependency_name(dep, level)
            if name not in seen:
                # a dependency is the run its reference names (runs/vq_l1/model: vq_l1), or the system entry of the
                # bench level (runs/imagebind_l1/model at L1: the imagebind entry)
                is_recipe = name == dep.run
                visit(entry_for(name, configs, quick, is_recipe=is_recipe, level=None if is_recipe else level),
                      stack + (entry.name,))
        if entry.name not in seen:
            seen.add(entry.name)
            ordered.append(entry)

    for name in systems:
        visit(entry_for(name, configs, quick, level=level), ())
    return ordered


def default_systems(registered: list[str], configs: Path | None = None, level: str | None = None) -> list[str]:
    """Every registered family: the survey's systems in taxonomy order, then the rest (tokenizers). At a bench
    level the rest are those with a recipe at the level (the survey's systems are listed either way, so a
    missing one is reported)."""
    first = [s for s in SURVEY_ORDER if s in registered]
    rest = sorted(s for s in registered if s not in first)
    if level is not None and configs is not None:
        rest = [s for s in rest if (configs / f"{recipe_name(s, False, level)}.yaml").is_file()]
        rest += [s for s in CLAIM_RUNS if (configs / f"{recipe_name(s, False, level)}.yaml").is_file()]
    return first + rest
