"""One registry class for everything umm builds by name.

A name registered twice is an error (timm only warns, and the later entry silently wins); an unknown
name is an error that lists the registered names closest to it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any

from umm import UmmError


class UnknownNameError(UmmError, KeyError):
    """A name that is not registered; the message lists the closest registered names."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry:
    """Maps a name to an object (a class or a factory function)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator: ``@MODELS.register()`` uses the function's name, ``@MODELS.register("x")`` names it."""

        def add(obj: Any) -> Any:
            key = name or obj.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice ({self._entries[key]!r} and {obj!r})")
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> Any:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (see `umm ls`)")
        return self._entries[name]

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self._entries if n.startswith(prefix))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


# architecture family name -> nn.Module class (with a ``config_class`` attribute)
ARCHITECTURES = Registry("architecture")
# model name (family + size, e.g. "transfusion_s", "test_transfusion") -> function returning a config
MODELS = Registry("model")
# system adapter: family name -> class that turns samples into batches and batches into losses
SYSTEMS = Registry("system")
# tokenizer kind -> class
TOKENIZERS = Registry("tokenizer")
# dataset name -> class / factory yielding sample dicts
DATASETS = Registry("dataset")
# "<mechanism>.<capability>" (e.g. "diffusion_lm.generate_images") -> the umm.pipelines loop that runs it, called
# as loop(model, system, *args, **options). The pipelines register their loops when umm.pipelines is imported;
# a system names its mechanism (SystemBase.mechanism), so models never import the pipelines (layers point down)
LOOPS = Registry("capability loop")
