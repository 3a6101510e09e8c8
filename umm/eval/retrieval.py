"""Embedding evaluation (capability ``embed``): the all-pairs retrieval matrix and zero-shot classification.

**Retrieval matrix.** For every ordered pair of the system's modalities (query -> gallery), N held-out items
are embedded in both, and R@1/5/10 is the share of queries whose own item ranks in the top k of the N
gallery items (open_clip's ``get_clip_metrics``; chance R@k = k / N), where an item of the same content is the
query's own too (:func:`recall_at_k`): the same objects with every attribute a full caption of the level states
(``umm.data.shapes.views.scene_content``; for clips colour, shape and direction, and colour and shape alone when a
still image is one side of the pair). The items' captions, and the speech made of them, are the world's full
style, so every modality of an item states its whole content. Each pair is marked *paired* (trained
together: ``system.paired``) or *emergent* (never trained together, ImageBind's sec. 4.2), in the key:
``retrieval/emergent/audio->text/R@1``. Pairs with video are read on *clip items* (a clip, its first frame,
its caption, that caption spoken: ``umm.data.shapes.views.clip_view``); the others on *scene items* (image,
caption, spoken caption), so both sides of a pair always describe the same content.

**Zero-shot classification** per modality and attribute axis (colour, shape, count): every class has several
texts (ImageBind: prompts from templates of the caption grammar, averaged as open_clip's zero-shot
classifier does; UniBind: its knowledge base, ``system.concept_texts()``). Two rules are compared:
*mean-centre* (average the class's text embeddings, renormalise, nearest class) and *nearest-centre*
(the class of the single nearest text, UniBind's inference). A scene may hold several colours and shapes: a
prediction counts as right when the scene has it; ``chance`` is the expected score of a uniform guess.
"""

from __future__ import annotations

import itertools
import torch

from umm.data.shapes import COLOUR_NAMES, SHAPES
from umm.data.shapes.levels import DEFAULT_LEVEL
from umm.data.shapes.vocab import DIRECTIONS, plural
from umm.data.shapes.views import clip_items, scene_items
from umm.models.encoders import AXES, item_concepts, pair_name

KS = (1, 5, 10)


def template_concepts() -> dict[tuple[str, str], list[str]]:
    """Prompt texts per (axis, class), from the caption grammar's own noun phrases: the other attributes are
    enumerated and averaged over, as CLIP's prompt ensembling averages templates (Radford et al. 2021,
    sec. 3.1.4)."""
    out: dict[tuple[str, str], list[str]] = {}
    for colour in COLOUR_NAMES:
        out[("colour", colour)] = [f"a {colour} {shape}" for shape in SHAPES]
    for shape in SHAPES:
        out[("shape", shape)] = [f"a {shape}"] + [f"a {colour} {shape}" for colour in COLOUR_NAMES]
    out[("count", "1")] = [f"a {shape}" for shape in SHAPES]
    out[("count", "2")] = [f"two {plural(shape)}" for shape in SHAPES] + [
        f"a {a} and a {b}" for a, b in zip(SHAPES, SHAPES[1:] + SHAPES[:1])]
    out[("count", "3")] = [f"three {plural(shape)}" for shape in SHAPES] + [
        f"a {a}, a {b} and a {c}" for a, b, c in zip(SHAPES, SHAPES[1:] + SHAPES[:1], SHAPES[2:] + SHAPES[:2])]
    for direction in DIRECTIONS:  # scored on clips only: a still item states no direction
        out[("direction", direction)] = [f"a {shape} moves {direction}" for shape in SHAPES]
    return out


def recall_at_k(similarity: torch.Tensor, ks: tuple[int, ...] = KS, same: torch.Tensor | None = None) -> dict[int, float]:
    """R@k of queries (rows) whose own gallery item (the diagonal) ranks in the top k; ties count against.

    ``same`` (N, N) bool marks the gallery items that hold the query's own content (the diagonal and every item
    with the same content key: at ShapesWorld L1 many scenes are "a large red circle", and no text or speech can
    tell them apart). A query then scores when its best-ranked item of that content is in the top k, as COCO
    retrieval counts any of an image's captions; items of other content that score as high count against."""
    if same is None:
        same = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    best = similarity.masked_fill(~same, float("-inf")).amax(1, keepdim=True)  # (N, 1) best own-content score
    rank = ((similarity >= best) & ~same).sum(1)  # items of other content at or above it; 0 = first
    return {k: (rank < k).float().mean().item() for k in ks}


def same_content(contents: list) -> torch.Tensor:
    """(N, N) bool: items i and j hold the same content (one content key, ``Items.contents``)."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(contents))}
    key = torch.tensor([ids[c] for c in contents])
    return key[:, None] == key[None, :]


def classify(embeddings: torch.Tensor, centres: torch.Tensor, centre_classes: list[str],
             classes: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(mean-centre, nearest-centre) predictions for (N, E) embeddings given (M, E) class text embeddings."""
    labels = torch.tensor([classes.index(c) for c in centre_classes])
    means = torch.stack([centres[labels == i].mean(0) for i in range(len(classes))])
    means = torch.nn.functional.normalize(means, dim=-1)  # (C, E)
    by_mean = (embeddings @ means.T).argmax(1)
    by_nearest = labels[(embeddings @ centres.T).argmax(1)]
    return [classes[i] for i in by_mean.tolist()], [classes[i] for i in by_nearest.tolist()]


def zero_shot_scores(embeddings: torch.Tensor, scenes: list[list[dict]], concept_embeddings: dict) -> dict[str, float]:
    """``{axis}/mean_centre``, ``{axis}/nearest_centre`` and ``{axis}/chance`` for one modality's items."""
    out = {}
    every_truth = [item_concepts(s) for s in scenes]
    for axis, classes in AXES.items():
        keys = [k for k in concept_embeddings if k[0] == axis]
        states = [i for i, t in enumerate(every_truth) if t[axis]]  # a still item states no direction
        if not keys or not states:
            continue
        truths = [every_truth[i] for i in states]
        present = tuple(c for c in classes if any(k[1] == c for k in keys))
        centres = torch.cat([concept_embeddings[k] for k in keys])
        centre_classes = [k[1] for k in keys for _ in range(concept_embeddings[k].shape[0])]
        by_mean, by_nearest = classify(embeddings[states], centres, centre_classes, present)
        out[f"{axis}/mean_centre"] = sum(p in t[axis] for p, t in zip(by_mean, truths)) / len(truths)
        out[f"{axis}/nearest_centre"] = sum(p in t[axis] for p, t in zip(by_nearest, truths)) / len(truths)
        out[f"{axis}/chance"] = sum(len(t[axis] & set(present)) / len(present) for t in truths) / len(truths)
    return out


def evaluate_embeddings(model: torch.nn.Module, system, split: str = "test", seed: int = 1234, n: int = 200,
                        batch_size: int = 64, level: str = DEFAULT_LEVEL) -> dict[str, float]:
    """The retrieval matrix and zero-shot scores of a system with the ``embed`` capability, on ``level``."""
    modalities = tuple(system.embed_modalities)
    canvas = system.config.image_size
    metrics: dict[str, float] = {f"retrieval/chance/R@{k}": min(1.0, k / n) for k in KS}
    item_sets = {}
    if any(m != "video" for m in modalities):
        item_sets["scene"] = scene_items(split, n, seed, canvas, modalities, level)
    if "video" in modalities:
        item_sets["clip"] = clip_items(split, n, seed, canvas, system.config.frames, modalities, level)
    embedded = {name: {m: system.embed(model, m, items.raw[m], batch_size=batch_size) for m in items.raw}
                for name, items in item_sets.items()}

    # a pair is scored on what both its sides can state: with a still image on one side, a clip's direction is not
    # part of its content (image-centric binding cannot carry motion: umm.data.shapes.views.clip_view)
    same = {name: same_content(items.contents) for name, items in item_sets.items()}
    same_still = {name: same_content(items.stills) for name, items in item_sets.items()}
    paired = getattr(system, "paired", frozenset())
    means: dict[str, list[float]] = {"paired": [], "emergent": []}
    per_modality: dict[str, list[float]] = {m: [] for m in modalities}  # a modality's place in the space
    for query, gallery in itertools.permutations(modalities, 2):
        name = "clip" if "video" in (query, gallery) else "scene"
        kind = "paired" if pair_name(query, gallery) in paired else "emergent"
        key = same_still if "image" in (query, gallery) else same
        recalls = recall_at_k(embedded[name][query] @ embedded[name][gallery].T, same=key[name])
        for k, value in recalls.items():
            metrics[f"retrieval/{kind}/{query}->{gallery}/R@{k}"] = value
        means[kind].append(recalls[1])
        per_modality[query].append(recalls[1])
        per_modality[gallery].append(recalls[1])
    for kind, values in means.items():
        if values:
            metrics[f"retrieval/{kind}/mean_R@1"] = sum(values) / len(values)
    for m, values in per_modality.items():  # every direction to and from m, paired and emergent
        if values:
            metrics[f"retrieval/{m}/mean_R@1"] = sum(values) / len(values)

    if "text" in modalities:
        concepts = system.concept_texts() if hasattr(system, "concept_texts") else template_concepts()
        texts = [t for ts in concepts.values() for t in ts]
        flat = system.embed(model, "text", texts, batch_size=batch_size)
        concept_embeddings, start = {}, 0
        for key, ts in concepts.items():
            concept_embeddings[key] = flat[start: start + len(ts)]
            start += len(ts)
        for m in modalities:
            name = "clip" if m == "video" else "scene"
            scores = zero_shot_scores(embedded[name][m], item_sets[name].scenes, concept_embeddings)
            metrics.update({f"zeroshot/{m}/{k}": v for k, v in scores.items()})
    return metrics


def matrix_table(metrics: dict[str, float], modalities: tuple[str, ...], k: int = 1) -> str:
    """The R@k matrix as text: rows are queries, columns galleries; emergent cells are starred."""
    width = max(len(m) for m in modalities) + 2
    lines = [f"R@{k} (query row -> gallery column; * = emergent, never trained together)",
             " " * width + "".join(f"{m:>{width + 2}}" for m in modalities)]
    for q in modalities:
        cells = []
        for g in modalities:
            if q == g:
                cells.append(f"{'-':>{width + 2}}")
                continue
            for kind, mark in (("paired", " "), ("emergent", "*")):
                key = f"retrieval/{kind}/{q}->{g}/R@{k}"
                if key in metrics:
                    cells.append(f"{metrics[key]:>{width + 1}.3f}{mark}")
        lines.append(f"{q:<{width}}" + "".join(cells))
    return "\n".join(lines)
