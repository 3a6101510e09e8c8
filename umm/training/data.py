"""Which samples each rank sees at each step: a pure function of (seed, step), so resume is exact.

For a map-style dataset (ShapesWorld, an image folder) the order is a seeded permutation per epoch and step
``s`` takes the slice ``[s * B, (s + 1) * B)`` of that order, where B is the sum of the tasks' global batch
sizes; each task takes its own contiguous part and each rank its own part of that. Nothing about the
data order lives in memory between steps, so a run resumed at step s sees exactly the batches an
uninterrupted run would have. Iterable datasets (WebDataset shards) are read in order; each rank keeps
every ``world``-th sample and a resumed run skips what was consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from umm import UmmError
from umm.training.recipe import TaskConfig


class BatchSource:
    def __init__(self, dataset: Any, tasks: tuple[TaskConfig, ...], rank: int, world: int, seed: int):
        for task in tasks:
            if task.batch_size % world:
                raise UmmError(f"task {task.name!r}: batch_size {task.batch_size} is not divisible by {world} ranks")
        self.dataset = dataset
        self.tasks = tasks
        self.rank, self.world, self.seed = rank, world, seed
        self.step_size = sum(t.batch_size for t in tasks)
        self.map_style = hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
        self._perm: tuple[int, torch.Tensor] | None = None
        self._stream: Iterator[dict] | None = None
        self._stream_pos = 0

    def _order(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.dataset), generator=g))
        return self._perm[1]

    def _indices(self, step: int, offset: int, count: int) -> list[int]:
        n = len(self.dataset)
        if n == 0:
            raise UmmError("the training dataset is empty")
        out = []
        for k in range(count):
            g = step * self.step_size + offset + k
            out.append(int(self._order(g // n)[g % n]))
        return out

    def samples(self, step: int, names: tuple[str, ...] | None = None) -> dict[str, list[dict]]:
        """The samples of the tasks ``names`` (default: every task) for this rank at ``step``.

        A task's samples do not depend on which other tasks are asked for: a map-style dataset keeps every
        task's slice of the step in place and reads only the asked ones (a staged task costs nothing before it
        starts); a stream is read through every task's part, in order.
        """
        names = tuple(t.name for t in self.tasks) if names is None else names
        if not self.map_style:
            return {name: batch for name, batch in self._stream_samples(step).items() if name in names}
        out, offset = {}, 0
        for task in self.tasks:
            local = task.batch_size // self.world
            if task.name in names:
                out[task.name] = [self.dataset[i] for i in self._indices(step, offset + self.rank * local, local)]
            offset += task.batch_size
        return out

    def _stream_samples(self, step: int) -> dict[str, list[dict]]:
        target = step * self.step_size  # samples consumed (globally) before this step
        if self._stream is None or self._stream_pos > target:
            self._stream, self._stream_pos = iter(self.dataset), 0
        while self._stream_pos < target:
            self._next()
        out = {}
        for task in self.tasks:
            mine = []
            for k in range(task.batch_size):
                sample = self._next()
                if k % self.world == self.rank:
                    mine.append(sample)
            out[task.name] = mine
        return out

    def _next(self) -> dict:
        try:
            sample = next(self._stream)
        except StopIteration:  # another pass over the shards
            self._stream = iter(self.dataset)
            try:
                sample = next(self._stream)
            except StopIteration:
                raise UmmError("the training dataset yielded no samples") from None
        self._stream_pos += 1
        return sample
