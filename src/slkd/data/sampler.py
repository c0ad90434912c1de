"""A step-indexed, resumable, distributed training sampler.

:class:`TrainSampler` yields ``(index, seed)`` pairs; a dataset of :mod:`slkd.data.datasets`
turns each into a sample that depends on nothing else. Which pair comes at global step ``s`` and
slot ``b`` of the global batch is a pure function of ``(seed, s, b)``:

* the global batch has ``batch_size × world_size`` slots; slot ``b`` of step ``s`` is position
  ``p = s · batch_size · world_size + b`` of an endless stream of epochs;
* ``epoch = p // N`` and ``index = perm_epoch[p % N]``, where ``perm_epoch`` is
  ``torch.randperm(N)`` drawn from a generator seeded with ``seed + epoch`` — every epoch
  visits each of the N images exactly once, in a fresh order;
* the sample's seed is a 63-bit BLAKE2b hash of ``(seed, s, b)`` (:func:`sample_seed`), so the
  crop, augmentation and degradation of a slot never depend on which process draws it;
* rank ``r`` of ``world_size`` takes slots ``r·batch_size … (r+1)·batch_size - 1`` of each step.

Hence a run resumed at step ``k`` (``start_step=k``) sees exactly the batches an uninterrupted
run sees from step ``k`` on, and changing the number of DataLoader workers changes nothing.

Use it as ``DataLoader(dataset, batch_size=batch_size, sampler=TrainSampler(...))``: the
loader's batch ``j`` is then step ``start_step + j``. The sampler is endless; stop by counting
steps.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch

__all__ = ["TrainSampler", "sample_seed"]


def sample_seed(seed: int, step: int, slot: int) -> int:
    """The 63-bit seed of slot ``slot`` of global step ``step`` (stable BLAKE2b hash)."""
    text = f"slkd-sample:{int(seed)}:{int(step)}:{int(slot)}".encode("ascii")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class TrainSampler(torch.utils.data.Sampler):
    """Endless ``(index, seed)`` stream of one rank's share of each global batch.

    Args:
        dataset_len: N, the number of training images.
        batch_size: per-rank batch size (the DataLoader's ``batch_size``).
        seed: the run's seed.
        rank, world_size: this process's place in distributed training.
        start_step: the first global step to produce (resume).
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_step: int = 0) -> None:
        self.dataset_len = _check_int("dataset_len", dataset_len, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank must be < world_size ({world_size}), got {rank}")
        self.start_step = _check_int("start_step", start_step, 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self._perm_epoch: int | None = None
        self._perm: list[int] = []

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def permutation(self, epoch: int) -> list[int]:
        """The visiting order of ``epoch`` (the current one is cached)."""
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = torch.randperm(self.dataset_len, generator=gen).tolist()
            self._perm_epoch = epoch
        return self._perm

    def slot(self, step: int, slot: int) -> tuple[int, int]:
        """``(index, seed)`` of global slot ``slot`` (0 ≤ slot < batch·world) of ``step``."""
        p = step * self.global_batch_size + slot
        epoch, pos = divmod(p, self.dataset_len)
        return self.permutation(epoch)[pos], sample_seed(self.seed, step, slot)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's ``batch_size`` pairs of global step ``step``."""
        first = self.rank * self.batch_size
        return [self.slot(step, b) for b in range(first, first + self.batch_size)]

    def epoch_of(self, step: int) -> float:
        """Epochs completed (fractional) at the start of ``step``, for logging."""
        return step * self.global_batch_size / self.dataset_len

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            yield from self.batch(step)
            step += 1

    def __repr__(self) -> str:
        return (f"TrainSampler(dataset_len={self.dataset_len}, batch_size={self.batch_size}, "
                f"seed={self.seed}, rank={self.rank}, world_size={self.world_size}, "
                f"start_step={self.start_step})")
