"""How well the judge reads degraded correct renders and rejects wrong ones, at every world level.

Writes a Markdown report (acceptance per degradation, false acceptance per wrong attribute, and the
per-attribute confusion tables of the judge's readings over all degradations):

    python benchmarks/judge_robustness.py --n 200 --out benchmarks/results/judge_robustness.md
    python benchmarks/judge_robustness.py --n 200 --canvas 32 --out benchmarks/results/judge_robustness_32.md

The degradations and their limits are ``umm.eval.judge.robustness.LIMITS``; the test
``tests/eval/test_judge_robustness.py`` holds the judge to >= 0.95 / <= 0.05 on a smaller sample.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from umm.data.shapes.levels import LEVELS
from umm.eval.diagnostics import confusion_table
from umm.eval.judge.robustness import DEGRADATIONS, HARSH, LIMITS, WRONG_ATTRIBUTES, robustness_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="scenes per level")
    ap.add_argument("--canvas", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/judge_robustness.md")
    args = ap.parse_args()
    start = time.perf_counter()
    reports = [robustness_report(level, args.n, args.canvas, args.seed) for level in LEVELS]
    kinds = DEGRADATIONS + HARSH
    lines = [
        f"# Judge robustness at {args.canvas} px ({args.n} test scenes per level)", "",
        f"Command: `python benchmarks/judge_robustness.py --n {args.n} --canvas {args.canvas}` "
        f"({time.perf_counter() - start:.0f} s).", "",
        "Limits: " + ", ".join(f"{k} {v:g}" for k, v in LIMITS.items()) + " (blur and noise: sigma; jitter: px; "
        "soft: edge gamma; dim: brightness factor; tint: +- per channel). A single degradation is applied at its "
        "limit; `combined` applies all at random severities up to them. The last three columns are harsher than "
        "what is required (half resolution + bilinear upsampling, 3x3 box blur, 4x4 patch averaging).", "",
        "## Correct renders accepted", "",
        "| level | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|",
    ]  # fmt: skip
    lines += [f"| {r.level} | " + " | ".join(f"{r.acceptance[k]:.3f}" for k in kinds) + " |" for r in reports]
    lines += ["", "## Wrong renders accepted (one attribute wrong; clean and combined-degraded)", "",
              "| level | " + " | ".join(WRONG_ATTRIBUTES) + " |", "|---" * (len(WRONG_ATTRIBUTES) + 1) + "|"]
    lines += [f"| {r.level} | " + " | ".join(f"{r.false_acceptance[a]:.3f}" for a in WRONG_ATTRIBUTES) + " |"
              for r in reports]  # fmt: skip
    lines += ["", "## Confusion of the judge's readings (true vs read, all required degradations, all levels)", ""]
    for attribute in ("shape", "colour", "size", "cell", "count"):
        total = Counter()
        for r in reports:
            total.update(r.confusion[attribute])
        right = sum(v for (a, b), v in total.items() if a == b)
        lines += [f"### {attribute} ({right / sum(total.values()):.4f} read right)", "", confusion_table(total), ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 12 + len(reports) * 2]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
