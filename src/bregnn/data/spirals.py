"""The two-spiral toy problem and deterministic splits."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["split", "two_spirals"]


def two_spirals(
    n: int = 1000,
    noise: float = 0.05,
    turns: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    r"""Two intertwined noisy spirals in the plane, ``n`` points in all (balanced classes).

    Class ``c`` at parameter :math:`s \sim U(0, 1)` is the point
    :math:`s\,(\cos\theta, \sin\theta)` with :math:`\theta = 2\pi\,\text{turns}\,s + c\pi`,
    plus Gaussian noise of standard deviation ``noise``; coordinates lie in about
    :math:`[-1, 1]^2`. Deterministic given ``seed``. The default, one turn, is the setting of
    the Bregman-networks paper (its authors' generator draws one turn too).

    Returns: inputs ``(n, 2)`` and labels ``(n,)`` (int64, in {0, 1}), shuffled.
    """
    if n < 2:
        raise ValueError(f"need at least 2 points; got n={n}")
    if noise < 0 or turns <= 0:
        raise ValueError(f"need noise >= 0 and turns > 0; got noise={noise}, turns={turns}")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    s = torch.rand(n, generator=gen, dtype=torch.float64).sqrt()  # uniform density along arc
    theta = 2 * math.pi * turns * s + math.pi * labels
    points = torch.stack((s * torch.cos(theta), s * torch.sin(theta)), dim=1)
    points = points + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    order = torch.randperm(n, generator=gen)
    return points[order].to(dtype), labels[order]


def split(
    x: Tensor,
    y: Tensor,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Shuffle and cut ``(x, y)`` into train / validation / test by ``fractions``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions must be three nonnegative numbers summing to 1; got {fractions}"
        )
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return tuple((x[p], y[p]) for p in parts)  # type: ignore[return-value]
