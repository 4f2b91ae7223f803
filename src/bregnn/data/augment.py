r"""Batched data augmentation on the training device (no Python loop over images).

Every transform takes ``(x, generator)`` with ``x`` of shape ``(N, C, H, W)`` and returns a
tensor of the same shape and dtype, drawing all randomness from ``generator`` (which must
live on ``x``'s device), so it is the ``train_transform`` of :func:`bregnn.train.fit` and is
deterministic for a seeded generator. Apply them in pixel space (before the model's
:class:`~bregnn.data.InputScaling`) so that zero padding is black.

* :func:`random_crop_flip` -- the CIFAR recipe: pad by 4 pixels, take a random ``H x W``
  crop, flip horizontally with probability 1/2. Implemented as one ``gather`` with the
  source index of every output pixel computed by index arithmetic.
* :func:`random_affine` -- the MNIST MLP recipe: a random rotation (``+-11.25`` degrees) and
  zoom (``0.9 .. 1.1``) about the image centre, by an affine sampling grid + ``grid_sample``.

:class:`CropFlip` and :class:`RandomAffine` hold non-default parameters as picklable
callables (no lambdas), and can reshape flat ``(N, C*H*W)`` batches for MLPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CropFlip",
    "RandomAffine",
    "affine_transform",
    "crop_flip",
    "random_affine",
    "random_crop_flip",
]


def _check_images(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W); got shape {tuple(x.shape)}")


def crop_flip(x: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int = 4) -> Tensor:
    r"""Crop each image of ``x`` padded by ``padding`` zeros at ``(top, left)``, then flip.

    With :math:`P` the zero-padded batch, output pixel ``(i, j)`` of image ``n`` is
    :math:`P[n, :, top_n + i, left_n + j]`, or :math:`P[n, :, top_n + i, left_n + W-1-j]`
    where ``flip[n]``: the horizontal flip of the crop. Offsets lie in ``0 .. 2*padding``;
    ``top = left = padding`` and no flip is the identity.

    Args:
        x: ``(N, C, H, W)``, any dtype.
        top, left: ``(N,)`` integer offsets into the padded image.
        flip: ``(N,)`` booleans.
        padding: zero border width (``>= 0``).
    """
    _check_images(x)
    if padding < 0:
        raise ValueError(f"padding must be >= 0; got {padding}")
    n, c, h, w = x.shape
    for name, offset in (("top", top), ("left", left)):
        if offset.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},); got {tuple(offset.shape)}")
        if len(offset) and (offset.min() < 0 or offset.max() > 2 * padding):
            raise ValueError(f"{name} offsets must lie in 0..{2 * padding}")
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    width = w + 2 * padding
    device = x.device
    rows = top.to(device).reshape(n, 1) + torch.arange(h, device=device)  # (N, H)
    cols = torch.arange(w, device=device).expand(n, w)
    cols = torch.where(flip.to(device).reshape(n, 1), w - 1 - cols, cols)
    cols = left.to(device).reshape(n, 1) + cols  # (N, W)
    index = (rows.unsqueeze(2) * width + cols.unsqueeze(1)).reshape(n, 1, h * w)
    out = torch.gather(padded.reshape(n, c, -1), 2, index.expand(n, c, h * w))
    return out.reshape(n, c, h, w)


def random_crop_flip(
    x: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> Tensor:
    """:func:`crop_flip` with offsets uniform in ``0 .. 2*padding`` and (if ``flip``) a flip
    with probability 1/2, drawn per image from ``generator``."""
    _check_images(x)
    n = len(x)
    device = generator.device
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    flips = torch.rand(n, generator=generator, device=device) < 0.5
    if not flip:
        flips = torch.zeros_like(flips)
    return crop_flip(x, top, left, flips, padding)


def affine_transform(
    x: Tensor, angle: Tensor, scale: Tensor, shift: Tensor | None = None
) -> Tensor:
    r"""Rotate each image by ``angle[n]`` radians (clockwise on screen, where rows point down),
    zoom it by ``scale[n]`` about its centre and move it by ``shift[n] = (dx, dy)`` (in units
    of half the width / height), with bilinear interpolation and zeros outside.

    In the normalised coordinates ``[-1, 1]^2`` of :func:`~torch.nn.functional.grid_sample`
    (``align_corners=False``; the grid is the one ``affine_grid(theta)`` builds), output
    point :math:`p` samples the input at :math:`\theta_n [p; 1]` with

    .. math::
        \theta_n = \frac{1}{s_n}\begin{pmatrix} \cos a_n & \sin a_n \\
        -\sin a_n & \cos a_n\end{pmatrix} \big(\,\cdot - \text{shift}_n\big),

    the inverse of "rotate by :math:`a_n`, scale by :math:`s_n`, translate". ``angle = 0``,
    ``scale = 1``, no shift is the identity; ``angle = pi/2`` on a square image is
    ``torch.rot90(x, -1, (2, 3))``. Integer dtypes are computed in float32 and rounded back.
    """
    _check_images(x)
    n = len(x)
    if angle.shape != (n,) or scale.shape != (n,):
        raise ValueError(
            f"angle and scale must have shape ({n},); got {tuple(angle.shape)}, "
            f"{tuple(scale.shape)}"
        )
    work = x if x.is_floating_point() else x.float()
    angle = angle.to(device=x.device, dtype=work.dtype)
    inv_scale = 1 / scale.to(device=x.device, dtype=work.dtype)
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    linear = torch.stack((torch.stack((cos, sin), 1), torch.stack((-sin, cos), 1)), 1)
    offset = torch.zeros(n, 2, 1, device=x.device, dtype=work.dtype)
    if shift is not None:
        offset = -(linear @ shift.to(device=x.device, dtype=work.dtype).reshape(n, 2, 1))
    # affine_grid(theta, align_corners=False) written out: the base grid is the pixel centres
    # (2k + 1)/size - 1 and each sample point is theta_n [p; 1]. Elementwise broadcasting is
    # much faster on CPU than affine_grid's batched matmul with inner dimension 3.
    h, w = work.shape[2:]
    bx = ((2 * torch.arange(w, device=x.device, dtype=work.dtype) + 1) / w - 1).reshape(1, 1, w)
    by = ((2 * torch.arange(h, device=x.device, dtype=work.dtype) + 1) / h - 1).reshape(1, h, 1)
    coef = torch.cat((linear, offset), 2).reshape(n, 6, 1, 1)  # theta_n, row-major
    gx = coef[:, 0] * bx + coef[:, 1] * by + coef[:, 2]
    gy = coef[:, 3] * bx + coef[:, 4] * by + coef[:, 5]
    grid = torch.stack((gx, gy), dim=3)  # (N, H, W, 2)
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if x.is_floating_point():
        return out
    info = torch.iinfo(x.dtype)
    return out.round().clamp(info.min, info.max).to(x.dtype)


def random_affine(
    x: Tensor,
    generator: torch.Generator,
    degrees: float = 11.25,
    scale: tuple[float, float] = (0.9, 1.1),
    translate: float = 0.0,
) -> Tensor:
    """:func:`affine_transform` with angle uniform in ``+-degrees``, zoom uniform in ``scale``
    and shift uniform in ``+-translate`` (fraction of the image size) per axis, per image."""
    _check_images(x)
    lo, hi = scale
    if not 0 < lo <= hi:
        raise ValueError(f"scale range must satisfy 0 < lo <= hi; got {scale}")
    if degrees < 0 or translate < 0:
        raise ValueError(f"degrees and translate must be >= 0; got {degrees}, {translate}")
    n, device = len(x), generator.device
    u = torch.rand(n, 4, generator=generator, device=device)
    angle = math.radians(degrees) * (2 * u[:, 0] - 1)
    zoom = lo + (hi - lo) * u[:, 1]
    shift = 2 * translate * (2 * u[:, 2:] - 1) if translate > 0 else None
    return affine_transform(x, angle, zoom, shift)


def _as_images(x: Tensor, image_shape: tuple[int, int, int] | None) -> Tensor:
    if image_shape is None or x.dim() == 4:
        return x
    return x.reshape(len(x), *image_shape)


@dataclass
class CropFlip:
    """Picklable :func:`random_crop_flip` with fixed parameters. ``image_shape`` ``(C, H, W)``
    lets it take flat ``(N, C*H*W)`` batches (reshaped and flattened back)."""

    padding: int = 4
    flip: bool = True
    image_shape: tuple[int, int, int] | None = None

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        out = random_crop_flip(_as_images(x, self.image_shape), generator, self.padding, self.flip)
        return out.reshape(x.shape)


@dataclass
class RandomAffine:
    """Picklable :func:`random_affine` with fixed parameters (see :class:`CropFlip` for
    ``image_shape``)."""

    degrees: float = 11.25
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.0
    image_shape: tuple[int, int, int] | None = None

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        out = random_affine(
            _as_images(x, self.image_shape), generator, self.degrees, self.scale, self.translate
        )
        return out.reshape(x.shape)
