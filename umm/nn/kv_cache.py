"""Key/value cache for decoding over mixed causal and bidirectional spans.

The cache holds, besides keys and values, the layout of what it caches (span ids and padding), so a new
chunk of queries is masked exactly as in a full forward pass: a text token sees everything before it, and
an image span written as one chunk sees all of itself plus the whole cached prefix.

Writes go to slots ``length .. length + n - 1``. ``commit=False`` in the model's forward writes there
without advancing ``length``: a diffusion sampler runs the image span once per denoising step against the
same cached prompt, overwriting the same slots each time, and commits only the final clean image.
"""

from __future__ import annotations

import torch


class LayerCache:
    """Keys and values of one attention layer: (B, H, max_len, Dh) each, allocated on first write."""

    def __init__(self, owner: KVCache):
        self.owner = owner
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def write(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, n, Dh) at the cache's current slots; return all keys/values up to and including them."""
        start, n = self.owner.length, key.shape[2]
        end = start + n
        assert end <= self.owner.max_len, f"KV cache overflow: {end} > max_len {self.owner.max_len}"
        if self.keys is None:
            shape = (key.shape[0], key.shape[1], self.owner.max_len, key.shape[3])
            self.keys = key.new_zeros(shape)
            self.values = value.new_zeros(shape)
        self.keys[:, :, start:end] = key.to(self.keys.dtype)
        self.values[:, :, start:end] = value.to(self.values.dtype)
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """A cache for every layer of a :class:`~umm.nn.transformer.Transformer`, plus the cached layout."""

    def __init__(self, depth: int, batch: int, max_len: int, device: torch.device | str = "cpu"):
        self.max_len = max_len
        self.length = 0
        self.layers = [LayerCache(self) for _ in range(depth)]
        self.block = torch.full((batch, max_len), -1, dtype=torch.long, device=device)
        self.valid = torch.zeros((batch, max_len), dtype=torch.bool, device=device)
        # running per-row state a model keeps about the committed prefix besides keys/values (Transfusion's
        # pooled text: the sum and count of the text embeddings so far); the model writes it on commit
        self.state: dict[str, torch.Tensor] = {}

    def write_layout(self, block: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new chunk's (B, n) layout; return the layout of all keys (B, length + n)."""
        end = self.length + block.shape[1]
        assert end <= self.max_len, f"KV cache overflow: {end} > max_len {self.max_len}"
        self.block[:, self.length : end] = block
        self.valid[:, self.length : end] = valid
        return self.block[:, :end], self.valid[:, :end]

    def rows(self, n: int) -> KVCache:
        """A view of the first ``n`` rows (the conditional half of a guided batch): it shares this cache's keys,
        values and layout, so a ``commit=False`` chunk run through it reads the same prefix. Only for chunks
        that are not committed: committing through a view would leave the other rows behind."""
        view = KVCache(0, n, self.max_len, self.block.device)
        view.length, view.block, view.valid = self.length, self.block[:n], self.valid[:n]
        view.state = {k: v[:n] for k, v in self.state.items()}
        for layer in self.layers:
            row_view = LayerCache(view)
            row_view.keys = None if layer.keys is None else layer.keys[:n]
            row_view.values = None if layer.values is None else layer.values[:n]
            view.layers.append(row_view)
        return view

    def commit(self, n: int) -> None:
        """Keep the last written ``n`` slots: later writes go after them."""
        self.length += n
