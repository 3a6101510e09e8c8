"""Build a recipe's dataset and text tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from umm import UmmError
from umm.registry import DATASETS
from umm.training.recipe import DataConfig, RunConfig


def build_dataset(config: DataConfig, split: str) -> Any:
    """The registered dataset ``config.name`` for ``split`` (each dataset class has ``from_config``)."""
    import umm.data  # noqa: F401  (registers the datasets)

    return DATASETS.get(config.name).from_config(config, split)


def build_text_tokenizer(run: RunConfig, run_dir: Path | None, dataset: Any, save: bool = True):
    """Load the tokenizer named by the recipe or saved in the run; otherwise train a BPE on the data's text
    (and save it in the run when ``save``).

    Training is deterministic, so every rank of a distributed run builds the same tokenizer; only rank 0
    writes it, so no rank can read a half-written file.
    """
    from umm.tokenizers.text import TextTokenizer

    cfg = run.tokenizer
    if cfg.path is not None:
        return TextTokenizer.load(Path(cfg.path))
    saved = None if run_dir is None else run_dir / "tokenizer"
    if saved is not None and (saved / "tokenizer.json").is_file():
        return TextTokenizer.load(saved)
    texts = list(dataset.text_corpus(cfg.corpus_size))
    if cfg.corpus_path is not None:
        path = Path(cfg.corpus_path)
        if not path.is_file():
            raise UmmError(f"tokenizer.corpus_path {str(path)!r} does not exist")
        texts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    tokenizer = TextTokenizer.train(texts, cfg.vocab_size)
    if saved is not None and save:
        saved.mkdir(parents=True, exist_ok=True)
        tokenizer.save(saved)
    return tokenizer
