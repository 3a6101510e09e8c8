"""Fidelity beside correctness: Fréchet distance (FID) and kernel distance (KID) between generated and real
ShapesWorld images, on features of an image encoder that umm trains itself.

The judge says whether an image shows what its prompt asks (correctness); it does not say whether the
images look like the world's (blur, speckle, smeared edges, wrong textures pass it). The survey's "AR+diffusion
gives higher fidelity" is a claim about the latter, measured in the field by FID on Inception features
(Heusel et al. 2017) and KID (Bińkowski et al. 2018). Inception's ImageNet weights would have to be
downloaded, and they know nothing of ShapesWorld, so umm ships its own feature net, as FID on other domains
does (e.g. FID on MNIST with a LeNet):

``ShapesFeatures``: three conv stages (BatchNorm + ReLU, as in Inception; 48 -> 24 -> 12 -> 6 px), global max + average pooling and
a 128-d feature layer, trained on ShapesWorld images of every level to predict which colours, shapes,
sizes and cells the scene holds and how many objects it has (factorised targets, so the held-out colour-shape
pairs are described by features the net did learn). Its weights are package data
(``umm/eval/assets/shapes_features.safetensors``), written by::

    python -m umm.eval.fidelity --steps 3000 --out umm/eval/assets/shapes_features.safetensors

The distances come from torchmetrics (``FrechetInceptionDistance`` / ``KernelInceptionDistance`` with this
net as the custom feature extractor). Both need the same number of real and generated images to compare
across systems: ``umm eval`` uses the first ``n_images`` scenes of the eval split and generates one image
from each scene's caption.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from umm import UmmError
from umm.data.shapes.vocab import COLOUR_NAMES, SHAPES, SIZES

ASSET = Path(__file__).resolve().parent / "assets" / "shapes_features.safetensors"
CANVAS = 48  # the net reads every image at this size (smaller canvases are upsampled)
GRID = 3  # ShapesWorld's 3x3 cells
# target layout: colour presence (8), shape presence (6), size presence (2), cell occupancy (9), count (3)
N_COLOURS, N_SHAPES, N_SIZES, N_CELLS, N_COUNTS = len(COLOUR_NAMES), len(SHAPES), len(SIZES), GRID * GRID, 3
N_PRESENCE = N_COLOURS + N_SHAPES + N_SIZES + N_CELLS


class ShapesFeatures(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> features (B, 128); ``heads`` predicts the scene's attributes."""

    num_features = 128  # torchmetrics reads this instead of probing with a dummy image

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers, cin = [], 3
        for w in widths:  # every stage halves the canvas: 48 -> 24 -> 12 -> 6
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]  # fmt: skip
            cin = w
        self.cnn = nn.Sequential(*layers)
        self.feature = nn.Linear(2 * cin, self.num_features)
        self.heads = nn.Linear(self.num_features, N_PRESENCE + N_COUNTS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-1] != CANVAS:
            x = F.interpolate(x, size=(CANVAS, CANVAS), mode="bilinear", align_corners=False)
        f = self.cnn(x * 2 - 1)  # (B, C, 6, 6)
        # max pooling says whether a feature occurs anywhere (objects are small on a black canvas, and the
        # targets are presence); average pooling says how much of it there is
        h = torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1)  # (B, 2C)
        return F.relu(self.feature(h))  # (B, 128)


def targets(scenes: list[list[dict]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 25) multi-hot presence and (B,) object count - 1 of ShapesWorld scenes."""
    presence = torch.zeros(len(scenes), N_PRESENCE)
    for b, scene in enumerate(scenes):
        for o in scene:
            presence[b, COLOUR_NAMES.index(o["colour"])] = 1
            presence[b, N_COLOURS + SHAPES.index(o["shape"])] = 1
            presence[b, N_COLOURS + N_SHAPES + SIZES.index(o["size"])] = 1
            presence[b, N_COLOURS + N_SHAPES + N_SIZES + o["row"] * GRID + o["col"]] = 1
    return presence, torch.tensor([len(s) - 1 for s in scenes])


def loss(net: ShapesFeatures, images: torch.Tensor, scenes: list[list[dict]]) -> torch.Tensor:
    presence, count = targets(scenes)
    logits = net.heads(net(images))
    return F.binary_cross_entropy_with_logits(logits[:, :N_PRESENCE], presence) + F.cross_entropy(logits[:, N_PRESENCE:], count)


def train_features(steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0, log_every: int = 250) -> ShapesFeatures:
    """Train the feature net on ShapesWorld train scenes of every level (L1..L4 in turn), at 48 px."""
    from umm.data.shapes import ShapesWorld

    torch.manual_seed(seed)
    worlds = [ShapesWorld("train", canvas=CANVAS, level=level, seed=seed, modalities=("image",))
              for level in ("L1", "L2", "L3", "L4")]  # fmt: skip
    net = ShapesFeatures()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    for step in range(steps):
        for group in opt.param_groups:  # warmup, then cosine to 5%
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item()))
        samples = [worlds[(step * batch + k) % 4][step * batch + k] for k in range(batch)]
        value = loss(net, torch.stack([s["image"] for s in samples]), [s["scene"] for s in samples])
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}: loss {value.item():.4f}", flush=True)
    return net.eval()


@torch.no_grad()
def attribute_accuracy(net: ShapesFeatures, images: torch.Tensor, scenes: list[list[dict]]) -> dict[str, float]:
    """How well the net's heads read scenes: exact presence vector and count (a check the features are real)."""
    presence, count = targets(scenes)
    logits = net.heads(net(images))
    exact = ((logits[:, :N_PRESENCE] > 0).float() == presence).all(dim=1).float().mean().item()
    counted = (logits[:, N_PRESENCE:].argmax(-1) == count).float().mean().item()
    return {"presence_exact": exact, "count": counted}


@functools.lru_cache(maxsize=1)
def load_features() -> ShapesFeatures:
    """The shipped feature net (``ASSET``), frozen."""
    import safetensors.torch

    if not ASSET.is_file():
        raise UmmError(f"the FID feature net {ASSET} is missing; write it with `python -m umm.eval.fidelity --out {ASSET}`")
    net = ShapesFeatures()
    safetensors.torch.load_model(net, str(ASSET))
    return net.eval().requires_grad_(False)


@torch.no_grad()
def fidelity(generated: torch.Tensor, real: torch.Tensor, kid_subset: int = 50) -> dict[str, float]:
    """FID and KID (mean and std over subsets) between (N, 3, H, W) generated and (M, 3, H, W) real images in
    [0, 1], on ``ShapesFeatures``. Lower is closer; both depend on N, so compare at equal N."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(generated) < 2 or len(real) < 2:
        raise UmmError(f"fidelity needs at least 2 generated and 2 real images, got {len(generated)} and {len(real)}")
    net = load_features()
    subset = min(kid_subset, len(generated), len(real))
    fid = FrechetInceptionDistance(feature=net, normalize=True)
    kid = KernelInceptionDistance(feature=net, subsets=50, subset_size=subset, normalize=True)
    for metric in (fid, kid):
        metric.update(real.float().clamp(0, 1), real=True)
        metric.update(generated.float().clamp(0, 1), real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


def main() -> None:
    ap = argparse.ArgumentParser(description="train the FID feature net on ShapesWorld and write its weights")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ASSET))
    args = ap.parse_args()
    import safetensors.torch

    from umm.data.shapes import ShapesWorld

    torch.set_num_threads(args.threads)
    net = train_features(args.steps)
    for level in ("L1", "L4"):
        for split in ("test", "heldout"):
            world = ShapesWorld(split, canvas=CANVAS, level=level, seed=1234)
            samples = [world[i] for i in range(200)]
            scores = attribute_accuracy(net, torch.stack([s["image"] for s in samples]), [s["scene"] for s in samples])
            print(f"{level} {split}: {scores}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_model(net, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
