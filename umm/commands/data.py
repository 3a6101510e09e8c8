"""`umm data ...` subcommands: inspect a dataset, write ShapesWorld shards.

``umm data inspect PATH``: PATH is an image folder (captions.jsonl/csv), a tar shard, a folder of shards,
a glob or brace pattern of shards, or ``shapes:SPLIT`` (e.g. ``shapes:heldout``). Prints how many
records there are, a few samples, and after a full pass the number of bad records and why.

``umm data make-shapes OUT --n N``: writes N ShapesWorld samples to WebDataset shards in OUT.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from umm import UmmError
from umm.data.shapes.levels import DEFAULT_CANVAS, DEFAULT_LEVEL, LEVELS

EXAMPLES_INSPECT = """examples:
  umm data inspect shapes:train              # the built-in world (level L4, the full world)
  umm data inspect shapes:test --level L1    # one of its difficulty levels (L1 .. L4)
  umm data inspect my_photos/                # a folder with captions.jsonl or captions.csv
  umm data inspect 'shards/*.tar' --n 5      # WebDataset shards (a file, folder, glob or {a..b})
  umm data inspect my_photos/ --grid peek.png
"""
EXAMPLES_MAKE = """examples:
  umm data make-shapes data/shapes --n 10000
  umm data make-shapes data/heldout --n 2000 --split heldout --canvas 64
  umm data make-shapes data/l1 --n 5000 --level L1
  umm data make-shapes data/av --n 500 --modalities image,caption,qa,audio,video
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", help="inspect datasets and write ShapesWorld shards", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1], epilog=EXAMPLES_INSPECT + "\n" + EXAMPLES_MAKE,
    )  # fmt: skip
    data_sub = data.add_subparsers(dest="data_command", required=True)

    p = data_sub.add_parser(
        "inspect", help="count records, show samples, report bad records",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES_INSPECT,
    )  # fmt: skip
    p.add_argument("path", help="folder, shard(s), or shapes:SPLIT")
    p.add_argument("--n", type=int, default=3, help="samples to print (default 3)")
    p.add_argument("--canvas", type=int, default=DEFAULT_CANVAS,
                   help=f"image side after resize/crop (default {DEFAULT_CANVAS})")
    p.add_argument("--level", default=DEFAULT_LEVEL, choices=list(LEVELS),
                   help=f"ShapesWorld difficulty level (default {DEFAULT_LEVEL}, the full world)")
    p.add_argument("--limit", type=int, default=None, help="read at most this many records (default: all; shapes: 1000)")
    p.add_argument("--grid", help="also write a PNG grid of the first samples here")
    p.set_defaults(func=cmd_inspect)

    p = data_sub.add_parser(
        "make-shapes", help="write ShapesWorld samples to WebDataset tar shards",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES_MAKE,
    )  # fmt: skip
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--split", default="train", help="train | val | test | heldout (default train)")
    p.add_argument("--canvas", type=int, default=DEFAULT_CANVAS, help=f"image side, 16..128 (default {DEFAULT_CANVAS})")
    p.add_argument("--level", default=DEFAULT_LEVEL, choices=list(LEVELS),
                   help=f"ShapesWorld difficulty level (default {DEFAULT_LEVEL}, the full world)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--modalities", default="image,caption,qa", help="comma list of image,caption,qa,audio,video")
    p.add_argument("--frames", type=int, default=8, help="video frames, 8..16 (default 8)")
    p.add_argument("--caption-style", default="mixed", help="mixed | full (default mixed)")
    p.set_defaults(func=cmd_make_shapes)


def open_dataset(path: str, canvas: int = DEFAULT_CANVAS, level: str = DEFAULT_LEVEL):
    """The dataset a CLI path names: ``shapes:SPLIT`` (at ``level``), an image folder, or WebDataset shards."""
    from umm.data.folder import INDEX_FILES, FolderDataset
    from umm.data.webdataset import WebDatasetShards

    if path == "shapes" or path.startswith("shapes:"):
        from umm.data.shapes import SPLITS, ShapesWorld

        split = path.partition(":")[2] or "train"
        if split not in SPLITS:
            raise UmmError(f"unknown ShapesWorld split {split!r}; use shapes:{' | shapes:'.join(SPLITS)}")
        try:
            return ShapesWorld(split, canvas=canvas, level=level)
        except ValueError as error:
            raise UmmError(str(error)) from None
    folder = Path(path)
    if folder.is_dir() and any((folder / name).is_file() for name in INDEX_FILES):
        return FolderDataset(folder, canvas=canvas)
    if folder.is_dir() and not any(folder.glob("*.tar")):
        raise UmmError(f"{path!r} holds neither {' nor '.join(INDEX_FILES)} nor .tar shards")
    if not folder.exists() and not any(ch in path for ch in "*?[{"):
        raise UmmError(f"{path!r} does not exist")
    return WebDatasetShards(path, canvas=canvas)


def describe(sample: dict) -> str:
    """One line per sample: key, caption, image and audio shapes, other keys."""
    parts = [f"key={sample.get('key')}"]
    if "image" in sample:
        parts.append(f"image={tuple(sample['image'].shape)}")
    if "audio" in sample:
        parts.append(f"audio={sample['audio'].shape[0] / 16000:.2f}s")
    if "video" in sample:
        parts.append(f"video={tuple(sample['video'].shape)}")
    extra = sorted(set(sample) - {"key", "image", "audio", "video", "caption"})
    if extra:
        parts.append("+" + ",".join(extra))
    return "  " + " ".join(parts) + f"\n    caption: {sample.get('caption')!r}"


def cmd_inspect(args: argparse.Namespace) -> int:
    from umm.data.shapes import ShapesWorld

    if args.n < 0 or (args.limit is not None and args.limit < 1):
        raise UmmError("--n must be >= 0 and --limit >= 1")
    dataset = open_dataset(args.path, args.canvas, args.level)
    limit = args.limit if args.limit is not None else (1000 if isinstance(dataset, ShapesWorld) else None)
    print(f"{args.path}: {type(dataset).__name__}")
    if isinstance(dataset, ShapesWorld):
        level = dataset.level
        print(f"  level {level.name}: {level.description}; canvas {dataset.canvas} px")
        print(f"  held-out pairs: {', '.join(f'{c} {s}' for c, s in level.heldout_combinations)}")
    if hasattr(dataset, "__len__"):
        print(f"  records listed: {len(dataset)}")
    shown, seen, start = [], 0, time.perf_counter()
    for sample in dataset:
        if len(shown) < args.n:
            print(describe(sample))
        if len(shown) < max(args.n, 16):
            shown.append(sample)
        seen += 1
        if limit is not None and seen >= limit:
            break
    elapsed = time.perf_counter() - start
    print(f"  read {seen} samples in {elapsed:.2f}s" + (f" (stopped at --limit {limit})" if limit and seen >= limit else ""))
    if hasattr(dataset, "report"):
        print("  " + dataset.report())
        for example in dataset.stats()["examples"]:
            print(f"    bad: {example}")
    else:
        print("  0 bad records (generated)")
    if args.grid:
        from umm.data.grid import save_grid

        with_images = [s for s in shown if "image" in s]
        if not with_images:
            raise UmmError("no readable image to put in --grid")
        save_grid([s["image"] for s in with_images], args.grid, nrow=8, labels=[s.get("caption", "") for s in with_images])
        print(f"  wrote {args.grid}")
    return 0


def cmd_make_shapes(args: argparse.Namespace) -> int:
    from umm.data.shapes import ShapesWorld
    from umm.data.shapes.shards import write_shards

    if args.n < 1 or args.shard_size < 1:
        raise UmmError("--n and --shard-size must be >= 1")
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    try:
        world = ShapesWorld(
            args.split, canvas=args.canvas, seed=args.seed, size=args.n, modalities=modalities,
            frames=args.frames, caption_style=args.caption_style, level=args.level,
        )  # fmt: skip
    except ValueError as error:
        raise UmmError(str(error)) from None
    start = time.perf_counter()
    paths = write_shards(world, args.out, args.n, args.shard_size)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.n} {args.split} samples (level {args.level}; {','.join(modalities)}) to {len(paths)} shard(s) in {args.out} "
          f"in {elapsed:.1f}s")  # fmt: skip
    print(f"read them with: umm data inspect '{Path(args.out) / f'shapes-{args.split}-*.tar'}'")
    return 0
