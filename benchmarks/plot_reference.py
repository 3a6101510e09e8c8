"""Plot the reference calibration curves: GenEval-like (test and held-out) vs training CPU-minutes, per level,
and print them as a Markdown table (with what the judge read: shape, colour, cell, count on the test split).

    python benchmarks/plot_reference.py benchmarks/results/reference/ladder_L*.jsonl --out docs/reference_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scores", nargs="+", help="scores.jsonl files written by reference_t2i.py")
    ap.add_argument("--out", default="docs/reference_curve.png")
    ap.add_argument("--cfg", type=float, default=1.5,
                    help="plot the records sampled at this guidance scale (records without one used 3)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    table = ["| level | minutes | steps | test | held-out | shape read | colour read | cell read | count read |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in args.scores:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "minutes" in r and r.get("cfg", 3.0) == args.cfg]
        if not rows:
            continue
        for r in rows:
            reads = " | ".join(f"{r.get(f'test/read_{k}', float('nan')):.2f}" for k in ("shape", "colour", "cell", "count"))
            table.append(f"| {r['level']} | {r['minutes']:g} | {r.get('steps', '–')} | {r['test']:.3f} | {r['heldout']:.3f} | {reads} |")
        minutes = [r["minutes"] for r in rows]
        name = f"{rows[0]['level']} {Path(path).stem}"
        line = ax.plot(minutes, [r["test"] for r in rows], marker="o", label=f"{name} test")[0]
        ax.plot(minutes, [r["heldout"] for r in rows], marker="x", ls="--", color=line.get_color(),
                label=f"{name} held-out")  # fmt: skip
    ax.axhline(0.8, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training CPU-minutes (one thread)")
    ax.set_ylabel("GenEval-like")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"reference text-to-image model, ShapesWorld levels (CFG {args.cfg:g})", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print("\n".join(table))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
