"""ImageBind (Girdhar et al. 2023, "ImageBind: One Embedding Space To Bind Them All", arXiv 2305.05665).

One encoder per modality maps its input into a shared space of unit vectors. Only pairs that share the
*image* are ever trained together (paper sec. 3.2): (image, text), (image, audio), (image, video), each with
a symmetric InfoNCE loss L(I, M) + L(M, I). Pairs never seen together (audio <-> text, video <-> audio,
text <-> video) become aligned anyway, through the image: the paper's *emergent* alignment, which
``umm eval`` measures with an all-pairs retrieval matrix that marks every pair paired or emergent
(umm/eval/retrieval.py).

Notable choices in umm's version:
- the binding graph is an option (``edges``): the star around the image by default, any set of pairs
  otherwise; the recipe trains one task per edge (task name = edge name, e.g. ``image_audio``), so the
  trainer's weighted sum of task losses is the paper's sum over modality pairs;
- every encoder is trained from scratch on ShapesWorld (the paper freezes OpenCLIP's image and text
  towers); ``text_encoder: minilm`` swaps in the frozen pretrained all-MiniLM-L6-v2 plus a linear head;
- one learnable temperature per edge, clamped <= 100 (the paper fixes some per modality and learns text's);
  embeddings stay unit vectors and the scale is separate; SigLIP and an L2 alignment term are options;
- (image, video) pairs use the clip's first frame as the image (see ``umm.data.shapes.views.clip_view``);
- ``extend`` adds modalities to a trained model (``train.init_from``): their encoders start afresh, every other
  encoder and temperature freezes, and only the edges that touch them train. This is the paper's account of
  extensibility (a new modality is bound to the image alone, against image and text towers it keeps frozen),
  and what ``umm bench`` times for the survey's "easily extendable by adding new experts".

Shapes: B batch, E embedding width.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import nn

from umm import UmmError
from umm.config import ConfigError
from umm.data.shapes.views import clip_view
from umm.models.encoders import (
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
    pair_name,
    raw_inputs,
)
from umm.models.encoders_frozen import FrozenTextEncoder, frozen_text_encoder
from umm.models.factory import register_model
from umm.models.system import SystemBase
from umm.nn import TransformerConfig
from umm.objectives.alignment import l2_alignment_loss
from umm.objectives.contrastive import INFONCE_LOG_SCALE, SIGLIP_BIAS, SIGLIP_LOG_SCALE, LogitScale, infonce_loss, siglip_loss
from umm.registry import ARCHITECTURES, SYSTEMS

ALL_PAIRS: tuple[str, ...] = tuple(pair_name(a, b) for a, b in itertools.combinations(MODALITIES, 2))
STAR: tuple[str, ...] = ("image_text", "image_audio", "image_video")


@dataclass(frozen=True)
class ImageBindConfig:
    family: ClassVar[str] = "imagebind"
    vocab_size: int = 512
    embed_dim: int = 128
    modalities: tuple[str, ...] = MODALITIES
    logit_scale_init: float = INFONCE_LOG_SCALE
    logit_bias_init: float | None = None  # SigLIP's learnable bias (init -10); None for InfoNCE
    text_features: int = 0  # > 0: the text tower is a linear head over frozen features of this width (MiniLM)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)

    @property
    def image_size(self) -> int:  # the canvas ShapesWorld renders for this model (harness, registry tests)
        return self.image.image_size

    @property
    def frames(self) -> int:
        return self.video.frames


class BindOutput(NamedTuple):
    embeddings: dict[str, torch.Tensor]  # modality -> (B, E) unit vectors
    logit_scales: dict[str, torch.Tensor]  # pair -> scalar temperature (clamped <= 100)
    logit_biases: dict[str, torch.Tensor]  # pair -> scalar bias (SigLIP only)


@ARCHITECTURES.register("imagebind")
class ImageBind(nn.Module):
    config_class = ImageBindConfig

    def __init__(self, config: ImageBindConfig):
        super().__init__()
        if config.image.image_size != config.video.image_size:
            raise ConfigError("model.image.image_size and model.video.image_size must agree (one ShapesWorld canvas)")
        self.config = config
        self.encoders = build_encoders(config.modalities, config.embed_dim, config.vocab_size, config.text_features,
                                       config.image, config.text, config.audio, config.video)
        pairs = [pair_name(a, b) for a, b in itertools.combinations(config.modalities, 2)]
        self.logit_scales = nn.ModuleDict({p: LogitScale(config.logit_scale_init, config.logit_bias_init) for p in pairs})

    def forward(self, inputs: dict[str, torch.Tensor], modalities: tuple[str, ...]) -> BindOutput:
        """Embed ``modalities`` of the batch ``inputs`` (keys in umm.models.encoders); scales of every pair."""
        embeddings = {m: encode(self.encoders, m, inputs) for m in modalities}
        scales, biases = {}, {}
        for pair, module in self.logit_scales.items():
            scales[pair], bias = module()
            if bias is not None:
                biases[pair] = bias
        return BindOutput(embeddings, scales, biases)


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def imagebind_s() -> ImageBindConfig:
    """~3M parameters: four 4-layer towers (width 128; video 96), 128-d space; minutes on a 2-core CPU."""
    return ImageBindConfig()


@register_model
def imagebind_b() -> ImageBindConfig:
    """~40M parameters: a GPU size."""
    t = TransformerConfig(dim=384, depth=8, heads=6)
    return ImageBindConfig(
        embed_dim=256,
        image=ImageEncoderConfig(transformer=TransformerConfig(dim=384, depth=8, heads=6, rope_axes=2)),
        text=TextEncoderConfig(transformer=t),
        audio=AudioEncoderConfig(transformer=TransformerConfig(dim=384, depth=8, heads=6, rope_axes=2)),
        video=VideoEncoderConfig(patch=4, transformer=TransformerConfig(dim=384, depth=8, heads=4, rope_axes=3)),
    )


def tiny_towers() -> dict:
    """Encoder configs of the ``test_*`` sizes (16 px canvas, 3.2 s audio, 2-layer width-24/32 towers)."""
    return dict(
        image=ImageEncoderConfig(image_size=16, transformer=TransformerConfig(dim=32, depth=2, heads=2, rope_axes=2)),
        text=TextEncoderConfig(max_tokens=24, transformer=TransformerConfig(dim=32, depth=2, heads=2)),
        audio=AudioEncoderConfig(n_mels=16, clip_seconds=3.2, patch_mels=16, patch_frames=16,
                                 transformer=TransformerConfig(dim=32, depth=2, heads=2, rope_axes=2)),
        video=VideoEncoderConfig(image_size=16, tubelet=4, transformer=TransformerConfig(dim=24, depth=2, heads=2, rope_axes=3)),
    )


@register_model
def test_imagebind() -> ImageBindConfig:
    return ImageBindConfig(embed_dim=32, **tiny_towers())


# ---- system: data formatting, losses, capabilities --------------------------------------------------------


@dataclass(frozen=True)
class ImageBindOptions:
    edges: tuple[str, ...] = STAR  # the binding graph: the pairs trained together (one task each)
    objective: Literal["infonce", "siglip"] = "infonce"
    local_loss: bool = True  # rows of this rank vs gathered columns (open_clip --local-loss); same gradients
    l2_weight: float = 0.0  # > 0 adds weight * ||a - b||^2 of each pair (the survey's L2 alignment loss)
    text_encoder: Literal["bpe", "minilm"] = "bpe"  # minilm: frozen all-MiniLM-L6-v2 features + linear head
    # modalities added to a trained model: fresh encoders, the rest frozen, their edges only. It needs
    # train.init_from (the trained model): without one the trainer refuses the run (the frozen towers would be
    # untrained and nothing bound)
    extend: tuple[str, ...] = ()


def extension_edges(edges: tuple[str, ...], extend: tuple[str, ...], modalities: tuple[str, ...]) -> tuple[str, ...]:
    """The edges a run trains: all of them, or with ``extend`` those that touch an added modality (each added
    modality needs one, or it could not be bound to the space)."""
    if not extend:
        return tuple(edges)
    for m in extend:
        if m not in modalities:
            raise ConfigError(f"system_args.extend: {m!r} is not a modality of the model; choose from {list(modalities)}")
        if not any(m in edge.split("_") for edge in edges):
            raise ConfigError(f"system_args.extend: no edge in system_args.edges {list(edges)} binds {m!r}")
    return tuple(edge for edge in edges if set(edge.split("_")) & set(extend))


def check_edges(edges: tuple[str, ...], modalities: tuple[str, ...]) -> None:
    for edge in edges:
        if edge not in ALL_PAIRS:
            raise ConfigError(f"system_args.edges: {edge!r} is not a modality pair; choose from {list(ALL_PAIRS)}")
        missing = [m for m in edge.split("_") if m not in modalities]
        if missing:
            raise ConfigError(f"system_args.edges: {edge!r} needs the {missing} encoder(s); model modalities are {list(modalities)}")


@SYSTEMS.register("imagebind")
class ImageBindSystem(SystemBase):
    family = "imagebind"
    tasks = ALL_PAIRS  # what a recipe may name; an instance trains only its ``edges`` (self.tasks below)
    capabilities = ("embed",)
    Options = ImageBindOptions

    def __init__(self, tokenizer, config: ImageBindConfig, options: ImageBindOptions | None = None):
        super().__init__(tokenizer, config, options)
        check_edges(self.options.edges, config.modalities)
        if (self.options.text_encoder == "minilm") != bool(config.text_features):
            raise ConfigError(f"system_args.text_encoder={self.options.text_encoder!r} but the model's text_features is "
                              f"{config.text_features} (minilm needs {FrozenTextEncoder.dim}, bpe needs 0)")
        self.tasks = extension_edges(self.options.edges, self.options.extend, config.modalities)
        self.embed_modalities = tuple(config.modalities)
        self.paired = frozenset(self.options.edges)  # the eval marks every other pair emergent
        needed = {m for edge in self.options.edges for m in edge.split("_")}
        self.modalities = data_modalities(m for m in MODALITIES if m in needed)  # ShapesWorld keys to generate
        self.frozen = frozen_text_encoder() if self.options.text_encoder == "minilm" else None

    @classmethod
    def model_overrides(cls, tokenizer, options: ImageBindOptions) -> dict:
        out = {"vocab_size": tokenizer.vocab_size}
        if options.objective == "siglip":  # SigLIP's initial temperature and bias (Zhai et al. 2023, sec. 3)
            out.update(logit_scale_init=SIGLIP_LOG_SCALE, logit_bias_init=SIGLIP_BIAS)
        if options.text_encoder == "minilm":
            out["text_features"] = FrozenTextEncoder.dim
        return out

    def needs_base(self) -> str | None:
        return "system_args.extend" if self.options.extend else None

    def prepare_model(self, model: nn.Module) -> None:
        """With ``extend``: the added modalities' encoders start afresh (the trained weights init_from loaded are
        discarded: the space has never seen them), and only they and their edges' temperatures learn."""
        if not self.options.extend:
            return
        cfg = self.config
        fresh = build_encoders(self.options.extend, cfg.embed_dim, cfg.vocab_size, cfg.text_features,
                               cfg.image, cfg.text, cfg.audio, cfg.video)
        for m in self.options.extend:
            model.encoders[m].load_state_dict(fresh[m].state_dict())
        for p in model.parameters():
            p.requires_grad_(False)
        for m in self.options.extend:
            model.encoders[m].requires_grad_(True)
        for edge in self.tasks:
            model.logit_scales[edge].requires_grad_(True)

    # -- capability: embed --------------------------------------------------------------------------------

    def embed(self, model: nn.Module, modality: str, inputs, batch_size: int = 64) -> torch.Tensor:
        """Unit vectors (N, E) of images / clips (tensors in [0, 1]), texts (list of str) or 16 kHz waves."""
        return embed_raw(model, modality, inputs, self.tokenizer, self.config, self.frozen, batch_size)

    # -- batches ------------------------------------------------------------------------------------------

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        if task not in self.tasks:
            raise UmmError(f"task {task!r} is not an edge of this binding graph {list(self.tasks)}; "
                           f"add it to system_args.edges")
        a, b = task.split("_")
        if "video" in (a, b):
            samples = [clip_view(s, with_audio="audio" in (a, b)) for s in samples]
        batch: dict = {"pair": task}
        for m in (a, b):
            batch.update(raw_inputs(m, [s[DATA_MODALITY[m]] for s in samples], self.tokenizer, self.config, self.frozen))
        return batch

    # -- objective ----------------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pair = batch["pair"]
        a, b = pair.split("_")
        out = model(batch, (a, b))
        za, zb = out.embeddings[a], out.embeddings[b]  # (B, E) each
        scale = out.logit_scales[pair]
        if self.options.objective == "siglip":
            loss = siglip_loss(za, zb, scale, out.logit_biases[pair])
        else:
            loss = infonce_loss(za, zb, scale, local_loss=self.options.local_loss)
        result = {"contrastive_loss": loss, "logit_scale": scale.detach()}
        if self.options.l2_weight > 0:
            result["l2_loss"] = self.options.l2_weight * l2_alignment_loss(za, zb)
        with torch.no_grad():  # in-batch retrieval accuracy a -> b, a cheap training-time probe
            result["batch_r1"] = (za @ zb.T).argmax(1).eq(torch.arange(za.shape[0], device=za.device)).float().mean()
        return result
