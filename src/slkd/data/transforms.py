"""Pixel transforms of training images: channel conversion and the 8 flips/rotations, with the
bookkeeping that maps a crop box through them.

``channels`` (1 or 3) makes every image consistent: RGB → grey with the BT.601 luma weights
(0.299, 0.587, 0.114), grey → RGB by replication (:func:`to_channels`).
"""

from __future__ import annotations

import torch

__all__ = ["Box", "dihedral", "dihedral_box", "to_channels"]

#: a crop box: top, left, height, width
Box = tuple[int, int, int, int]


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Make a C×H×W image have ``channels`` (1 or 3) channels.

    RGB → grey uses the BT.601 luma weights Y = 0.299 R + 0.587 G + 0.114 B (no offset,
    full range); grey → RGB replicates the plane.
    """
    c = image.shape[0]
    if c == channels:
        return image
    if c == 3 and channels == 1:
        return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    if c == 1 and channels == 3:
        return image.repeat(3, 1, 1)
    raise ValueError(f"cannot convert a {c}-channel image to {channels} channels")



def dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips/rotations: optional horizontal flip, then ``code % 4`` quarter turns."""
    if code >= 4:
        x = x.flip(-1)
    k = code % 4
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def dihedral_box(box: Box, shape: tuple[int, int], code: int) -> Box:
    """Where the box ``(top, left, height, width)`` of an H×W image lands after
    :func:`dihedral` with ``code``."""
    t, l, h, w = box
    rows, cols = shape
    if code >= 4:  # horizontal flip
        l = cols - l - w
    for _ in range(code % 4):  # rot90 (counter-clockwise): new[i, j] = old[j, cols - 1 - i]
        t, l, h, w = cols - l - w, t, w, h
        rows, cols = cols, rows
    return t, l, h, w
