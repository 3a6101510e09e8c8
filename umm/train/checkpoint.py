"""Training checkpoints: atomic, safetensors for every tensor, JSON for the rest, exact resume.

A checkpoint is a directory ``checkpoints/step_00001234/`` holding ``state.safetensors`` (model, optimizer
moments, EMA shadow) and ``state.json`` (step, elapsed time, optimizer hyper-parameters, metrics so far).
It is written to a temporary directory and renamed into place, and ``checkpoints/latest`` is replaced
atomically last, so a kill at any moment leaves the previous checkpoint intact. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from umm import UmmError
from umm.models.factory import atomic_directory, unwrap
from umm.train.ema import EMA

LATEST = "latest"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            key = f"optimizer.{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous().clone()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        _, index, name = key.split(".", 2)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


def save_checkpoint(
    directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None, extra: dict[str, Any], keep: int = 2
) -> Path:
    """Write ``directory/step_<step>`` atomically, point ``latest`` at it, prune to the newest ``keep``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in unwrap(model).state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    if ema is not None:
        tensors.update({f"ema.{k}": v.cpu().contiguous().clone() for k, v in ema.shadow.items()})
    target = directory / f"step_{step:08d}"
    with atomic_directory(target) as tmp:
        safetensors.torch.save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **extra}))
    pointer = directory / (LATEST + ".tmp")
    pointer.write_text(target.name)
    os.replace(pointer, directory / LATEST)
    old = sorted(p for p in directory.glob("step_*") if p.is_dir() and not p.name.startswith("."))
    for stale in old[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def latest_checkpoint(directory: Path) -> Path | None:
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    path = directory / pointer.read_text().strip()
    if not (path / "state.safetensors").is_file():
        raise UmmError(f"checkpoint pointer {pointer} names {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None) -> dict[str, Any]:
    """Restore model, optimizer and EMA in place; return the JSON state (step, elapsed, ...)."""
    tensors = safetensors.torch.load_file(str(path / "state.safetensors"))
    meta = json.loads((path / "state.json").read_text())
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    unwrap(model).load_state_dict(model_state, strict=True)
    _load_optimizer(optimizer, tensors, meta["optimizer"])
    if ema is not None:
        shadow = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        if not shadow:
            raise UmmError(f"checkpoint {path} has no EMA weights but this run uses EMA (train.ema_decay > 0)")
        ema.shadow = shadow
    return meta
