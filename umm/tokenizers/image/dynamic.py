"""LaVIT's dynamic visual tokenizer (Jin et al. 2023, "Unified Language-Vision Pretraining in LLM with Dynamic
Discrete Visual Tokenization", arXiv 2309.04669, sec. 3.1): a variable number of discrete tokens per image.

    patch features X (N, C) --token selector--> keep mask M (which tokens carry information)
                             --token merger----> the kept tokens, each having read the dropped ones
                             --VQ (L2-normalised codebook)--> codes c_1 .. c_n, n <= N varies per image

- **Token selector** (their eq. 1-2): an MLP scores each patch; training samples the binary keep decision
  with a Gumbel-sigmoid (logistic noise, straight-through hard decision), inference keeps a token when its
  keep probability exceeds 0.5. At least one token is always kept (the most confident), so no image has
  an empty sequence.
- **Token merger** (their sec. 3.1): blocks of causal self-attention among the kept tokens (their order is
  the order the language model will read them in), cross-attention from the kept tokens to the dropped
  ones (so the information of a dropped token is merged, not lost) and an MLP.
- **Quantizer**: VQ in a low-dimensional L2-normalised space (LaVIT: 16384 codes of 32 dims, after
  ViT-VQGAN, Yu et al. 2022), straight-through, commitment loss; umm's EMA codebook with dead-code restarts.
- **Decoder**: LaVIT reconstructs its frozen ViT features from the token *sequence* and renders pixels with a
  diffusion de-tokenizer. umm has neither a pretrained ViT nor a pretrained diffusion model, so the
  patch features come from a convolutional encoder trained here and the decoder returns pixels: one grid
  query per latent position attends (bidirectionally) to the quantized tokens, which carry only their
  order in the sequence, never their grid position, exactly what the language model generates; the grid
  then goes through the convolutional decoder every umm tokenizer shares. With ``positional_codes`` (umm's
  departure, measured in benchmarks/RESULTS.md "Twelfth round") a code is (grid cell, content): the decoder puts
  each kept code on its cell, a learned "merged away" vector on the others, and one bidirectional transformer
  over the grid spreads what the merger folded into the kept tokens. The sequence stays LaVIT's: variable
  length, the kept tokens in raster order, as many as the selector keeps.
- **The selector's gradient**: the straight-through keep value (1 or 0 forward) weights what the decoder reads
  of each token, after the quantizer's L2 normalisation (before it, the normalisation cancels the weight and
  the selector learns only from the keep-ratio loss: measured logits within +-0.06 after 1500 steps, 4.4
  tokens kept at inference against 18 in training).

Registered as the ``lavit_tokenizer`` family (sizes ``lavit_tokenizer_s``, ``test_lavit_tokenizer``). Training
(``umm train lavit_tokenizer_s``): pixel reconstruction + commitment (EMA codebook) + the keep-ratio
loss (mean(M) - rho)^2 that sets how many tokens survive (LaVIT / DynamicViT's ratio loss).

Interface (what LaVIT's system and the eval harness use): ``encode(images) -> codes (B, N) long``, the kept
codes in raster order followed by -1 padding; ``decode(codes) -> images`` for codes padded with -1 (any width
up to N); ``codebook_size`` (the vocabulary: K, or N x K with ``positional_codes``); ``grid`` (the latent grid;
N = h * w is the most tokens an image can get). No ``depth`` attribute: systems that need one code per grid
position (Chameleon, Show-o) refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from umm import UmmError
from umm.models.factory import register_model
from umm.nn import Attention, Layout, RMSNorm, SwiGLU, Transformer, TransformerConfig, attention_mask
from umm.nn.attention import explicit_attention
from umm.nn.mlp import swiglu_hidden
from umm.registry import ARCHITECTURES, SYSTEMS
from umm.tokenizers.image.autoencoder import AutoencoderConfig, Decoder, Encoder
from umm.tokenizers.image.quantizers import VectorQuantizer
from umm.tokenizers.image.system import TokenizerSystem

PAD_CODE = -1  # code padding after an image's kept tokens


@dataclass(frozen=True)
class DynamicConfig:
    family: ClassVar[str] = "lavit_tokenizer"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dim: int = 128  # token width of the selector, merger and decoder
    heads: int = 4
    merger_depth: int = 2  # merger blocks
    decoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(dim=128, depth=2, heads=4, rope_axes=1))
    codebook_size: int = 1024
    code_dim: int = 32  # LaVIT's 32-d L2-normalised codes
    ema_decay: float = 0.99
    restart_threshold: float = 0.03  # codes used less than this per step move onto current encodings
    gumbel_temperature: float = 1.0
    # False: LaVIT's decoder, whose tokens carry only their index in the sequence. True (umm's departure for
    # small tokenizers trained from scratch): a code is (grid cell, content), the vocabulary is N x codebook_size,
    # and the decoder puts each kept code back on its cell (a learned "merged away" vector fills the others).
    # LaVIT's decoder reads its 16384 codes back into ViT features through a 12-layer transformer and a diffusion
    # model; umm's 2-layer one, at 48 px L1 after 1500 steps, returned grey blobs (judge 0.00 even with every
    # token kept, MSE 0.01 vs vq_l1's 3e-5; benchmarks/RESULTS.md, "Twelfth round").
    positional_codes: bool = False

    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size


class DynamicOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, 3, H, W) in [-1, 1] scale, unclamped
    codes: torch.Tensor  # (B, N) kept codes first (raster order), then PAD_CODE
    losses: dict[str, torch.Tensor]  # unweighted: commitment
    keep_fraction: torch.Tensor  # (B,) fraction of tokens kept, straight-through (gradient to the selector)


class CrossAttention(nn.Module):
    """Queries read a subset of keys, plus one learned null key/value: a query with nothing to read (an image
    that dropped no token) reads the null slot instead of a softmax over nothing."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key_value = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.null = nn.Parameter(torch.zeros(1, 1, 2 * dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor, readable: torch.Tensor) -> torch.Tensor:
        """x (B, Nq, D) queries; context (B, Nk, D); readable (B, Nk) bool -> (B, Nq, D)."""
        b, nq, d = x.shape
        kv = torch.cat([self.null.expand(b, -1, -1).to(context.dtype), self.key_value(context)], 1)  # (B, 1+Nk, 2D)
        key, value = (t.view(b, -1, self.heads, self.head_dim).transpose(1, 2) for t in kv.chunk(2, -1))
        query = self.query(x).view(b, nq, self.heads, self.head_dim).transpose(1, 2)
        mask = torch.cat([torch.ones_like(readable[:, :1]), readable], 1)[:, None, None, :]  # (B, 1, 1, 1+Nk)
        out = explicit_attention(query, key.to(query.dtype), value.to(query.dtype), mask)
        return self.out(out.transpose(1, 2).reshape(b, nq, d))


class MergerBlock(nn.Module):
    """Causal self-attention among kept tokens, cross-attention kept -> dropped, SwiGLU; pre-norm residuals."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_norm, self.cross_norm, self.mlp_norm = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.cross_attn = CrossAttention(dim, heads)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim, 8 / 3))

    def forward(self, x: torch.Tensor, dropped: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) tokens; dropped (B, N, D) the features the cross-attention reads; keep (B, N) bool."""
        causal = torch.full(keep.shape, -1, dtype=torch.long, device=keep.device)
        # kept tokens see the kept tokens before them (dropped tokens see only themselves: their rows are unused)
        mask = attention_mask(causal, causal, keep)
        x = x + self.self_attn(self.self_norm(x), mask)
        x = x + self.cross_attn(self.cross_norm(x), dropped, ~keep)
        return x + self.mlp(self.mlp_norm(x))


@ARCHITECTURES.register("lavit_tokenizer")
class DynamicTokenizer(nn.Module):
    config_class = DynamicConfig

    def __init__(self, config: DynamicConfig):
        super().__init__()
        config.autoencoder.check()
        if config.decoder.dim != config.dim:
            raise UmmError(f"model.decoder.dim ({config.decoder.dim}) must equal model.dim ({config.dim})")
        self.config = config
        ae, dim = config.autoencoder, config.dim
        n = self.tokens_per_image
        self.encoder = Encoder(ae, ae.latent_dim)
        self.project_in = nn.Linear(ae.latent_dim, dim)
        self.grid_position = nn.Parameter(torch.randn(n, dim) * 0.02)  # patch features carry their position
        self.selector = nn.Sequential(RMSNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.merger = nn.ModuleList(MergerBlock(dim, config.heads) for _ in range(config.merger_depth))
        self.merger_norm = RMSNorm(dim)
        self.to_code = nn.Linear(dim, config.code_dim)
        self.quantizer = VectorQuantizer(config.codebook_size, config.code_dim, ema=True, decay=config.ema_decay,
                                         restart_threshold=config.restart_threshold)
        self.from_code = nn.Linear(config.code_dim, dim)
        if config.positional_codes:  # the decoder's input is the grid itself: a code on its cell, or "merged away"
            self.cell_position = nn.Parameter(torch.randn(n, dim) * 0.02)
            self.merged_away = nn.Parameter(torch.zeros(dim))
        else:  # LaVIT: tokens with their sequence index, read by one query per grid cell
            self.order_position = nn.Parameter(torch.randn(n, dim) * 0.02)  # a token's index in the sequence
            self.queries = nn.Parameter(torch.randn(n, dim) * 0.02)  # one per latent grid position
        self.decoder_trunk = Transformer(config.decoder)
        self.project_out = nn.Linear(dim, ae.latent_dim)
        self.decoder = Decoder(ae, ae.latent_dim)

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.autoencoder.grid

    @property
    def tokens_per_image(self) -> int:
        h, w = self.config.autoencoder.grid
        return h * w

    @property
    def codebook_size(self) -> int:
        """The vocabulary a language model sees: K content codes, times N cells with ``positional_codes``."""
        k = self.config.codebook_size
        return k * self.tokens_per_image if self.config.positional_codes else k

    # -- pieces -------------------------------------------------------------------------------------------

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> patch features (B, N, D) with their grid position."""
        size = self.config.autoencoder.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise UmmError(f"dynamic tokenizer expects images (B, 3, {size}, {size}), got {tuple(images.shape)}")
        z = self.encoder(images * 2 - 1)  # (B, C, h, w)
        return self.project_in(z.flatten(2).transpose(1, 2)) + self.grid_position

    def select(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep decision (B, N) bool and its straight-through float (gradient to the selector's logits).

        With ``generator`` (training) the decision is a Gumbel-sigmoid sample: sigmoid((l + g1 - g2) / tau)
        > 0.5 with g1, g2 Gumbel, i.e. l plus logistic noise; without, keep where sigmoid(l) > 0.5."""
        logits = self.selector(x)[..., 0].float()  # (B, N)
        if generator is not None:
            u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-6, 1 - 1e-6)
            logits = logits + torch.log(u) - torch.log1p(-u)  # logistic = difference of two Gumbels
        soft = torch.sigmoid(logits / self.config.gumbel_temperature)
        hard = soft > 0.5
        hard = hard | F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()  # at least one token per image
        return hard, hard.float() + soft - soft.detach()

    def merge(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        dropped = x
        for block in self.merger:
            x = block(x, dropped, keep)
        return self.merger_norm(x)

    def quantize(self, h: torch.Tensor, keep: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """h (B, N, D) -> unit code vectors (B, N, d) straight-through, codes (B, N), losses over kept tokens.

        The codes live on the unit sphere: the encodings are L2-normalised and the vector a code stands for is
        its normalised codebook entry. The assignment, EMA codebook and dead-code restarts are umm's
        :class:`VectorQuantizer` (fed the kept tokens only): without restarts a small cosine codebook trained
        from scratch collapses onto one code within tens of steps (measured)."""
        with torch.autocast(h.device.type, enabled=False):
            e = F.normalize(self.to_code(h.float()), dim=-1)  # (B, N, d)
            codes = torch.zeros(keep.shape, dtype=torch.long, device=h.device)
            codes[keep] = self.quantizer.assign(e[keep], generator)  # the codebook's statistics: kept tokens only
            if self.config.positional_codes:  # the dropped tokens' nearest codes, for the selector's gradient
                codes[~keep] = self.quantizer.distances(e[~keep].detach()).argmin(-1)
            q = F.normalize(self.quantizer.lookup(codes), dim=-1)
        kept = keep[..., None].float()
        losses = {"commitment": ((e - q.detach()).pow(2) * kept).sum() / (kept.sum().clamp_min(1) * e.shape[-1])}
        return e + (q - e).detach(), codes, losses

    def decode_vectors(self, vectors: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, L, d) of L <= N sequence slots (the first ``valid`` ones real) -> pixels in [-1, 1]
        scale. Tokens carry only their index in the sequence; the N grid queries read them bidirectionally."""
        b, length = valid.shape
        n = self.tokens_per_image
        tokens = self.from_code(vectors) + self.order_position[:length]
        x = torch.cat([tokens, self.queries.expand(b, -1, -1).to(tokens.dtype)], 1)  # (B, L + N, D)
        # one bidirectional span over tokens and queries; padding tokens are not keys; no rotary positions
        block = torch.zeros(b, length + n, dtype=torch.long, device=x.device)
        layout = Layout(block, torch.zeros(b, length + n, 1, dtype=torch.long, device=x.device),
                        torch.cat([valid, torch.ones(b, n, dtype=torch.bool, device=x.device)], 1),
                        torch.zeros(b, 1, dtype=torch.long, device=x.device))
        grid = self.project_out(self.decoder_trunk(x, layout)[:, length:])  # (B, N, C)
        h, w = self.grid
        return self.decoder(grid.transpose(1, 2).reshape(b, -1, h, w))

    def decode_grid(self, vectors: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``positional_codes``: code vectors on their cells (B, N, d) and how present each cell's code is
        (B, N) (1 kept, 0 merged away; straight-through in training) -> pixels in [-1, 1] scale."""
        b, n = present.shape
        tokens = self.from_code(vectors)  # (B, N, D)
        present = present[..., None].to(tokens.dtype)
        x = present * tokens + (1 - present) * self.merged_away.to(tokens.dtype) + self.cell_position
        zeros = torch.zeros(b, n, dtype=torch.long, device=x.device)
        layout = Layout(zeros, zeros[..., None], torch.ones(b, n, dtype=torch.bool, device=x.device), zeros[:, :1])
        grid = self.project_out(self.decoder_trunk(x, layout))  # (B, N, C), one bidirectional span
        h, w = self.grid
        return self.decoder(grid.transpose(1, 2).reshape(b, -1, h, w))

    def tagged(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Per-cell codes (B, N) and keep (B, N) -> the sequence (B, N): kept codes in raster order, then
        PAD_CODE; with ``positional_codes`` each code is ``cell * K + content``."""
        if self.config.positional_codes:
            cells = torch.arange(codes.shape[1], device=codes.device)
            codes = cells * self.config.codebook_size + codes
        order, valid = kept_first(keep)
        return torch.where(valid, codes.gather(1, order), PAD_CODE)

    # -- training and the tokenizer interface -----------------------------------------------------------

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> DynamicOutput:
        x = self.features(images)
        keep, keep_st = self.select(x, generator)
        h = self.merge(x, keep)
        vectors, codes, losses = self.quantize(h, keep, generator)
        if self.config.positional_codes:
            # every cell's code, weighted by the straight-through keep value (1 or 0 forward): the gradient
            # tells the selector how much the loss changes when a cell's code replaces "merged away"
            reconstruction = self.decode_grid(vectors, keep_st)
        else:
            # the straight-through keep value scales the kept unit vectors (before the L2 normalisation it would
            # cancel): the gradient tells the selector how much each kept token helps
            vectors = vectors * keep_st[..., None]
            order, valid = kept_first(keep)
            vectors = vectors.gather(1, order[..., None].expand_as(vectors)) * valid[..., None]
            reconstruction = self.decode_vectors(vectors, valid)
        return DynamicOutput(reconstruction, self.tagged(codes, keep), losses, keep_st.mean(-1))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> codes (B, N): each image's kept codes in raster order, then PAD_CODE."""
        x = self.features(images)
        keep, _ = self.select(x, None)
        _, codes, _ = self.quantize(self.merge(x, keep), keep)
        return self.tagged(codes, keep)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, L) (each row's codes first, then PAD_CODE; L <= N) -> images in [0, 1]."""
        if codes.dtype != torch.long or codes.ndim != 2 or codes.shape[1] > self.tokens_per_image:
            raise UmmError(f"codes must be (B, L <= {self.tokens_per_image}) long, got {tuple(codes.shape)} {codes.dtype}")
        valid = codes != PAD_CODE
        if (codes[valid] < 0).any() or (codes >= self.codebook_size).any():
            raise UmmError(f"codes must lie in [0, {self.codebook_size}) or be padding {PAD_CODE}")
        if (valid[:, 1:] & ~valid[:, :-1]).any():
            raise UmmError("codes must be padded at the end of each row only")
        if self.config.positional_codes:
            pixels = self.decode_grid(*self.on_cells(codes, valid))
        else:
            vectors = F.normalize(self.quantizer.lookup(codes.clamp_min(0)), dim=-1) * valid[..., None]
            pixels = self.decode_vectors(vectors, valid)
        return (pixels.float().clamp(-1, 1) + 1) / 2

    def on_cells(self, codes: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tagged codes (B, L) -> (code vectors on their cells (B, N, d), present (B, N)). A cell that several
        codes name (a language model may repeat one) gets the mean of their vectors."""
        b, n, k = codes.shape[0], self.tokens_per_image, self.config.codebook_size
        tagged = codes.clamp_min(0)
        cells = torch.where(valid, tagged // k, n)  # padding goes to a spare cell n, dropped below
        vectors = F.normalize(self.quantizer.lookup(tagged % k), dim=-1)  # (B, L, d)
        summed = torch.zeros(b, n + 1, vectors.shape[-1], device=codes.device).scatter_add_(
            1, cells[..., None].expand_as(vectors), vectors)
        count = torch.zeros(b, n + 1, device=codes.device).scatter_add_(1, cells, torch.ones_like(vectors[..., 0]))
        present = (count[:, :n] > 0).float()
        return summed[:, :n] / count[:, :n, None].clamp_min(1), present


def kept_first(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keep (B, N) bool -> (order (B, N): indices that move each row's kept tokens to the front in raster
    order, valid (B, N): True on the first ``keep.sum()`` slots of each row)."""
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    valid = torch.arange(keep.shape[1], device=keep.device)[None] < keep.sum(1, keepdim=True)
    return order, valid


# ---- sizes ----------------------------------------------------------------------------------------------


@register_model
def lavit_tokenizer_s() -> DynamicConfig:
    """32x32 -> up to 8x8 = 64 tokens from 1024 codes of 32 dims."""
    return DynamicConfig()


@register_model
def test_lavit_tokenizer() -> DynamicConfig:
    return DynamicConfig(autoencoder=AutoencoderConfig(image_size=16, widths=(8, 16, 32), latent_dim=16), dim=32,
                         heads=2, merger_depth=1, decoder=TransformerConfig(dim=32, depth=1, heads=2, rope_axes=1),
                         codebook_size=64, code_dim=8)


# ---- training: the reconstruct task with the keep-ratio loss ---------------------------------------------


@dataclass(frozen=True)
class DynamicOptions:
    commitment_weight: float = 0.25
    keep_ratio: float = 0.5  # rho: the fraction of tokens the selector should keep
    keep_weight: float = 2.0  # weight of (mean(M) - rho)^2


@SYSTEMS.register("lavit_tokenizer")
class DynamicTokenizerSystem(TokenizerSystem):
    """L = |x - D(x)|^2 + beta * commitment + w_keep * (mean(M) - rho)^2 (the codebook is an EMA)."""

    family = "lavit_tokenizer"
    Options = DynamicOptions

    def __init__(self, tokenizer, config, options: DynamicOptions | None = None):
        super().__init__(tokenizer, config, options)
        if not 0.0 < self.options.keep_ratio <= 1.0:
            raise UmmError(f"system_args.keep_ratio must be in (0, 1], got {self.options.keep_ratio}")

    def losses(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pixels = batch["pixels"]
        out = model(pixels, generator)
        error = out.reconstruction.float() - (pixels * 2 - 1)
        o = self.options
        return {"recon_loss": error.pow(2).mean(), "commitment_loss": o.commitment_weight * out.losses["commitment"],
                "keep_loss": o.keep_weight * (out.keep_fraction - o.keep_ratio).pow(2).mean(),
                "keep_fraction": out.keep_fraction.mean().detach(), "mse": (error / 2).pow(2).mean().detach()}
