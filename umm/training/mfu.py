"""Model FLOPs utilisation: FLOPs counted on a real step, divided by a matmul peak measured on this machine.

The FLOPs of one training step are counted once with ``torch.utils.flop_counter`` (matmuls, convolutions,
attention), so the figure follows the actual architecture and sequence layout rather than a 6·N·T rule of
thumb. The peak is the best of a few large matmuls in the run's precision, measured once per machine and
cached in ``~/.cache/umm/peak_flops.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

CACHE = Path(os.environ.get("UMM_CACHE", Path.home() / ".cache" / "umm")) / "peak_flops.json"


def _attention_flops(query, key, value, *args, **kwargs) -> int:
    # QK^T and AV, each 2 * B * H * Tq * Tk * Dh
    b, h, tq, d = query
    return 4 * b * h * tq * key[2] * d


def _attention_backward_flops(grad_out, query, key, value, *args, **kwargs) -> int:
    # dV, dP, dQ, dK: twice the forward
    return 2 * _attention_flops(query, key, value)


def _custom_attention_formulas() -> dict:
    aten = torch.ops.aten
    mapping = {}
    for name, fn in [
        ("_scaled_dot_product_flash_attention_for_cpu", _attention_flops),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _attention_backward_flops),
        ("_scaled_dot_product_attention_math", _attention_flops),
    ]:
        if hasattr(aten, name):
            mapping[getattr(aten, name).default] = fn
    return mapping


def count_flops(step: Callable[[], object]) -> int:
    """Total FLOPs of running ``step()`` once (forward and backward if it calls backward)."""
    with FlopCounterMode(display=False, custom_mapping=_custom_attention_formulas()) as counter:
        step()
    return int(counter.get_total_flops())


def _device_key(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}-{torch.get_num_threads()}threads"
    return f"{device.type}:{name}:{str(dtype).replace('torch.', '')}"


def measure_peak_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """Best matmul FLOP/s of ``repeats`` (size x size) @ (size x size) products in ``dtype``."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The cached peak for this device and dtype, measuring it the first time."""
    key = _device_key(device, dtype)
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    if key not in cache:
        cache[key] = measure_peak_flops(device, dtype)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=2))
        os.replace(tmp, CACHE)
    return float(cache[key])
