"""Training batches made on the training device: :class:`DeviceBatches`.

The images of a training set are decoded once (the dataset's :class:`~slkd.data.cache.ImageCache`)
and copied as integers to the training device. Each step's batch is cut out of them there — per
sample a view of its crop, flipped/rotated, copied into the batch (a few small device kernels,
no host data) — converted to float in one go and, for clean images degraded on the fly, given
its Gaussian noise there. Nothing goes through a DataLoader, a worker process, a float copy of
a whole window or a per-sample collate, so a GPU is never left waiting for crops made on the host.

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

__all__ = ["DeviceBatches", "device_batches", "device_data_reason", "host_side"]

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
        arrays = dataset.image_cache._arrays
        # each decoded file once on the device, as integers (int32 when a 16-bit file is among
        # them: one batch tensor holds every sample before the conversion to float)
        dtype = torch.int32 if any(a.dtype != np.uint8 for a in arrays) else torch.uint8
        self.images = [torch.from_numpy(a).to(dtype).to(self.device) for a in arrays]
        scales = [65535.0 if a.dtype == np.uint16 else 255.0 for a in arrays]
        #: one integer scale for every file (the usual case: a Python number), else per file
        self._scale: float | list[float] = scales[0] if len(set(scales)) == 1 else scales
        self._dtype = dtype
        if isinstance(dataset, PairedImageDataset):
            self._files = list(dataset._index)  # (degraded file, clean file) per item
            self.sigma = None
        else:
            self._files = [(i, i) for i in range(len(dataset))]
            sigma = dataset.degradation.sigma
            self.sigma = (sigma, sigma) if not isinstance(sigma, tuple) else sigma
        self.nbytes = sum(t.numel() * t.element_size() for t in self.images)
        #: draw the noise from a generator of the device seeded with the sample's seed (another
        #: device's stream) instead of continuing the sample's CPU generator (the dataset's numbers)
        self.fresh_noise = self.device.type != "cpu"

    # ------------------------------------------------------------------ one step
    def _draw(self, step: int) -> tuple[list[tuple[int, int, int, int, int]], list[float], list[torch.Generator]]:
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
                params.append((*self._files[index], top, left, code))
                if self.sigma is not None:
                    lo, hi = self.sigma
                    sigmas.append(lo if lo == hi else
                                  lo + (hi - lo) * float(torch.rand(1, generator=gen, dtype=torch.float64)[0]))
                gens.append(gen)
        return params, sigmas, gens

    def _crops(self, files: list[int], params) -> torch.Tensor:
        """The B×C×P×P crops of ``files`` (flipped/rotated as drawn) as float32 in [0, 1]: each
        cut as a view of its image, turned, copied into the batch; then one conversion (each
        file's integers over 255 or 65535, as the cache converts them)."""
        p = self.patch
        out = torch.empty(len(files), self.channels, p, p, dtype=self._dtype, device=self.device)
        for b, (f, (_, _, top, left, code)) in enumerate(zip(files, params)):
            crop = self.images[f][:, top:top + p, left:left + p]
            if code >= 4:  # as slkd.data.transforms.dihedral: the flip first, then the turns
                crop = crop.flip(-1)
            if code % 4:
                crop = torch.rot90(crop, code % 4, dims=(-2, -1))
            out[b].copy_(crop)  # a grey file made 3-channel: its plane repeats
        if isinstance(self._scale, float):
            return out.to(torch.float32) / self._scale
        scale = torch.tensor([self._scale[f] for f in files], dtype=torch.float32).view(-1, 1, 1, 1)
        return out.to(torch.float32) / self._to_device(scale)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A small host tensor to the device without waiting for it (pinned, asynchronous)."""
        if self.device.type == "cpu":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's batch of global step ``step``."""
        params, sigmas, gens = self._draw(step)
        gt = self._crops([c for _, c, *_ in params], params)
        if self.sigma is None:
            return {"lq": self._crops([d for d, *_ in params], params), "gt": gt}
        # the noise of each sample from its generator: its own on the CPU (the dataset's very
        # numbers), one seeded with the same seed on another device
        noise = torch.empty_like(gt)
        for b, gen in enumerate(gens):
            if self.fresh_noise:
                with host_side():
                    gen = torch.Generator(self.device).manual_seed(gen.initial_seed())
            torch.randn(gt.shape[1:], generator=gen, dtype=gt.dtype, device=self.device, out=noise[b])
        scale = (torch.tensor(sigmas, dtype=torch.float64) / 255.0).to(torch.float32).view(-1, 1, 1, 1)
        return {"lq": noise.mul_(self._to_device(scale)).add_(gt), "gt": gt}

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
