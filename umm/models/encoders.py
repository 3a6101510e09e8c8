"""Modality encoders that map one input to one unit vector: image (ViT), text (small transformer over umm BPE
tokens, or a projection of frozen features), audio (log-mel patches) and video (space-time patches).

Every encoder follows ImageBind's stem -> trunk -> head -> postprocessor (Girdhar et al. 2023,
arXiv 2305.05665 sec. 3; multi_expert.md sec. 1): a linear patch (or token) embedding with a learned CLS
slot in front, the shared :class:`umm.nn.Transformer` with an all-bidirectional layout (RoPE over the grid:
2D for images and spectrograms, 3D for video), the CLS state through a bias-free linear head, and L2
normalisation. Unlike ImageBind, no temperature is baked into the output: embeddings are unit vectors and
the logit scale lives with the loss (umm.objectives.contrastive.LogitScale).

``encoder(x)`` gives (B, E) unit vectors; ``encoder.features(x)`` the (B, 1 + N, D) hidden states (CLS first)
for systems that read patch features (a Q-Former / resampler / input projector). ImageBind, UniBind and the
LLM-centric systems build their towers with :func:`build_encoders` and feed them with :func:`encode`, whose
input keys are the ones the ``*_inputs`` helpers below produce:

=================  =========================================================================
key                value
=================  =========================================================================
``image``          (B, 3, H, W) in [0, 1]
``text``           (B, L) long BPE ids, with ``text_valid`` (B, L) bool            (``text_inputs``)
``text_features``  (B, F) frozen-encoder features (``build_encoders(text_features=F)``)
``audio``          (B, n_mels, frames) log-mel features                            (``audio_inputs``)
``video``          (B, T, 3, H, W) in [0, 1]
=================  =========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from umm import UmmError
from umm.data.shapes.views import DATA_MODALITY
from umm.data.shapes.vocab import COLOUR_NAMES, DIRECTIONS, SHAPES
from umm.nn import Layout, PatchEmbed, Span, Transformer, TransformerConfig, build_layout, patchify, patchify_video
from umm.tokenizers.audio import AudioSpec, log_mel

MODALITIES: tuple[str, ...] = ("image", "text", "audio", "video")
# the ShapesWorld sample key each embedding modality is read from


def pair_name(a: str, b: str) -> str:
    """The canonical name of an unordered modality pair, in MODALITIES order: ``image_text``."""
    first, second = sorted((a, b), key=MODALITIES.index)
    return f"{first}_{second}"


def data_modalities(modalities) -> tuple[str, ...]:
    """The ShapesWorld modalities a set of embedding modalities reads (``data.modalities`` of a recipe)."""
    return tuple(dict.fromkeys(DATA_MODALITY[m] for m in modalities))


@dataclass(frozen=True)
class ImageEncoderConfig:
    image_size: int = 32
    channels: int = 3
    patch: int = 4  # 32x32 -> an 8x8 grid of 48-d patches
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=4, heads=4, rope_axes=2))


@dataclass(frozen=True)
class TextEncoderConfig:
    max_tokens: int = 40  # BPE tokens per text (longer texts are cut)
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=4, heads=4))


@dataclass(frozen=True)
class AudioEncoderConfig:
    # Spoken ShapesWorld captions last 1-8 s (mean 3.3 s, 90% under 6.4 s): 6.4 s at a 20 ms hop with 32
    # mel bands keeps every word of most captions in 32 x 321 features, cut into 80 full-band patches of
    # 80 ms, a 1 x 80 grid (ImageBind: 128 bands x 204 frames in 16 x 16 patches with stride 10, for 2 s
    # clips; full-band frames read speech like a speech recogniser's frame stack).
    sample_rate: int = 16000
    n_mels: int = 32
    hop: int = 320
    clip_seconds: float = 6.4
    patch_mels: int = 32
    patch_frames: int = 4
    # log-mel normalisation (ImageBind uses the AudioSet statistics -4.27 / 9.14; these are ShapesWorld's)
    mean: float = -7.5
    std: float = 3.7
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=4, heads=4, rope_axes=2))

    @property
    def spec(self) -> AudioSpec:
        return AudioSpec(sample_rate=self.sample_rate, n_mels=self.n_mels, hop=self.hop, clip_seconds=self.clip_seconds,
                         f_max=self.sample_rate / 2)

    @property
    def grid(self) -> tuple[int, int]:
        return self.n_mels // self.patch_mels, self.spec.frames // self.patch_frames


@dataclass(frozen=True)
class VideoEncoderConfig:
    image_size: int = 32
    channels: int = 3
    frames: int = 8
    patch: int = 8
    tubelet: int = 2  # 8 frames of 32x32 -> a 4x4x4 grid of 384-d tubelets (ViViT, Arnab et al. 2021)
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=96, depth=4, heads=2, rope_axes=3))


class PatchTower(nn.Module):
    """CLS + patch embedding -> bidirectional Transformer over a fixed grid -> linear head -> unit vector."""

    def __init__(self, patch_dim: int, grid: tuple[int, ...], transformer: TransformerConfig, embed_dim: int):
        super().__init__()
        if transformer.rope_axes not in (1, len(grid)):
            raise UmmError(f"a grid of {len(grid)} axes needs rope_axes 1 or {len(grid)}, got {transformer.rope_axes}")
        dim = transformer.dim
        self.grid = grid
        self.patch_embed = PatchEmbed(patch_dim, dim)
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.trunk = Transformer(transformer)
        self.head = nn.Linear(dim, embed_dim, bias=False)
        nn.init.normal_(self.head.weight, std=dim**-0.5)
        n = 1
        for g in grid:
            n *= g
        # one span, all bidirectional: the CLS slot is the span's prefix (RoPE position 0 on every axis)
        layout = build_layout([[Span(1 + n, True, tuple(grid), prefix=1)]], axes=transformer.rope_axes)
        self.register_buffer("block", layout.block, persistent=False)
        self.register_buffer("positions", layout.positions, persistent=False)
        self.register_buffer("valid", layout.valid, persistent=False)
        self.register_buffer("next_position", layout.next_position, persistent=False)

    def features(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, P) patches -> (B, 1 + N, D) hidden states, CLS first."""
        b = patches.shape[0]
        x = torch.cat([self.cls.expand(b, 1, -1).to(patches.dtype), self.patch_embed(patches)], dim=1)
        layout = Layout(self.block.expand(b, -1), self.positions.expand(b, -1, -1), self.valid.expand(b, -1),
                        self.next_position.expand(b, -1))
        return self.trunk(x, layout)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(patches)[:, 0]).float(), dim=-1)  # (B, E)


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageEncoderConfig, embed_dim: int):
        super().__init__()
        self.config = config
        grid = config.image_size // config.patch
        self.tower = PatchTower(config.channels * config.patch**2, (grid, grid), config.transformer, embed_dim)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, N, P) in [-1, 1]."""
        size = self.config.image_size
        if images.ndim != 4 or images.shape[-2:] != (size, size):
            raise UmmError(f"image encoder expects (B, 3, {size}, {size}) images, got {tuple(images.shape)}")
        return patchify(images * 2 - 1, self.config.patch)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower.features(self.patches(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower(self.patches(images))


class VideoEncoder(nn.Module):
    def __init__(self, config: VideoEncoderConfig, embed_dim: int):
        super().__init__()
        self.config = config
        grid = (config.frames // config.tubelet, config.image_size // config.patch, config.image_size // config.patch)
        patch_dim = config.tubelet * config.channels * config.patch**2
        self.tower = PatchTower(patch_dim, grid, config.transformer, embed_dim)

    def patches(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in [0, 1] -> (B, N, P) space-time patches in [-1, 1]."""
        c = self.config
        if video.ndim != 5 or video.shape[1] != c.frames or video.shape[-1] != c.image_size:
            raise UmmError(f"video encoder expects (B, {c.frames}, 3, {c.image_size}, {c.image_size}) clips, "
                           f"got {tuple(video.shape)}")
        return patchify_video(video * 2 - 1, c.patch, c.tubelet)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        return self.tower.features(self.patches(video))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.tower(self.patches(video))


class AudioEncoder(nn.Module):
    """Log-mel (B, n_mels, frames) -> normalised -> (mel band x time) patches -> tower (AST-style)."""

    def __init__(self, config: AudioEncoderConfig, embed_dim: int):
        super().__init__()
        self.config = config
        if config.n_mels % config.patch_mels:
            raise UmmError(f"audio n_mels {config.n_mels} is not divisible by patch_mels {config.patch_mels}")
        self.tower = PatchTower(config.patch_mels * config.patch_frames, config.grid, config.transformer, embed_dim)

    def patches(self, mels: torch.Tensor) -> torch.Tensor:
        c = self.config
        rows, cols = c.grid
        if mels.ndim != 3 or mels.shape[1] != c.n_mels or mels.shape[2] < cols * c.patch_frames:
            raise UmmError(f"audio encoder expects (B, {c.n_mels}, {c.spec.frames}) log-mels, got {tuple(mels.shape)}")
        x = (mels[:, :, : cols * c.patch_frames] - c.mean) / c.std  # the last partial patch of frames is dropped
        x = x.reshape(x.shape[0], rows, c.patch_mels, cols, c.patch_frames).permute(0, 1, 3, 2, 4)
        return x.reshape(x.shape[0], rows * cols, c.patch_mels * c.patch_frames)  # (B, N, P), raster order

    def features(self, mels: torch.Tensor) -> torch.Tensor:
        return self.tower.features(self.patches(mels))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        return self.tower(self.patches(mels))


class TextEncoder(nn.Module):
    """BPE ids -> CLS + token embeddings -> bidirectional Transformer (padding masked) -> head -> unit vector."""

    def __init__(self, config: TextEncoderConfig, vocab_size: int, embed_dim: int):
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.token_embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.trunk = Transformer(config.transformer)
        self.head = nn.Linear(dim, embed_dim, bias=False)
        nn.init.normal_(self.head.weight, std=dim**-0.5)

    def features(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, L) ids, (B, L) valid -> (B, 1 + L, D) hidden states, CLS first (padding slots are garbage)."""
        b, length = tokens.shape
        lengths = valid.sum(1).tolist()
        layout = build_layout([[Span(1 + n, bidirectional=True)] for n in lengths], self.config.transformer.rope_axes,
                              length=1 + length).to(tokens.device)
        x = torch.cat([self.cls.expand(b, 1, -1), self.token_embed(tokens)], dim=1)
        return self.trunk(x, layout)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(tokens, valid)[:, 0]).float(), dim=-1)


class TextFeatureEncoder(nn.Module):
    """Frozen text features (B, F) -> one trainable linear layer -> unit vector; UniBind trains one linear
    layer per modality on a frozen backbone (Lyu et al. 2024, arXiv 2403.12532, sec. 3.3)."""

    def __init__(self, features: int, embed_dim: int):
        super().__init__()
        self.head = nn.Linear(features, embed_dim, bias=False)
        nn.init.normal_(self.head.weight, std=features**-0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(features).float(), dim=-1)


def build_encoders(modalities: tuple[str, ...], embed_dim: int, vocab_size: int, text_features: int,
                   image: ImageEncoderConfig, text: TextEncoderConfig, audio: AudioEncoderConfig,
                   video: VideoEncoderConfig) -> nn.ModuleDict:
    """One encoder per modality, keyed by name (ImageBind's ``ModuleDict`` per ``ModalityType``).

    ``text_features`` > 0 replaces the text transformer by a linear head over frozen features of that
    width (384 for MiniLM, :mod:`umm.models.encoders_frozen`)."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise UmmError(f"unknown modalities {unknown}; encoders exist for {list(MODALITIES)}")
    made: dict[str, nn.Module] = {}
    for m in modalities:
        if m == "image":
            made[m] = ImageEncoder(image, embed_dim)
        elif m == "text":
            made[m] = TextFeatureEncoder(text_features, embed_dim) if text_features else TextEncoder(text, vocab_size, embed_dim)
        elif m == "audio":
            made[m] = AudioEncoder(audio, embed_dim)
        else:
            made[m] = VideoEncoder(video, embed_dim)
    return nn.ModuleDict(made)


def encode(encoders: nn.ModuleDict, modality: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (B, E) unit vectors of ``modality`` from a batch dict (keys in the module docstring)."""
    if modality not in encoders:
        raise UmmError(f"this model has no {modality!r} encoder; it has {list(encoders)}")
    encoder = encoders[modality]
    if isinstance(encoder, TextFeatureEncoder):
        return encoder(inputs["text_features"])
    if isinstance(encoder, TextEncoder):
        return encoder(inputs["text"], inputs["text_valid"])
    return encoder(inputs[modality])


# ---- inputs: raw data -> the tensors the encoders read (run in collate, on CPU, without gradients) ------


def text_inputs(texts: list[str], tokenizer, config: TextEncoderConfig, frozen=None) -> dict[str, torch.Tensor]:
    """Texts -> ``text`` (B, L) ids + ``text_valid``; or, given ``frozen`` (a
    :class:`umm.models.encoders_frozen.FrozenTextEncoder`), its cached ``text_features`` (B, F)."""
    if frozen is not None:
        return {"text_features": frozen(texts)}
    ids = [tokenizer.encode(t)[: config.max_tokens] for t in texts]
    length = max(1, max(len(i) for i in ids))
    tokens = torch.full((len(ids), length), tokenizer.pad_id, dtype=torch.long)
    valid = torch.zeros((len(ids), length), dtype=torch.bool)
    for row, seq in enumerate(ids):
        tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        valid[row, : len(seq)] = True
    return {"text": tokens, "text_valid": valid}


def audio_inputs(waves: list[torch.Tensor], config: AudioEncoderConfig) -> dict[str, torch.Tensor]:
    """16 kHz waves (N_i,) -> ``audio`` (B, n_mels, frames) log-mel, each padded/cut to the clip length."""
    spec = config.spec
    clips = torch.stack([log_mel(w.float(), spec) for w in waves])  # (B, n_mels, frames)
    return {"audio": clips}


# zero-shot / knowledge-base concepts of a ShapesWorld item, per attribute axis
# direction: where a clip's objects move; a still item states none (its set is empty, and it is left out of that axis)
AXES: dict[str, tuple[str, ...]] = {"colour": COLOUR_NAMES, "shape": SHAPES, "count": ("1", "2", "3"),
                                    "direction": DIRECTIONS}


def item_concepts(scene: list[dict]) -> dict[str, set[str]]:
    """The true classes of one item on every axis: its colours, its shapes, its number of objects, and the
    directions its objects move (empty for a still scene)."""
    return {"colour": {o["colour"] for o in scene}, "shape": {o["shape"] for o in scene}, "count": {str(len(scene))},
            "direction": {o["direction"] for o in scene if "direction" in o}}


def raw_inputs(modality: str, raw, tokenizer, config, frozen=None) -> dict[str, torch.Tensor]:
    """Raw data of one modality -> the encoder's input tensors: images (N, 3, H, W) and clips (N, T, 3, H, W)
    in [0, 1] as they are, texts (list of str) tokenised (or featurised by ``frozen``), 16 kHz waves (list of
    (N_i,)) to log-mel. ``config`` is a model config with ``text`` and ``audio`` encoder configs."""
    if modality == "text":
        return text_inputs(list(raw), tokenizer, config.text, frozen)
    if modality == "audio":
        return audio_inputs(list(raw), config.audio)
    return {modality: torch.stack(list(raw)) if isinstance(raw, (list, tuple)) else raw}


def embed_raw(model: nn.Module, modality: str, raw, tokenizer, config, frozen=None, batch_size: int = 64) -> torch.Tensor:
    """(N, E) unit vectors of raw inputs, in batches, without gradients: the ``embed`` capability of models
    whose ``forward(inputs, modalities)`` returns an output with ``embeddings[modality]``."""
    if modality not in config.modalities:
        raise UmmError(f"this model embeds {list(config.modalities)}, not {modality!r}")
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(raw), batch_size):
            inputs = raw_inputs(modality, raw[start: start + batch_size], tokenizer, config, frozen)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out.append(model(inputs, (modality,)).embeddings[modality].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, config.embed_dim)
