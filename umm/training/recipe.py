"""A recipe is everything a training run needs, as one frozen config (loaded from ``umm/recipes/*.yaml``).

::

    model: transfusion_s            # a registered model name (``umm ls``)
    model_args: {depth: 8}          # overrides of that model's config, checked against its fields
    system_args: {lambda_diffusion: 5.0}
    data: {name: shapes, canvas: 32}
    tokenizer: {vocab_size: 512}
    tasks:                          # the survey's L = sum_k lambda_k L_k: one batch per task per step
      - {name: t2i, weight: 1.0, batch_size: 32}
      - {name: caption, weight: 1.0, batch_size: 16}
    train: {steps: 2000, lr: 1e-3}

``key=value`` overrides on the command line address the same tree: ``train.steps=100 model_args.dim=64``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from umm.config import ConfigError, check_range, from_dict, load_yaml, merge, parse_overrides


@dataclass(frozen=True)
class DataConfig:
    name: str = "shapes"  # a registered dataset: shapes | folder | webdataset
    path: str | None = None  # folder or shard pattern for user data
    split: str = "train"
    canvas: int = 48  # image side in pixels (ShapesWorld renders at this size; user images are resized)
    seed: int = 0
    # ShapesWorld difficulty (umm.data.shapes.levels): L1 one large object .. L4 the original world
    level: Literal["L1", "L2", "L3", "L4"] = "L4"
    max_objects: int = 3  # a cap under the level's own maximum
    video_frames: int = 8
    modalities: tuple[str, ...] = ("image", "caption", "qa")
    # ShapesWorld's captions (and the speech made of them): "mixed" paraphrases that may leave attributes out,
    # or "full", every attribute the level names. A contrastive binder treats every other caption of a batch as
    # a negative, so a caption that fits several images ("a large cross") is noise to it.
    caption_style: Literal["mixed", "full"] = "mixed"

    def __post_init__(self) -> None:
        if self.name == "shapes":  # the renderer's and the judge's range; user images may be any size
            check_range("data.canvas", self.canvas, 16, 128)
            check_range("data.max_objects", self.max_objects, 1, 3)
        else:
            check_range("data.canvas", self.canvas, 8)
        check_range("data.video_frames", self.video_frames, 1)


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 512
    corpus_size: int = 20000  # ShapesWorld texts the BPE is trained on (plus the user corpus, if any)
    corpus_path: str | None = None  # extra text file, one document per line
    path: str | None = None  # reuse a saved tokenizer directory instead of training one


@dataclass(frozen=True)
class TaskConfig:
    name: str  # a task the system knows (``umm ls`` lists each system's tasks)
    weight: float = 1.0  # lambda_k
    batch_size: int = 16  # global batch of this task per step (split over ranks)
    # staged training: the task joins the step once this fraction of the budget (steps or time budget) has
    # passed. Show-o (sec. 3.3) and Janus (sec. 3.2) first train generation, then add image-text understanding;
    # in umm's 10-minute demo, understanding in every step cost generation 0.97 -> 0.33 (RESULTS.md)
    start: float = 0.0

    def __post_init__(self) -> None:
        check_range("tasks.weight", self.weight, 0)
        check_range("tasks.batch_size", self.batch_size, 1)
        check_range("tasks.start", self.start, 0, below=1)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0 = no EMA
    precision: Literal["bf16", "fp32"] = "bf16"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 10
    eval_every: int = 0  # > 0: run the judge harness (eval_args) every N steps and at the end
    save_every: int = 250
    keep_checkpoints: int = 2
    time_budget_minutes: float = 0.0  # > 0: stop (and anneal the LR) by time instead of steps alone
    # the clock of that budget: wall time, or the CPU time of this process (every thread, the data thread
    # included). A one-thread run pinned to an idle core spends both alike; "process" keeps a run's length
    # the same when other jobs share its core (how benchmarks/ runs two experiments beside a third)
    budget_clock: Literal["wall", "process"] = "wall"
    grad_checkpointing: bool = False
    compile: bool = False
    # under torchrun: replicate the model on every rank (ddp) or shard weights, gradients and optimizer
    # state across ranks (fsdp, PyTorch's FSDP2) for models that do not fit one device
    parallel: Literal["ddp", "fsdp"] = "ddp"
    # > 0: intra-op CPU threads for this run (torch.set_num_threads). Small models train faster on one
    # thread than on two (OpenMP overhead beats the split), leaving the other core to data preparation.
    threads: int = 0
    # a trained system (runs/<name>/model) to start from instead of a fresh initialisation: fine-tuning on
    # your own data. Its tokenizer is reused and its model config must equal the recipe's (checked).
    init_from: str | None = None
    # > 0: LoRA fine-tuning of init_from (umm/models/lora.py): rank-r adapters on every linear layer, the base
    # frozen; the run saves the adapter and a pointer to the base. alpha scales the update (alpha / rank)
    lora_rank: int = 0
    lora_alpha: float = 16.0
    # fractions of the budget (time budget, else steps) at which to also export the model, EMA weights and all,
    # to run/snapshots/<fraction>/model with its step and seconds: the points of a time-to-quality curve
    # (umm bench scores each one). The end of training is the final model, fraction 1
    snapshots: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_range("train.steps", self.steps, 1)  # a run of 0 steps would save an untrained model as trained
        check_range("train.lr", self.lr, above=0)
        check_range("train.min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_range("train.warmup_steps", self.warmup_steps, 0)
        check_range("train.weight_decay", self.weight_decay, 0)
        check_range("train.beta1", self.beta1, 0, below=1)
        check_range("train.beta2", self.beta2, 0, below=1)
        check_range("train.grad_clip", self.grad_clip, 0)
        check_range("train.ema_decay", self.ema_decay, 0, below=1)
        check_range("train.log_every", self.log_every, 1)
        check_range("train.eval_every", self.eval_every, 0)
        check_range("train.save_every", self.save_every, 1)
        check_range("train.keep_checkpoints", self.keep_checkpoints, 1)
        check_range("train.time_budget_minutes", self.time_budget_minutes, 0)
        check_range("train.threads", self.threads, 0)
        check_range("train.lora_rank", self.lora_rank, 0)
        check_range("train.lora_alpha", self.lora_alpha, above=0)
        for fraction in self.snapshots:
            check_range("train.snapshots", fraction, above=0, below=1)
        if list(self.snapshots) != sorted(set(self.snapshots)):
            raise ConfigError(f"config key 'train.snapshots' expects increasing fractions in (0, 1); got {list(self.snapshots)}")
        if self.lora_rank and not self.init_from:
            raise ConfigError("config key 'train.lora_rank' needs train.init_from (the trained system to adapt)")


@dataclass(frozen=True)
class RunConfig:
    model: str
    name: str = ""  # run name; defaults to the model name
    model_args: dict[str, Any] = field(default_factory=dict)
    system_args: dict[str, Any] = field(default_factory=dict)
    eval_args: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    tasks: tuple[TaskConfig, ...] = ()
    train: TrainConfig = TrainConfig()

    @property
    def run_name(self) -> str:
        return self.name or self.model


def _base_path(name: str, directory: Path, recipe: Path) -> Path:
    """A ``base:`` entry: a path or name beside the recipe, else a shipped recipe (``base/survey_s``)."""
    from umm.recipes import RECIPES_DIR

    for candidate in (directory / name, directory / f"{name}.yaml", RECIPES_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config key 'base' = {name!r} (in {recipe}): no such recipe beside it or shipped with umm "
                      f"(the shipped bases: {', '.join(sorted('base/' + p.stem for p in (RECIPES_DIR / 'base').glob('*.yaml')))})")


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file as a dict, with the recipes its ``base:`` key names (one or a list) merged under it in
    order, each with its own bases first; the file's own keys win, and lists (``tasks``) are replaced whole."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise ConfigError(f"config key 'base': recipe {path.name} inherits from itself ({chain})")
    data = load_yaml(path)
    bases = data.pop("base", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config key 'base' (in {path}) expects a recipe name or path, or a list of them; got {bases!r}")
    merged: dict[str, Any] = {}
    for name in bases:
        merged = merge(merged, read_recipe(_base_path(name, path.parent, path), (*_seen, path.resolve())))
    return merge(merged, data)


def load_recipe(path: str | Path | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None,
                updates: dict[str, Any] | None = None) -> RunConfig:
    """Read a recipe YAML (with its ``base:`` recipes, see :func:`read_recipe`) or start from ``base``, apply
    ``key=value`` overrides, then ``updates`` (a nested dict, ``{"train": {"steps": 10}}``, as ``umm.train``
    takes them), and validate every key."""
    data = read_recipe(path) if path is not None else dict(base or {})
    data = merge(data, parse_overrides(overrides or []))
    data = merge(data, updates or {})
    if "model" not in data:
        raise ConfigError("recipe has no 'model' key (a registered model name, see `umm ls`)")
    tasks = data.get("tasks", [])
    if not isinstance(tasks, list):
        raise ConfigError(f"config key 'tasks' expects a list of tasks, e.g. [{{name: t2i, batch_size: 16}}]; got {tasks!r}")
    data["tasks"] = [t if isinstance(t, dict) else {"name": t} for t in tasks]
    run = from_dict(RunConfig, data)
    if not run.tasks:
        raise ConfigError("recipe has no 'tasks'; list at least one, e.g. tasks: [{name: t2i, batch_size: 16}]")
    if min(t.start for t in run.tasks) > 0:
        raise ConfigError("config key 'tasks.start': at least one task must start at 0 (the first steps need a task)")
    return run
