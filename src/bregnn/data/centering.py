r"""Centring of flat images, the lifted paper's pre-processing ("we pre-process the data by
centring the images", Wang & Benning, Section 6).

The sentence has two readings, both offered:

- ``"pixel"``: subtract the per-pixel mean of the *training* images,
  :math:`x_i \leftarrow x_i - \frac1n\sum_j x_j` (the same offset for every split);
- ``"image"``: subtract each image's own mean, :math:`x_i \leftarrow x_i - \bar x_i\mathbf 1`.

``"none"`` keeps pixel space :math:`[0, 1]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["CENTERINGS", "center"]

CENTERINGS = ("none", "pixel", "image")


def center(
    train: Tensor, others: Sequence[Tensor] = (), mode: str = "pixel"
) -> tuple[list[Tensor], list[Tensor]]:
    """Centre ``train`` and ``others`` (rows are images) by ``mode`` (see the module doc).

    Returns ``(centred, offsets)``: ``[train, *others]`` centred, and what was subtracted
    from each (a row for ``"pixel"``, a column for ``"image"``, a zero scalar for
    ``"none"``); add it back to show images."""
    if mode not in CENTERINGS:
        raise ValueError(f"unknown centering {mode!r}; valid: {list(CENTERINGS)}")
    tensors = [train, *others]
    if mode == "none":
        offsets = [torch.zeros((), dtype=t.dtype) for t in tensors]
    elif mode == "pixel":
        mean = train.double().mean(0, keepdim=True).to(train.dtype)
        offsets = [mean] * len(tensors)
    else:
        offsets = [t.double().mean(1, keepdim=True).to(t.dtype) for t in tensors]
    return [t - m for t, m in zip(tensors, offsets, strict=True)], offsets
