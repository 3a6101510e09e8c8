"""The judge's image and video parsers against ShapesWorld ground truth."""

from collections import deque

import numpy as np
import pytest
import torch

from umm.data.shapes import ShapesWorld
from umm.data.shapes.render import render_scene
from umm.eval.judge import parse_image, parse_video, scene_key, video_direction_accuracy
from umm.eval.judge.image import label_components


def gaussian_blur(image: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """3x3 Gaussian blur of (3, H, W) with replicated borders."""
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * sigma**2))
    taps = taps / taps.sum()
    kernel = (taps[:, None] * taps[None, :]).expand(3, 1, 3, 3).contiguous()
    padded = torch.nn.functional.pad(image[None], (1, 1, 1, 1), mode="replicate")
    return torch.nn.functional.conv2d(padded, kernel, groups=3)[0]


def judge_accuracy(world: ShapesWorld, n: int, corrupt=None) -> tuple[float, list]:
    hits, misses = 0, []
    for i in range(n):
        sample = world[i]
        image = sample["image"] if corrupt is None else corrupt(sample["image"])
        found = scene_key(parse_image(image))
        truth = scene_key(sample["scene"])
        hits += found == truth
        if found != truth and len(misses) < 3:
            misses.append((i, truth, found))
    return hits / n, misses


def test_judge_is_exact_on_2000_clean_renders_of_every_split():
    for split in ("train", "val", "test", "heldout"):
        accuracy, misses = judge_accuracy(ShapesWorld(split, modalities=("image",)), 2000)
        assert accuracy == 1.0, (split, misses)


def test_judge_is_robust_to_noise_and_blur():
    generator = torch.Generator().manual_seed(0)

    def noisy(image):
        return (image + 0.05 * torch.randn(image.shape, generator=generator)).clamp(0, 1)

    def blurred_noisy(image):
        return noisy(gaussian_blur(image, 0.5))

    for split in ("train", "heldout"):
        world = ShapesWorld(split, seed=1, modalities=("image",))
        for corrupt in (noisy, gaussian_blur, blurred_noisy):
            accuracy, misses = judge_accuracy(world, 500, corrupt)
            assert accuracy >= 0.98, (split, corrupt.__name__, accuracy, misses)


@pytest.mark.parametrize("canvas", [64, 128])
def test_judge_is_exact_on_larger_canvases(canvas):
    accuracy, misses = judge_accuracy(ShapesWorld("test", canvas=canvas, modalities=("image",)), 100)
    assert accuracy == 1.0, misses


def test_judge_reads_uint8_hwc_images_and_empty_images():
    sample = ShapesWorld("val")[7]
    as_uint8 = (sample["image"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert scene_key(parse_image(as_uint8)) == scene_key(sample["scene"])
    assert parse_image(torch.zeros(3, 32, 32)) == []
    # faint smudges and single noisy pixels are not objects
    smudge = torch.zeros(3, 32, 32)
    smudge[:, 10:14, 10:14] = 0.3
    smudge[0, 25, 25] = 1.0
    assert parse_image(smudge) == []


def _reference_labels(mask: np.ndarray) -> int:
    seen = np.zeros_like(mask)
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        queue = deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return count


def test_connected_components_match_a_flood_fill():
    rng = np.random.default_rng(0)
    for density in (0.2, 0.4, 0.6):
        for _ in range(20):
            mask = rng.random((24, 31)) < density
            labels, n = label_components(mask)
            assert n == _reference_labels(mask)
            assert set(np.unique(labels[mask])) == set(range(1, n + 1)) and (labels[~mask] == 0).all()
            # pixels of one component share one label: 8-neighbours in the mask have equal labels
            assert (labels[:, 1:] == labels[:, :-1])[mask[:, 1:] & mask[:, :-1]].all()
            assert (labels[1:, 1:] == labels[:-1, :-1])[mask[1:, 1:] & mask[:-1, :-1]].all()
    spiral = np.zeros((21, 21), bool)  # a long thin component needs many propagation steps
    spiral[1, 1:20] = spiral[1:20, 19] = spiral[19, 1:20] = spiral[3:20, 1] = spiral[3, 1:18] = True
    assert label_components(spiral)[1] == 1


def test_judge_counts_identical_objects_separately():
    scene = [dict(shape="star", colour="green", size="large", row=r, col=c) for r, c in ((0, 0), (0, 1), (2, 2))]
    found = parse_image(render_scene(scene, 32))
    assert [(o.shape, o.colour, o.row, o.col) for o in found] == [("star", "green", 0, 0), ("star", "green", 0, 1), ("star", "green", 2, 2)]


def test_video_judge_recovers_every_track_and_direction():
    for split, frames, n in (("train", 8, 100), ("heldout", 16, 40)):
        world = ShapesWorld(split, modalities=("video",), frames=frames)
        samples = [world[i] for i in range(n)]
        for s in samples:
            got = sorted((t.colour, t.shape, t.size, t.direction) for t in parse_video(s["video"]))
            want = sorted((m["colour"], m["shape"], m["size"], m["direction"]) for m in s["motion"])
            assert got == want
        assert video_direction_accuracy([s["video"] for s in samples], [s["motion"] for s in samples]) == 1.0


def test_video_judge_sees_a_still_or_reversed_clip():
    s = ShapesWorld("test", modalities=("video",))[4]
    still = s["video"][:1].repeat(8, 1, 1, 1)
    assert all(t.direction == "still" for t in parse_video(still))
    reverse = {"left": "right", "right": "left", "up": "down", "down": "up"}
    backwards = parse_video(s["video"].flip(0))
    assert sorted(t.direction for t in backwards) == sorted(reverse[m["direction"]] for m in s["motion"])


def test_touching_objects_of_different_colours_are_split():
    # generated images may let objects touch; ShapesWorld never does, so build one by hand
    from umm.data.shapes.render import coverage
    from umm.data.shapes.vocab import COLOURS

    image = np.zeros((3, 32, 32), np.float32)
    for shape, colour, cx in (("square", "red", 10.0), ("circle", "blue", 18.2)):
        mask = coverage(shape, 4.27, cx, 16.0, 0, 0, 32, 32)
        image = np.maximum(image, np.asarray(COLOURS[colour])[:, None, None] * mask)
    found = parse_image(image)
    assert [(o.shape, o.colour, o.row, o.col) for o in found] == [("square", "red", 1, 0), ("circle", "blue", 1, 1)]
