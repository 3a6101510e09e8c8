"""NExT-GPT (Wu et al. 2023, "NExT-GPT: Any-to-Any Multimodal LLM", arXiv 2309.05519): frozen encoders ->
input projector -> LLM -> signal tokens -> output projector -> frozen diffusion decoders.

- **Input side**: a frozen ImageBind image encoder; its patch features go through an input projector (the new
  code's ``linear`` projector over patches by default; ``mlp`` or a Q-Former-like ``resampler`` as options)
  into the LM's image slots.
- **Signal tokens**: the vocabulary gains ``[IMG0..k]``, ``[AUD0..k]`` and ``[VID0..k]`` (extra embedding and
  head rows after the text vocabulary; NExT-GPT: 4 image, 8 audio, 24 video tokens). To ask for an image the
  LM writes the whole ordered group ``[IMG0] [IMG1] [IMG2] [IMG3]``.
- **Output side**: the hidden states of the signal tokens go through the output projector, a small
  transformer whose learnable queries (one per condition vector) read them (NExT-GPT's ``TextFcLayer``
  transformer mode: 77 queries for Stable Diffusion), into the decoder's conditioning space. It is trained
  with an L2 loss to the decoder's *own* text condition of the caption (precomputed there; here computed by
  the frozen decoder's text encoder and cached by caption), so no gradient ever passes through a decoder.
- **Routing**: the first signal token of a generated stream picks the decoder (image here; ``[AUD*]`` and
  ``[VID*]`` route to "no decoder for audio/video" until decoders are attached); a stream whose signal
  tokens are missing, partial or out of order gives a ``RouteResult`` of kind ``none`` with the reason
  (:func:`route`), never an exception.
- **Training stages** (paper sec. 4), as recipes that start from the previous stage's run
  (``system_args.init_from``) and train only part of the model (``system_args.stage``):
  ``text`` (umm's stage 0: the small LM learns ShapesWorld text, the role of Vicuna's pre-training),
  ``input`` (stage 1, encoder-side alignment: captioning, only the input projector learns),
  ``output`` (stage 2, decoder-side alignment: caption -> signal tokens, only the output projector learns),
  ``instruct`` (stage 3, instruction tuning: LM + both projectors on every task; NExT-GPT uses LoRA on the
  LLM, a 7B model; this LM is small enough to tune fully). ``all`` trains everything at once.

Sequences:

    text     [BOS] caption [EOS]                                      LM loss on all of it
    caption  [BOS] [BOI] <image slots> [EOI] caption [EOS]            LM loss on the caption
    qa       [BOS] [BOI] <image slots> [EOI] question answer [EOS]    LM loss on the answer
    t2i      [BOS] caption [IMG0] [IMG1] [IMG2] [IMG3] [EOS]          LM loss on the signal tokens and EOS;
                                                                      L2(projector(h_IMG), decoder condition)

Shapes: B batch, T slots, K signal tokens per modality, M x C the decoder's condition, D LM width.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import nn

from umm.config import ConfigError
from umm.data.sequence import Sequence
from umm.models.factory import register_model
from umm.models.llm_bridge import (
    BridgeLM,
    BridgeOutput,
    BridgeSystem,
    ConnectorConfig,
    FrozenEncoders,
    QueryResampler,
    ResamplerConfig,
    freeze_to,
    frozen_system,
    gather_slots,
    load_stage_weights,
)
from umm.models.system import load_system, save_system
from umm.nn import Layout, TransformerConfig
from umm.objectives import next_token_loss
from umm.objectives.diffusion import diffusion_loss
from umm.registry import ARCHITECTURES, SYSTEMS

ENCODERS_DIR, DECODER_DIR = "encoders", "decoder"
SIGNAL_MODALITIES: tuple[str, ...] = ("image", "audio", "video")
SIGNAL_NAMES = {"image": "IMG", "audio": "AUD", "video": "VID"}
# the parameters each stage trains (name prefixes; "" is every parameter)
STAGES: dict[str, tuple[str, ...]] = {
    "all": ("",),
    "text": ("lm.token_embed", "lm.trunk", "lm.lm_head"),
    "input": ("lm.input_projector",),
    "output": ("output_projector",),
    "instruct": ("lm.", "output_projector"),
}


@dataclass(frozen=True)
class NextGPTConfig:
    family: ClassVar[str] = "nextgpt"
    vocab_size: int = 512  # decided by the system: the text tokenizer's size (signal tokens come after it)
    image_size: int = 32  # decided by the system: the encoders' canvas
    feature_dim: int = 128  # decided by the system: the image encoder's width
    feature_tokens: int = 65  # decided by the system: CLS + patches of the image encoder
    connector: ConnectorConfig = field(default_factory=lambda: ConnectorConfig(kind="linear"))
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=256, depth=4, heads=4))
    signal_tokens: int = 4  # per modality: [IMG0..3], [AUD0..3], [VID0..3]
    context_tokens: int = 25  # decided by the system: the image decoder's condition is M x C
    context_dim: int = 128
    output_projector: ResamplerConfig = field(default_factory=ResamplerConfig)


@ARCHITECTURES.register("nextgpt")
class NextGPT(nn.Module):
    config_class = NextGPTConfig

    def __init__(self, config: NextGPTConfig):
        super().__init__()
        self.config = config
        extra = len(SIGNAL_MODALITIES) * config.signal_tokens
        self.lm = BridgeLM(config.vocab_size, extra, config.feature_dim, config.feature_tokens, config.connector,
                           config.transformer)
        self.output_projector = QueryResampler(config.transformer.dim, config.context_dim, config.signal_tokens,
                                               config.context_tokens, config.output_projector)

    def forward(self, tokens: torch.Tensor, kinds: torch.Tensor, features: torch.Tensor | None, layout: Layout,
                cache=None, commit: bool = True, out_slots: torch.Tensor | None = None) -> BridgeOutput:
        """tokens/kinds (B, T), features (I, F, E); ``out_slots`` (B, K): the slots of an image signal group,
        whose hidden states the output projector maps to the decoder condition ``out`` (B, M, C)."""
        hidden, logits = self.lm(tokens, kinds, features, layout, cache, commit)
        out = None if out_slots is None else self.output_projector(gather_slots(hidden, out_slots))
        return BridgeOutput(logits, hidden, out)

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.lm.new_cache(batch, max_len, device)


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def nextgpt_s() -> NextGPTConfig:
    """~3.6M trainable parameters: a 4-layer width-256 LM, linear input projector, 2-layer output projector."""
    return NextGPTConfig()


@register_model
def test_nextgpt() -> NextGPTConfig:
    return NextGPTConfig(transformer=TransformerConfig(dim=32, depth=2, heads=2), signal_tokens=2,
                         output_projector=ResamplerConfig(dim=32, depth=1, heads=2))


# ---- system -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NextGPTOptions:
    # frozen parts (unset is an error): a trained ImageBind run (runs/imagebind_s/model) and a trained
    # text-conditioned cond_decoder run (runs/cond_decoder_s/model); in tests registered names (fresh weights)
    encoders: str | None = None
    decoder: str | None = None
    stage: Literal["all", "text", "input", "output", "instruct"] = "all"
    init_from: str | None = None  # the previous stage's runs/<name>/model (same model name and tokenizer)
    lambda_l2: float = 1.0  # weight of the output-alignment loss (mean squared error per condition element)
    max_text_tokens: int = 40
    max_new_tokens: int = 48  # free generation (``generate``)


@SYSTEMS.register("nextgpt")
class NextGPTSystem(BridgeSystem):
    family = "nextgpt"
    tasks = ("text", "caption", "qa", "t2i")
    Options = NextGPTOptions

    def __init__(self, tokenizer, config: NextGPTConfig, options: NextGPTOptions | None = None,
                 encoders: FrozenEncoders | None = None, decoder: tuple[nn.Module, object] | None = None):
        super().__init__(tokenizer, config, options)
        self.encoders = encoders or FrozenEncoders.load(
            self.frozen_source(self.options, "encoders", "imagebind_s"), tokenizer)
        self.check_encoders()
        self.decoder_model, self.decoder = decoder or frozen_system(
            self.frozen_source(self.options, "decoder", "cond_decoder_s"), tokenizer)
        _check_decoder(self.decoder, config)
        self.decoders = ("image",)  # modalities with a decoder attached; the others route to "none"
        k, v = config.signal_tokens, config.vocab_size
        self.signals = {m: tuple(range(v + i * k, v + (i + 1) * k)) for i, m in enumerate(SIGNAL_MODALITIES)}

    @classmethod
    def model_overrides(cls, tokenizer, options: NextGPTOptions) -> dict:
        encoders = FrozenEncoders.load(cls.frozen_source(options, "encoders", "imagebind_s"), tokenizer)
        _, decoder = frozen_system(cls.frozen_source(options, "decoder", "cond_decoder_s"), tokenizer)
        return {"vocab_size": tokenizer.vocab_size, "image_size": encoders.image_size,
                "feature_dim": encoders.image_dim, "feature_tokens": 1 + encoders.image_grid**2,
                "context_tokens": decoder.config.context_tokens, "context_dim": decoder.config.context_dim}

    def prepare_model(self, model: nn.Module) -> None:
        """Start from the previous stage and train only this stage's parts."""
        if self.options.init_from:
            load_stage_weights(model, self.tokenizer, self.options.init_from)
        freeze_to(model, STAGES[self.options.stage])

    def save(self, directory: Path) -> None:
        super().save(directory)
        self.encoders.save(directory / ENCODERS_DIR)
        save_system(directory / DECODER_DIR, self.decoder_model, self.decoder)

    @classmethod
    def load(cls, directory: Path, config: NextGPTConfig, options: NextGPTOptions) -> BridgeSystem:
        from umm.tokenizers.text import TextTokenizer

        encoders = FrozenEncoders.load(directory / ENCODERS_DIR)
        return cls(TextTokenizer.load(directory), config, options, encoders, load_system(directory / DECODER_DIR))

    def token_name(self, token: int) -> str:
        for modality, ids in self.signals.items():
            if token in ids:
                return f"[{SIGNAL_NAMES[modality]}{ids.index(token)}]"
        if token in self.tokenizer.special_ids:
            return f"<special {token}>"
        return repr(self.tokenizer.decode([token]))

    # -- generation ---------------------------------------------------------------------------------------

    def signal_prompt(self, prompt: str, generated: list[int] = ()) -> Sequence:
        """``[BOS] prompt (generated text) [IMG0..IMGk]``: the image signal group ends the sequence."""
        tok = self.tokenizer
        ids = [tok.bos_id] + self.text_ids(prompt) + list(generated) + list(self.signals["image"])
        return Sequence(pad_id=tok.pad_id).text(ids, loss=False)

    def render(self, model, seqs: list[Sequence], batch_size: int = 16, precision: str = "bf16",
               **kwargs) -> torch.Tensor:
        """Sequences ending with the image signal group -> output projector -> image decoder -> (B, 3, H, W)."""
        context = self.run_loop("image_query", model, seqs, self.config.signal_tokens, precision=precision)
        return self.decoder.render(self.decoder_model, context, batch_size=batch_size, precision=precision, **kwargs)

    def generate_images(self, model, prompts: list[str], **kwargs) -> torch.Tensor:
        """Text -> images (N, 3, H, W) in [0, 1]. The signal tokens are appended to every prompt rather than
        waited for, so each prompt gets an image (``generate`` lets the LM decide)."""
        return self.render(model, [self.signal_prompt(p) for p in prompts], **kwargs)

    def generate(self, model, prompts: list[str], precision: str = "bf16", **kwargs) -> list[RouteResult]:
        """Free any-to-any generation: greedy decoding over text and signal tokens, then routing by the first
        signal token; image streams are rendered (``kwargs``: the decoder's sampling options)."""
        tok = self.tokenizer
        seqs = [Sequence(pad_id=tok.pad_id).text([tok.bos_id] + self.text_ids(p), loss=False) for p in prompts]
        streams = self.run_loop("decode_text", model, seqs, None, self.options.max_new_tokens, tok.eos_id,
                                           precision=precision)
        results = []
        for prompt, ids in zip(prompts, streams):
            routed = route(ids, self.signals, self.decoders, self.token_name)
            before = ids[: routed.start] if routed.start >= 0 else ids  # the text the LM wrote before the signal
            text = tok.decode([i for i in before if i < tok.vocab_size])
            image = None
            if routed.kind == "image":
                image = self.render(model, [self.signal_prompt(prompt, ids[: routed.start])], precision=precision,
                                    **kwargs)[0]
            results.append(RouteResult(routed.kind, routed.modality, routed.start, routed.reason, text, image))
        return results

    # -- batches and objective ------------------------------------------------------------------------------

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        tok = self.tokenizer
        if task in ("caption", "qa"):
            return self.collate_understanding(samples, task, generator)
        if task == "text":
            rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=generator)))
            texts = [rng.choice([s["caption"], s.get("caption_full", s["caption"])]) for s in samples]
            seqs = [Sequence(pad_id=tok.pad_id).text([tok.bos_id] + self.text_ids(t) + [tok.eos_id], loss=True)
                    for t in texts]
            return self.batch_of(seqs, None)
        seqs, slots = [], []
        for s in samples:  # t2i
            seq = Sequence(pad_id=tok.pad_id).text([tok.bos_id] + self.text_ids(s["caption"]), loss=False)
            slots.append(list(range(len(seq), len(seq) + self.config.signal_tokens)))
            seqs.append(seq.text(list(self.signals["image"]) + [tok.eos_id], loss=True))
        batch = self.batch_of(seqs, None)
        batch["out_slots"] = torch.tensor(slots, dtype=torch.long)  # (B, K)
        batch["target"] = self.decoder.text_condition([s["caption"] for s in samples])  # (B, M, C), cached
        return batch

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        out = model(batch["tokens"], batch["kinds"], batch["features"], Layout.of(batch),
                    out_slots=batch.get("out_slots"))
        lm = next_token_loss(out.logits, batch["text_targets"])
        losses = {"lm_loss": lm}
        if out.out is not None:
            l2 = diffusion_loss(out.out, batch["target"])  # mean over condition elements of the squared error
            losses["l2_loss"] = self.options.lambda_l2 * l2
            losses["l2_mse"] = l2.detach()
        return losses


def _check_decoder(decoder, config: NextGPTConfig) -> None:
    if decoder.family != "cond_decoder" or decoder.options.condition != "text":
        raise ConfigError("system_args.decoder must be a text-conditioned cond_decoder (its text condition is what "
                          f"the output projector learns); got {decoder.family!r}")
    if (decoder.config.context_tokens, decoder.config.context_dim) != (config.context_tokens, config.context_dim):
        raise ConfigError(f"decoder condition {(decoder.config.context_tokens, decoder.config.context_dim)} does not "
                          f"match the model's output projector {(config.context_tokens, config.context_dim)}")
    if decoder.config.image_size != config.image_size:
        raise ConfigError(f"decoder draws {decoder.config.image_size} px images, the encoders read "
                          f"{config.image_size} px")


# ---- routing: where a generated stream goes ----------------------------------------------------------------


@dataclass(frozen=True)
class RouteResult:
    """Where one generated stream goes. ``kind`` is the decoder that renders it (``image``) or ``none``;
    ``modality`` the signal group found (even when nothing renders it), ``start`` the index of its first
    token in the stream, ``reason`` why nothing was rendered; ``image`` (3, H, W) once rendered."""

    kind: str
    modality: str | None = None
    start: int = -1
    reason: str = ""
    text: str = ""
    image: torch.Tensor | None = None


def route(ids: list[int], groups: dict[str, tuple[int, ...]], decoders: tuple[str, ...], names=None) -> RouteResult:
    """Route a generated id stream by its first signal token.

    ``groups`` maps a modality to its ordered signal ids ([IMG0..IMG3]); the first signal id in ``ids``
    decides the modality; the whole group must then follow in order. ``decoders`` are the modalities this
    system can render. ``names(id) -> str`` spells ids in reasons."""
    spell = names or str
    owner = {i: m for m, group in groups.items() for i in group}
    first = next((k for k, i in enumerate(ids) if i in owner), None)
    if first is None:
        return RouteResult("none", reason="no signal token in the output")
    modality = owner[ids[first]]
    expected = list(groups[modality])
    got = ids[first : first + len(expected)]
    if got != expected:
        return RouteResult("none", modality, first,
                           f"{modality} signal tokens are partial or out of order: got "
                           f"[{' '.join(spell(i) for i in got)}], expected [{' '.join(spell(i) for i in expected)}]")
    if modality not in decoders:
        return RouteResult("none", modality, first, f"no decoder for {modality} is attached to this system")
    return RouteResult(modality, modality, first)
