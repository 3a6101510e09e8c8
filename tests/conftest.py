"""Shared test set-up: everything runs on CPU, no network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# the capability loops register themselves when umm.pipelines is imported (the CLI, umm.load and umm.eval
# import it); tests that build a system and call its capabilities directly need them too
import umm.pipelines  # noqa: E402,F401
