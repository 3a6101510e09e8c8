"""The autoregressive sequence formats the discrete systems share: who carries loss, and what the target is."""

import inspect
import random

import pytest

from umm.data.sequence import ANSWER_TOKENS, CAPTION_TOKENS, ar_sequence, understanding_turn
from umm.data.shapes import ShapesWorld
from umm.tokenizers.text import TextTokenizer, shapes_corpus


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(shapes_corpus(2000), 384)


def visual(n: int):
    def add(seq, loss):  # a stand-in visual span of n code ids (999..)
        return seq.text([999] * n, loss=loss)
    return add


def test_understanding_turn_reads_the_complete_caption_and_draws_every_question():
    world = ShapesWorld("train", seed=0)
    sample = dict(world[3])
    assert understanding_turn(sample, "caption", random.Random(0)) == (None, sample["caption_full"])
    rng = random.Random(0)
    questions = {understanding_turn(sample, "qa", rng)[0] for _ in range(50)}
    assert questions == {qa["question"] for qa in sample["qa"]}
    with pytest.raises(ValueError, match="not an understanding task"):
        understanding_turn(sample, "t2i", rng)


def test_generation_trains_everything_and_understanding_only_the_target(tokenizer):
    sample = dict(ShapesWorld("train", seed=0)[5])
    gen = ar_sequence(tokenizer, sample, "t2i", visual(4), tokenizer.encode, random.Random(0))
    caption = tokenizer.encode(sample["caption"])
    assert gen.tokens == [tokenizer.bos_id, *caption, 999, 999, 999, 999, tokenizer.eos_id]
    assert all(gen.text_loss)
    dropped = ar_sequence(tokenizer, sample, "t2i", visual(4), tokenizer.encode, random.Random(0), drop_caption=True)
    assert dropped.tokens == [tokenizer.bos_id, 999, 999, 999, 999, tokenizer.eos_id]
    vision_only = ar_sequence(tokenizer, sample, "t2i", visual(4), tokenizer.encode, random.Random(0), text_loss=False)
    assert vision_only.text_loss == [False] * (1 + len(caption)) + [True] * 4 + [False]

    question, answer = understanding_turn(sample, "qa", random.Random(1))
    qa = ar_sequence(tokenizer, sample, "qa", visual(4), tokenizer.encode, random.Random(1))
    n_question = len(tokenizer.encode(question))
    assert qa.tokens[1:5] == [999] * 4 and qa.tokens[-1] == tokenizer.eos_id
    assert qa.text_loss == [False] * (5 + n_question) + [True] * (len(tokenizer.encode(answer)) + 1)


def test_every_system_decodes_captions_and_answers_to_the_same_length():
    """The bench compares captioners as equals: every caption / answer capability stops at the same length,
    and the longest complete caption (three objects) fits it."""
    import umm.models  # noqa: F401  (registers every family)
    import umm.pipelines  # noqa: F401  (registers the loops that decode them)
    from umm.registry import LOOPS, SYSTEMS

    lengths = {}
    want = {"caption": CAPTION_TOKENS, "answer": ANSWER_TOKENS, "caption_videos": CAPTION_TOKENS}
    for name in SYSTEMS.names():  # a system's own methods (a loop of its mechanism runs the rest)
        for method, expected in want.items():
            fn = getattr(SYSTEMS.get(name), method, None)
            if fn is not None and "max_new_tokens" in inspect.signature(fn).parameters:
                default = inspect.signature(fn).parameters["max_new_tokens"].default
                if default is not inspect.Parameter.empty:
                    lengths[(name, method)] = (default, expected)
    for key in LOOPS.names():  # every registered caption / answer loop, "<mechanism>.<capability>"
        mechanism, capability = key.split(".", 1)
        if capability in want:
            default = inspect.signature(LOOPS.get(key)).parameters["max_new_tokens"].default
            lengths[(mechanism, capability)] = (default, want[capability])
    assert len(lengths) >= 10 and all(a == b for a, b in lengths.values()), lengths
    tokenizer = TextTokenizer.train(shapes_corpus(20000), 512)
    world = ShapesWorld("test", seed=0, level="L4", modalities=("image", "caption"))
    assert max(len(tokenizer.encode(world[i]["caption_full"])) for i in range(300)) + 1 <= CAPTION_TOKENS
