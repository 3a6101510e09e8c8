"""What each mechanism's loops read of a system: the system <-> pipeline contract, one typed Protocol per
mechanism. A system names its mechanism (``SystemBase.mechanism``) and provides these members; the loops of
that mechanism (registered in ``umm.registry.LOOPS``) call nothing else on it. ``tests/test_layers.py`` checks
every registered system against the Protocol of its mechanism.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from umm.data.sequence import Sequence
from umm.samplers.plan import TokenPlan


@runtime_checkable
class TokenSystem(Protocol):
    """What every loop reads: the text tokenizer (``pad_id``, ``bos_id``, ``boi_id``, ``eoi_id``, ``eos_id``,
    ``decode``), the model config (geometry, ``transformer.rope_axes``) and the text of a prompt."""

    family: str
    tokenizer: Any
    config: Any

    def text_ids(self, text: str) -> list[int]: ...


@runtime_checkable
class CodeAR(TokenSystem, Protocol):
    """``ar`` (Chameleon): next-token sampling of a planned span of image codes, then text after an image."""

    image_tokenizer: torch.nn.Module

    def t2i_prompt(self, text: str | None, context: torch.Tensor | None = None) -> Sequence: ...

    def image_plan(self) -> TokenPlan: ...

    def codes_from_plan(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def understanding_prompt(self, codes: torch.Tensor, question: str | None) -> Sequence: ...


@runtime_checkable
class DynamicCodeAR(TokenSystem, Protocol):
    """``ar_dynamic`` (LaVIT): codes until EOI; understanding as ``ar``."""

    image_tokenizer: torch.nn.Module

    def understanding_prompt(self, codes: torch.Tensor, question: str | None) -> Sequence: ...


@runtime_checkable
class MaskedTokens(TokenSystem, Protocol):
    """``maskgit`` (Show-o): every code of a canvas predicted in parallel, the surest kept; understanding as ``ar``."""

    image_tokenizer: torch.nn.Module

    def t2i_prompt(self, text: str | None) -> Sequence: ...

    def code_range(self) -> tuple[int, int]: ...

    def understanding_prompt(self, codes: torch.Tensor, question: str | None) -> Sequence: ...


@runtime_checkable
class DiffusionLM(TokenSystem, Protocol):
    """``diffusion_lm`` (Transfusion, MonoFormer): text by next token, images by denoising their patches in place."""

    path: Any  # umm.paths.GaussianPath: noise schedule, parameterisation, sampling times
    sample_clip: float | None

    def image_prefix(self) -> list[int]: ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def build(self, sample: dict, patches: torch.Tensor, task: str, rng: Any, drop_caption: bool = False) -> Sequence: ...


@runtime_checkable
class PerTokenDiffusion(TokenSystem, Protocol):
    """``masked_ar`` (MMAR): masked-AR order over continuous tokens, each drawn by a small diffusion head."""

    options: Any
    path: Any
    token_clip: float | None

    def t2i_prompt(self, text: str | None) -> Sequence: ...

    def image_prompt(self, tokens: torch.Tensor, question: str | None) -> Sequence: ...

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor: ...

    def tokens_to_images(self, tokens: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class VideoCodeAR(TokenSystem, Protocol):
    """``ar_video`` (EMU3, LWM): image and video grids as planned raster streams with structure tokens."""

    def vision_prompts(self, prompts: list[str], video: bool, **request: Any) -> tuple: ...

    def decode_vision(self, codes: torch.Tensor, video: bool) -> torch.Tensor: ...

    def understanding_prompts(self, images: torch.Tensor, questions: list[str] | None) -> list[Sequence]: ...

    def video_understanding_prompts(self, videos: torch.Tensor) -> list[Sequence]: ...


@runtime_checkable
class DepthCodeAR(TokenSystem, Protocol):
    """``ar_depth`` (VILA-U): a position per step from the trunk, its D residual codes from the depth head."""

    image_tokenizer: torch.nn.Module  # the vision tower

    def batch_of(self, seqs: list[Sequence], pad_left: bool = False) -> dict: ...

    def understanding_prompts(self, codes: torch.Tensor, questions: list[str | None]) -> list[Sequence]: ...


@runtime_checkable
class Bridge(TokenSystem, Protocol):
    """``bridge`` (TextBind, NExT-GPT, SEED-X): an LM over text and projected frozen-encoder features; its own
    text -> image route runs the ``decode_text`` / ``image_query`` loops and a frozen generator."""

    def understanding_prompt(self, question: str | None) -> Sequence: ...

    def input_features(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ConditionedDecoder(Protocol):
    """``cond_decoder``: a diffusion decoder drawn from a condition (B, M, C); ``render`` runs the loop."""

    config: Any
    path: Any


# mechanism -> the Protocol its loops read
PROTOCOLS: dict[str, type] = {"ar": CodeAR, "ar_dynamic": DynamicCodeAR, "maskgit": MaskedTokens,
                              "diffusion_lm": DiffusionLM, "masked_ar": PerTokenDiffusion, "ar_video": VideoCodeAR,
                              "ar_depth": DepthCodeAR, "bridge": Bridge, "cond_decoder": ConditionedDecoder}
