"""What every system gives the trainer, the pipelines and the eval harness.

A *system* pairs a model family with its data formatting and its objective, like open_clip's
``TrainingTask``. It holds the tokenizer(s) and options, never the model's weights: every method takes the
model as an argument, so the trainer can pass a DDP-wrapped model to :meth:`losses` and the pipelines a
bare one. The contract, implemented by one class per family in ``umm/models/<family>.py``:

``tasks``
    training tasks this system formats (``t2i``, ``caption``, ``qa``, ``t2v``, ``v2t``, ``align`` ...).
``capabilities``
    what the eval harness may ask of it: ``t2i`` (:meth:`generate_images`), ``caption`` (:meth:`caption`),
    ``qa`` (:meth:`answer`), ``t2v`` / ``v2t`` (video), ``embed`` (:meth:`embed`).
``model_overrides(tokenizer, options)``
    model config fields the system decides (vocabulary size), merged under the recipe's; the system itself
    is built after the model, with the model's config, so it knows the image geometry.
``collate(samples, task, generator)``
    sample dicts -> a batch of tensors; random choices (CFG dropout, mask ratios) use ``generator``.
``losses(model, batch, generator)``
    a dict of named losses; keys ending in ``_loss`` are summed by the trainer. It must call the model
    only through ``model(...)`` (its ``forward``), which is what DDP hooks into.
``prepare_model(model)`` (optional)
    runs once on the new model before training: load a previous stage's weights, freeze parameters.
``frozen_parts``
    the frozen sub-models the system reads and never trains (an image tokenizer, a VAE), by attribute name:
    one shared mechanism (:class:`FrozenPart`) loads each from its ``system_args`` key, refuses an unset one
    with the recipe that trains it, saves a copy beside the model and restores it on load.
``mechanism``
    the name under which ``umm.pipelines`` registers the loops of its capabilities (``diffusion_lm``, ``maskgit``,
    ``masked_ar``, ``ar``, ...): :meth:`generate_images` and the other capability methods run
    ``umm.registry.LOOPS["<mechanism>.<capability>"]``, so the pipelines own the loops and the models never
    import them. ``umm/pipelines/protocols.py`` types what each mechanism's loops read of a system.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from umm import UmmError
from umm.config import from_dict, to_dict
from umm.models.factory import atomic_directory, from_pretrained, write_pretrained
from umm.registry import LOOPS, MODELS, SYSTEMS

SYSTEM_FILE = "system.json"


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class FrozenPart:
    """A frozen sub-model that a system reads and never trains.

    ``option`` is the ``system_args`` key that names it: a trained run's ``runs/<name>/model``, or in tests a
    registered model name (fresh weights, with a warning); ``recipe`` is the shipped recipe that trains one,
    for the error line; ``load(name_or_dir)`` builds the module (the family's loader, which may check its
    kind). ``optional`` parts may stay unset (a VAE: the model then reads pixels); any other unset part is an
    error, never an untrained default.
    """

    option: str
    recipe: str
    load: Callable[[str | Path], torch.nn.Module]
    optional: bool = False


class SystemBase:
    """Shared save/load of a system's tokenizer, options and frozen parts, and the capability methods that run
    its mechanism's loops (umm.registry.LOOPS); the family class adds its sequences, losses and hooks."""

    family: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    capabilities: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    frozen_parts: ClassVar[dict[str, FrozenPart]] = {}  # attribute name -> how it is named, loaded and trained
    # which umm.pipelines loops run this system's capabilities (umm.registry.LOOPS: "<mechanism>.<capability>")
    mechanism: ClassVar[str] = ""

    def __init__(self, tokenizer: Any, config: Any, options: Any = None, **parts: torch.nn.Module | None):
        self.tokenizer = tokenizer
        self.config = config  # the model's config: image geometry, vocabulary
        self.options = options if options is not None else self.Options()
        unknown = sorted(set(parts) - set(self.frozen_parts))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no frozen part {unknown}; "
                            f"its parts are {list(self.frozen_parts)}")
        for name in self.frozen_parts:  # given modules (a loaded system, a test's tiny model) or the option's
            module = parts.get(name)
            setattr(self, name, module if module is not None else self.load_part(name, self.options))

    @classmethod
    def load_part(cls, name: str, options: Any, warn: bool = True) -> torch.nn.Module | None:
        """The frozen part ``name`` as ``options`` names it; None for an unset optional part."""
        part = cls.frozen_parts[name]
        if getattr(options, part.option) is None and part.optional:
            return None
        source, key = cls.frozen_source(options, part.option, part.recipe, name), f"system_args.{part.option}"
        if warn and str(source) in MODELS and not Path(source).is_dir():
            warnings.warn(f"{cls.family} uses untrained {name.replace('_', ' ')} weights ({str(source)!r}); train "
                          f"one (umm train {part.recipe}) and set {key}=runs/{part.recipe}/model", stacklevel=3)
        return part.load(source)

    @classmethod
    def frozen_source(cls, options: Any, option: str, recipe: str, what: str | None = None) -> str:
        """The ``system_args.<option>`` value naming a frozen part (a trained run, or a registered name in
        tests). Unset is an error naming the key and the recipe that trains one, never an untrained default."""
        source = getattr(options, option)
        if source is None:
            key = f"system_args.{option}"
            raise UmmError(f"{key} is unset: {cls.family} reads a frozen {(what or option).replace('_', ' ')} that "
                           f"it does not train; train one (umm train {recipe}) and set {key}=runs/{recipe}/model")
        return str(source)

    @classmethod
    def parse_options(cls, args: dict[str, Any]) -> Any:
        return from_dict(cls.Options, args, where="system_args.")

    @classmethod
    def model_overrides(cls, tokenizer: Any, options: Any) -> dict[str, Any]:
        return {}

    def needs_base(self) -> str | None:
        """The option that only makes sense on top of a trained model (``train.init_from``), when it is set; the
        trainer refuses such a run without one. Default: none."""
        return None

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Called by the trainer on the freshly built model, before the optimizer exists: a staged system loads
        the previous stage's weights here and freezes what this stage does not train. Default: nothing."""

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text``, cut to ``options.max_text_tokens`` (the text slots of one segment)."""
        return self.tokenizer.encode(text)[: self.options.max_text_tokens]

    def check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise UmmError(f"system {self.family!r} has no task {task!r}; its tasks are {list(self.tasks)}")

    # -- capabilities: the loops live in umm.pipelines, registered there per mechanism -------------------------

    def sampling_defaults(self, capability: str) -> dict[str, Any]:
        """Options of this system's own (its sampling temperature, ...) that a ``capability`` call starts from;
        what the caller passes wins. Default: none."""
        return {}

    def has_loop(self, capability: str) -> bool:
        """Whether ``capability`` (a loop name: ``generate_images``, ``predict_x0`` ...) runs on this system: a loop
        registered for its mechanism, or a method of its own."""
        own = getattr(type(self), capability, None)
        return f"{self.mechanism}.{capability}" in LOOPS or (own is not None and own is not getattr(SystemBase, capability, None))

    def run_loop(self, capability: str, model: torch.nn.Module, *args: Any, **options: Any) -> Any:
        """Run the ``umm.pipelines`` loop registered as ``<mechanism>.<capability>`` on ``model`` and this system."""
        key = f"{self.mechanism}.{capability}"
        if key not in LOOPS:
            if not len(LOOPS):
                raise UmmError("no capability loops are registered: import umm.pipelines first (umm.load, umm.eval "
                               "and the CLI do)")
            raise UmmError(f"system {self.family!r} has no {capability} loop (mechanism {self.mechanism!r}); its "
                           f"capabilities are {list(self.capabilities)}")
        return LOOPS.get(key)(model, self, *args, **{**self.sampling_defaults(capability), **options})

    def generate_images(self, model: torch.nn.Module, prompts: list[str], **options: Any) -> torch.Tensor:
        """Text -> images (N, 3, H, W) in [0, 1]; ``options`` are the mechanism loop's (steps, cfg_scale, seed ...)."""
        return self.run_loop("generate_images", model, prompts, **options)

    def caption(self, model: torch.nn.Module, images: torch.Tensor, **options: Any) -> list[str]:
        """Images (N, 3, H, W) in [0, 1] -> one caption each."""
        return self.run_loop("caption", model, images, **options)

    def answer(self, model: torch.nn.Module, images: torch.Tensor, questions: list[str] | None, **options: Any) -> list[str]:
        """Images and one question each -> one answer each."""
        return self.run_loop("answer", model, images, questions, **options)

    def generate_interleaved(self, model: torch.nn.Module, prompt: str, **options: Any) -> list:
        """Text that may open images -> strings and (3, H, W) images, in order."""
        return self.run_loop("generate_interleaved", model, prompt, **options)

    def inpaint(self, model: torch.nn.Module, images: torch.Tensor, region: torch.Tensor, prompts: list[str] | None = None,
                **options: Any) -> torch.Tensor:
        """Regenerate ``region`` (B, H, W) bool of ``images``, optionally under ``prompts``."""
        return self.run_loop("inpaint", model, images, region, prompts, **options)

    def generate_videos(self, model: torch.nn.Module, prompts: list[str], **options: Any) -> torch.Tensor:
        """Text -> clips (N, T, 3, H, W) in [0, 1]."""
        return self.run_loop("generate_videos", model, prompts, **options)

    def caption_videos(self, model: torch.nn.Module, videos: torch.Tensor, **options: Any) -> list[str]:
        """Clips (N, T, 3, H, W) in [0, 1] -> one caption each."""
        return self.run_loop("caption_videos", model, videos, **options)

    def predict_x0(self, model: torch.nn.Module, images: torch.Tensor, prompts: list[str], t: float, **options: Any) -> torch.Tensor:
        """One-step x0 from the true x_t at time ``t`` (the harness's denoise check; diffusion mechanisms)."""
        return self.run_loop("predict_x0", model, images, prompts, t, **options)

    def save(self, directory: Path) -> None:
        """Write tokenizer files and ``system.json``; systems with more artefacts extend this."""
        if self.tokenizer is not None:
            self.tokenizer.save(directory)
        meta = {"family": self.family, "options": to_dict(self.options)}
        (directory / SYSTEM_FILE).write_text(json.dumps(meta, indent=2))
        for name in self.frozen_parts:  # a copy of every frozen part: the saved system is complete on its own
            module = getattr(self, name)
            if module is not None:
                (directory / name).mkdir()
                write_pretrained(module, directory / name)

    @classmethod
    def load(cls, directory: Path, config: Any, options: Any) -> SystemBase:
        from umm.tokenizers.text import TextTokenizer

        parts = {}
        for name, part in cls.frozen_parts.items():
            if (directory / name).is_dir():
                parts[name] = part.load(directory / name)
            elif not part.optional or getattr(options, part.option) is not None:
                raise UmmError(f"{str(directory)!r} lacks its frozen {name.replace('_', ' ')} ({name}/): an "
                               "incomplete copy of a trained system")
        return cls(TextTokenizer.load(directory), config, options, **parts)


def save_system(directory: str | Path, model: torch.nn.Module, system: SystemBase,
                lora: dict[str, Any] | None = None) -> Path:
    """Atomically write a complete trained system: model weights + config, tokenizer, options. With ``lora``
    (``base``, ``rank``, ``alpha``: a LoRA run) the weights are the adapter alone plus a pointer to the base."""
    from umm.models.factory import write_config
    from umm.models.lora import adapted_layers, write_adapter

    with atomic_directory(directory) as tmp:
        if lora is None:
            write_pretrained(model, tmp)
        else:
            write_config(model, tmp)
            write_adapter(model, tmp, lora["base"], lora["rank"], lora["alpha"], adapted_layers(model))
        system.save(tmp)
    return Path(directory)


def load_system(directory: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, SystemBase]:
    """(model, system) from a directory written by :func:`save_system` (``runs/<name>/model``)."""
    directory = Path(directory)
    meta_path = directory / SYSTEM_FILE
    if not meta_path.is_file():
        raise UmmError(f"{str(directory)!r} is not a trained umm system (no {SYSTEM_FILE}); pass runs/<name>/model")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UmmError(f"{str(meta_path)!r} is not valid JSON (a corrupt or foreign model directory)") from None
    if not isinstance(meta, dict) or "family" not in meta:
        raise UmmError(f"{str(meta_path)!r} is not an umm system description (no 'family')")
    cls = SYSTEMS.get(meta["family"])
    model = from_pretrained(directory, device)
    system = cls.load(directory, model.config, cls.parse_options(meta["options"]))
    return model, system
