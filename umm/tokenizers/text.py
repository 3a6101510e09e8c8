"""Text tokenizer: byte-level BPE (HF ``tokenizers``) with fixed special tokens for modalities and tasks.

Special tokens occupy ids ``0 .. len(SPECIAL_TOKENS) - 1`` in the order of ``SPECIAL_TOKENS`` in every
tokenizer, whatever text it was trained on, so code can rely on e.g. ``tok.bos_id == 1``. Attributes:
``pad_id bos_id eos_id boi_id eoi_id bov_id eov_id boa_id eoa_id mask_id`` and task tokens
``t2i_id mmu_id qa_id t2v_id v2t_id t2a_id a2t_id sep_id``; ``tok.special("<boi>")`` looks any of them up.
Reserved slots (``<reserved_k>``) keep room to add tokens without shifting the ids of learned merges.

Byte-level BPE never needs an unknown token: any string round-trips through ``encode``/``decode``.
Training is deterministic (same texts and vocab size -> same ids) so every rank of a distributed run
builds the same tokenizer. ``save(dir)`` writes ``dir/tokenizer.json``; ``load(dir)`` checks the specials.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from umm import UmmError
from umm.registry import TOKENIZERS

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>",
    "<boi>", "<eoi>",  # image span
    "<bov>", "<eov>",  # video span
    "<boa>", "<eoa>",  # audio span
    "<mask>",  # masked-token objectives (Show-o, MaskGIT)
    "<t2i>", "<mmu>", "<qa>", "<t2v>", "<v2t>", "<t2a>", "<a2t>",  # task tokens (mmu = caption/understand)
    "<sep>",
    "<reserved_0>", "<reserved_1>", "<reserved_2>", "<reserved_3>", "<reserved_4>", "<reserved_5>",
)  # fmt: skip
TOKENIZER_FILE = "tokenizer.json"


class TextTokenizer:
    """A trained byte-level BPE with the fixed ``SPECIAL_TOKENS``; see the module docstring."""

    def __init__(self, tokenizer: Tokenizer):
        for i, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != i:
                raise UmmError(
                    f"tokenizer special token {token!r} has id {tokenizer.token_to_id(token)}, expected {i}; "
                    "it was not built by umm.tokenizers.text"
                )
        # "<boi>" typed in a caption is text, not an image boundary: specials only enter as ids
        tokenizer.encode_special_tokens = True
        self._tok = tokenizer
        for token in SPECIAL_TOKENS:
            setattr(self, token.strip("<>") + "_id", SPECIAL_TOKENS.index(token))

    # ids of the special tokens, set in __init__; declared for readers and type checkers
    pad_id: int
    bos_id: int
    eos_id: int
    boi_id: int
    eoi_id: int
    bov_id: int
    eov_id: int
    boa_id: int
    eoa_id: int
    mask_id: int
    t2i_id: int
    mmu_id: int
    qa_id: int
    t2v_id: int
    v2t_id: int
    t2a_id: int
    a2t_id: int
    sep_id: int

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2) -> "TextTokenizer":
        """Train on ``texts``. ``vocab_size`` counts the specials and the 256 byte tokens; a small
        corpus may stop below it once no pair occurs ``min_frequency`` times."""
        floor = len(SPECIAL_TOKENS) + 256
        if vocab_size < floor:
            raise UmmError(f"vocab_size must be at least {floor} (specials + 256 bytes), got {vocab_size}")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        # a list, not a generator: the trainer then sees the texts in one deterministic order
        tokenizer.train_from_iterator(list(texts), trainer=trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def special(self, token: str) -> int:
        """Id of a special token such as ``"<boi>"``."""
        if token not in SPECIAL_TOKENS:
            raise KeyError(f"{token!r} is not a special token; specials: {', '.join(SPECIAL_TOKENS)}")
        return SPECIAL_TOKENS.index(token)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(range(len(SPECIAL_TOKENS)))

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text`` (special-token strings inside ``text`` are encoded as plain text)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, skipping special tokens (so a generated ``<eos>`` or ``<pad>`` vanishes)."""
        return self._tok.decode([int(i) for i in ids if int(i) >= len(SPECIAL_TOKENS)], skip_special_tokens=True)

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json``; returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKENIZER_FILE
        self._tok.save(str(path))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "TextTokenizer":
        path = Path(directory)
        path = path / TOKENIZER_FILE if path.is_dir() else path
        if not path.is_file():
            raise UmmError(f"no tokenizer at {str(path)!r}")
        return cls(Tokenizer.from_file(str(path)))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, specials={len(SPECIAL_TOKENS)})"


TOKENIZERS.register("bpe")(TextTokenizer)


def shapes_corpus(n: int = 20000, seed: int = 0) -> list[str]:
    """Training text from ShapesWorld: captions of both styles, QA questions and answers, video
    captions (``n`` samples of the train split of the full world, L4); deterministic. The canvas is pinned
    at 32 px because video captions' wording draws from the same random stream as the motion, whose range
    depends on the canvas: every tokenizer trains on the very corpus it did before the default canvas
    became 48 (the vocabulary is the same at every canvas and level)."""
    from umm.data.shapes import ShapesWorld

    return list(ShapesWorld("train", canvas=32, seed=seed, size=n, level="L4").text_corpus(n))
