"""LoRA fine-tuning (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685)
through Hugging Face ``peft``, which injects adapters into any ``nn.Module``.

``train.lora_rank=r`` with ``train.init_from=RUN/model`` adds W' = W + (alpha / r) B A to every linear layer
of the base system (A: (r, in), B: (out, r), B starting at 0, so training starts from the base exactly) and
trains only A and B. The run's model directory then holds the architecture, the tokenizer and the
adapter alone (``adapter.safetensors``, ``adapter.json`` with a pointer to the base); loading it
(``umm.load``, ``load_system``) rebuilds the base, adds the adapter and merges it into the weights, so the
loaded model is a plain model of the base's architecture. ``peft`` is the ``umm[lora]`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from umm import UmmError

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_META = "adapter.json"


def _peft():
    try:
        import peft
    except ImportError:
        raise UmmError("train.lora_rank needs the peft library: pip install 'umm[lora]'") from None
    return peft


def linear_layers(model: nn.Module) -> list[str]:
    """Names of every ``nn.Linear`` in ``model``: the layers LoRA adapts (attention, MLP, heads, embeddings' MLPs)."""
    return sorted(name for name, module in model.named_modules() if isinstance(module, nn.Linear))


def add_lora(model: nn.Module, rank: int, alpha: float, targets: list[str] | None = None) -> list[str]:
    """Inject rank-``rank`` adapters into ``targets`` (default: every linear layer) in place and freeze
    everything else; returns the adapted layer names."""
    peft = _peft()
    targets = targets or linear_layers(model)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    peft.inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    return targets


def adapted_layers(model: nn.Module) -> list[str]:
    """Names of the layers that carry an adapter."""
    from peft.tuners.lora import LoraLayer

    return sorted(name for name, module in model.named_modules() if isinstance(module, LoraLayer))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors (A and B of every adapted layer), contiguous on CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if "lora_" in k}


def write_adapter(model: nn.Module, directory: Path, base: str | Path, rank: int, alpha: float,
                  targets: list[str]) -> None:
    import safetensors.torch

    safetensors.torch.save_file(adapter_state(model), str(directory / ADAPTER_WEIGHTS))
    meta = {"base": str(Path(base).resolve()), "rank": rank, "alpha": alpha, "targets": targets}
    (directory / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer (W += (alpha / r) B A) and put the plain layer back."""
    from peft.tuners.lora import LoraLayer

    adapted = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in adapted:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    return model


def load_adapted(directory: Path, device: str = "cpu") -> nn.Module:
    """The base model that ``adapter.json`` points at, with the adapter of ``directory`` merged in."""
    import safetensors.torch

    from umm.models.factory import from_pretrained, load_config

    meta = json.loads((directory / ADAPTER_META).read_text(encoding="utf-8"))
    base = Path(meta["base"])
    if not base.is_dir():
        raise UmmError(f"{str(directory)!r} is a LoRA adapter of {str(base)!r}, which no longer exists; "
                       "restore the base model there (adapter.json names it)")
    model = from_pretrained(base, device)
    if load_config(directory) != model.config:
        raise UmmError(f"the adapter in {str(directory)!r} was trained on another architecture than {str(base)!r}")
    add_lora(model, int(meta["rank"]), float(meta["alpha"]), list(meta["targets"]))
    state = safetensors.torch.load_file(str(directory / ADAPTER_WEIGHTS), device=device)
    missing = set(adapter_state(model)) ^ set(state)
    if missing:
        raise UmmError(f"the adapter in {str(directory)!r} does not fit its base: {sorted(missing)[:3]} ...")
    model.load_state_dict(state, strict=False)
    return merge_lora(model).to(device).eval()
