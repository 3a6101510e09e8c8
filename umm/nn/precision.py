"""Mixed precision: one switch for every loop (training, sampling, captioning)."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast(precision: str, device: torch.device | str):
    """bf16 autocast on ``device`` when ``precision == "bf16"``, else full precision (a no-op context)."""
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
