"""umm from Python: load a trained system and use it, or train a recipe, in one line each.

    import umm
    run_dir = umm.train("test_transfusion", train={"steps": 20}, out="runs/tiny")  # -> Path("runs/tiny")
    pipe = umm.load(run_dir / "model")                                           # model + system + device
    images = pipe.generate(["a red circle"], n=4, seed=0)                        # list of PIL images
    pipe.judge(images, ["a red circle"] * 4)                                     # what the ShapesWorld judge reads
    pipe.caption(images); pipe.answer(images, ["what shape is it?"] * 4)         # where the system can
    pipe.embed("text", ["a red circle"])                                         # embedding systems

Images go in as PIL images, file paths, or tensors in [0, 1] ((3, H, W) or (B, 3, H, W)); they are resized
to the model's canvas as ``umm caption`` does (shorter side, centre crop). A method the system cannot do
raises ``UmmError`` naming what it can do. Like diffusers' pipelines, a ``Pipeline`` holds the model, the
system (tokenizers, options) and the device, so nothing has to be passed back in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from umm import UmmError
from umm.data.grid import to_pil
import umm.pipelines  # noqa: F401  (registers the loops that run every system's capabilities)

ImageInput = Image.Image | str | Path | torch.Tensor


@dataclass(frozen=True)
class Verdict:
    """The ShapesWorld judge on one generated image: does it satisfy its prompt, and what it reads there."""

    prompt: str
    ok: bool
    read: str  # e.g. "a large red circle (top left)"; "nothing" for an empty canvas


class Pipeline:
    """A trained system ready to use (see the module docstring). Build one with :func:`load`."""

    def __init__(self, model: torch.nn.Module, system: Any, device: str | torch.device = "cpu",
                 defaults: dict[str, Any] | None = None, trained: tuple[str, ...] | None = None):
        self.model = model.eval()
        self.system = system
        self.device = torch.device(device)
        # how the run that trained the model samples (umm.eval.harness.training_sampling): precision, and the
        # steps / CFG scale its recipe's eval_args chose; arguments given to a call win
        self.defaults = dict(defaults or {})
        # the tasks its recipe trained (None: unknown). A t2i-only run can still be asked to caption, but
        # what it says was never trained: umm serve shows only the trained ones
        self.trained = trained

    def __repr__(self) -> str:
        return f"Pipeline({self.family}, can: {', '.join(self.capabilities)}, device={self.device})"

    @property
    def family(self) -> str:
        return self.system.family

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What this system can be asked: ``t2i`` (generate), ``caption``, ``qa`` (answer), ``embed``, ..."""
        return tuple(self.system.capabilities)

    @property
    def image_size(self) -> int:
        return int(self.system.config.image_size)

    def _require(self, capability: str, method: str) -> None:
        if capability not in self.capabilities:
            raise UmmError(f"this {self.family} system cannot {method}(); it can: "
                           f"{', '.join(_METHODS.get(c, c) for c in self.capabilities)}")  # fmt: skip

    # -- generation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: str | Sequence[str], n: int = 1, seed: int = 0, steps: int | None = None,
                 cfg: float | None = None, sampler: str | None = None, output: str = "pil") -> list:
        """``n`` images per prompt (prompt-major order), as PIL images (``output="pil"``) or (3, H, W) tensors
        in [0, 1] (``output="tensor"``). ``steps``, ``cfg`` and ``sampler`` default to the system's own."""
        self._require("t2i", "generate")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise UmmError("generate() needs at least one non-empty prompt string")
        self._check_prompt_lengths(prompts)
        if n < 1:
            raise UmmError(f"generate(n={n}): n must be at least 1")
        if output not in ("pil", "tensor"):
            raise UmmError(f"generate(output={output!r}): choose 'pil' or 'tensor'")
        given = {"steps": steps, "cfg_scale": cfg, "sampler": sampler}
        options = {"seed": seed, **self.defaults, **{k: v for k, v in given.items() if v is not None}}
        images = self.system.generate_images(self.model, [p for p in prompts for _ in range(n)], **options).clamp(0, 1)
        return [to_pil(x) for x in images] if output == "pil" else list(images.cpu())

    def _check_prompt_lengths(self, prompts: list[str]) -> None:
        """A prompt longer than the model's text slots would be cut silently; say so instead."""
        limit = getattr(self.system.options, "max_text_tokens", None)
        encode = getattr(self.system.tokenizer, "encode", None)
        if limit is None or encode is None:
            return
        for prompt in prompts:
            if (n := len(encode(prompt))) > limit:
                shown = prompt if len(prompt) <= 40 else prompt[:37] + "..."
                raise UmmError(f"prompt {shown!r} is {n} tokens; this model reads at most {limit} "
                               "(system_args.max_text_tokens)")

    # -- understanding -----------------------------------------------------------------------------------
    @torch.no_grad()
    def caption(self, images: ImageInput | Sequence[ImageInput]) -> list[str]:
        self._require("caption", "caption")
        return list(self.system.caption(self.model, self.images(images), **self._precision()))

    @torch.no_grad()
    def answer(self, images: ImageInput | Sequence[ImageInput], questions: str | Sequence[str]) -> list[str]:
        """One answer per (image, question); a single question is asked of every image."""
        self._require("qa", "answer")
        batch = self.images(images)
        questions = [questions] * len(batch) if isinstance(questions, str) else list(questions)
        if len(questions) != len(batch):
            raise UmmError(f"answer(): {len(batch)} images but {len(questions)} questions")
        return list(self.system.answer(self.model, batch, questions, **self._precision()))

    def _precision(self) -> dict[str, str]:
        return {"precision": self.defaults["precision"]} if "precision" in self.defaults else {}

    @torch.no_grad()
    def embed(self, modality: str, items: Sequence) -> torch.Tensor:
        """(N, E) unit vectors of texts (str), images (see the module docstring), audio files or 16 kHz waves,
        or ShapesWorld specs (``"shapes:test:100"``, as ``umm embed`` takes them)."""
        self._require("embed", "embed")
        from umm.pipelines.embed import load_inputs

        modalities = tuple(self.system.embed_modalities)
        if modality not in modalities:
            raise UmmError(f"this {self.family} system embeds {list(modalities)}, not {modality!r}")
        items = [items] if isinstance(items, (str, Path, Image.Image)) else list(items)
        if modality == "image" and any(not isinstance(i, str) or not i.startswith("shapes:") for i in items):
            raw = list(self.images(items))
        elif modality == "audio" and all(isinstance(i, torch.Tensor) for i in items):
            raw = items
        else:
            raw = load_inputs(self.system, modality, [str(i) for i in items]).raw
        return self.system.embed(self.model, modality, raw)

    # -- the judge ---------------------------------------------------------------------------------------
    def judge(self, images: ImageInput | Sequence[ImageInput], prompts: str | Sequence[str]) -> list[Verdict]:
        """The ShapesWorld judge on generated images: does each satisfy its prompt (a single prompt applies to
        every image), and what does it read there."""
        from umm.eval.judge import describe_image, parse_caption, score_image

        batch = self.images(images)
        prompts = [prompts] * len(batch) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(batch):
            raise UmmError(f"judge(): {len(batch)} images but {len(prompts)} prompts")
        return [Verdict(p, bool(score_image(x, parse_caption(p))), describe_image(x)) for x, p in zip(batch, prompts)]

    def images(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """(B, 3, S, S) float in [0, 1] at this model's canvas S, from any accepted input."""
        return as_batch(images, self.image_size)


_METHODS = {"t2i": "generate", "caption": "caption", "qa": "answer", "embed": "embed"}


def as_batch(images: ImageInput | Sequence[ImageInput], size: int) -> torch.Tensor:
    """PIL images, paths or tensors -> (B, 3, size, size) in [0, 1] (shorter side resized, centre crop)."""
    from umm.data.folder import decode_image, pil_to_tensor

    if isinstance(images, torch.Tensor) and images.dim() == 4:
        items = list(images)
    elif isinstance(images, (Image.Image, str, Path, torch.Tensor)):
        items = [images]
    else:
        items = list(images)
    if not items:
        raise UmmError("no images given")
    out = []
    for item in items:
        if isinstance(item, torch.Tensor):
            if item.dim() != 3 or item.shape[0] != 3:
                raise UmmError(f"an image tensor is (3, H, W) in [0, 1]; got shape {tuple(item.shape)}")
            item = to_pil(item.clamp(0, 1))
        if isinstance(item, Image.Image):
            out.append(pil_to_tensor(item, size))
        elif isinstance(item, (str, Path)):
            try:
                out.append(decode_image(Path(item), size))
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                raise UmmError(f"cannot read image {str(item)!r}: {error}") from None
        else:
            raise UmmError(f"an image is a PIL image, a file path or a (3, H, W) tensor; got {type(item).__name__}")
    return torch.stack(out)


def load(path: str | Path, device: str | torch.device = "cpu") -> Pipeline:
    """The trained system in ``path`` (``runs/<name>/model``, as ``umm train`` writes it) as a Pipeline."""
    import umm.models  # noqa: F401  (registers every family)
    from umm.models.system import load_system

    from umm.eval.harness import training_sampling, training_tasks

    model, system = load_system(path, device=str(device))
    return Pipeline(model, system, device, defaults=training_sampling(path), trained=training_tasks(path))


def train(recipe: str | Path, out: str | Path | None = None, *, overrides: Sequence[str] = (), resume: bool = False,
          quiet: bool = True, **sections: Any) -> Path:
    """Train a recipe (a shipped name or a YAML path) and return the run directory; the trained system is in
    ``<run dir>/model``. Overrides come as ``key=value`` strings (``overrides=["train.steps=20"]``) or as
    keyword sections (``train={"steps": 20}, data={"level": "L1"}``), exactly as on the command line."""
    from umm.recipes import resolve_recipe
    from umm.training.recipe import load_recipe

    updates: dict[str, Any] = {}
    for key, value in sections.items():  # train={"steps": 20}; a dotted key needs **{"train.steps": 20}
        node = updates
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    run = load_recipe(resolve_recipe(recipe), list(overrides), updates=updates)
    return fit(run, out, resume=resume, quiet=quiet).run_dir


def fit(run, out: str | Path | None, resume: bool = False, quiet: bool = True):
    """Train a loaded recipe (``RunConfig``) with the periodic eval it asks for; the loop's ``TrainResult``."""
    from umm.training.loop import train as train_loop

    eval_fn = None
    if run.train.eval_every > 0:
        from umm.config import from_dict
        from umm.eval.harness import EvalConfig, evaluate

        eval_config = from_dict(EvalConfig, {"level": run.data.level, "precision": run.train.precision, **run.eval_args},
                                where="eval_args.")  # fmt: skip
        eval_fn = lambda model, system, step: evaluate(model, system, eval_config).metrics  # noqa: E731
    return train_loop(run, out, resume=resume, show_progress=not quiet, eval_fn=eval_fn)
