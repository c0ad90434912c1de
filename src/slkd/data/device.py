"""Training batches made on the training device: :class:`DeviceBatches`.

The images of a training set are decoded once (the dataset's :class:`~slkd.data.cache.ImageCache`)
and copied as integers into one flat buffer on the training device. Each step's batch is then
cut out of that buffer by a single gather whose indices carry the crop *and* the flip/rotation
of every sample, converted to float there, and — for clean images degraded on the fly — given
its Gaussian noise there. Nothing goes through a DataLoader, a worker process or a per-sample
Python transform, so a GPU is never left waiting for crops made on the host.

The stream is today's. Which image, crop, flip/rotation and noise a slot of a step gets is the
function of ``(seed, step, slot)`` that :class:`slkd.data.sampler.TrainSampler` and the
datasets define: the crop position and the flip/rotation are drawn from the sample's own
generator exactly as :meth:`PairedImageDataset.__getitem__` draws them (host-side, a few
integers per sample), and the noise from a generator on the training device seeded with the
same sample seed. On the CPU that generator *is* the dataset's, so the batches are
bit-identical to the DataLoader's (tested); on a GPU the noise comes from the GPU's Philox
stream instead — the same distribution, deterministic under the seed and resumable, since every
step's batch depends on nothing but ``(seed, step)``.

What it covers: paired folders and clean images with Gaussian noise (fixed σ or a σ range),
patches (every training run has one), colour or grey images made 3-channel. Other
degradations (blur, synthetic rain, JPEG …), RGB images made grey and data that does not fit
the device's memory stay with the DataLoader (:func:`device_batches` says why, in one line).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.degrade import GaussianNoise
from slkd.data.sampler import TrainSampler

__all__ = ["DeviceBatches", "device_batches", "device_data_reason", "dihedral_source", "host_side"]

#: the device data path takes at most this share of the memory free on the device (the rest is
#: for the networks, their activations and the optimiser)
MEMORY_SHARE = 0.25


class _HostSide:
    """Marks host-side code: integer draws on CPU generators that never touch the training
    device. A sync counter (tests, benchmarks) does not count tensor reads made inside it."""

    active = 0

    def __enter__(self) -> "_HostSide":
        _HostSide.active += 1
        return self

    def __exit__(self, *exc) -> None:
        _HostSide.active -= 1


host_side = _HostSide


def dihedral_source(p: int, code: int) -> tuple[np.ndarray, np.ndarray]:
    """For a P×P patch flipped/rotated by :func:`slkd.data.transforms.dihedral` with ``code``:
    the (row, column) inside the source patch that each output pixel comes from (P×P each).

    ``dihedral`` flips horizontally first (code >= 4), then turns ``code % 4`` quarter turns
    counter-clockwise; a quarter turn maps out[r, q] = in[q, P−1−r]."""
    r, q = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    for _ in range(code % 4):  # undo the turns, last one first
        r, q = q, p - 1 - r
    if code >= 4:  # undo the flip
        q = p - 1 - q
    return r, q


def device_data_reason(dataset) -> str | None:
    """Why ``dataset`` cannot be served by :class:`DeviceBatches` (None when it can)."""
    if not isinstance(dataset, (PairedImageDataset, DegradedImageDataset)):
        return f"{type(dataset).__name__} is not one of slkd's folder datasets"
    if dataset.patch_size is None:
        return "training on whole images (no patch_size)"
    if isinstance(dataset, DegradedImageDataset) and type(dataset.degradation) is not GaussianNoise:
        return f"the degradation {dataset.degradation!r} is made on the host (only Gaussian noise is made on the device)"
    if dataset.image_cache.mode != "memory":
        return "the decoded images are not held in memory (data.train.cache: none, or too large)"
    if dataset.channels == 1 and any(s[0] == 3 for s in dataset.image_cache.shapes):
        return "colour images made grey (channels: 1)"
    return None


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now: CUDA's free memory, the host's MemAvailable for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


class DeviceBatches:
    """Endless training batches of ``dataset`` made on ``device``, from global step ``start_step``.

    Args:
        dataset: a :class:`PairedImageDataset` or a :class:`DegradedImageDataset` with
            :class:`GaussianNoise`, its images cached in memory (:func:`device_data_reason`).
        batch_size, seed, rank, world_size, start_step: as for :class:`TrainSampler`; the
            batch of step ``s`` is this rank's share of global step ``s``.
        device: the training device.

    ``batch(step)`` returns ``{"lq", "gt"}``: B×C×P×P float32 tensors on ``device``.
    """

    def __init__(self, dataset, batch_size: int, seed: int, device: torch.device | str, *,
                 rank: int = 0, world_size: int = 1, start_step: int = 0) -> None:
        reason = device_data_reason(dataset)
        if reason is not None:
            raise ValueError(f"DeviceBatches: {reason}")
        self.device = torch.device(device)
        self.sampler = TrainSampler(len(dataset), batch_size, seed, rank=rank, world_size=world_size,
                                    start_step=start_step)
        self.patch = int(dataset.patch_size)
        self.augment = dataset.augment
        self.channels = dataset.channels
        self.sizes = list(dataset._sizes)  # (height, width) per item
        cache = dataset.image_cache
        arrays = cache._arrays
        wide = any(a.dtype != np.uint8 for a in arrays)
        # one flat integer buffer (int32 when a 16-bit file is among them: torch.take needs one dtype)
        dtype = np.int32 if wide else np.uint8
        flat = np.concatenate([a.reshape(-1).astype(dtype, copy=False) for a in arrays])
        self.buffer = torch.from_numpy(flat).to(self.device)
        offsets = np.cumsum([0] + [a.size for a in arrays[:-1]])
        # per file, on the device: offset in the buffer, plane size (0 for a grey file made
        # 3-channel: its one plane repeats), row length and the integer scale (255 or 65535)
        grey_to_rgb = [a.shape[0] == 1 and self.channels == 3 for a in arrays]
        self._offset = torch.tensor(offsets, dtype=torch.int64, device=self.device)
        self._plane = torch.tensor([0 if g else a.shape[1] * a.shape[2] for a, g in zip(arrays, grey_to_rgb)],
                                   dtype=torch.int64, device=self.device)
        self._width = torch.tensor([a.shape[2] for a in arrays], dtype=torch.int64, device=self.device)
        self._scale = torch.tensor([65535.0 if a.dtype == np.uint16 else 255.0 for a in arrays],
                                   dtype=torch.float32, device=self.device)
        if isinstance(dataset, PairedImageDataset):
            self._files = list(dataset._index)  # (degraded file, clean file) per item
            self.sigma = None
        else:
            self._files = [(i, i) for i in range(len(dataset))]
            sigma = dataset.degradation.sigma
            self.sigma = (sigma, sigma) if not isinstance(sigma, tuple) else sigma
        p = self.patch
        maps = [dihedral_source(p, code) for code in range(8)]
        self._rows = torch.from_numpy(np.stack([m[0] for m in maps])).to(self.device)  # 8×P×P
        self._cols = torch.from_numpy(np.stack([m[1] for m in maps])).to(self.device)
        self._chan = torch.arange(self.channels, device=self.device).view(1, -1, 1, 1)
        self.nbytes = self.buffer.numel() * self.buffer.element_size()
        #: draw the noise from a generator of the device seeded with the sample's seed (another
        #: device's stream) instead of continuing the sample's CPU generator (the dataset's numbers)
        self.fresh_noise = self.device.type != "cpu"

    # ------------------------------------------------------------------ one step
    def _draw(self, step: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator]]:
        """Host side, exactly as the dataset's item draws them: per sample (degraded file, clean
        file, top, left, flip/rotation code), σ (from a σ range: drawn next, before the noise)
        and the sample's generator, positioned where the dataset draws the noise."""
        params, sigmas, gens = [], [], []
        p = self.patch
        with host_side():
            for index, sample_seed in self.sampler.batch(step):
                gen = torch.Generator().manual_seed(int(sample_seed))
                h, w = self.sizes[index]
                top = int(torch.randint(h - p + 1, (), generator=gen))
                left = int(torch.randint(w - p + 1, (), generator=gen))
                code = int(torch.randint(8, (), generator=gen)) if self.augment else 0
                params.append([*self._files[index], top, left, code])
                if self.sigma is not None:
                    lo, hi = self.sigma
                    sigmas.append(lo if lo == hi else
                                  lo + (hi - lo) * float(torch.rand(1, generator=gen, dtype=torch.float64)[0]))
                gens.append(gen)
        return torch.tensor(params, dtype=torch.int64), torch.tensor(sigmas, dtype=torch.float64), gens

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A small host tensor to the device without waiting for it (pinned, asynchronous)."""
        if self.device.type == "cpu":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def _gather(self, files: torch.Tensor, top: torch.Tensor, left: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The B×C×P×P crops of ``files`` at (``top``, ``left``), flipped/rotated by ``code``, as
        float32 in [0, 1] (each file's integers over 255 or 65535, as the cache converts them)."""
        view = (-1, 1, 1, 1)
        rows = self._rows[code].unsqueeze(1) + top.view(view)  # B×1×P×P rows in the image
        cols = self._cols[code].unsqueeze(1) + left.view(view)
        index = (self._offset[files].view(view) + self._chan * self._plane[files].view(view)
                 + rows * self._width[files].view(view) + cols)  # B×C×P×P
        return torch.take(self.buffer, index).to(torch.float32) / self._scale[files].view(view)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's batch of global step ``step``."""
        params, sigmas, gens = self._draw(step)
        lq_file, gt_file, top, left, code = self._to_device(params).unbind(1)
        gt = self._gather(gt_file, top, left, code)
        if self.sigma is None:
            return {"lq": self._gather(lq_file, top, left, code), "gt": gt}
        # the noise of each sample from its generator: its own on the CPU (the dataset's very
        # numbers), one seeded with the same seed on another device
        dev, shape = self.device, gt.shape[1:]
        noise = []
        for gen in gens:
            if self.fresh_noise:
                with host_side():
                    gen = torch.Generator(dev).manual_seed(gen.initial_seed())
            noise.append(torch.randn(shape, generator=gen, dtype=gt.dtype, device=dev))
        scale = self._to_device((sigmas / 255.0).to(torch.float32)).view(-1, 1, 1, 1)
        return {"lq": gt + torch.stack(noise) * scale, "gt": gt}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        step = self.sampler.start_step
        while True:
            yield self.batch(step)
            step += 1


def device_batches(dataset, batch_size: int, seed: int, device: torch.device, *, mode: bool | str = "auto",
                   rank: int = 0, world_size: int = 1, start_step: int = 0) -> tuple[DeviceBatches | None, str]:
    """:class:`DeviceBatches` for ``dataset`` when ``mode`` (``data.device_data``: "auto", True,
    False) allows it and it fits (:data:`MEMORY_SHARE` of the free memory), else None; and the
    one line that says which path the training data takes, and why."""
    if mode is False:
        return None, "training data: DataLoader (data.device_data: false)"
    reason = device_data_reason(dataset)
    if reason is None:
        need = sum(a.nbytes for a in dataset.image_cache._arrays)
        free = free_memory(device)
        if need > MEMORY_SHARE * free:
            reason = (f"the decoded images ({need / 2**20:.0f} MiB) exceed {MEMORY_SHARE:.0%} of the "
                      f"{free / 2**20:.0f} MiB free on {device}")
    if reason is not None:
        if mode is True:
            raise ValueError(f"data.device_data: true, but {reason}")
        return None, f"training data: DataLoader ({reason})"
    batches = DeviceBatches(dataset, batch_size, seed, device, rank=rank, world_size=world_size,
                            start_step=start_step)
    return batches, (f"training data: {len(dataset)} images ({batches.nbytes / 2**20:.0f} MiB) on {device}; "
                     "crops, flips and noise made there")
