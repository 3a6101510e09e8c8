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
from umm.training.ema import EMA

LATEST = "latest"


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict (slots keyed by parameter index, or by parameter name when gathered from
    FSDP) split into tensors for safetensors and the rest for JSON."""
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            key = f"optimizer.{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous().clone()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any]) -> None:
    slots: dict[int, dict[str, Any]] = {}
    def slot(key: str) -> tuple[int | str, str]:  # "optimizer.<index or parameter name>.<slot>"
        owner, name = key[len("optimizer."):].rsplit(".", 1)
        return (int(owner) if owner.isdigit() else owner), name

    for key, value in [*((k, v) for k, v in tensors.items() if k.startswith("optimizer.")), *meta["scalars"].items()]:
        owner, name = slot(key)
        slots.setdefault(owner, {})[name] = value
    state = {"state": slots, "param_groups": meta["param_groups"]}
    by_name = any(isinstance(p, str) for group in meta["param_groups"] for p in group["params"])
    if by_name:  # written by an FSDP run: restore through the parameter names (sharded or not)
        from umm.training.parallel import load_full_optimizer_state

        load_full_optimizer_state(model, optimizer, state)
    else:
        optimizer.load_state_dict(state)


def save_checkpoint(
    directory: Path, step: int, model: nn.Module | dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | dict,
    ema: EMA | None, extra: dict[str, Any], keep: int = 2
) -> Path:
    """Write ``directory/step_<step>`` atomically, point ``latest`` at it, prune to the newest ``keep``.

    ``model`` and ``optimizer`` may be given as (full) state dicts instead, as gathered from an FSDP run.
    """
    model_state = model if isinstance(model, dict) else unwrap(model).state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer if isinstance(optimizer, dict) else optimizer.state_dict())
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


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """All tensors of a checkpoint and its JSON state."""
    return safetensors.torch.load_file(str(path / "state.safetensors")), json.loads((path / "state.json").read_text())


def load_model_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """The model's weights from a checkpoint (into the unsharded model, before any FSDP sharding)."""
    unwrap(model).load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)


def load_training_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], model: nn.Module,
                        optimizer: torch.optim.Optimizer, ema: EMA | None) -> None:
    """The optimizer moments (and EMA shadow) from a checkpoint; the optimizer may be over sharded parameters."""
    _load_optimizer(model, optimizer, tensors, meta["optimizer"])
    if ema is not None:
        shadow = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        if not shadow:
            raise UmmError("the checkpoint has no EMA weights but this run uses EMA (train.ema_decay > 0)")
        ema.shadow = shadow

