"""The survey's comparison tables, re-stated as claims and checked against the bench's measurements.

Each claim compares two groups of systems on one measured quantity. The verdict is *supported* when the
difference favours the claim by more than two standard errors, *not supported* when it goes the other way
by as much, and *mixed* otherwise (including when both groups score ~0, which at a few CPU minutes is
common: then the claim is untested at this scale, and the verdict says so). Every verdict carries its
figure, so a reader can disagree with the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

AR_DISCRETE = ("chameleon", "emu3", "lwm", "vila_u", "lavit")
AR_CONTINUOUS = ("mmar",)
AR_DIFFUSION = ("showo", "transfusion", "monoformer")
CONTINUOUS = ("mmar", "transfusion", "monoformer")
DISCRETE = ("chameleon", "emu3", "lwm", "vila_u", "lavit", "showo")
SINGLE = AR_DISCRETE + AR_CONTINUOUS + AR_DIFFUSION
MULTI_EXPERT_EMBED = ("imagebind", "unibind")


@dataclass
class Claim:
    statement: str  # the survey's words
    measure: str  # what umm measured to test it
    verdict: str  # supported | not supported | mixed
    evidence: str  # the numbers
    details: dict[str, Any] = field(default_factory=dict)


def _ok(rows: list[dict]) -> dict[str, dict]:
    """Rows with measurements: trained and evaluated here, or reused (trained before) and evaluated here."""
    return {r["system"]: r for r in rows if r.get("status") in ("ok", "reused")}


def _metric(row: dict, key: str) -> float | None:
    value = row.get("metrics", {}).get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _group(rows: dict[str, dict], systems: tuple[str, ...], key: str) -> dict[str, float]:
    return {s: v for s in systems if s in rows and (v := _metric(rows[s], key)) is not None}


def _verdict(diff: float, se: float, floor: float = 0.02) -> str:
    if abs(diff) <= max(2 * se, floor):
        return "mixed"
    return "supported" if diff > 0 else "not supported"


def _proportion_se(a: dict[str, float], b: dict[str, float], n: int) -> float:
    """Standard error of the difference of two group means of accuracies, each over ``n`` items per system."""
    def var(group: dict[str, float]) -> float:
        return sum(p * (1 - p) / max(n, 1) for p in group.values()) / max(len(group), 1) ** 2

    return math.sqrt(var(a) + var(b))


def _mean(group: dict[str, float]) -> float:
    return sum(group.values()) / len(group) if group else float("nan")


def _fmt(group: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in group.items()) or "none measured"


def compare_accuracy(rows: list[dict], statement: str, measure: str, favoured: tuple[str, ...], other: tuple[str, ...],
                     key: str, n: int) -> Claim:
    ok = _ok(rows)
    a, b = _group(ok, favoured, key), _group(ok, other, key)
    if not a or not b:
        return Claim(statement, measure, "mixed", f"not enough systems measured ({_fmt(a)} | {_fmt(b)})")
    diff = _mean(a) - _mean(b)
    verdict = _verdict(diff, _proportion_se(a, b, n))
    note = " Both groups score near zero: untested at this budget." if max(_mean(a), _mean(b)) < 0.05 else ""
    evidence = f"{_mean(a):.3f} ({_fmt(a)}) vs {_mean(b):.3f} ({_fmt(b)}); difference {diff:+.3f}.{note}"
    return Claim(statement, measure, verdict, evidence, {"favoured": a, "other": b})


def faster_inference(latency: list[dict]) -> Claim:
    """Diffusion/MaskGIT (parallel) vs AR (token by token, with KV cache) latency at each image size."""
    statement = "Diffusion inference is faster than autoregressive inference (parallel denoising in few steps)."
    measure = "ms per image vs tokens per image (16², 32², 64²), equal width/depth, batch of images, this CPU"
    if not latency:
        return Claim(statement, measure, "mixed", "latency not measured")
    by_size: dict[int, dict[str, float]] = {}
    for r in latency:
        by_size.setdefault(r["tokens"], {})[r["method"]] = r["ms_per_image"]
    wins, parts = 0, []
    for tokens, methods in sorted(by_size.items()):
        ar = methods.get("ar_cached")
        parallel = min((v for k, v in methods.items() if k in ("diffusion", "maskgit")), default=None)
        if ar is None or parallel is None:
            continue
        wins += parallel < ar
        parts.append(f"{tokens} tokens: AR {ar:.0f} ms vs parallel {parallel:.0f} ms")
    total = len(parts)
    verdict = "supported" if total and wins == total else "not supported" if total and wins == 0 else "mixed"
    return Claim(statement, measure, verdict, "; ".join(parts) or "no comparable sizes", {"latency": latency})


def trains_efficiently(rows: list[dict]) -> Claim:
    statement = "Autoregressive models train more efficiently than AR+diffusion (simpler objective, less compute)."
    measure = "training samples/s at equal budget and comparable width/depth"
    ok = _ok(rows)
    a = {s: ok[s]["samples_per_second"] for s in AR_DISCRETE + AR_CONTINUOUS if s in ok}
    b = {s: ok[s]["samples_per_second"] for s in AR_DIFFUSION if s in ok}
    if not a or not b:
        return Claim(statement, measure, "mixed", f"not enough systems measured ({_fmt(a)} | {_fmt(b)})")
    ratio = _mean(a) / _mean(b)
    verdict = "supported" if ratio > 1.2 else "not supported" if ratio < 1 / 1.2 else "mixed"
    return Claim(statement, measure, verdict, f"AR {_mean(a):.1f} samples/s ({_fmt(a)}) vs AR+diffusion "
                 f"{_mean(b):.1f} ({_fmt(b)}): {ratio:.2f}x", {"ar": a, "ar_diffusion": b})


def continuous_no_quantisation(rows: list[dict]) -> Claim:
    statement = "Continuous tokens avoid the quantisation error of a codebook."
    measure = "tokenizer reconstruction MSE on held-out images (and bits per image); the KL-VAE has no codebook"
    ok = _ok(rows)
    recon = {s: (_metric(r, "recon/mse"), r.get("metrics", {}).get("recon/bits_per_image"))
             for s, r in ok.items() if _metric(r, "recon/mse") is not None}
    vae = recon.pop("vae", (None, None))[0]
    if vae is None or not recon:
        return Claim(statement, measure, "mixed", "VAE or discrete tokenizers not measured", {"reconstruction": recon})
    better = [s for s, (mse, _) in recon.items() if vae < mse]
    parts = ", ".join(f"{s} {mse:.4f}" for s, (mse, _) in recon.items())
    verdict = "supported" if len(better) == len(recon) else "not supported" if not better else "mixed"
    return Claim(statement, measure, verdict, f"VAE {vae:.4f} vs {parts}", {"reconstruction": recon, "vae": vae})


def multi_expert_per_modality(rows: list[dict]) -> Claim:
    statement = "Multi-expert models are optimised per modality (better single-modality understanding)."
    measure = "colour recognition: multi-expert zero-shot image colour accuracy vs single models' colour QA accuracy"
    ok = _ok(rows)
    a = _group(ok, MULTI_EXPERT_EMBED, "zeroshot/image/colour/mean_centre")
    b = _group(ok, SINGLE, "qa/colour")
    if not a or not b:
        return Claim(statement, measure, "mixed", f"not enough systems measured ({_fmt(a)} | {_fmt(b)})")
    diff = _mean(a) - _mean(b)
    return Claim(statement, measure, _verdict(diff, _proportion_se(a, b, 60)),
                 f"{_mean(a):.3f} ({_fmt(a)}) vs {_mean(b):.3f} ({_fmt(b)}); difference {diff:+.3f}", {"multi": a, "single": b})


def evaluate_claims(rows: list[dict], latency: list[dict], n_prompts: int) -> list[Claim]:
    return [
        compare_accuracy(rows, "AR+diffusion gives higher image fidelity than pure AR.",
                         "GenEval-like overall on held-out prompts (judge-scored), equal training budget",
                         AR_DIFFUSION, AR_DISCRETE + AR_CONTINUOUS, "geneval/overall", n_prompts),
        faster_inference(latency),
        trains_efficiently(rows),
        continuous_no_quantisation(rows),
        compare_accuracy(rows, "Continuous representations generate better than discrete ones.",
                         "GenEval-like overall: continuous (Transfusion, MonoFormer, MMAR) vs discrete systems",
                         CONTINUOUS, DISCRETE, "geneval/overall", n_prompts),
        multi_expert_per_modality(rows),
    ]
