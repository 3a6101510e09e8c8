"""What the LLM-centric multi-expert systems share (TextBind, NExT-GPT, SEED-X; multi_expert.md sec. 3):
frozen expert models around a small causal language model, and the projectors between them.

- :class:`FrozenEncoders`: a frozen ImageBind-style encoder set (``umm.models.imagebind``) with the tokenizer
  its text tower reads, loaded from a trained run directory or, for tests, built from a registered name with
  fresh seeded weights; image patch features, text token features and pooled text embeddings, without
  gradients; a small cache of text features keyed by text (NExT-GPT precomputes its decoders' caption
  conditions the same way).
- :func:`frozen_system`: any other frozen umm system (a text -> image generator, a diffusion decoder) from a
  run directory or a registered name; the owning system copies it into its saved directory.
- :class:`QueryResampler`: learnable queries that read a sequence through the shared trunk: BLIP-2's
  Q-Former (Li et al. 2023, arXiv 2301.12597) as TextBind's input side, NExT-GPT's transformer output
  projector (``TextFcLayer``, arXiv 2309.05519 sec. 3) and SEED-X's input/output resamplers (arXiv 2404.14396).
- :class:`BridgeLM`: token embeddings (+ extra rows for new tokens), an input projector that turns image
  features into the LM's image slots, the causal trunk and the LM head.
- training stages: :func:`freeze_to` (only some parameter groups learn) and :func:`load_stage_weights`
  (start a stage from a previous stage's run directory).

Shapes: B batch, I images in a batch, F feature tokens per image (CLS + patches), E feature width,
S image slots in the LM, T sequence slots, D LM width, Q queries.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, NamedTuple

import safetensors.torch
import torch
from torch import nn

from umm import UmmError
from umm.config import ConfigError
from umm.data.sequence import PATCH, Sequence, batch_rng, collate, understanding_turn
from umm.models.factory import build_model, from_pretrained, model_config, write_pretrained
from umm.models.system import SystemBase, load_system
from umm.nn import Layout, Span, Transformer, TransformerConfig, build_layout
from umm.registry import MODELS, SYSTEMS

# ---- frozen experts ------------------------------------------------------------------------------------------


class FrozenEncoders:
    """A frozen encoder set with ``encoders`` (ModuleDict: image, text, ...) and the tokenizer of its text tower.

    ``source`` is a trained ImageBind/UniBind model directory (``runs/imagebind_s/model``: weights,
    config and tokenizer) or a registered model name (``test_imagebind``) for fresh weights seeded with 0,
    whose text tower then reads ``tokenizer`` (only good for tests)."""

    def __init__(self, model: nn.Module, tokenizer, cache_size: int = 4096):
        if not hasattr(model, "encoders") or "image" not in model.encoders:
            raise ConfigError(f"a frozen encoder set needs an image encoder; got a {model.config.family!r} model")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.cache: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.cache_lock = threading.Lock()  # the trainer collates in a background thread while eval may run
        self.cache_hits = 0
        self.cache_misses = 0

    @classmethod
    def load(cls, source: str | Path, tokenizer=None) -> FrozenEncoders:
        from umm.tokenizers.text import TextTokenizer

        if Path(source).is_dir():
            return cls(from_pretrained(source), TextTokenizer.load(source))
        if str(source) in MODELS:
            if tokenizer is None:
                raise ConfigError(f"fresh encoders {source!r} need the system's tokenizer for their text tower")
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = build_model(model_config(str(source), {"vocab_size": tokenizer.vocab_size}))
            return cls(model, tokenizer)
        raise ConfigError(f"encoders {str(source)!r} is neither a trained model directory nor a registered "
                          "model name")

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_pretrained(self.model, directory)
        self.tokenizer.save(directory)

    @property
    def image_size(self) -> int:
        return self.model.encoders["image"].config.image_size

    @property
    def image_grid(self) -> int:
        config = self.model.encoders["image"].config
        return config.image_size // config.patch

    @property
    def image_dim(self) -> int:
        return self.model.encoders["image"].config.transformer.dim

    @property
    def text_dim(self) -> int:
        return self.model.encoders["text"].config.transformer.dim

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1 + N, E) hidden states of the image tower, CLS first."""
        encoder = self.model.encoders["image"]
        device = next(encoder.parameters()).device
        return encoder.features(images.to(device)).float()

    @torch.no_grad()
    def text_tokens(self, texts: list[str], max_tokens: int) -> torch.Tensor:
        """(B, 1 + max_tokens, E) hidden states of the text tower (CLS first), zero after each text's end.

        Every text is run alone at the fixed length, so its features do not depend on what it is batched
        with and a cached entry equals a fresh one."""
        from umm.models.encoders import TextEncoder

        encoder = self.model.encoders["text"]
        if not isinstance(encoder, TextEncoder):
            raise ConfigError("these encoders read text through frozen MiniLM features (one vector per text); "
                              "set system_args.text_features=pooled")
        device = next(encoder.parameters()).device
        with self.cache_lock:
            missing = [t for t in dict.fromkeys(texts) if (t, max_tokens) not in self.cache]
            self.cache_hits += len(texts) - len(missing)
            self.cache_misses += len(missing)
            for text in missing:
                ids = self.tokenizer.encode(text)[:max_tokens]
                tokens = torch.full((1, max_tokens), self.tokenizer.pad_id, dtype=torch.long)
                valid = torch.zeros((1, max_tokens), dtype=torch.bool)
                tokens[0, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                valid[0, : len(ids)] = True
                hidden = encoder.features(tokens.to(device), valid.to(device))[0].float().cpu()  # (1 + L, E)
                keep = torch.cat([torch.ones(1, dtype=torch.bool), valid[0]])  # CLS + the text's tokens
                self.cache[(text, max_tokens)] = hidden * keep[:, None]
            out = torch.stack([self.cache[(t, max_tokens)] for t in texts])
            for text in texts:
                self.cache.move_to_end((text, max_tokens))
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return out

    @torch.no_grad()
    def text_pooled(self, texts: list[str]) -> torch.Tensor:
        """(B, 1, embed_dim): the text tower's unit embedding (works with frozen MiniLM text towers too)."""
        from umm.models.encoders import raw_inputs
        from umm.models.encoders_frozen import frozen_text_encoder

        config = self.model.config
        frozen = frozen_text_encoder() if getattr(config, "text_features", 0) else None
        inputs = raw_inputs("text", texts, self.tokenizer, config, frozen)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        return self.model(inputs, ("text",)).embeddings["text"].float().cpu()[:, None, :]


def frozen_system(source: str | Path, tokenizer, options: dict | None = None) -> tuple[nn.Module, object]:
    """A frozen (model, system) from a trained system directory, or a registered model name built with fresh
    weights (seed 0), the default options updated by ``options`` and ``tokenizer`` (tests only)."""
    if Path(source).is_dir():
        model, system = load_system(source)
    elif str(source) in MODELS:
        system_cls = SYSTEMS.get(MODELS.get(str(source))().family)
        # a fresh test system reads fresh test encoders (its own frozen part) unless ``options`` name others
        parts = {"encoders": "test_imagebind"} if "encoders" in {f.name for f in fields(system_cls.Options)} else {}
        parsed = system_cls.parse_options({**parts, **(options or {})})
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_model(model_config(str(source), system_cls.model_overrides(tokenizer, parsed)))
        system = system_cls(tokenizer, model.config, parsed)
    else:
        raise ConfigError(f"{str(source)!r} is neither a trained system directory (runs/<name>/model) nor a "
                          "registered model name")
    return model.eval().requires_grad_(False), system


# ---- projectors ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int = 128
    depth: int = 2
    heads: int = 4


class QueryResampler(nn.Module):
    """``queries`` learnable queries read ``inputs`` vectors: (B, L, in_dim) -> (B, Q, out_dim).

    Inputs and queries form one bidirectional span of the shared trunk, so every query attends to every input
    and to the other queries (the Q-Former's self-attention and cross-attention in one pass); the queries'
    outputs are projected to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, inputs: int, queries: int, config: ResamplerConfig):
        super().__init__()
        self.inputs = inputs
        self.in_proj = nn.Linear(in_dim, config.dim)
        self.queries = nn.Parameter(torch.randn(queries, config.dim) * 0.02)
        self.trunk = Transformer(TransformerConfig(dim=config.dim, depth=config.depth, heads=config.heads))
        self.out_proj = nn.Linear(config.dim, out_dim)
        layout = build_layout([[Span(inputs + queries, bidirectional=True)]])
        self.register_buffer("block", layout.block, persistent=False)
        self.register_buffer("positions", layout.positions, persistent=False)
        self.register_buffer("valid", layout.valid, persistent=False)
        self.register_buffer("next_position", layout.next_position, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        if length != self.inputs:
            raise UmmError(f"resampler built for {self.inputs} inputs got {length}")
        h = torch.cat([self.in_proj(x), self.queries.expand(b, -1, -1).to(x.dtype)], dim=1)  # (B, L + Q, d)
        layout = Layout(self.block.expand(b, -1), self.positions.expand(b, -1, -1), self.valid.expand(b, -1),
                        self.next_position.expand(b, -1))
        return self.out_proj(self.trunk(h, layout)[:, length:])  # (B, Q, out_dim)


@dataclass(frozen=True)
class ConnectorConfig:
    """How image features become LM slots: ``resampler`` (Q-Former-like, ``queries`` slots), ``linear`` (one
    slot per feature token; NExT-GPT's linear projector) or ``mlp`` (LLaVA-1.5's 2 layers)."""

    kind: Literal["resampler", "linear", "mlp"] = "resampler"
    queries: int = 16  # resampler slots per image (BLIP-2's Q-Former and TextBind: 32; SEED-X: 64)
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)


def image_slots(connector: ConnectorConfig, feature_tokens: int) -> int:
    """LM slots one image takes."""
    return connector.queries if connector.kind == "resampler" else feature_tokens


def build_connector(connector: ConnectorConfig, feature_dim: int, feature_tokens: int, dim: int) -> nn.Module:
    if connector.kind == "resampler":
        return QueryResampler(feature_dim, dim, feature_tokens, connector.queries, connector.resampler)
    if connector.kind == "linear":
        return nn.Linear(feature_dim, dim)
    return nn.Sequential(nn.Linear(feature_dim, dim), nn.GELU(), nn.Linear(dim, dim))


# ---- the language model -------------------------------------------------------------------------------------


class BridgeLM(nn.Module):
    """A causal LM whose image slots (``kinds == PATCH``) take projected image features.

    ``vocab_size`` text tokens plus ``extra_tokens`` rows after them (NExT-GPT's signal tokens, SEED-X's
    learnable output queries): both the embedding and the head cover them, so the LM can emit them."""

    def __init__(self, vocab_size: int, extra_tokens: int, feature_dim: int, feature_tokens: int,
                 connector: ConnectorConfig, transformer: TransformerConfig):
        super().__init__()
        dim = transformer.dim
        self.image_slots = image_slots(connector, feature_tokens)
        self.token_embed = nn.Embedding(vocab_size + extra_tokens, dim)
        self.input_projector = build_connector(connector, feature_dim, feature_tokens, dim)
        self.trunk = Transformer(transformer)
        self.lm_head = nn.Linear(dim, vocab_size + extra_tokens, bias=False)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)

    def forward(
        self,
        tokens: torch.Tensor,  # (B, T) ids (pad on image slots)
        kinds: torch.Tensor,  # (B, T) TEXT / PATCH
        features: torch.Tensor | None,  # (I, F, E) features of the images, in slot order
        layout: Layout,
        cache=None,
        commit: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (hidden (B, T, D), logits (B, T, V + extra))."""
        x = self.token_embed(tokens)  # (B, T, D)
        image = kinds == PATCH
        n_slots = int(image.sum())
        if n_slots:
            if features is None or n_slots != features.shape[0] * self.image_slots:
                got = 0 if features is None else features.shape[0]
                raise UmmError(f"{n_slots} image slots but features of {got} images x {self.image_slots} slots")
            projected = self.input_projector(features)  # (I, S, D)
            x = x.index_put((image,), projected.flatten(0, 1).to(x.dtype))  # (I * S, D) into the image slots
        h = self.trunk(x, layout, cache=cache, commit=commit)
        return h, self.lm_head(h)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.trunk.new_cache(batch, max_len, device)


def add_image(seq: Sequence, boi: int, eoi: int, slots: int) -> Sequence:
    """``[BOI] <slots image slots> [EOI]`` as input (no loss): causal, as LLaVA-style LMs read images."""
    seq.text([boi], loss=False)
    seq.image(torch.zeros(slots, 0), (slots,), loss=False, bidirectional=False)
    return seq.text([eoi], loss=False)


def gather_slots(hidden: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, D), slots (B, K) indices -> (B, K, D)."""
    return hidden.gather(1, slots[..., None].expand(-1, -1, hidden.shape[-1]))


class BridgeOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V + extra) next-token logits
    hidden: torch.Tensor  # (B, T, D) final hidden states
    out: torch.Tensor | None  # (B, M, C) output slots through the output projector, when ``out_slots`` is given


# ---- what the systems share: image understanding -------------------------------------------------------------


class BridgeSystem(SystemBase):
    """Sequences and capabilities every LLM-centric system shares; subclasses set ``self.encoders`` (the
    frozen input encoders) and add their own text -> image route.

        caption  [BOS] [BOI] <image slots> [EOI] caption [EOS]             LM loss on the caption
        qa       [BOS] [BOI] <image slots> [EOI] question answer [EOS]     LM loss on the answer

    Captioning trains on ShapesWorld's complete caption (``caption_full``: every object's size, colour,
    shape and cell), which is what the judge can check."""

    # caption and answer: umm/pipelines/multi_expert.py (mechanism "bridge"), as are the decode and query loops
    # the subclasses' own text -> image routes run through run_loop ("decode_text", "image_query")
    mechanism = "bridge"

    capabilities = ("t2i", "caption", "qa")
    encoders: FrozenEncoders

    def check_encoders(self) -> None:
        config = self.config
        if (self.encoders.image_size, self.encoders.image_dim) != (config.image_size, config.feature_dim):
            raise UmmError(f"model (image {config.image_size} px, features {config.feature_dim}) does not match its "
                           f"encoders ({self.encoders.image_size} px, {self.encoders.image_dim})")

    @property
    def image_slots(self) -> int:
        return image_slots(self.config.connector, self.config.feature_tokens)

    def input_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, F, E) frozen image features (CLS + patches)."""
        size = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[-2:]) != (size, size):
            raise UmmError(f"this system reads (B, 3, {size}, {size}) images, got {tuple(images.shape)}")
        return self.encoders.image_features(images)

    def understanding_prompt(self, question: str | None) -> Sequence:
        """``[BOS] [BOI] <image> [EOI] (question)``."""
        tok = self.tokenizer
        seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id], loss=False)
        add_image(seq, tok.boi_id, tok.eoi_id, self.image_slots)
        return seq.text([] if question is None else self.text_ids(question), loss=False)

    def understanding_sequence(self, sample: dict, task: str, rng: random.Random) -> Sequence:
        question, target = understanding_turn(sample, task, rng)
        return self.understanding_prompt(question).text(self.text_ids(target) + [self.tokenizer.eos_id], loss=True)

    def batch_of(self, seqs: list[Sequence], features: torch.Tensor | None) -> dict:
        """Right-padded training batch; ``features`` (I, F, E) of the images in slot order (none: zero rows)."""
        config = self.config
        batch = collate(seqs, patch_dim=0, rope_axes=config.transformer.rope_axes, pad_id=self.tokenizer.pad_id,
                        multiple_of=8)
        no_images = torch.zeros(0, config.feature_tokens, config.feature_dim)
        batch["features"] = features if features is not None else no_images
        return batch

    def collate_understanding(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        rng = batch_rng(generator)
        features = self.input_features(torch.stack([s["image"] for s in samples]))
        return self.batch_of([self.understanding_sequence(s, task, rng) for s in samples], features)


# ---- training stages ----------------------------------------------------------------------------------------


def freeze_to(model: nn.Module, trainable_prefixes: tuple[str, ...]) -> None:
    """Only parameters whose names start with one of ``trainable_prefixes`` keep learning."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trainable_prefixes))


def load_stage_weights(model: nn.Module, tokenizer, directory: str | Path) -> None:
    """Copy every weight of a previous stage's saved system (``runs/<stage>/model``) into ``model``; the
    architecture and the tokenizer must be the same."""
    from umm.data.shapes import ShapesWorld
    from umm.models.factory import CONFIG_FILE, WEIGHTS_FILE, load_config
    from umm.tokenizers.text import TextTokenizer

    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise ConfigError(f"system_args.init_from: {str(directory)!r} is not a saved model (no {CONFIG_FILE}); "
                          "pass the previous stage's runs/<name>/model")
    previous = load_config(directory)
    if previous != model.config:
        raise ConfigError(f"system_args.init_from: {str(directory)!r} holds a different architecture than this "
                          "recipe builds; start every stage from the same model name and tokenizer "
                          "(tokenizer.path: <the first stage's run>/model)")
    probe = list(ShapesWorld("train", canvas=32, size=32).text_corpus(32))
    if [TextTokenizer.load(directory).encode(t) for t in probe] != [tokenizer.encode(t) for t in probe]:
        raise ConfigError(f"system_args.init_from: {str(directory)!r} was trained with another tokenizer; set "
                          f"tokenizer.path: {str(directory)} so that token ids mean the same in both stages")
    state = safetensors.torch.load_file(str(directory / WEIGHTS_FILE))
    model.load_state_dict(state, strict=True)


__all__ = [
    "BridgeLM", "BridgeOutput", "BridgeSystem", "ConnectorConfig", "FrozenEncoders", "QueryResampler",
    "ResamplerConfig", "add_image", "build_connector", "freeze_to", "frozen_system", "gather_slots", "image_slots",
    "load_stage_weights",
]