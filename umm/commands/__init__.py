"""The command line's handlers, one module per group: the top layer, beside ``umm.cli`` (the parser and the
error line), ``umm.api``, ``umm.serve`` and ``umm.demo``. They may import anything below; nothing imports them
but ``umm.cli``.

- ``data``: ``umm data inspect | make-shapes | make-shards``
- ``run``: ``umm sample | caption | answer | eval`` on a trained system
- ``embed``: ``umm embed | retrieve`` for the systems that embed
- ``bench``: ``umm bench``
"""
