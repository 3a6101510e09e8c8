"""EMU3 (Wang et al. 2024, "Emu3: Next-Token Prediction is All You Need", arXiv 2409.18869).

Text, images and videos are all tokens of one vocabulary, modelled by one decoder-only transformer with causal
attention and one next-token loss (sec. 2). A visual span carries its own geometry, so one model handles
several sizes and aspect ratios (sec. 2.2, ``processing_emu3.py``): a *resolution prefix* written as text
("h*w", or "t*h*w" for a clip), then the codes in raster order with an end-of-row token after every row and an
end-of-frame token after every frame::

    [BOS] a red circle [BOI] "8*8" [IMG] c c c c c c c c [EOL] ... [EOL] [EOF] [EOI] [EOS]      text -> image
    [BOS] a red circle moves up [BOV] "4*8*8" [IMG] (8 rows + [EOL]s, [EOF]) x 4 [EOV] [EOS]   text -> video
    [BOS] [BOI] "8*8" [IMG] ... [EOF] [EOI] a small red circle at the top left [EOS]               captioning

Sampling (README and released inference code): KV cache, top-k, a prefix-constrained processor that forces
the structure (EOL at the end of every row, EOF at the end of every frame, codes elsewhere; here a
:func:`~umm.samplers.plan.grid_plan`), and classifier-free guidance whose unconditional branch is a
*negative prompt* (``negative_prompt``; empty = plain CFG, which training supports by dropping the caption with
probability ``cfg_dropout``, the SFT script's ``null_prompt_prob`` 0.05). ``vision_loss_only`` puts the loss of
text -> image / video sequences on the visual tokens only (the SFT option ``apply_loss_on_only_vision``).

umm's choices, for a CPU and ShapesWorld:

- two frozen tokenizers by default: EMU3's single tokenizer codes images as one-frame clips, but umm's small
  (2+1)D video VQ (``vqvideo_s``) reconstructs still images badly (judge-exact 0.10 against 0.77 for ``vq_s``,
  measured on 48 heldout images), so images use an image VQ and clips the video VQ (temporal downsampling x2,
  as EMU3's x4). Both codebooks sit in the one vocabulary: text | IMG EOL EOF | image codes | video codes.
  ``shared_tokenizer: true`` is EMU3's own design: no image tokenizer, an image is a still clip of the video
  tokenizer's ``temporal_downsample`` frames (one latent frame, :class:`StillClipCoder`) in the video codebook,
  so text -> video also teaches the model to draw images. It pays only with a video tokenizer that codes still
  images well: ``vqvideo_l1`` on today's L1 clips reads 0.61 of still test images; on clips that hop between
  cell centres it read 1.00, and EMU3 drew 0.74 instead of 0.43 (benchmarks/RESULTS.md, "Fourteenth round").
- variable size with a fixed-size tokenizer: an image canvas is a multiple ``s`` of the tokenizer's
  (``canvas_scales``); it is coded tile by tile and the tiles' code grids are stitched into one
  ``(s*h, s*w)`` grid, so a 64x64 image is a 16x16 grid with its own prefix "16*16". One scale is drawn per
  batch (no padding waste). Images of another size are resized to the drawn canvas.
- captioning and QA put the loss on the text answer only (instruction-tuning style), as Chameleon in umm.

Shapes: B batch, T slots, D width, V = text vocabulary + 3 + image codes + video codes (image codes 0 when shared).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from umm import UmmError
from umm.data.sequence import Sequence, ar_sequence, batch_rng, collate
from umm.models.factory import register_model
from umm.models.system import FrozenPart, SystemBase
from umm.nn import Layout, TokenLM, TransformerConfig
from umm.objectives import next_token_loss, split_cross_entropy
from umm.registry import ARCHITECTURES, SYSTEMS
from umm.samplers.plan import TokenPlan, append_planned, grid_plan
from umm.tokenizers import image as image_tokenizers  # the module, not names: it imports umm.models itself

IMG, EOL, EOF = 0, 1, 2  # structure tokens, offset by the text vocabulary: start of grid, end of row, end of frame


@dataclass(frozen=True)
class Emu3Config:
    family: ClassVar[str] = "emu3"
    text_vocab: int = 512  # decided by the system: the text tokenizer's size
    image_codes: int = 512  # decided by the system: the image tokenizer's codebook size (0: shared_tokenizer)
    video_codes: int = 512  # decided by the system: the video tokenizer's codebook size
    image_size: int = 32  # decided by the system: the tokenizers' canvas in pixels (scale 1)
    frames: int = 8  # decided by the system: frames per clip of the video tokenizer
    # EMU3-8B: GQA (8 KV heads), RoPE theta 1e6, no QK-norm (``configuration_emu3.py``)
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(qk_norm=False, rope_theta=1e6))

    @property
    def image_low(self) -> int:
        return self.text_vocab + 3

    @property
    def video_low(self) -> int:
        return self.image_low + self.image_codes

    @property
    def vocab_size(self) -> int:
        return self.video_low + self.video_codes


@ARCHITECTURES.register("emu3")
class Emu3(TokenLM):
    config_class = Emu3Config


# ---- sizes ------------------------------------------------------------------------------------------------


@register_model
def emu3_s() -> Emu3Config:
    """~5.1M parameters (with a 512-token BPE and 512-code image and video tokenizers): the CPU size."""
    trunk = TransformerConfig(dim=256, depth=6, heads=4, kv_heads=2, qk_norm=False, rope_theta=1e6)
    return Emu3Config(transformer=trunk)


@register_model
def emu3_m() -> Emu3Config:
    trunk = TransformerConfig(dim=384, depth=8, heads=6, kv_heads=2, qk_norm=False, rope_theta=1e6)
    return Emu3Config(transformer=trunk)


@register_model
def test_emu3() -> Emu3Config:
    return Emu3Config(image_size=16, transformer=TransformerConfig(dim=32, depth=2, heads=2, kv_heads=1, qk_norm=False))


# ---- tiles: a canvas that is a multiple of the tokenizer's ----------------------------------------------


def encode_canvas(tokenizer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, n*S, m*S) -> codes (B, n*h, m*w), tile by tile with a tokenizer of canvas S and grid (h, w)."""
    size = tokenizer.config.image_size
    b, c, height, width = images.shape
    if height % size or width % size:
        raise UmmError(f"EMU3 canvases are multiples of the tokenizer's {size} px, got {height}x{width}")
    n, m = height // size, width // size
    tiles = images.view(b, c, n, size, m, size).permute(0, 2, 4, 1, 3, 5).reshape(b * n * m, c, size, size)
    codes = tokenizer.encode(tiles.to(next(tokenizer.parameters()).device)).cpu()  # (B*n*m, h, w)
    h, w = codes.shape[1:]
    return codes.view(b, n, m, h, w).permute(0, 1, 3, 2, 4).reshape(b, n * h, m * w)


def decode_canvas(tokenizer: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """Codes (B, n*h, m*w) -> images (B, 3, n*S, m*S) in [0, 1]: the inverse of :func:`encode_canvas`."""
    h, w = tokenizer.grid
    b, rows, cols = codes.shape
    if rows % h or cols % w:
        raise UmmError(f"an EMU3 image grid is a multiple of the tokenizer's {h}x{w} codes, got {rows}x{cols}")
    n, m = rows // h, cols // w
    tiles = codes.view(b, n, h, m, w).permute(0, 1, 3, 2, 4).reshape(b * n * m, h, w)
    images = tokenizer.decode(tiles.to(next(tokenizer.parameters()).device)).float().cpu()  # (B*n*m, 3, S, S)
    size = images.shape[-1]
    return images.view(b, n, m, 3, size, size).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, n * size, m * size)


class StillClipCoder(nn.Module):
    """EMU3's single tokenizer for images (sec. 2.2): an image is coded by the video tokenizer as a still clip of
    its ``temporal_downsample`` frames, i.e. one latent frame; decoding keeps the clip's first frame. Offers what
    :func:`encode_canvas` / :func:`decode_canvas` read of an image tokenizer (config.image_size, grid, encode,
    decode, codebook_size)."""

    def __init__(self, video_tokenizer: nn.Module):
        super().__init__()
        self.video = video_tokenizer

    @property
    def config(self):
        return self.video.config

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.video.grid[1:])

    @property
    def codebook_size(self) -> int:
        return self.video.codebook_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> codes (B, h, w)."""
        k = self.video.config.temporal_downsample
        return self.video.encode(images[:, None].expand(-1, k, -1, -1, -1))[:, 0]  # (B, 1, h, w) -> (B, h, w)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) -> images (B, 3, S, S): the first frame of the decoded still clip."""
        return self.video.decode(codes[:, None])[:, 0]


# ---- system: data formatting, losses, capabilities --------------------------------------------------------


@dataclass(frozen=True)
class Emu3Options:
    # the frozen tokenizers: trained runs (runs/vq_s/model, runs/vqvideo_s/model), or in tests registered names
    # (fresh weights, with a warning); unset is an error naming the recipe that trains one
    image_tokenizer: str | None = None
    video_tokenizer: str | None = None
    # EMU3's one tokenizer for images and clips: images go through video_tokenizer as still clips (StillClipCoder)
    # and image_tokenizer stays unset; false: umm's default, an image VQ beside the video VQ (module docstring)
    shared_tokenizer: bool = False
    canvas_scales: tuple[int, ...] = (1,)  # image canvases in tokenizer canvases; one drawn per batch
    vision_loss_only: bool = False  # SFT's apply_loss_on_only_vision for t2i / t2v sequences
    cfg_dropout: float = 0.05  # SFT's null_prompt_prob: the caption of t2i / t2v is dropped
    negative_prompt: str = ""  # the unconditional branch of guidance ("" = the dropped caption)
    max_text_tokens: int = 32  # text slots per caption / question (truncated beyond)
    temperature: float = 1.0  # sampling defaults of generate_images / generate_videos
    top_k: int = 0  # EMU3 samples with top-k 2048 of 32768 codes
    top_p: float = 1.0
    # generate_videos' temperature (None: ``temperature``), as LWM's option; 0 is greedy: emu3_l1 draws the direction
    # of 0.74 of validation prompts greedily, 0.52 at 1.0 (RESULTS.md, "Seventeenth round")
    video_temperature: float | None = None


@SYSTEMS.register("emu3")
class Emu3System(SystemBase):
    family = "emu3"
    mechanism = "ar_video"  # umm/pipelines/ar_video.py runs its capabilities
    tasks = ("t2i", "caption", "qa", "t2v", "v2t")
    capabilities = ("t2i", "caption", "qa", "t2v", "v2t")
    modalities = ("image", "caption", "qa", "video")  # what a training sample must carry
    Options = Emu3Options
    # the image tokenizer is unset with shared_tokenizer and required without it (checked in __init__)
    frozen_parts = {"image_tokenizer": FrozenPart("image_tokenizer", "vq_s", image_tokenizers.load_image_tokenizer,
                                                  optional=True),
                    "video_tokenizer": FrozenPart("video_tokenizer", "vqvideo_s", image_tokenizers.load_image_tokenizer)}

    def __init__(self, tokenizer, config: Emu3Config, options: Emu3Options | None = None,
                 image_tokenizer: nn.Module | None = None, video_tokenizer: nn.Module | None = None):
        options = options if options is not None else Emu3Options()
        if not options.canvas_scales or min(options.canvas_scales) < 1:
            raise UmmError(f"system_args.canvas_scales must list positive integers, got {list(options.canvas_scales)}")
        if options.video_temperature is not None and options.video_temperature < 0:
            raise UmmError(f"system_args.video_temperature must be >= 0 (0: greedy) or unset, got "
                           f"{options.video_temperature}")
        if options.shared_tokenizer and image_tokenizer is not None:
            raise UmmError("EMU3 with shared_tokenizer codes images with its video tokenizer; "
                           "it takes no image tokenizer")
        _check_shared(options, given=image_tokenizer is not None)
        super().__init__(tokenizer, config, options, image_tokenizer=image_tokenizer, video_tokenizer=video_tokenizer)
        # what codes images: the image VQ, or (shared) the video VQ on still clips
        self.image_coder = StillClipCoder(self.video_tokenizer) if options.shared_tokenizer else self.image_tokenizer
        _check_tokenizers(self.image_coder, self.video_tokenizer, config)

    @classmethod
    def model_overrides(cls, tokenizer, options: Emu3Options) -> dict:
        _check_shared(options)
        videos = cls.load_part("video_tokenizer", options, warn=False)
        if options.shared_tokenizer:
            images = StillClipCoder(videos)
        else:
            images = cls.load_part("image_tokenizer", options, warn=False)
            image_tokenizers.require_grid(images, options.image_tokenizer, "EMU3")
        if videos.config.family != "vqvideo":
            raise UmmError(f"system_args.video_tokenizer must be a video tokenizer (vqvideo), "
                           f"{options.video_tokenizer!r} is a {videos.config.family!r}")
        if images.config.image_size != videos.config.image_size:
            raise UmmError(f"the image tokenizer's canvas ({images.config.image_size} px) differs from the video "
                           f"tokenizer's ({videos.config.image_size} px)")
        image_codes = 0 if options.shared_tokenizer else images.codebook_size  # shared: images use the video codes
        return {"text_vocab": tokenizer.vocab_size, "image_codes": image_codes,
                "video_codes": videos.codebook_size, "image_size": images.config.image_size,
                "frames": videos.config.frames}

    # -- the visual span --------------------------------------------------------------------------------

    def image_grid(self, scale: int = 1) -> tuple[int, int, int]:
        """(1, h, w) codes of an image at ``scale`` times the tokenizer canvas: one frame."""
        h, w = self.image_coder.grid
        return (1, scale * h, scale * w)

    def video_grid(self, frames: int | None = None) -> tuple[int, int, int]:
        """(t, h, w) codes of a clip of ``frames`` frames (default: the tokenizer's clip length)."""
        frames = self.config.frames if frames is None else frames
        k = self.video_tokenizer.config.temporal_downsample
        if frames < k or frames % k:
            raise UmmError(f"EMU3 clips need a multiple of {k} frames (the video tokenizer's temporal downsampling), "
                           f"got {frames}")
        return (frames // k, *self.video_tokenizer.grid[1:])

    def grid_plan(self, grid: tuple[int, int, int], video: bool) -> TokenPlan:
        """The structure processor of a span of ``grid`` (t, h, w): codes, EOL after every row, EOF after every
        frame, then EOI (image) or EOV (video); codes are sampled from the image or the video codebook (images too
        with ``shared_tokenizer``)."""
        c, tok = self.config, self.tokenizer
        shared = video or self.options.shared_tokenizer
        low, high = (c.video_low, c.vocab_size) if shared else (c.image_low, c.video_low)
        close = tok.eov_id if video else tok.eoi_id
        t, h, w = grid
        return grid_plan(t, h, w, low, high, row_end=c.text_vocab + EOL, frame_ends=(c.text_vocab + EOF,) * t,
                                  end=(close,))

    def open_span(self, grid: tuple[int, int, int], video: bool) -> list[int]:
        """``[BOI] "h*w" [IMG]`` or ``[BOV] "t*h*w" [IMG]``: the resolution prefix is plain text (EMU3)."""
        t, h, w = grid
        size = f"{t}*{h}*{w}" if video else f"{h}*{w}"
        opener = self.tokenizer.bov_id if video else self.tokenizer.boi_id
        return [opener] + self.tokenizer.encode(size) + [self.config.text_vocab + IMG]

    def add_visual(self, seq: Sequence, codes: torch.Tensor, video: bool, loss: bool) -> Sequence:
        """Append a whole visual span of ``codes`` ((h, w) image or (t, h, w) clip), laid out exactly as the
        structure processor generates it; the prefix carries a loss only with the grid when ``loss``."""
        grid = tuple(codes.shape) if video else (1, *codes.shape)
        plan = self.grid_plan(grid, video)
        stream = torch.tensor(plan.forced)
        stream[stream < 0] = codes.flatten() + plan.low
        seq.text(self.open_span(grid, video), loss=loss and not self.options.vision_loss_only)
        return append_planned(seq, plan, stream.tolist(), loss)

    # -- sequences --------------------------------------------------------------------------------------

    def generation_prompt(self, text: str, grid: tuple[int, int, int], video: bool) -> Sequence:
        """``[BOS] text [BOI] "h*w" [IMG]`` (or the video opener): what precedes a generated span."""
        seq = Sequence(pad_id=self.tokenizer.pad_id).text([self.tokenizer.bos_id] + self.text_ids(text), loss=False)
        return seq.text(self.open_span(grid, video), loss=False)

    def understanding_prompt(self, codes: torch.Tensor, video: bool, question: str | None = None) -> Sequence:
        """``[BOS] <visual span> (question)``, after which captions and answers are decoded."""
        seq = Sequence(pad_id=self.tokenizer.pad_id).text([self.tokenizer.bos_id], loss=False)
        self.add_visual(seq, codes, video, loss=False)
        return seq.text([] if question is None else self.text_ids(question), loss=False)

    def build(self, sample: dict, codes: torch.Tensor, task: str, rng: random.Random, drop_text: bool) -> Sequence:
        self.check_task(task)
        video = task in ("t2v", "v2t")
        return ar_sequence(self.tokenizer, sample, task,
                           lambda seq, loss: self.add_visual(seq, codes, video=video, loss=loss), self.text_ids,
                           rng, drop_text, text_loss=not self.options.vision_loss_only)

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        video = task in ("t2v", "v2t")
        key = "video" if video else "image"
        if any(key not in s for s in samples):
            raise UmmError(f"EMU3 task {task!r} needs samples with {key!r}; add {key} to data.modalities")
        # the frozen tokenizers run here, without gradients, so losses() only calls the model
        if video:
            clips = torch.stack([s["video"] for s in samples])  # (B, T, 3, H, W)
            codes = self.video_tokenizer.encode(clips.to(next(self.video_tokenizer.parameters()).device)).cpu()
        else:
            scales = self.options.canvas_scales
            scale = scales[int(torch.randint(len(scales), (), generator=generator))]  # one canvas per batch
            codes = encode_canvas(self.image_coder, self.resize(torch.stack([s["image"] for s in samples]), scale))
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        rng = batch_rng(generator)
        seqs = [self.build(s, c, task, rng, bool(d) and task in ("t2i", "t2v"))
                for s, c, d in zip(samples, codes, drop)]
        return collate(seqs, rope_axes=self.config.transformer.rope_axes, pad_id=self.tokenizer.pad_id, multiple_of=8)

    def resize(self, images: torch.Tensor, scale: int) -> torch.Tensor:
        """Images (B, 3, H, W) -> (B, 3, S, S) with S = scale x the tokenizer canvas (unchanged if already S)."""
        size = scale * self.config.image_size
        if images.shape[-2:] == (size, size):
            return images
        resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return resized.clamp(0, 1)

    # -- objective --------------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        layout = Layout.of(batch)
        logits = model(batch["tokens"], layout).logits  # (B, T, V)
        targets = batch["text_targets"]
        out = {"lm_loss": next_token_loss(logits, targets)}
        # diagnostics: the same cross-entropy split by what is predicted  # codes and structure tokens
        out.update(split_cross_entropy(logits, targets, self.config.text_vocab, "vision_ce"))
        return out

    # -- capabilities (the loops: umm/pipelines/ar_video.py) ----------------------------------------------

    def sampling_defaults(self, capability: str) -> dict:
        """The code sampler's temperature (a clip's: ``video_temperature`` where set) and top-k/p from the options;
        EMU3's guidance 3.0 (its README)."""
        if capability not in ("generate_images", "generate_videos"):
            return {}
        o = self.options
        video = capability == "generate_videos"
        temperature = o.video_temperature if video and o.video_temperature is not None else o.temperature
        return {"temperature": temperature, "top_k": o.top_k, "top_p": o.top_p, "cfg_scale": 3.0}

    def vision_prompts(self, prompts: list[str], video: bool, scale: int = 1, frames: int | None = None,
                       negative_prompt: str | None = None):
        """Prompts, their negative twins (guidance's unconditional branch; default: the option), the structure
        processor's plan and the (t, h, w) grid: an image at ``scale`` x the tokenizer canvas, or a clip of ``frames``."""
        if video and scale != 1:
            raise UmmError("EMU3 generates clips at the video tokenizer's canvas: scale applies to images only")
        if not video and frames is not None:
            raise UmmError("frames applies to clips (generate_videos), not to images")
        grid = self.video_grid(frames) if video else self.image_grid(scale)
        negative = self.options.negative_prompt if negative_prompt is None else negative_prompt
        seqs = [self.generation_prompt(p, grid, video) for p in prompts]
        negatives = [self.generation_prompt(negative, grid, video) for _ in prompts]
        return seqs, negatives, self.grid_plan(grid, video), grid

    def decode_vision(self, codes: torch.Tensor, video: bool) -> torch.Tensor:
        """Codes (N, t, h, w) -> clips (N, T, 3, H, W) through the video tokenizer, or images (N, 3, S, S) (t = 1)."""
        if not video:
            return decode_canvas(self.image_coder, codes[:, 0])
        return self.video_tokenizer.decode(codes.to(next(self.video_tokenizer.parameters()).device)).float().cpu()

    def understanding_prompts(self, images: torch.Tensor, questions: list[str] | None) -> list[Sequence]:
        """Images (N, 3, S, S), any trained canvas -> ``[BOS] <image span> (question)`` each."""
        size = images.shape[-1]
        if size % self.config.image_size or images.shape[-2] != size:
            raise UmmError(f"EMU3 reads square images of a multiple of {self.config.image_size} px, "
                           f"got {tuple(images.shape)}")
        codes = encode_canvas(self.image_coder, images)
        asks = [None] * len(codes) if questions is None else questions
        return [self.understanding_prompt(c, False, q) for c, q in zip(codes, asks)]

    def video_understanding_prompts(self, videos: torch.Tensor) -> list[Sequence]:
        """Clips (N, T, 3, H, W) -> ``[BOS] <video span>`` each."""
        codes = self.video_tokenizer.encode(videos.to(next(self.video_tokenizer.parameters()).device)).cpu()
        return [self.understanding_prompt(c, True) for c in codes]


def _check_shared(options: Emu3Options, given: bool = False) -> None:
    """An image tokenizer is named (or ``given`` as a module) exactly when images have their own, i.e. without
    ``shared_tokenizer``; unset without it is the frozen-part error naming the recipe that trains one."""
    if options.shared_tokenizer and options.image_tokenizer is not None:
        raise UmmError("system_args.image_tokenizer must be unset with system_args.shared_tokenizer: true (images are "
                       f"coded by the video tokenizer), got {options.image_tokenizer!r}")
    if not options.shared_tokenizer and not given:
        Emu3System.frozen_source(options, "image_tokenizer", "vq_s", "image_tokenizer")  # raises when unset


def _check_tokenizers(images: nn.Module, videos: nn.Module, config: Emu3Config) -> None:
    image_codes = 0 if isinstance(images, StillClipCoder) else images.codebook_size
    if image_codes != config.image_codes or videos.codebook_size != config.video_codes:
        raise UmmError(f"tokenizers ({images.codebook_size} image / {videos.codebook_size} video codes) do not match "
                       f"the model ({config.image_codes} / {config.video_codes})")
    if images.config.image_size != config.image_size or videos.config.frames != config.frames:
        raise UmmError(f"tokenizers ({images.config.image_size} px, {videos.config.frames} frames) do not match the "
                       f"model ({config.image_size} px, {config.frames} frames)")
