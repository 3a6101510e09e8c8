"""VILA-U (Wu et al. 2024, "VILA-U: a Unified Foundation Model Integrating Visual Understanding and
Generation", arXiv 2409.04429).

Two recipes, one file:

1. **The unified vision tower** (``vila_u_tower_s``, sec. 3.1): an RQ-VAE (residual quantization, Lee et al.
   2022, arXiv 2203.01941) whose quantized features are aligned with text by a contrastive loss while the
   decoder reconstructs the pixels, so the discrete codes carry both the text-aligned semantics that
   understanding needs and the detail that generation needs:

       L_tower = |x - D(RQ(E(x)))|^2 + 0.25 * commitment + w_c * InfoNCE(pool(RQ(E(x))), text(caption))

   The image side of InfoNCE reads the *quantized* features (straight-through), through a small bidirectional
   tower with a CLS slot (``umm.models.encoders.PatchTower``); the text side is umm's text encoder.
   VILA-U starts from a pretrained SigLIP and warns that training both losses from scratch is hard
   (sec. 3.1); umm trains from scratch on ShapesWorld, where the captions are short and exact.

2. **The model** (``vila_u_s``, sec. 3.2): one causal transformer over text tokens and image *positions*.
   A position's input is the sum of the embeddings of its D residual codes; its codes are predicted by a
   small **depth transformer** (RQ-Transformer, Lee et al. 2022, sec. 3.2.2) from the main transformer's
   hidden state at the slot before: depth step 1 reads that hidden state, depth step d > 1 reads the
   cumulative sum of the embeddings of codes 1 .. d-1, each plus a depth position embedding, causally.

       t2i      [BOS] caption [BOI] p_1 ... p_N [EOI] [EOS]        text CE + image (depth-head) CE
       caption  [BOS] [BOI] p_1 ... p_N [EOI] caption [EOS]        text CE on the caption
       qa       [BOS] [BOI] p_1 ... p_N [EOI] question answer [EOS]

   Loss = text CE + image CE (``vila_u_llama.py`` sums the two). Generation: per position, D codes from the
   depth head with classifier-free guidance 3.0 (the caption is dropped with probability 0.1 in training)
   and top-p 0.96 (the released sampling defaults), then the position is fed back through the main
   transformer's KV cache.

Shapes: B batch, T slots, N = h * w positions, D residual depth, K codebook size, C model width.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from umm import UmmError
from umm.data.sequence import PATCH, Sequence, ar_sequence, batch_rng, collate
from umm.models.encoders import PatchTower, TextEncoder, TextEncoderConfig, text_inputs
from umm.models.factory import create_model, from_pretrained, load_config, register_model
from umm.models.system import FrozenPart, SystemBase
from umm.nn import Layout, Span, Transformer, TransformerConfig, build_layout
from umm.objectives import next_token_loss
from umm.objectives.contrastive import LogitScale, infonce_loss
from umm.registry import ARCHITECTURES, MODELS, SYSTEMS
from umm.tokenizers import image as image_tokenizers  # the module: it imports umm.models itself
from umm.tokenizers.image.models import RQConfig, RQTokenizer, from_tokens, to_tokens



# ==== 1. the vision tower ===================================================================================


@dataclass(frozen=True)
class VilaUTowerConfig:
    family: ClassVar[str] = "vila_u_tower"
    rq: RQConfig = field(default_factory=RQConfig)
    vocab_size: int = 512  # decided by the system: the text tokenizer's size
    embed_dim: int = 128  # width of the shared image-text embedding space
    image_head: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=2, heads=4, rope_axes=2))
    text: TextEncoderConfig = field(default_factory=lambda: TextEncoderConfig(
        max_tokens=40, transformer=TransformerConfig(dim=128, depth=2, heads=4)))

    @property
    def image_size(self) -> int:
        return self.rq.image_size


class VilaUTowerOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, 3, H, W) in [-1, 1] scale, unclamped
    codes: torch.Tensor  # (B, h, w, D)
    losses: dict[str, torch.Tensor]  # the quantizer's unweighted auxiliary losses (commitment)
    image_embed: torch.Tensor  # (B, E) unit vectors of the quantized features
    text_embed: torch.Tensor  # (B, E) unit vectors of the captions
    logit_scale: torch.Tensor  # () the contrastive temperature's inverse, clamped <= 100


@ARCHITECTURES.register("vila_u_tower")
class VilaUTower(nn.Module):
    """An RQ tokenizer (``self.rq``, what the model later reads) plus the two heads of the text alignment."""

    config_class = VilaUTowerConfig

    def __init__(self, config: VilaUTowerConfig):
        super().__init__()
        self.config = config
        self.rq = RQTokenizer(config.rq)
        self.image_head = PatchTower(config.rq.autoencoder.latent_dim, self.rq.grid, config.image_head, config.embed_dim)
        self.text = TextEncoder(config.text, config.vocab_size, config.embed_dim)
        self.logit_scale = LogitScale()

    def forward(self, images: torch.Tensor, text: torch.Tensor, text_valid: torch.Tensor,
                generator: torch.Generator | None = None) -> VilaUTowerOutput:
        """images (B, 3, H, W) in [0, 1]; text (B, L) ids with text_valid (B, L)."""
        z = self.rq.encode_latents(images)  # (B, C, h, w)
        shape = (z.shape[0], *z.shape[2:])
        quantized = self.rq.quantizer(to_tokens(z), generator)  # (B * N, C) straight-through
        reconstruction = self.rq.decode_latents(from_tokens(quantized.quantized, shape))
        # the contrastive loss reads the *quantized* features: the codes themselves become text-aligned
        image_embed = self.image_head(quantized.quantized.view(z.shape[0], -1, z.shape[1]))
        scale, _ = self.logit_scale()
        codes = quantized.codes.view(*shape, -1)
        return VilaUTowerOutput(reconstruction, codes, quantized.losses, image_embed, self.text(text, text_valid), scale)

    # the tokenizer interface of the RQ part, for the eval harness's ``reconstruct``
    @property
    def grid(self) -> tuple[int, ...]:
        return self.rq.grid

    @property
    def codebook_size(self) -> int:
        return self.rq.codebook_size

    @property
    def depth(self) -> int:
        return self.rq.depth

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.rq.encode(images)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.rq.decode(codes)


_TEST_AE = dict(image_size=16, widths=(8, 16, 32), latent_dim=16)


@register_model
def vila_u_tower_s() -> VilaUTowerConfig:
    """32x32 -> 8x8 x 4 residual codes from 256 (``rq_s``), plus the alignment heads (~1.3M parameters)."""
    return VilaUTowerConfig()


@register_model
def test_vila_u_tower() -> VilaUTowerConfig:
    from umm.tokenizers.image.autoencoder import AutoencoderConfig

    return VilaUTowerConfig(rq=RQConfig(autoencoder=AutoencoderConfig(**_TEST_AE), codebook_size=32, depth=2),
                            embed_dim=32, image_head=TransformerConfig(dim=32, depth=1, heads=2, rope_axes=2),
                            text=TextEncoderConfig(max_tokens=24, transformer=TransformerConfig(dim=32, depth=1, heads=2)))


@dataclass(frozen=True)
class VilaUTowerOptions:
    commitment_weight: float = 0.25  # VILA-U's latent_loss_weight
    contrastive_weight: float = 1.0


@SYSTEMS.register("vila_u_tower")
class VilaUTowerSystem(SystemBase):
    """Trains the tower on (image, caption) pairs: reconstruction + commitment + contrastive alignment."""

    family = "vila_u_tower"
    tasks = ("align",)
    capabilities = ("reconstruct",)
    modalities = ("image", "caption")  # the ShapesWorld keys it reads (the reconstruction eval: images)
    Options = VilaUTowerOptions

    @classmethod
    def model_overrides(cls, tokenizer, options) -> dict:
        return {"vocab_size": tokenizer.vocab_size}

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        batch = text_inputs([s["caption"] for s in samples], self.tokenizer, self.config.text)
        batch["pixels"] = torch.stack([s["image"] for s in samples])
        return batch

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pixels = batch["pixels"]
        out = model(pixels, batch["text"], batch["text_valid"], generator)
        error = out.reconstruction.float() - (pixels * 2 - 1)
        align = infonce_loss(out.image_embed, out.text_embed, out.logit_scale)
        with torch.no_grad():  # diagnostic: image -> caption top-1 within the batch
            hits = (out.image_embed @ out.text_embed.T).argmax(1) == torch.arange(len(pixels), device=pixels.device)
        return {"recon_loss": error.pow(2).mean(), "commitment_loss": self.options.commitment_weight * out.losses["commitment"],
                "contrastive_loss": self.options.contrastive_weight * align, "mse": (error / 2).pow(2).mean().detach(),
                "align_top1": hits.float().mean()}

    @torch.no_grad()
    def reconstruct(self, model: nn.Module, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        return torch.cat([model.decode(model.encode(pixels[i : i + batch_size])) for i in range(0, len(pixels), batch_size)])


def load_vision_tower(name_or_dir: str | Path) -> RQTokenizer:
    """The frozen RQ tokenizer of a trained tower directory, of an RQ tokenizer directory (``runs/rq_s/model``:
    no text alignment, an ablation), or of a registered tower / RQ name (fresh seeded weights: tests only)."""
    path = Path(name_or_dir)
    if path.is_dir():
        family = load_config(path).family
        if family == "vila_u_tower":
            rq = from_pretrained(path).rq
        elif family == "rq":
            rq = image_tokenizers.load_image_tokenizer(path)
        else:
            raise UmmError(f"{str(path)!r} holds a {family!r} model; VILA-U needs a vila_u_tower or rq tokenizer")
    elif str(name_or_dir) in MODELS:
        family = MODELS.get(str(name_or_dir))().family
        if family not in ("vila_u_tower", "rq"):
            raise UmmError(f"model {str(name_or_dir)!r} is a {family!r}; VILA-U needs a vila_u_tower or rq tokenizer")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model(str(name_or_dir))
        rq = model.rq if family == "vila_u_tower" else model
    else:
        raise UmmError(f"vision tower {str(name_or_dir)!r} is neither a trained directory (runs/<name>/model) nor a "
                       "registered tower name (vila_u_tower_s, test_vila_u_tower)")
    rq.eval()
    rq.requires_grad_(False)
    return rq


# ==== 2. the model: main transformer + depth transformer ==================================================


@dataclass(frozen=True)
class VilaUConfig:
    family: ClassVar[str] = "vila_u"
    text_vocab: int = 512  # decided by the system: the text tokenizer's size
    image_codes: int = 256  # decided by the system: K of the tower's (shared) residual codebook
    code_depth: int = 4  # decided by the system: D residual codes per position
    image_size: int = 32  # decided by the system
    grid: int = 8  # decided by the system
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(qk_norm=True, rope_axes=2))
    depth_transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(depth=2))


class VilaUOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, text_vocab) next-token logits
    hidden: torch.Tensor  # (B, T, C) the main transformer's states (what the depth head reads)
    code_logits: torch.Tensor | None  # (M, D, K) teacher-forced depth-head logits of the M predicted positions


@ARCHITECTURES.register("vila_u")
class VilaU(nn.Module):
    config_class = VilaUConfig

    def __init__(self, config: VilaUConfig):
        super().__init__()
        if config.depth_transformer.dim != config.transformer.dim:
            raise UmmError(f"model.depth_transformer.dim ({config.depth_transformer.dim}) must equal model.transformer.dim "
                           f"({config.transformer.dim}): the depth transformer reads the main hidden state as is")
        self.config = config
        dim = config.transformer.dim
        self.text_embed = nn.Embedding(config.text_vocab, dim)
        self.code_embed = nn.Embedding(config.image_codes, dim)  # shared by both transformers (RQ-Transformer)
        self.trunk = Transformer(config.transformer)
        self.text_head = nn.Linear(dim, config.text_vocab, bias=False)
        self.depth_position = nn.Parameter(torch.randn(config.code_depth, dim) * 0.02)
        self.depth_trunk = Transformer(config.depth_transformer)
        self.code_head = nn.Linear(dim, config.image_codes, bias=False)
        for table in (self.text_embed, self.code_embed, self.text_head, self.code_head):
            nn.init.normal_(table.weight, std=0.02)
        layout = build_layout([[Span(config.code_depth)]])  # one causal span of D depth steps
        self.register_buffer("depth_positions", layout.positions, persistent=False)

    def embed(self, tokens: torch.Tensor, codes: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), codes (B, T, D), is_image (B, T) -> (B, T, C): a position is the sum of its code
        embeddings (RQ-Transformer's spatial input)."""
        x = self.text_embed(tokens)
        if is_image.any():
            x = x.index_put((is_image,), self.code_embed(codes[is_image]).sum(-2).to(x.dtype))
        return x

    def forward(self, tokens: torch.Tensor, codes: torch.Tensor, is_image: torch.Tensor, layout: Layout,
                predict: torch.Tensor | None = None, cache=None, commit: bool = True) -> VilaUOutput:
        """``predict`` (B, T) bool marks the slots whose *next* slot's D codes the depth head predicts, teacher
        forced with those codes (training); None skips the depth head."""
        hidden = self.trunk(self.embed(tokens, codes, is_image), layout, cache=cache, commit=commit)
        code_logits = None
        if predict is not None:
            context = hidden[:, :-1][predict[:, :-1]]  # (M, C)
            code_logits = self.depth_logits(context, codes[:, 1:][predict[:, :-1]])
        return VilaUOutput(self.text_head(hidden), hidden, code_logits)

    def depth_inputs(self, context: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """context (M, C) and the first d codes (M, d), d < D -> depth inputs (M, d + 1, C): step 1 is the
        context, step k > 1 the cumulative sum of the embeddings of codes 1 .. k-1; plus depth positions."""
        steps = [context[:, None]]
        if codes.shape[1]:
            steps.append(self.code_embed(codes).cumsum(1).to(context.dtype))
        x = torch.cat(steps, 1)
        return x + self.depth_position[: x.shape[1]].to(x.dtype)

    def depth_layout(self, rows: int, start: int = 0, length: int | None = None) -> Layout:
        """Causal layout of depth steps ``start .. start + length`` for ``rows`` positions."""
        end = self.config.code_depth if length is None else start + length
        positions = self.depth_positions[:, start:end].expand(rows, -1, -1)
        block = torch.full(positions.shape[:2], -1, dtype=torch.long, device=positions.device)
        return Layout(block, positions, torch.ones_like(block, dtype=torch.bool), positions[:, -1] + 1)

    def depth_logits(self, context: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced depth head: context (M, C), codes (M, D) -> logits (M, D, K) of each code."""
        x = self.depth_inputs(context, codes[:, :-1])
        return self.code_head(self.depth_trunk(x, self.depth_layout(len(x))))

    def new_cache(self, batch: int, max_len: int, device: torch.device | str = "cpu"):
        return self.trunk.new_cache(batch, max_len, device)

    def new_depth_cache(self, rows: int, device: torch.device | str = "cpu"):
        return self.depth_trunk.new_cache(rows, self.config.code_depth, device)

    def depth_step(self, x: torch.Tensor, step: int, cache) -> torch.Tensor:
        """One depth step against a depth cache: x (M, 1, C) the step's input -> (M, K) logits of code ``step``."""
        return self.code_head(self.depth_trunk(x, self.depth_layout(len(x), step, 1), cache=cache))[:, -1]


@register_model
def vila_u_s() -> VilaUConfig:
    """~6M parameters (Chameleon-s width and depth) + a 2-layer depth transformer."""
    return VilaUConfig(transformer=TransformerConfig(dim=256, depth=6, heads=4, qk_norm=True, rope_axes=2),
                       depth_transformer=TransformerConfig(dim=256, depth=2, heads=4))


@register_model
def test_vila_u() -> VilaUConfig:
    return VilaUConfig(image_size=16, grid=4, image_codes=32, code_depth=2,
                       transformer=TransformerConfig(dim=32, depth=2, heads=2, qk_norm=True, rope_axes=2),
                       depth_transformer=TransformerConfig(dim=32, depth=1, heads=2))


# ---- system ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VilaUOptions:
    # the frozen vision tower: a trained tower directory (runs/vila_u_tower_s/model), an RQ tokenizer directory
    # (no text alignment: an ablation), or in tests a registered name (fresh weights, with a warning); unset is
    # an error naming the recipe that trains one
    vision_tower: str | None = None
    cfg_dropout: float = 0.1
    max_text_tokens: int = 32
    temperature: float = 1.0  # depth-head sampling defaults (VILA-U: top-p 0.96)
    top_k: int = 0
    top_p: float = 0.96


@SYSTEMS.register("vila_u")
class VilaUSystem(SystemBase):
    family = "vila_u"
    mechanism = "ar_depth"  # umm/pipelines/ar_depth.py: positions by the trunk, their D codes by the depth head
    tasks = ("t2i", "caption", "qa")
    capabilities = ("t2i", "caption", "qa")
    Options = VilaUOptions
    # the tower's RQ part, saved as an ``rq`` model in image_tokenizer/ (load_vision_tower reads either kind)
    frozen_parts = {"image_tokenizer": FrozenPart("vision_tower", "vila_u_tower_s", lambda path: load_vision_tower(path))}

    def __init__(self, tokenizer, config: VilaUConfig, options: VilaUOptions | None = None,
                 image_tokenizer: RQTokenizer | None = None):
        super().__init__(tokenizer, config, options, image_tokenizer=image_tokenizer)
        rq = self.image_tokenizer
        if (rq.codebook_size, rq.depth, rq.grid) != (config.image_codes, config.code_depth, (config.grid, config.grid)):
            raise UmmError(f"vision tower ({rq.codebook_size} codes, depth {rq.depth}, grid {rq.grid}) does not match the "
                           f"model ({config.image_codes} codes, depth {config.code_depth}, grid {config.grid})")

    @classmethod
    def model_overrides(cls, tokenizer, options: VilaUOptions) -> dict:
        rq = cls.load_part("image_tokenizer", options, warn=False)  # the system warns once, when it is built
        return {"text_vocab": tokenizer.vocab_size, "image_codes": rq.codebook_size, "code_depth": rq.depth,
                "image_size": rq.config.image_size, "grid": rq.grid[0]}

    # -- sequences ----------------------------------------------------------------------------------------

    def add_image(self, seq: Sequence, codes: torch.Tensor, loss: bool) -> Sequence:
        """``[BOI] p_1 .. p_N [EOI]``: a causal span of N positions. The D codes of each position travel in the
        batch's ``patches`` channel (integers, exact in float32), which also marks the slots as image slots."""
        grid = (self.config.grid, self.config.grid)
        seq.text([self.tokenizer.boi_id], loss=loss)
        seq.image(codes.reshape(-1, self.config.code_depth).float(), grid, loss=loss, bidirectional=False)
        return seq.text([self.tokenizer.eoi_id], loss=loss)

    def build(self, sample: dict, codes: torch.Tensor, task: str, rng: random.Random, drop_caption: bool) -> Sequence:
        self.check_task(task)
        return ar_sequence(self.tokenizer, sample, task, lambda seq, loss: self.add_image(seq, codes, loss=loss),
                           self.text_ids, rng, drop_caption)

    def batch_of(self, seqs: list[Sequence], pad_left: bool = False) -> dict:
        batch = collate(seqs, patch_dim=self.config.code_depth, rope_axes=self.config.transformer.rope_axes,
                        pad_left=pad_left, pad_id=self.tokenizer.pad_id, multiple_of=1 if pad_left else 8)
        batch["codes"] = batch.pop("patches").round().long()  # (B, T, D)
        batch["is_image"] = batch["kinds"] == PATCH
        return batch

    def collate(self, samples: list[dict], task: str, generator: torch.Generator) -> dict:
        self.check_task(task)
        codes = self.image_tokenizer.encode(torch.stack([s["image"] for s in samples]))  # (B, h, w, D), frozen
        drop = torch.rand(len(samples), generator=generator) < self.options.cfg_dropout
        rng = batch_rng(generator)
        return self.batch_of([self.build(s, c, task, rng, bool(d) and task == "t2i")
                              for s, c, d in zip(samples, codes, drop)])

    # -- objective ----------------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        layout = Layout.of(batch)
        predict = torch.zeros_like(batch["image_loss"])
        predict[:, :-1] = batch["image_loss"][:, 1:]  # slot t predicts the codes of image slot t + 1
        out = model(batch["tokens"], batch["codes"], batch["is_image"], layout, predict=predict)
        losses = {"text_loss": next_token_loss(out.logits, batch["text_targets"])}
        if out.code_logits is not None and out.code_logits.shape[0]:
            targets = batch["codes"][:, 1:][predict[:, :-1]]  # (M, D)
            ce = F.cross_entropy(out.code_logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
            losses["image_loss"] = ce.mean()
            with torch.no_grad():  # diagnostics: CE per residual depth (coarse codes are the easier ones)
                for d, value in enumerate(ce.view(-1, self.config.code_depth).mean(0)):
                    losses[f"image_ce_depth{d + 1}"] = value
        return losses

    # -- capabilities (the loops: umm/pipelines/ar_depth.py) ----------------------------------------------

    def sampling_defaults(self, capability: str) -> dict:
        """The depth head's temperature and top-k/p from the options; VILA-U's guidance 3.0."""
        o = self.options
        return {"temperature": o.temperature, "top_k": o.top_k, "top_p": o.top_p, "cfg_scale": 3.0} \
            if capability == "generate_images" else {}

    def understanding_prompts(self, codes: torch.Tensor, questions: list[str | None]) -> list[Sequence]:
        """Codes (B, h, w, D) -> ``[BOS] [BOI] image [EOI] (question)`` each, after which text is decoded."""
        tok = self.tokenizer
        seqs = []
        for c, q in zip(codes, questions):
            seq = self.add_image(Sequence(pad_id=tok.pad_id).text([tok.bos_id], loss=False), c, loss=False)
            seqs.append(seq.text([] if q is None else self.text_ids(q), loss=False))
        return seqs


