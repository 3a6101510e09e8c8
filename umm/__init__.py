"""umm: Unified Multimodal Models.

Every system of the unified-models survey (Transfusion, MonoFormer, Chameleon, EMU3, LWM, VILA-U, Show-o,
MMAR, LaVIT, ImageBind, TextBind, NExT-GPT, SEED-X, UniBind) as a recipe built from shared parts, trained
and judged on ShapesWorld, an embedded multimodal world with an exact programmatic judge.
"""

__version__ = "0.1.0"

__all__ = ["Pipeline", "UmmError", "load", "train"]


def __getattr__(name: str):
    # umm.load / umm.train / umm.Pipeline (umm/api.py), imported on first use so that `import umm` (and the
    # CLI's start-up) does not pay for torch before it needs it
    if name in ("Pipeline", "load", "train"):
        from umm import api

        return getattr(api, name)
    raise AttributeError(f"module 'umm' has no attribute {name!r}")


class UmmError(Exception):
    """An error meant for the user: the CLI prints its message as one line, without a traceback."""
