"""Data parallelism under ``torchrun``: DDP (replicated weights) or FSDP (sharded weights, gradients and
optimizer state; PyTorch's FSDP2 ``fully_shard``), chosen by ``train.parallel``.

DDP is the right default at umm's sizes. FSDP is for models whose weights + AdamW moments do not fit one
device: every transformer ``Block`` is its own shard group (its parameters are all-gathered just before it
runs and freed after), then the root holds what is left (embeddings, heads). Checkpoints and the exported
model are always *full* state dicts gathered onto rank 0, so a run trained with FSDP resumes, evaluates and
loads in one process like any other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from umm import UmmError
from umm.models.factory import build_model
from umm.nn.transformer import Block
from umm.training.distributed import DistInfo


def wrap(model: nn.Module, info: DistInfo, parallel: str) -> nn.Module:
    """The module the loop calls: the model itself (one process, or FSDP, which shards it in place) or DDP."""
    if info.world_size == 1:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        blocks = [m for m in model.modules() if isinstance(m, Block)]
        if not blocks:
            raise UmmError(f"train.parallel=fsdp shards transformer blocks; {type(model).__name__} has none")
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    # find_unused_parameters: a recipe need not use every head of a model (a caption-only run never touches
    # the diffusion head), and DDP must not wait for those gradients.
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model and optimizer state gathered in full on CPU. Collective under FSDP: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore a full (parameter-name keyed) optimizer state into a sharded or plain model's optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def full_model(model: nn.Module, device: torch.device, is_main: bool) -> nn.Module | None:
    """An unsharded copy of an FSDP model on rank 0 (for evaluation and export), None elsewhere. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return None
    copy = build_model(model.config)
    copy.load_state_dict(state)
    return copy.to(device)
