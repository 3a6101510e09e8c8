"""``umm embed`` and ``umm retrieve``: unit vectors and nearest neighbours from a trained embedding system."""

from __future__ import annotations

import argparse
from pathlib import Path

from umm import UmmError
from umm.pipelines.embed import MODALITIES


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _load(path: str):
    import umm.models  # noqa: F401  (registers every family)
    from umm.models.system import load_system

    model, system = load_system(path)
    if "embed" not in system.capabilities:
        raise UmmError(f"system {system.family!r} cannot embed; it can: {', '.join(system.capabilities)}")
    return model, system


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from umm.pipelines.embed import embed, load_inputs

    model, system = _load(args.model)
    inputs = load_inputs(system, args.modality, args.inputs)
    vectors = embed(model, system, args.modality, inputs)
    if args.out:
        np.save(args.out, vectors.numpy())
        print(f"wrote {tuple(vectors.shape)} unit vectors to {args.out}")
        return 0
    for label, vector in zip(inputs.labels, vectors):
        print(f"{label}\t" + " ".join(f"{x:.5f}" for x in vector.tolist()))
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from umm.pipelines.embed import load_inputs, retrieve

    model, system = _load(args.model)
    queries = load_inputs(system, args.query_modality, args.query)
    gallery = load_inputs(system, args.gallery_modality, args.gallery)
    scores, indices = retrieve(model, system, args.query_modality, queries, args.gallery_modality, gallery, args.k)
    for q, label in enumerate(queries.labels):
        print(f"query {label}")
        for rank, (score, index) in enumerate(zip(scores[q].tolist(), indices[q].tolist()), start=1):
            print(f"  {rank:2d}. {score:+.3f}  {gallery.labels[index]}")
    if args.out:
        if args.gallery_modality != "image":
            raise UmmError("--out writes a grid of retrieved images; the gallery modality must be image")
        from umm.data.grid import save_grid

        images = [gallery.raw[i] for row in indices.tolist() for i in row]
        save_grid(images, Path(args.out), nrow=indices.shape[1])
        print(f"wrote {args.out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "embed", help="inputs of one modality -> unit vectors", formatter_class=fmt,
        epilog=_examples('umm embed runs/imagebind_s/model --modality text "a red circle" "two stars"',
                         "umm embed runs/imagebind_s/model --modality image a.png b.png --out vectors.npy",
                         "umm embed runs/imagebind_s/model --modality audio shapes:test:50 --out audio.npy"),
    )
    p.add_argument("model", help="a trained system directory (runs/<name>/model)")
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("inputs", nargs="+", help="texts, files (image, wav/flac, .npy clip) or shapes:SPLIT:N")
    p.add_argument("--out", help="write a .npy (N, E) array instead of printing")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "retrieve", help="nearest gallery items of a query, across modalities", formatter_class=fmt,
        epilog=_examples(
            'umm retrieve runs/imagebind_s/model --query-modality text --query "a red circle" '
            "--gallery-modality image --gallery shapes:test:200",
            "umm retrieve runs/imagebind_s/model --query-modality audio --query clip.wav "
            "--gallery-modality text --gallery shapes:test:200 --k 3"),
    )
    p.add_argument("model")
    p.add_argument("--query-modality", required=True, choices=MODALITIES)
    p.add_argument("--query", required=True, nargs="+", help="texts, files or shapes:SPLIT:N")
    p.add_argument("--gallery-modality", required=True, choices=MODALITIES)
    p.add_argument("--gallery", required=True, nargs="+", help="texts, files or shapes:SPLIT:N")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--out", help="write the retrieved images as a PNG grid (image galleries)")
    p.set_defaults(func=cmd_retrieve)
