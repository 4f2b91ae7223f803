"""Affine rescaling of inputs into an activation's range (the domain of ``rho_inv``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bregnn.activations import Activation, activation

__all__ = ["RangeScaler", "target_interval"]


def target_interval(act: Activation | str, fill: float = 0.9) -> tuple[float, float]:
    """The interval that :class:`RangeScaler` maps data into for activation ``act``.

    Bounded range ``(lo, hi)``: the central ``fill`` fraction of it. Half-line ``(lo, inf)``:
    ``[lo + (1 - fill), lo + 1]``. The real line: ``[-1, 1]``.
    """
    if not 0 < fill < 1:
        raise ValueError(f"fill must be in (0, 1); got {fill}")
    lo, hi = activation(act).domain
    if math.isfinite(lo) and math.isfinite(hi):
        mid, half = (lo + hi) / 2, fill * (hi - lo) / 2
        return mid - half, mid + half
    if math.isfinite(lo):
        return lo + (1 - fill), lo + 1.0
    if math.isfinite(hi):
        return hi - 1.0, hi - (1 - fill)
    return -1.0, 1.0


@dataclass
class RangeScaler:
    """Per-feature affine map of the training data's ``[min, max]`` onto
    :func:`target_interval` of the activation; fit on training data, apply to every split.

    ``per_feature=False`` uses one global min/max (right for images, keeps pixel geometry).
    Constant features map to the interval's midpoint.
    """

    act: Activation | str
    fill: float = 0.9
    per_feature: bool = True
    data_min: Tensor | None = None
    data_max: Tensor | None = None

    def fit(self, x: Tensor) -> RangeScaler:
        flat = x.reshape(len(x), -1) if self.per_feature else x.reshape(-1, 1)
        self.data_min, self.data_max = flat.min(0).values, flat.max(0).values
        return self

    def transform(self, x: Tensor) -> Tensor:
        if self.data_min is None:
            raise ValueError("RangeScaler.transform called before fit")
        a, b = target_interval(self.act, self.fill)
        shape = x.shape
        flat = x.reshape(len(x), -1) if self.per_feature else x.reshape(-1, 1)
        span = (self.data_max - self.data_min).to(flat.dtype)
        unit = torch.where(span > 0, (flat - self.data_min) / span.clamp(min=1e-12), 0.5)
        return (a + (b - a) * unit).reshape(shape)

    def fit_transform(self, x: Tensor) -> Tensor:
        return self.fit(x).transform(x)
