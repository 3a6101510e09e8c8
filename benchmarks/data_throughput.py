"""ShapesWorld throughput on one process: images, captions (+QA), spoken captions, video clips, and
the judge reading images back. Run: ``python benchmarks/data_throughput.py [--canvas 32] [--seconds 2]``.

Each figure is items per second over about ``--seconds`` of work after a short warm-up (the warm-up
fills the cache of shape masks, which is what a long training run sees).
"""

from __future__ import annotations

import argparse
import time

import torch

from umm.data.shapes import ShapesWorld
from umm.eval.judge import parse_image, parse_video


def rate(fn, seconds: float, warmup: int = 50) -> float:
    """Calls of ``fn(i)`` per second."""
    for i in range(warmup):
        fn(i)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(warmup + done)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canvas", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core, as in the target (> 2,000 images/s)

    def world(*modalities: str, **kw) -> ShapesWorld:
        return ShapesWorld("train", canvas=args.canvas, modalities=modalities, **kw)

    images = world("image")
    captions = world("caption")
    default = world("image", "caption", "qa")
    audio = world("caption", "audio")
    video = world("video")
    clips = [video[i]["video"] for i in range(20)]
    pictures = [images[i]["image"] for i in range(200)]
    rows = [
        ("images/s (image only)", rate(lambda i: images[i], args.seconds)),
        ("captions/s (caption only)", rate(lambda i: captions[i], args.seconds)),
        ("samples/s (image+caption+qa, default)", rate(lambda i: default[i], args.seconds)),
        ("audio clips/s (caption spoken, 16 kHz)", rate(lambda i: audio[i], args.seconds, warmup=3)),
        ("video clips/s (8 frames)", rate(lambda i: video[i], args.seconds)),
        ("judge images/s (parse_image)", rate(lambda i: parse_image(pictures[i % 200]), args.seconds)),
        ("judge clips/s (parse_video, 8 frames)", rate(lambda i: parse_video(clips[i % 20]), args.seconds, warmup=2)),
    ]
    print(f"ShapesWorld throughput, canvas {args.canvas}, one thread")
    for name, value in rows:
        print(f"  {name:<42} {value:>10,.0f}")


if __name__ == "__main__":
    main()
