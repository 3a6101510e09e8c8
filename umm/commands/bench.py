"""``umm bench``: train every system for the same budget, judge them all, write the report."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

from umm import UmmError
from umm.config import positive_float, positive_int
from umm.data.shapes.levels import LEVELS
from umm.data.shapes.vocab import SPLITS


def _cpu_name() -> str:
    """The CPU model (Linux), else the architecture: the report says what machine its timings are from."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def publish(out: Path, target: Path, rows: list[dict]) -> Path:
    """Copy the report (Markdown, HTML, figures, each system's sample grid) to ``target``, e.g. docs/bench."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html", "results.json", *(p.name for p in out.glob("*.png"))):
        shutil.copy2(out / name, target / name)
    for row in rows:
        grid = out / row["system"] / "samples.png"
        if grid.is_file():
            (target / row["system"]).mkdir(exist_ok=True)
            shutil.copy2(grid, target / row["system"] / "samples.png")
    return target / "report.md"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a snapshot is a fraction of the budget in (0, 1), got {text}")
    return value


def cmd_bench(args: argparse.Namespace) -> int:
    import time

    import torch

    import umm.models  # noqa: F401  (registers every family)
    from umm.bench.claims import evaluate_claims
    from umm.bench.plan import CLAIM_RUNS, default_systems, plan
    from umm.bench.report import readme_markers, readme_table, update_readme, write_report
    from umm.bench.runner import BenchConfig, latency_job, run_all
    from umm.recipes import RECIPES_DIR
    from umm.registry import SYSTEMS

    registered = SYSTEMS.names()
    systems = args.systems.split(",") if args.systems else default_systems(registered, RECIPES_DIR, args.level)
    unknown = [s for s in systems if s not in registered and s not in CLAIM_RUNS]
    if unknown:
        raise UmmError(f"unknown system(s) {', '.join(unknown)}; registered: {', '.join(registered)}; "
                       f"claim runs: {', '.join(CLAIM_RUNS)}")
    if args.quick_steps and args.jobs == 1 and "--jobs" not in sys.argv:
        args.jobs = 2  # the quick bench runs two at a time, as the full one does on this project's 2-core machine
    config = BenchConfig(Path(args.out), args.budget_minutes, args.quick_steps, args.n_prompts, args.n_images,
                         args.eval_steps, args.split, args.threads,
                         Path(args.reuse_from) if args.reuse_from else None, args.level, tuple(args.snapshots))
    config.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()  # the report's wall time of this invocation (a resumed bench: of the resume)
    entries = plan(systems, RECIPES_DIR, quick=args.quick_steps > 0, level=args.level)
    latency_path = config.out / "latency.json"
    side = ()
    if args.latency and latency_path.is_file():
        print(f"sampling latency: measured before, reusing {latency_path}", flush=True)
    elif args.latency:  # in the pool, on a free core beside a row (the same thread count the systems train with)
        side = (latency_job(config),)
    rows = run_all(entries, config, args.jobs, side)
    latency: list[dict] = json.loads(latency_path.read_text()) if args.latency and latency_path.is_file() else []
    budget = f"{args.quick_steps} steps (quick)" if args.quick_steps else f"{args.budget_minutes:g} min"
    threads = args.threads or torch.get_num_threads()
    machine = f"{_cpu_name()}, {threads} thread(s) per system" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU")
    meta = {"command": "umm bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]), "budget": budget,
            "level": args.level or "each recipe's own", "jobs": args.jobs, "snapshots": list(args.snapshots),
            "split": args.split, "n_prompts": args.n_prompts, "n_images": args.n_images, "machine": machine,
            "out": str(config.out), "report": str(config.out / "report.md"),
            "wall_minutes": (time.perf_counter() - began) / 60}
    # a resumed bench adds to the invocations before it in this directory: the bench's own minutes, all told
    earlier = config.out / "results.json"
    if earlier.is_file():
        before = json.loads(earlier.read_text()).get("meta", {})
        meta["invocations"] = before.get("invocations", 1) + 1
        meta["total_wall_minutes"] = before.get("total_wall_minutes", before.get("wall_minutes", 0.0)) + meta["wall_minutes"]
    claims = evaluate_claims(rows, latency, args.n_prompts, args.n_images)
    md, page = write_report(config.out, rows, claims, latency, meta)
    print(f"bench report: {md} and {page}")
    for c in claims:
        print(f"  [{c.verdict}] {c.statement}")
    if args.publish:
        meta["report"] = str(publish(config.out, Path(args.publish), rows))
        print(f"published the report to {args.publish}")
    if args.update_readme:
        readme = Path(__file__).resolve().parents[2] / "README.md"
        if not update_readme(readme, readme_table(rows, meta), args.level):
            start, _ = readme_markers(args.level)
            raise UmmError(f"{readme} has no bench-table markers for this level ({start}) to replace")
        print(f"updated the systems table in {readme}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="train every system for the same budget, judge them all, write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  umm bench --budget-minutes 5                          # every registered system, runs/bench/\n"
               "  umm bench --budget-minutes 5 --systems transfusion,chameleon,showo\n"
               "  umm bench --quick --out /tmp/b                        # tiny recipes, a smoke run (<= 15 min)\n"
               "  umm bench --budget-minutes 5 --update-readme          # also regenerate README's systems table\n"
               "  umm bench --budget-minutes 5 --publish docs/bench --update-readme   # commit-ready report\n"
               "  umm bench --budget-minutes 5 --reuse-from runs        # tokenizers trained before, systems here\n"
               "  umm bench --level L1 --budget-minutes 10 --jobs 2 --reuse-from runs   # the bench level, two at a time\n"
               "re-running the same command resumes: finished systems are not retrained.",
    )
    p.add_argument("--budget-minutes", type=positive_float, default=5.0, help="training CPU-minutes of each survey system; tokenizers, decoders and claim runs train as "
                        "their recipe says, capped at this")
    p.add_argument("--systems", help="comma-separated families (default: every registered one)")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--quick-steps", type=int, default=0, help="> 0: tiny test recipes for this many steps")
    p.add_argument("--quick", dest="quick_steps", action="store_const", const=3,
                   help="the smoke bench the slow tests run: every system's tiny test recipe for 3 steps, two at a time")
    p.add_argument("--n-prompts", type=positive_int, default=60)
    p.add_argument("--n-images", type=positive_int, default=60)
    p.add_argument("--eval-steps", type=positive_int, default=None,
                   help="diffusion / MaskGIT steps at evaluation (default: each recipe's eval_args, else 25)")
    p.add_argument("--level", choices=sorted(LEVELS), default=None,
                   help="bench level: train each family's <family>_<level> recipe (umm/recipes/chameleon_l1.yaml, ...); "
                        "families without one are reported, not trained (default: the survey-size <family>_s recipes)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="systems trained side by side, each pinned to its own core (budgets are CPU time)")
    p.add_argument("--snapshots", type=_fraction, nargs="*", default=[0.25, 0.5],
                   help="fractions of the budget at which each system is also scored (its time-to-quality curve)")
    p.add_argument("--split", default="heldout", choices=SPLITS)
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of each training process (0: inherit)")
    p.add_argument("--reuse-from", metavar="DIR",
                   help="take tokenizers/decoders already trained in DIR/<recipe>/model (e.g. runs) instead of "
                        "training them under the budget; the survey's systems are always trained")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the sampling-latency sweep")
    p.add_argument("--publish", metavar="DIR", help="also copy the report, figures and sample grids to DIR "
                                                     "(e.g. docs/bench); the README table then links there")
    p.add_argument("--update-readme", action="store_true", help="regenerate README's systems table from this report")
    p.set_defaults(func=cmd_bench)
