"""LWM, the Large World Model (Liu et al. 2024, "World Model on Million-Length Video and Language with Blockwise
RingAttention", arXiv 2402.08268).

A decoder-only transformer over text and video frames. Every frame (an image is a one-frame video) is a grid of
VQ codes from a per-frame image tokenizer (sec. 4.1: a VQGAN turning each 256x256 frame into 16x16 codes);
frames are separated by an end-of-frame token and the last one closes with end-of-video; the visual part sits
between the text tokens ``<vision>`` and ``</vision>``::

    [BOS] a red circle moves up <vision> f1 codes [EOF] f2 codes [EOF] ... fN codes [EOV] </vision> [EOS]
    [BOS] <vision> f1 codes [EOV] </vision> a small red circle at the top left [EOS]

What sets it apart from a shared-vocabulary model (Chameleon, EMU3):

- **separate vision embedding and vision head** (``vision_llama.py``: ``vision_vocab_size`` = 8192 codes + the
  structure tokens): a vision slot is embedded by its own table and a vision target is predicted by its own
  head over the vision vocabulary only; text uses the LM embedding and head.
- **two cross-entropies with equal weight** (``train.py``: ``loss = 0.5 * (vision_loss + text_loss)``): each is a
  mean over its own targets, so the many vision tokens of a clip do not drown the few text tokens.
- **long sequences**: a clip of N frames costs N x (h*w + 1) slots; ``benchmarks/lwm_context_cost.py`` measures
  how the cost grows with N. (LWM reaches 1M tokens with RingAttention and progressive context growth; umm's
  trunk is plain attention, and ``frames`` / ``frame_stride`` choose the context.)

Sampling (``scripts/run_sample_image.sh`` / ``run_sample_video.sh``): KV cache, top-k, codes only inside the
vision span with EOF / EOV forced at the frame ends (:func:`umm.samplers.plan.grid_plan`), and
classifier-free guidance whose unconditional prompt is ``[BOS] <vision>`` (the caption dropped; training drops
it with probability ``cfg_dropout``, umm's choice).

Token ids: one id space for the data pipeline (text ids, then vision ids offset by the text vocabulary); the
model routes each id to its embedding and scores both heads. Shapes: B batch, T slots, D width, Vt text
vocabulary, Vv = codes + 2 vision vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from umm import UmmError
from umm.data.sequence import Sequence, ar_sequence, batch_rng, collate
from umm.models.factory import register_model
from umm.models.system import FrozenPart, SystemBase
from umm.nn import Layout, Transformer, TransformerConfig
from umm.objectives import IGNORE
from umm.registry import ARCHITECTURES, SYSTEMS
from umm.samplers.plan import TokenPlan, append_planned, grid_plan
from umm.tokenizers import image as image_tokenizers  # the module, not names: it imports umm.models itself



@dataclass(frozen=True)
class LWMConfig:
    family: ClassVar[str] = "lwm"
    text_vocab: int = 512  # decided by the system: the text tokenizer's size
    vision_codes: int = 512  # decided by the system: the image tokenizer's codebook size
    image_size: int = 32  # decided by the system: the tokenizer's frame side in pixels
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(qk_norm=False))

    @property
    def vision_vocab(self) -> int:
        """Codes, then end-of-frame and end-of-video (LWM: 8192 = eof, 8193 = eov)."""
        return self.vision_codes + 2

    @property
    def eof_id(self) -> int:
        return self.text_vocab + self.vision_codes

    @property
    def eov_id(self) -> int:
        return self.text_vocab + self.vision_codes + 1


class LWMOutput(NamedTuple):
    text_logits: torch.Tensor  # (B, T, Vt) from the LM head
    vision_logits: torch.Tensor  # (B, T, Vv) from the vision head

    @property
    def logits(self) -> torch.Tensor:
        """(B, T, Vt + Vv): each head's log-probabilities side by side, in the one id space. The shared AR loops
        restrict every step to one of the two ranges, so a step samples from that head's own distribution."""
        return torch.cat([self.text_logits.float().log_softmax(-1), self.vision_logits.float().log_softmax(-1)], -1)


@ARCHITECTURES.register("lwm")
class LWM(nn.Module):
    config_class = LWMConfig

    def __init__(self, config: LWMConfig):
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.text_embed = nn.Embedding(config.text_vocab, dim)
        self.vision_embed = nn.Embedding(config.vision_vocab, dim)
        self.trunk = Transformer(config.transformer)
        self.text_head = nn.Linear(dim, config.text_vocab, bias=False)
        self.vision_head = nn.Linear(dim, config.vision_vocab, bias=False)
        for layer in (self.text_embed, self.vision_embed, self.text_head, self.vision_head):
            nn.init.normal_(layer.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, layout: Layout, cache=None, commit: bool = True) -> LWMOutput:
        """tokens (B, T) in the one id space -> both heads' logits at every slot."""
        text_vocab = self.config.text_vocab
        vision = tokens >= text_vocab  # (B, T)
        x = torch.where(vision[..., None], self.vision_embed((tokens - text_vocab).clamp_min(0)),
                        self.text_embed(tokens.clamp_max(text_vocab - 1)))  # (B, T, D)
        h = self.trunk(x, layout, cache=cache, commit=commit)
        return LWMOutput(self.text_head(h), self.vision_head(h))

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.trunk.new_cache(batch, max_len, device)


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def lwm_s() -> LWMConfig:
    """~5.3M parameters (with a 512-token BPE and a 512-code image tokenizer): the CPU size."""
    return LWMConfig(transformer=TransformerConfig(dim=256, depth=6, heads=4, qk_norm=False))


@register_model
def lwm_m() -> LWMConfig:
    return LWMConfig(transformer=TransformerConfig(dim=384, depth=8, heads=6, qk_norm=False))


@register_model
def test_lwm() -> LWMConfig:
    return LWMConfig(image_size=16, transformer=TransformerConfig(dim=32, depth=2, heads=2, qk_norm=False))


# ---- system: data formatting, losses, capabilities --------------------------------------------------------


@dataclass(frozen=True)
class LWMOptions:
    # the frozen image tokenizer: a trained run (runs/vq_s/model), or in tests a registered name (fresh
    # weights, with a warning); unset is an error naming the recipe that trains one
    image_tokenizer: str | None = None
    frames: int = 8  # frames of a clip in the sequence
    frame_stride: int = 1  # take every k-th frame of the source clip (LWM samples long videos at a low fps)
    text_loss_weight: float = 0.5  # LWM: loss = 0.5 * text CE + 0.5 * vision CE
    vision_loss_weight: float = 0.5
    cfg_dropout: float = 0.1  # probability of dropping the caption of a t2i / t2v sequence
    max_text_tokens: int = 32
    temperature: float = 1.0  # sampling defaults of generate_images / generate_videos
    top_k: int = 0  # LWM: 8192 (all codes) for images, 1000 for video
    top_p: float = 1.0
    # generate_videos' temperature (None: ``temperature``); LWM samples video with its own settings (top_k above).
    # 0 is greedy: lwm_l1 draws the direction of 0.86 of validation prompts greedily, 0.46 at 1.0 (RESULTS.md,
    # "Sixteenth round"): a clip's codes after its first frame follow from the prompt and that frame
    video_temperature: float | None = None


@SYSTEMS.register("lwm")
class LWMSystem(SystemBase):
    family = "lwm"
    mechanism = "ar_video"  # umm/pipelines/ar_video.py runs its capabilities
    tasks = ("t2i", "caption", "qa", "t2v", "v2t")
    capabilities = ("t2i", "caption", "qa", "t2v", "v2t")
    modalities = ("image", "caption", "qa", "video")  # what a training sample must carry
    Options = LWMOptions
    frozen_parts = {"image_tokenizer": FrozenPart("image_tokenizer", "vq_s", image_tokenizers.load_image_tokenizer)}

    def __init__(self, tokenizer, config: LWMConfig, options: LWMOptions | None = None,
                 image_tokenizer: nn.Module | None = None):
        options = options if options is not None else LWMOptions()
        if options.frames < 1 or options.frame_stride < 1:
            raise UmmError(f"system_args.frames and frame_stride must be >= 1, got {options.frames}, "
                           f"{options.frame_stride}")
        if options.video_temperature is not None and options.video_temperature < 0:
            raise UmmError(f"system_args.video_temperature must be >= 0 (0: greedy) or unset, got "
                           f"{options.video_temperature}")
        super().__init__(tokenizer, config, options, image_tokenizer=image_tokenizer)
        codes, size = self.image_tokenizer.codebook_size, self.image_tokenizer.config.image_size
        if (codes, size) != (config.vision_codes, config.image_size):
            raise UmmError(f"image tokenizer ({codes} codes, {size} px) does not match the model "
                           f"({config.vision_codes} codes, {config.image_size} px)")

    @classmethod
    def model_overrides(cls, tokenizer, options: LWMOptions) -> dict:
        images = cls.load_part("image_tokenizer", options, warn=False)
        image_tokenizers.require_grid(images, options.image_tokenizer, "LWM")
        return {"text_vocab": tokenizer.vocab_size, "vision_codes": images.codebook_size,
                "image_size": images.config.image_size}

    # -- frames -----------------------------------------------------------------------------------------

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, N, 3, H, W) -> codes (B, N, h, w), each frame on its own (LWM's per-frame VQGAN)."""
        tokenizer = self.image_tokenizer
        b, n = frames.shape[:2]
        codes = tokenizer.encode(frames.flatten(0, 1).to(next(tokenizer.parameters()).device)).cpu()
        return codes.view(b, n, *codes.shape[1:])

    def decode_frames(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, N, h, w) -> frames (B, N, 3, H, W) in [0, 1]."""
        tokenizer = self.image_tokenizer
        b, n = codes.shape[:2]
        frames = tokenizer.decode(codes.flatten(0, 1).to(next(tokenizer.parameters()).device)).float().cpu()
        return frames.view(b, n, *frames.shape[1:])

    def select_frames(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips (B, T, 3, H, W) -> the ``frames`` frames taken every ``frame_stride`` (B, frames, 3, H, W)."""
        o = self.options
        need = (o.frames - 1) * o.frame_stride + 1
        if clips.shape[1] < need:
            raise UmmError(f"LWM takes {o.frames} frames every {o.frame_stride}: clips need >= {need} frames, "
                           f"got {clips.shape[1]} (data.video_frames)")
        return clips[:, : need : o.frame_stride]

    def vision_plan(self, frames: int) -> TokenPlan:
        """``frames`` grids of codes, EOF after each frame but the last, EOV after the last, then ``</vision>``;
        codes are sampled with the vision head only."""
        c = self.config
        h, w = self.image_tokenizer.grid
        ends = (c.eof_id,) * (frames - 1) + (c.eov_id,)
        return grid_plan(frames, h, w, c.text_vocab, c.text_vocab + c.vision_codes, frame_ends=ends,
                                  end=(self.tokenizer.eoi_id,))

    def add_vision(self, seq: Sequence, codes: torch.Tensor, loss: bool) -> Sequence:
        """``<vision> frames </vision>`` for codes (N, h, w), laid out exactly as :meth:`vision_plan` samples it."""
        plan = self.vision_plan(codes.shape[0])
        stream = torch.tensor(plan.forced)
        stream[stream < 0] = codes.flatten() + plan.low
        seq.text([self.tokenizer.boi_id], loss=loss)
        return append_planned(seq, plan, stream.tolist(), loss)

    # -- sequences --------------------------------------------------------------------------------------

    def generation_prompt(self, text: str | None) -> Sequence:
        """``[BOS] text <vision>``; ``None`` is LWM's unconditional prompt ``[BOS] <vision>``."""
        ids = [self.tokenizer.bos_id] + ([] if text is None else self.text_ids(text)) + [self.tokenizer.boi_id]
        return Sequence(pad_id=self.tokenizer.pad_id).text(ids, loss=False)

    def understanding_prompt(self, codes: torch.Tensor, question: str | None = None) -> Sequence:
        """``[BOS] <vision> frames </vision> (question)`` for codes (N, h, w)."""
        seq = Sequence(pad_id=self.tokenizer.pad_id).text([self.tokenizer.bos_id], loss=False)
        self.add_vision(seq, codes, loss=False)
        return seq.text([] if question is None else self.text_ids(question), loss=False)

    def build(self, sample: dict, codes: torch.Tensor, task: str, rng: random.Random, drop_text: bool) -> Sequence:
        self.check_task(task)
        return ar_sequence(self.tokenizer, sample, task, lambda seq, loss: self.add_vision(seq, codes, loss=loss),
                           self.text_ids, rng, drop_text)

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        video = task in ("t2v", "v2t")
        key = "video" if video else "image"
        if any(key not in s for s in samples):
            raise UmmError(f"LWM task {task!r} needs samples with {key!r}; add {key} to data.modalities")
        if video:
            frames = self.select_frames(torch.stack([s["video"] for s in samples]))  # (B, N, 3, H, W)
        else:
            frames = torch.stack([s["image"] for s in samples])[:, None]  # an image is a one-frame video
        codes = self.encode_frames(frames)  # (B, N, h, w); the frozen tokenizer runs here, without gradients
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        rng = batch_rng(generator)
        seqs = [self.build(s, c, task, rng, bool(d) and task in ("t2i", "t2v"))
                for s, c, d in zip(samples, codes, drop)]
        return collate(seqs, rope_axes=self.config.transformer.rope_axes, pad_id=self.tokenizer.pad_id, multiple_of=8)

    # -- objective --------------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """0.5 x text CE (LM head, text targets) + 0.5 x vision CE (vision head, vision targets), each a mean
        over its own targets; a term whose targets are absent from the batch (captioning has no vision target)
        is left out, as LWM's masked mean makes it 0."""
        layout = Layout.of(batch)
        out_model = model(batch["tokens"], layout)
        targets = batch["text_targets"]  # (B, T) in the one id space; IGNORE where no loss
        text_vocab = self.config.text_vocab
        vision = targets >= text_vocab
        text = (targets != IGNORE) & ~vision
        if not (text.any() or vision.any()):
            raise UmmError("an LWM batch without any target")
        out = {}
        if text.any():
            text_ce = F.cross_entropy(out_model.text_logits[text].float(), targets[text])  # over Vt only
            out["text_loss"], out["text_ce"] = self.options.text_loss_weight * text_ce, text_ce.detach()
        if vision.any():
            vision_ce = F.cross_entropy(out_model.vision_logits[vision].float(), targets[vision] - text_vocab)  # Vv
            out["vision_loss"], out["vision_ce"] = self.options.vision_loss_weight * vision_ce, vision_ce.detach()
        return out

    # -- capabilities (the loops: umm/pipelines/ar_video.py) ----------------------------------------------

    def sampling_defaults(self, capability: str) -> dict:
        """The code sampler's temperature and top-k/p from the options (a clip's temperature is ``video_temperature``
        where set); LWM's guidance: 5.0 for images, 1.0 for video."""
        if capability not in ("generate_images", "generate_videos"):
            return {}
        o = self.options
        video = capability == "generate_videos"
        temperature = o.video_temperature if video and o.video_temperature is not None else o.temperature
        return {"temperature": temperature, "top_k": o.top_k, "top_p": o.top_p, "cfg_scale": 1.0 if video else 5.0}

    def vision_prompts(self, prompts: list[str], video: bool, frames: int | None = None):
        """Prompts, their unconditional twins ``[BOS] <vision>``, the plan and the (frames, h, w) grid: one frame for
        an image, ``frames`` (default ``options.frames``) for a clip."""
        frames = (self.options.frames if frames is None else frames) if video else 1
        if frames < 1:
            raise UmmError(f"LWM generates at least one frame, got frames={frames}")
        seqs = [self.generation_prompt(p) for p in prompts]
        return seqs, [self.generation_prompt(None) for _ in prompts], self.vision_plan(frames), (frames, *self.image_tokenizer.grid)

    def decode_vision(self, codes: torch.Tensor, video: bool) -> torch.Tensor:
        """Codes (N, frames, h, w) -> clips (N, frames, 3, H, W), or the images (N, 3, H, W) of one-frame codes."""
        frames = self.decode_frames(codes)
        return frames if video else frames[:, 0]

    def understanding_prompts(self, images: torch.Tensor, questions: list[str] | None) -> list[Sequence]:
        """Images (N, 3, H, W) -> ``[BOS] <vision> frame </vision> (question)`` each."""
        codes = self.encode_frames(images[:, None])
        asks = [None] * len(codes) if questions is None else questions
        return [self.understanding_prompt(c, q) for c, q in zip(codes, asks)]

    def video_understanding_prompts(self, videos: torch.Tensor) -> list[Sequence]:
        """Clips (N, T, 3, H, W), read at ``frames`` frames every ``frame_stride``."""
        return [self.understanding_prompt(c) for c in self.encode_frames(self.select_frames(videos))]
