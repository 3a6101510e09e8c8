"""One evaluation harness for every system: it asks for what the system can do and lets the judge score it.

- ``t2i``: GenEval-like prompts by category -> generated images -> judge (single object, two objects,
  counting, colours, position, colour attribution, overall); and fidelity, FID / KID against real scenes
  of the split on umm's own feature net (``fidelity/*``, :mod:`umm.eval.fidelity`).
- ``caption``: ShapesWorld images -> captions -> parsed and checked against the true scene (exact and per
  attribute).
- ``qa``: (image, question) -> answer -> normalised match, overall and per kind.
- ``t2v`` / ``v2t``: video prompts -> clips -> judge's tracks; clips -> captions -> direction accuracy (and
  ``t2v_test/*`` / ``v2t_test/*`` on the test split).
- ``embed``: the all-pairs retrieval matrix (see :mod:`umm.eval.retrieval`; and ``retrieval_test/*`` on the test
  split).
- ``reconstruct``: tokenizers: pixel error, codebook usage, the judge on reconstructions (:mod:`umm.eval.reconstruction`).

Held-out by default: prompts and images use the compositional ``heldout`` split, whose (colour, shape)
pairs never occur in training; GenEval-like is also reported on the ``test`` split (in distribution) as
``geneval_test/*``. Everything follows the world level the model trained at (``EvalConfig.level``).
With ``diagnostics`` on, text-to-image systems also get the diagnostics of :mod:`umm.eval.diagnostics`:
prompt adherence (``adherence/*``), the tokenizer ceiling (``ceiling/*``) and, for diffusion systems,
the denoise check (``denoise/*``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pathlib import Path

import torch

from umm.config import ConfigError
from umm.data.shapes import ShapesWorld
from umm.data.shapes.levels import DEFAULT_LEVEL
from umm.eval.judge import caption_scores, geneval_prompts, geneval_score, qa_accuracy
import umm.pipelines  # noqa: F401  (registers the loops that run every system's capabilities)


@dataclass(frozen=True)
class EvalConfig:
    split: str = "heldout"
    seed: int = 1234  # keeps eval samples apart from the training stream (train uses seed 0, split "train")
    n_prompts: int = 120  # text-to-image prompts (cycled over the 6 categories)
    n_images: int = 100  # images to caption / question
    n_videos: int = 50  # clips to generate (t2v) and to caption (v2t)
    steps: int = 25  # diffusion / MaskGIT steps
    cfg_scale: float = 3.0
    # guidance of generated clips (t2v); None: cfg_scale. A clip's direction and an image's object need not want the
    # same scale: EMU3 draws directions best at 2 where its images want 1 (RESULTS.md, "Eighteenth round")
    video_cfg_scale: float | None = None
    sampler: str | None = None  # diffusion sampler (ddim, dpm++, ...); None: the system's own choice
    cfg_interval: tuple[float, float] | None = None  # diffusion LMs: guide only the steps with t in [lo, hi]
    batch_size: int = 32
    level: str = "L4"  # ShapesWorld level of prompts and images (the model's training level)
    test_split: bool = True  # also GenEval-like on the in-distribution test split (geneval_test/*)
    diagnostics: bool = True  # adherence, ceiling and denoise diagnostics for text-to-image systems
    n_adherence: int = 16  # prompts of the same-seed pixel-change probe (x3 generations)
    n_denoise: int = 48  # images of the denoise check (x4 noise levels)
    # FID / KID of text-to-image systems (umm.eval.fidelity): the first n_images real scenes of the split
    # against one image generated from each scene's caption. Both depend on the count: compare at equal n.
    fidelity: bool = True
    # autocast of generation, captioning and QA: the precision the model trained in (training_precision).
    # It matters on CPUs without AMX: bf16 convolutions (U-Net patchification) run ~10x slower than fp32
    precision: str = "bf16"


    def __post_init__(self) -> None:
        interval = self.cfg_interval
        if interval is not None and (len(interval) != 2 or not all(isinstance(v, (int, float)) for v in interval)
                                     or not 0 <= interval[0] <= interval[1] <= 1):
            raise ConfigError(f"eval_args.cfg_interval must be two times [lo, hi] with 0 <= lo <= hi <= 1, "
                              f"got {interval!r}")

    def sampling(self) -> dict:
        """Keyword arguments of every ``generate_images`` call (``sampler`` and ``cfg_interval`` only when
        chosen: the AR and masked-token systems take neither)."""
        chosen = {"sampler": self.sampler} if self.sampler else {}
        if self.cfg_interval is not None:
            chosen["cfg_interval"] = tuple(self.cfg_interval)
        return dict(steps=self.steps, cfg_scale=self.cfg_scale, batch_size=self.batch_size, precision=self.precision,
                    **chosen)


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    images: torch.Tensor | None = None  # generated images (N, 3, H, W)
    prompts: list[str] = field(default_factory=list)
    prompt_hits: list[bool] = field(default_factory=list)
    captions: list[tuple[str, str]] = field(default_factory=list)  # (prediction, truth)
    answers: list[tuple[str, str, str]] = field(default_factory=list)  # (question, prediction, truth)
    seconds: dict[str, float] = field(default_factory=dict)
    confusion: dict = field(default_factory=dict)  # attribute -> Counter{(asked, read)} of the t2i prompts


def _recipe_beside(model_dir: str | Path) -> dict:
    from umm.config import load_yaml

    recipe = Path(model_dir).parent / "recipe.yaml"
    return load_yaml(recipe) if recipe.is_file() else {}


def training_precision(model_dir: str | Path) -> str:
    """``train.precision`` of the run that wrote ``model_dir`` ("bf16", the trainer's default, without one)."""
    return str((_recipe_beside(model_dir).get("train") or {}).get("precision", "bf16"))


def training_tasks(model_dir: str | Path) -> tuple[str, ...] | None:
    """The task names the run that wrote ``model_dir`` trained (None without its recipe beside it)."""
    recipe = _recipe_beside(model_dir)
    if not recipe.get("tasks"):
        return None
    return tuple(t["name"] if isinstance(t, dict) else str(t) for t in recipe["tasks"])


SAMPLING_KEYS = ("steps", "cfg_scale", "sampler", "cfg_interval")  # how images are sampled
EVAL_SAMPLING_KEYS = SAMPLING_KEYS + ("video_cfg_scale",)  # and clips, where umm eval generates them


def training_sampling(model_dir: str | Path, keys: tuple[str, ...] = SAMPLING_KEYS) -> dict:
    """How the model in ``model_dir`` is meant to be sampled: ``precision`` (its run's ``train.precision``) and
    the ``keys`` (``steps`` / ``cfg_scale`` / ``sampler`` ...) that its recipe's ``eval_args`` sets, if any (the demo
    recipe samples in 10 steps). ``umm eval`` (``EVAL_SAMPLING_KEYS``), ``umm sample`` and ``umm.load`` start from
    these; their own flags win."""
    chosen = {k: v for k, v in (_recipe_beside(model_dir).get("eval_args") or {}).items() if k in keys}
    return {**chosen, "precision": training_precision(model_dir)}


def training_level(model_dir: str | Path) -> str:
    """The ShapesWorld level a trained model saw: ``data.level`` of the ``recipe.yaml`` the trainer wrote
    beside ``model_dir`` (runs/<name>/model -> runs/<name>/recipe.yaml); "L4" for a model trained before
    levels existed or exported without its recipe."""
    return str((_recipe_beside(model_dir).get("data") or {}).get("level", DEFAULT_LEVEL))


def evaluate(model: torch.nn.Module, system, config: EvalConfig = EvalConfig(), tasks: tuple[str, ...] | None = None) -> EvalResult:
    """Score every capability of ``system`` (or just ``tasks``) with the judge."""
    model.eval()
    result = EvalResult()
    wanted = [c for c in system.capabilities if tasks is None or c in tasks]
    canvas = getattr(system.config, "image_size", 32)

    if "t2i" in wanted:
        from umm.eval.judge import score_image

        prompts = geneval_prompts(config.n_prompts, config.split, config.seed, config.level)
        start = time.perf_counter()
        images = system.generate_images(model, [p.prompt for p in prompts], seed=config.seed, **config.sampling())
        result.seconds["t2i_per_image"] = (time.perf_counter() - start) / len(prompts)
        scores = geneval_score(images, prompts)
        result.metrics.update({f"geneval/{k}": v for k, v in scores.to_dict().items()})
        result.images, result.prompts = images, [p.prompt for p in prompts]
        result.prompt_hits = [score_image(img, p.spec) for img, p in zip(images, prompts)]
        if config.test_split and config.split != "test":
            test_prompts = geneval_prompts(config.n_prompts, "test", config.seed, config.level)
            test_images = system.generate_images(model, [p.prompt for p in test_prompts], seed=config.seed,
                                                 **config.sampling())
            result.metrics.update({f"geneval_test/{k}": v for k, v in geneval_score(test_images, test_prompts).to_dict().items()})
        if config.fidelity and config.n_images >= 2:
            from umm.eval.fidelity import fidelity

            world = ShapesWorld(config.split, canvas=canvas, seed=config.seed, level=config.level, modalities=("image", "caption"))
            real = [world[i] for i in range(config.n_images)]
            generated = system.generate_images(model, [s["caption"] for s in real], seed=config.seed, **config.sampling())
            scores = fidelity(generated, torch.stack([s["image"] for s in real]))
            result.metrics.update({f"fidelity/{k}": v for k, v in scores.items()})
        if config.diagnostics:
            _t2i_diagnostics(model, system, config, images, prompts, canvas, result)

    if "caption" in wanted or "qa" in wanted:
        _understanding(model, system, config, config.split, wanted, canvas, result)
        if config.test_split and config.split != "test":  # in distribution too: held-out pairs test composition
            _understanding(model, system, config, "test", wanted, canvas, result)

    if "reconstruct" in wanted:  # image/video tokenizers (umm.eval.reconstruction)
        from umm.eval.reconstruction import evaluate_reconstruction

        result.metrics.update(evaluate_reconstruction(model, system, config.split, config.seed, config.n_images,
                                                      config.batch_size, config.level))
        if config.test_split and config.split != "test":  # the ceiling in distribution: held-out pairs were never
            # seen by the tokenizer either (an L1 video VQ reconstructs test clips' directions, not held-out ones)
            test = evaluate_reconstruction(model, system, "test", config.seed, config.n_images, config.batch_size,
                                           config.level)
            result.metrics.update({key.replace("/", "_test/", 1): value for key, value in test.items()})

    if "t2v" in wanted or "v2t" in wanted:  # video systems: the judge's tracks (umm.eval.video_eval)
        from umm.eval.video_eval import evaluate_video

        video_tasks = tuple(t for t in ("t2v", "v2t") if t in wanted)
        video_cfg = config.cfg_scale if config.video_cfg_scale is None else config.video_cfg_scale
        metrics, seconds = evaluate_video(model, system, video_tasks, config.split, config.seed, config.n_videos,
                                          config.batch_size, video_cfg, config.level)
        result.metrics.update(metrics)
        result.seconds.update(seconds)
        if config.test_split and config.split != "test":  # in distribution too, as images and captions
            metrics, _ = evaluate_video(model, system, video_tasks, "test", config.seed, config.n_videos,
                                        config.batch_size, video_cfg, config.level)
            result.metrics.update({key.replace("/", "_test/", 1): value for key, value in metrics.items()})

    if "embed" in wanted:  # embedding systems: all-pairs retrieval matrix, zero-shot (umm.eval.retrieval)
        from umm.eval.retrieval import evaluate_embeddings

        start = time.perf_counter()
        result.metrics.update(evaluate_embeddings(model, system, config.split, config.seed, config.n_images,
                                                  config.batch_size, config.level))
        result.seconds["embed_eval"] = time.perf_counter() - start
        if config.test_split and config.split != "test":
            # in distribution too (retrieval_test/*, zeroshot_test/*). The held-out split's clips fall into few
            # colour-shape groups (4 among 60 at L1), so a clip's direction decides most of its retrieval there
            metrics = evaluate_embeddings(model, system, "test", config.seed, config.n_images, config.batch_size,
                                          config.level)
            result.metrics.update({key.replace("/", "_test/", 1): value for key, value in metrics.items()})
    return result


def _understanding(model, system, config: EvalConfig, split: str, wanted: list[str], canvas: int,
                   result: EvalResult) -> None:
    """Captions and answers on ``config.n_images`` scenes of ``split``: ``caption/*`` and ``qa/*`` on the
    config's split (its predictions kept in ``result``), ``caption_test/*`` and ``qa_test/*`` on the test split."""
    main = split == config.split
    suffix = "" if main else "_test"
    world = ShapesWorld(split, canvas=canvas, seed=config.seed, level=config.level)
    samples = [world[i] for i in range(config.n_images)]
    images = torch.stack([s["image"] for s in samples])
    if "caption" in wanted:
        start = time.perf_counter()
        predictions = system.caption(model, images, batch_size=config.batch_size, precision=config.precision)
        if main:
            result.seconds["caption_per_image"] = (time.perf_counter() - start) / len(samples)
            result.captions = [(p, s["caption"]) for p, s in zip(predictions, samples)]
        scores = caption_scores(predictions, [s["scene"] for s in samples])
        result.metrics.update({f"caption{suffix}/{k}": v for k, v in scores.to_dict().items() if k != "n"})
    if "qa" in wanted:
        qas = [s["qa"][i % len(s["qa"])] for i, s in enumerate(samples)]
        predictions = system.answer(model, images, [q["question"] for q in qas], batch_size=config.batch_size,
                                    precision=config.precision)
        scores = qa_accuracy(predictions, [q["answer"] for q in qas], [q["kind"] for q in qas])
        result.metrics.update({f"qa{suffix}/{k}": v for k, v in scores.items()})
        if main:
            result.answers = [(q["question"], p, q["answer"]) for q, p in zip(qas, predictions)]


def _t2i_diagnostics(model, system, config: EvalConfig, images, prompts, canvas: int, result: EvalResult) -> None:
    """Prompt adherence, the tokenizer ceiling and the denoise check (see :mod:`umm.eval.diagnostics`)."""
    from umm.eval import diagnostics

    start = time.perf_counter()
    accuracy, result.confusion = diagnostics.attribute_confusion(images, prompts)
    result.metrics.update({f"adherence/{k}": v for k, v in accuracy.items()})
    probe = [p.prompt for p in prompts[: config.n_adherence]]
    result.metrics.update({f"adherence/{k}": v for k, v in diagnostics.pixel_changes(
        system, model, probe, config.seed, **config.sampling()).items()})
    tokenizer = diagnostics.generator_tokenizer(system)
    if tokenizer is not None:
        result.metrics.update({f"ceiling/{k}": v for k, v in diagnostics.ceiling(
            tokenizer, config.level, canvas, config.n_images, config.seed).items()})
    if system.has_loop("predict_x0"):
        result.metrics.update({f"denoise/{k}": v for k, v in diagnostics.denoise_check(
            system, model, config.level, canvas, config.n_denoise, config.seed, precision=config.precision).items()})
    result.seconds["diagnostics"] = time.perf_counter() - start
