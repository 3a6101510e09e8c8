"""The autoregressive sequence formats the discrete systems share: who carries loss, and what the target is."""

import pytest

from umm.data.sequence import ar_sequence, understanding_turn
from umm.data.shapes import ShapesWorld
from umm.tokenizers.text import TextTokenizer, shapes_corpus


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


def visual(n: int):
    def add(seq, loss):  # a stand-in visual span of n code ids (999..)
        return seq.text([999] * n, loss=loss)
    return add


def test_understanding_turn_reads_the_complete_caption_and_cycles_questions():
    world = ShapesWorld("train", seed=0)
    sample = dict(world[3])
    assert understanding_turn(sample, "caption") == (None, sample["caption_full"])
    questions = {understanding_turn({**sample, "index": i}, "qa")[0] for i in range(len(sample["qa"]))}
    assert questions == {qa["question"] for qa in sample["qa"]}
    with pytest.raises(ValueError, match="not an understanding task"):
        understanding_turn(sample, "t2i")


def test_generation_trains_everything_and_understanding_only_the_target(tokenizer):
    sample = dict(ShapesWorld("train", seed=0)[5])
    gen = ar_sequence(tokenizer, sample, "t2i", visual(4), tokenizer.encode)
    caption = tokenizer.encode(sample["caption"])
    assert gen.tokens == [tokenizer.bos_id, *caption, 999, 999, 999, 999, tokenizer.eos_id]
    assert all(gen.text_loss)
    dropped = ar_sequence(tokenizer, sample, "t2i", visual(4), tokenizer.encode, drop_caption=True)
    assert dropped.tokens == [tokenizer.bos_id, 999, 999, 999, 999, tokenizer.eos_id]
    vision_only = ar_sequence(tokenizer, sample, "t2i", visual(4), tokenizer.encode, text_loss=False)
    assert vision_only.text_loss == [False] * (1 + len(caption)) + [True] * 4 + [False]

    question, answer = understanding_turn(sample, "qa")
    qa = ar_sequence(tokenizer, sample, "qa", visual(4), tokenizer.encode)
    n_question = len(tokenizer.encode(question))
    assert qa.tokens[1:5] == [999] * 4 and qa.tokens[-1] == tokenizer.eos_id
    assert qa.text_loss == [False] * (5 + n_question) + [True] * (len(tokenizer.encode(answer)) + 1)
