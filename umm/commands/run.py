"""``umm sample | caption | answer | eval``: run a trained system (a ``runs/<name>/model`` directory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from umm import UmmError
from umm.config import positive_int
from umm.data.shapes.levels import LEVELS
from umm.data.shapes.vocab import SPLITS
from umm.pipelines.diffusion_lm import SAMPLERS


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _load(path: str):
    import umm.models  # noqa: F401  (registers every family)
    from umm.models.system import load_system

    model, system = load_system(path)
    return model, system


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from umm.api import load
    from umm.data.grid import save_grid

    pipe = load(args.model)
    images = pipe.generate(args.prompt, n=args.n, seed=args.seed, steps=args.steps, cfg=args.cfg, sampler=args.sampler,
                           output="tensor")  # fmt: skip
    out = Path(args.out)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    save_grid(torch.stack(images), out, nrow=args.n, labels=[p if i % args.n == 0 else "" for i, p in enumerate(prompts)])
    print(f"wrote {len(images)} images to {out}")
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from umm.api import load

    pipe = load(args.model)
    for path, text in zip(args.images, pipe.caption(args.images)):
        print(f"{path}\t{text}")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from umm.api import load

    print(load(args.model).answer(args.image, args.question)[0])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from umm.data.shapes.levels import LEVELS
    from umm.eval.harness import EVAL_SAMPLING_KEYS, EvalConfig, evaluate, training_level, training_sampling

    model, system = _load(args.model)
    level = args.level or training_level(args.model)
    if level not in LEVELS:
        raise UmmError(f"unknown ShapesWorld level {level!r}; choose one of {list(LEVELS)}")
    given = {"steps": args.steps, "cfg_scale": args.cfg, "sampler": args.sampler, "cfg_interval": args.cfg_interval,
             "video_cfg_scale": args.video_cfg}
    given = {k: v for k, v in given.items() if v is not None}
    config = EvalConfig(split=args.split, n_prompts=args.n_prompts, n_images=args.n_images, seed=args.seed, level=level,
                        diagnostics=not args.no_diagnostics, fidelity=not args.no_fidelity,
                        test_split=not args.no_test_split, **{**training_sampling(args.model, EVAL_SAMPLING_KEYS), **given})
    print(f"level {level}, split {args.split}, precision {config.precision}, {config.steps} steps, CFG {config.cfg_scale:g}"
          + (f", clips CFG {config.video_cfg_scale:g}" if config.video_cfg_scale is not None else "")
          + (f", sampler {config.sampler}" if config.sampler else "")
          + (f", guided for t in {list(config.cfg_interval)}" if config.cfg_interval else ""))
    result = evaluate(model, system, config)
    for key, value in result.metrics.items():
        print(f"{key:32s} {value:.4f}")
    if result.confusion:
        from umm.eval.diagnostics import confusion_table

        for attribute, table in result.confusion.items():
            print(f"\nprompt adherence, {attribute} (asked vs what the judge reads):\n{confusion_table(table)}")
    if args.out:
        record = {**result.metrics, **{f"seconds/{k}": v for k, v in result.seconds.items()}, "level": level,
                  "confusion": {k: [[a, b, n] for (a, b), n in t.items()] for k, t in result.confusion.items()}}
        Path(args.out).write_text(json.dumps(record, indent=2))
        print(f"wrote {args.out}")
    if args.samples and result.images is not None:
        from umm.data.grid import save_grid

        labels = [("ok " if hit else "x ") + p for p, hit in zip(result.prompts, result.prompt_hits)]
        save_grid(result.images[:48], args.samples, nrow=8, labels=labels[:48])
        print(f"wrote {args.samples}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("sample", help="text -> image with a trained system", formatter_class=fmt,
                       epilog=_examples('umm sample runs/demo/model --prompt "a red circle above a blue square"',
                                        'umm sample runs/demo/model --prompt "two stars" --n 8 --steps 50 --cfg 4'))
    p.add_argument("model", help="a trained system directory (runs/<name>/model)")
    p.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    p.add_argument("--n", type=positive_int, default=4, help="images per prompt")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="diffusion / MaskGIT steps (default: the recipe's eval_args.steps, else the system's own)")
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance scale, 1 = none (default: the recipe's, else the system's own)")
    p.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="diffusion sampler (default: the recipe's eval_args.sampler, else the path's natural one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.png")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("caption", help="image -> caption with a trained system", formatter_class=fmt,
                       epilog=_examples("umm caption runs/demo/model photo1.png photo2.png"))
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("answer", help="answer a question about an image", formatter_class=fmt,
                       epilog=_examples('umm answer runs/demo/model scene.png "how many shapes are there?"'))
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("question")
    p.set_defaults(func=cmd_answer)

    p = sub.add_parser("eval", help="score a trained system with the ShapesWorld judge", formatter_class=fmt,
                       epilog=_examples("umm eval runs/demo/model", "umm eval runs/demo/model --split test --n-prompts 240 --out scores.json"))
    p.add_argument("model")
    p.add_argument("--split", default="heldout", choices=SPLITS, help="train | val | test | heldout (default: heldout)")
    p.add_argument("--n-prompts", type=positive_int, default=120)
    p.add_argument("--n-images", type=positive_int, default=100)
    p.add_argument("--steps", type=positive_int, default=None, help="default: the recipe's eval_args.steps, else 25")
    p.add_argument("--cfg", type=float, default=None, help="default: the recipe's eval_args.cfg_scale, else 3")
    p.add_argument("--video-cfg", type=float, default=None,
                   help="guidance of generated clips (default: the recipe's eval_args.video_cfg_scale, else --cfg)")
    p.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="diffusion sampler (default: the recipe's eval_args.sampler, else the path's natural one)")
    p.add_argument("--cfg-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="guide only the diffusion steps with time t in [LO, HI] (default: eval_args.cfg_interval, else all)")
    p.add_argument("--seed", type=int, default=1234,
                   help="seed of the prompts and images (1234; choose sampler settings on another, e.g. 99)")
    p.add_argument("--level", default=None, choices=list(LEVELS), help="ShapesWorld level (default: the one the model trained at)")
    p.add_argument("--no-fidelity", action="store_true", help="skip FID / KID against real scenes (faster)")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="skip prompt adherence, tokenizer ceiling and denoise check (faster)")
    p.add_argument("--no-test-split", action="store_true",
                   help="score --split only, not the test split beside it (faster; the bench's curve points)")
    p.add_argument("--out", help="write the metrics (and seconds per generated item) as JSON")
    p.add_argument("--samples", help="write a PNG grid of the generated images, marked by the judge")
    p.set_defaults(func=cmd_eval)
