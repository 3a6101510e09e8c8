"""BPE text tokenizer: specials, round trips, determinism, save/load."""

import pytest

from umm import UmmError
from umm.registry import TOKENIZERS
from umm.tokenizers.text import SPECIAL_TOKENS, TextTokenizer, shapes_corpus


@pytest.fixture(scope="module")
def corpus():
    return shapes_corpus(2000)


@pytest.fixture(scope="module")
def tok(corpus):
    return TextTokenizer.train(corpus + ["Hello, world! Ünïcödé text 123."], vocab_size=400)


def test_corpus_covers_the_world_language(corpus):
    words = set(" ".join(corpus).split())
    for word in ("circle", "stars", "purple", "left", "above", "moves", "how", "where", "top", "2"):
        assert word in words


def test_special_tokens_have_fixed_ids(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.boi_id, tok.eoi_id) == (0, 1, 2, 3, 4)
    assert (tok.bov_id, tok.eov_id, tok.boa_id, tok.eoa_id, tok.mask_id) == (5, 6, 7, 8, 9)
    assert (tok.t2i_id, tok.mmu_id, tok.qa_id, tok.t2v_id, tok.v2t_id) == (10, 11, 12, 13, 14)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.special(token) == i
    with pytest.raises(KeyError):
        tok.special("<image>")
    assert TOKENIZERS.get("bpe") is TextTokenizer


def test_encode_decode_round_trip(tok, corpus):
    for text in corpus[:500] + ["", "  two  spaces", "Hello, world! Ünïcödé text 123.", "emoji 🙂 and <boi> as text"]:
        ids = tok.encode(text)
        assert all(i >= len(SPECIAL_TOKENS) for i in ids)  # text never produces a special id
        assert tok.decode(ids) == text
    ids = tok.encode("a red circle", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode([tok.bos_id, *ids, tok.pad_id, tok.boi_id]) == "a red circle"


def test_bpe_compresses_world_text(tok, corpus):
    # the world's vocabulary is small: a caption is a handful of tokens, not one per byte
    mean = sum(len(tok.encode(t)) for t in corpus[:300]) / 300
    assert mean < 0.3 * sum(len(t) for t in corpus[:300]) / 300
    assert len(tok.encode("a small red circle in the top left")) <= 9


def test_training_is_deterministic_and_save_load_is_identical(tok, corpus, tmp_path):
    again = TextTokenizer.train(corpus + ["Hello, world! Ünïcödé text 123."], vocab_size=400)
    texts = corpus[:200]
    assert again.encode_batch(texts) == tok.encode_batch(texts)
    tok.save(tmp_path)
    loaded = TextTokenizer.load(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert loaded.vocab_size == tok.vocab_size and loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert loaded.mmu_id == tok.mmu_id


def test_errors_are_one_line(tmp_path):
    with pytest.raises(UmmError, match="vocab_size"):
        TextTokenizer.train(["a"], vocab_size=100)
    with pytest.raises(UmmError, match="no tokenizer"):
        TextTokenizer.load(tmp_path / "missing")
