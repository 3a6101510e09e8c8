"""Build models by registered name, and save/load them as ``config.json`` + ``model.safetensors``.

A model *family* is an ``nn.Module`` class registered in ``ARCHITECTURES`` with a ``config_class`` (a frozen
dataclass whose ``family`` class variable names it). A model *name* (``transfusion_s``, ``test_transfusion``)
is a function registered in ``MODELS`` that returns a config of some family. ``from_pretrained`` rebuilds
the exact architecture from ``config.json`` and loads weights with safetensors: weights are never
unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

import umm
from umm.config import from_dict, merge, to_dict
from umm.registry import ARCHITECTURES, MODELS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def register_model(fn):
    """Register a function returning a model config under the function's name (timm's ``@register_model``)."""
    return MODELS.register(fn.__name__)(fn)


def model_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config registered as ``name``, with ``overrides`` validated against its fields."""
    base = MODELS.get(name)()
    return from_dict(type(base), merge(to_dict(base), overrides or {}), where="model.")


def build_model(config: Any) -> nn.Module:
    return ARCHITECTURES.get(config.family)(config)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """``create_model("test_transfusion", dim=64)``: a freshly initialised model."""
    return build_model(model_config(name, overrides))


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def atomic_directory(path: str | Path):
    """Context manager yielding a temporary directory that replaces ``path`` only when the block succeeds."""

    class _Atomic:
        def __enter__(self) -> Path:
            self.final = Path(path)
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-", dir=self.final.parent))
            return self.tmp

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                return
            for f in self.tmp.rglob("*"):  # sub-directories too: a system saves its frozen sub-models there
                if f.is_file():
                    with open(f, "rb") as handle:
                        os.fsync(handle.fileno())
            backup = self.final.with_name(self.final.name + ".old")
            if self.final.exists():
                shutil.rmtree(backup, ignore_errors=True)
                os.replace(self.final, backup)
            os.replace(self.tmp, self.final)
            shutil.rmtree(backup, ignore_errors=True)

    return _Atomic()


def write_config(model: nn.Module, directory: Path) -> None:
    """Write config.json (the architecture) into an existing directory."""
    model = unwrap(model)
    meta = {"family": model.config.family, "config": to_dict(model.config), "umm_version": umm.__version__}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))


def write_pretrained(model: nn.Module, directory: Path) -> None:
    """Write config.json and model.safetensors into an existing directory (no atomicity)."""
    write_config(model, directory)
    # save_model handles tied weights (e.g. an embedding shared with the output head).
    safetensors.torch.save_model(unwrap(model), str(directory / WEIGHTS_FILE))


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Atomically write ``directory`` with config.json + model.safetensors."""
    with atomic_directory(directory) as tmp:
        write_pretrained(model, tmp)
    return Path(directory)


def load_config(directory: str | Path) -> Any:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise umm.UmmError(f"{str(directory)!r} is not a saved umm model (no {CONFIG_FILE})")
    meta = _read_json(path)
    cls = ARCHITECTURES.get(meta["family"]).config_class
    return from_dict(cls, meta["config"], where="model.")


def from_pretrained(directory: str | Path, device: str = "cpu") -> nn.Module:
    """Rebuild the saved architecture exactly and load its weights (strict: every tensor must match); a LoRA
    run's directory (``adapter.json``) loads its base with the adapter merged in (``umm.models.lora``)."""
    from umm.models.lora import ADAPTER_META, load_adapted

    if (Path(directory) / ADAPTER_META).is_file():
        return load_adapted(Path(directory), device)
    model = build_model(load_config(directory))
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise umm.UmmError(f"{str(directory)!r} has no {WEIGHTS_FILE}; the run did not finish writing its model")
    try:
        safetensors.torch.load_model(model, str(weights), strict=True, device=device)
    except (safetensors.SafetensorError, OSError) as error:
        raise umm.UmmError(f"cannot read {str(weights)!r}: the file is corrupt or truncated ({error})") from None
    except RuntimeError as error:  # strict loading: a tensor missing, unexpected or of another shape
        raise umm.UmmError(f"the weights in {str(weights)!r} do not match the saved architecture: "
                           f"{str(error).splitlines()[0]}") from None
    return model.to(device).eval()


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise umm.UmmError(f"{str(path)!r} is not valid JSON (a corrupt or foreign model directory)") from None
    if not isinstance(meta, dict) or "family" not in meta:
        raise umm.UmmError(f"{str(path)!r} is not an umm model description (no 'family')")
    return meta
