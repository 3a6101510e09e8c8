"""The ``umm`` command line: a thin layer over the library; every command has ``--help`` with examples.

Errors meant for the user (a bad config key, a missing file, an unknown model) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from umm import UmmError
from umm.config import ConfigError, positive_float, positive_int
from umm.recipes import RECIPES_DIR, recipe_names, resolve_recipe


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (plus where to find help), not a usage dump."""

    def error(self, message: str) -> None:
        self.exit(2, f"umm: error: {message} (see `{self.prog} --help`)\n")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


# ---- commands -------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from umm.api import fit
    from umm.training import distributed
    from umm.training.recipe import load_recipe

    run = load_recipe(resolve_recipe(args.recipe), args.overrides)
    try:
        result = fit(run, args.out, resume=args.resume, quiet=args.quiet)
    finally:
        distributed.cleanup()  # under torchrun: leave the process group before the process exits
    if result.stopped in ("signal", "stop_after"):
        print(f"umm: stopped at step {result.step} ({result.stopped}); checkpoint in {result.run_dir / 'checkpoints'}")
        return 0
    print(
        f"trained {run.run_name}: {result.step} steps, {result.samples_per_second:.1f} samples/s, "
        f"MFU {result.mfu:.1%}; model in {result.run_dir / 'model'}"
    )
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    import umm.models  # noqa: F401  (registers every family)
    from umm.registry import DATASETS, MODELS, SYSTEMS

    print("systems (family: tasks | capabilities):")
    for name in SYSTEMS.names():
        cls = SYSTEMS.get(name)
        print(f"  {name:12s} tasks: {', '.join(cls.tasks):28s} | {', '.join(cls.capabilities)}")
    print("models:")
    for name in MODELS.names():
        print(f"  {name}")
    print(f"recipes ({RECIPES_DIR}):")
    for name in recipe_names():
        print(f"  {name}")
    if len(DATASETS):
        print("datasets:", ", ".join(DATASETS.names()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from umm.serve import serve

    serve(args.model, port=args.port, host=args.host, device=args.device)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from umm.demo import run_demo

    recipe = resolve_recipe(args.recipe) if args.recipe else None
    run_demo(Path(args.out), minutes=args.minutes, show_progress=not args.quiet, level=args.level, recipe=recipe,
             overrides=args.overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="umm", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "train", help="train a recipe", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            "umm train transfusion_s                                   # umm/recipes/transfusion_s.yaml",
            "umm train my_recipe.yaml train.steps=50 model_args.dim=64       # a recipe file of your own",
            "umm train transfusion_s --out runs/tf --resume            # continue from the last checkpoint",
            "torchrun --nproc_per_node=2 -m umm.cli train transfusion_s  # DDP (gloo on CPU, nccl on GPU)",
        ),
    )
    p.add_argument("recipe", help="a YAML file, or the name of a shipped recipe (umm ls lists them)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100")
    p.add_argument("--out", help="run directory (default runs/<run name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ls", help="list registered systems, models, recipes and datasets",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_examples("umm ls"))
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "demo", help="train the default Transfusion on ShapesWorld and write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("umm demo                      # ~10 minutes on a 2-core CPU, writes runs/demo/",
                         "umm demo --minutes 60 --out runs/demo60",
                         "umm demo --level L2 --minutes 30 --out runs/demo_l2   # the next level up",
                         "umm demo model_args.unet_width=16 --out runs/demo_w16  # a design change, key=value"),
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides of the demo recipe, e.g. train.lr=2e-3")
    p.add_argument("--recipe", default=None, help="train this recipe instead of transfusion_demo (name or file)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=positive_float, default=10.0, help="training budget (wall clock; train.budget_clock=process counts CPU time)")
    p.add_argument("--level", default=None, help="ShapesWorld level L1..L4 (default: the demo recipe's); a bad "
                   "name is a config error naming the levels")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "serve", help="a web demo of a trained system (Gradio; pip install 'umm[demo]')",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("umm serve runs/demo/run/model              # http://127.0.0.1:7860",
                         "umm serve runs/imagebind_s/model --port 8080"),
    )
    p.add_argument("model", help="a trained system directory (runs/<name>/model)")
    p.add_argument("--port", type=positive_int, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1: this machine only)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_serve)

    from umm.commands.data import add_parser as add_data_parser

    add_data_parser(sub)
    from umm.commands.run import add_parsers as add_pipeline_parsers

    add_pipeline_parsers(sub)
    from umm.commands.embed import add_parsers as add_embed_parsers

    add_embed_parsers(sub)
    from umm.commands.bench import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # umm never downloads at run time
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `umm ls | head` ends quietly
    parser = build_parser()
    # key=value overrides are accepted anywhere (`umm train R --out X train.steps=5`): argparse leaves the ones
    # after an option unparsed, and they join the command's overrides; anything else stays an error
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args) or 0
    except (UmmError, ConfigError) as e:
        if os.environ.get("UMM_DEBUG"):
            raise
        print(f"umm: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"umm: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("umm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
