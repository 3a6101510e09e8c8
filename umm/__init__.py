"""umm: Unified Multimodal Models.

Every system of the unified-models survey (Transfusion, MonoFormer, Chameleon, EMU3, LWM, VILA-U, Show-o,
MMAR, LaVIT, ImageBind, TextBind, NExT-GPT, SEED-X, UniBind) as a recipe built from shared parts, trained
and judged on ShapesWorld, an embedded multimodal world with an exact programmatic judge.
"""

__version__ = "0.1.0"


class UmmError(Exception):
    """An error meant for the user: the CLI prints its message as one line, without a traceback."""
