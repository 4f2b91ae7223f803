r"""From pixel space to a model's input space.

Images are stored as ``uint8`` in ``[0, 255]``; augmentation and adversarial attacks work in
*pixel space* ``[0, 1]`` (:func:`to_unit`). A model then maps pixel space to its own input
space with an :class:`InputScaling` as its first module: the per-channel affine map

.. math::
    u \mapsto a_c + s_c\, u ,

either onto the :func:`~bregnn.data.scaling.target_interval` ``[lo, hi]`` of a Bregman
network's activation (``a = lo``, ``s = hi - lo``, so that the inputs lie in the domain of
``rho_inv``) or a standardisation ``(u - mean_c) / std_c`` for standard networks.
Because the scaling is part of the model, an attack's ``eps`` is always measured in pixel
space, whatever the model's input range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bregnn.activations import Activation
from bregnn.data.scaling import target_interval

__all__ = ["InputScaling", "to_activation_range", "to_unit"]


def to_unit(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``uint8`` images in ``[0, 255]`` to floating point pixel space ``[0, 1]`` (``x / 255``)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images in [0, 255]; got dtype {images.dtype}")
    return images.to(dtype) / 255


class InputScaling(nn.Module):
    r"""The affine map :math:`u \mapsto \text{shift} + \text{scale}\cdot u`, channel ``c`` of an
    ``(N, C, ...)`` input using ``scale[c]``, ``shift[c]`` (or one scalar for all channels).

    Build it with :meth:`for_activation` (pixel space ``[0, 1]`` onto the activation's target
    interval) or :meth:`normalize` (``(u - mean) / std``). ``scale`` and ``shift`` are buffers,
    so they follow ``.to(device)`` and ``state_dict``, and are never trained.

    Shape:
        input ``(N, C, *)`` (or ``(N, F)`` for one scalar scale), output the same.
    """

    scale: Tensor
    shift: Tensor

    def __init__(self, scale: float | Sequence[float], shift: float | Sequence[float]) -> None:
        super().__init__()
        scale_t = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        shift_t = torch.as_tensor(shift, dtype=torch.float32).reshape(-1)
        if scale_t.shape != shift_t.shape:
            raise ValueError(
                f"scale and shift need the same number of channels; got {scale_t.numel()} "
                f"and {shift_t.numel()}"
            )
        if not torch.all(scale_t != 0) or not torch.all(torch.isfinite(scale_t)):
            raise ValueError(f"scale must be finite and nonzero; got {scale_t.tolist()}")
        self.register_buffer("scale", scale_t)
        self.register_buffer("shift", shift_t)

    @classmethod
    def for_activation(cls, act: Activation | str, fill: float = 0.9) -> InputScaling:
        """Pixel space ``[0, 1]`` onto ``target_interval(act, fill) = [lo, hi]``."""
        lo, hi = target_interval(act, fill)
        return cls(hi - lo, lo)

    @classmethod
    def normalize(cls, mean: Sequence[float], std: Sequence[float]) -> InputScaling:
        """Per-channel standardisation ``(u - mean) / std`` (e.g. a dataset spec's mean/std)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if mean_t.shape != std_t.shape or not torch.all(std_t > 0):
            raise ValueError(
                f"need as many means as stds, all stds > 0; got mean={list(mean)}, std={list(std)}"
            )
        return cls((1 / std_t).tolist(), (-mean_t / std_t).tolist())

    def _channel_view(self, t: Tensor, x: Tensor) -> Tensor:
        if t.numel() == 1:
            return t.reshape(())
        if x.dim() < 2 or x.shape[1] != t.numel():
            raise ValueError(
                f"InputScaling has {t.numel()} channels but the input has shape {tuple(x.shape)}"
            )
        return t.reshape(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor) -> Tensor:
        scale = self._channel_view(self.scale, x).to(x.dtype)
        shift = self._channel_view(self.shift, x).to(x.dtype)
        return torch.addcmul(shift, scale, x)

    def inverse(self, y: Tensor) -> Tensor:
        """The inverse map back to pixel space, ``(y - shift) / scale``."""
        scale = self._channel_view(self.scale, y).to(y.dtype)
        shift = self._channel_view(self.shift, y).to(y.dtype)
        return (y - shift) / scale

    def extra_repr(self) -> str:
        return f"scale={self.scale.tolist()}, shift={self.shift.tolist()}"


def to_activation_range(
    images: Tensor, act: Activation | str, fill: float = 0.9, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""``uint8`` images to the activation's target interval ``[lo, hi]``:
    :math:`x \mapsto lo + (hi - lo)\, x / 255` (pixel 0 to ``lo``, pixel 255 to ``hi``).

    Same as ``InputScaling.for_activation(act, fill)(to_unit(images))``; a fixed map (not fit
    on the data, unlike :class:`~bregnn.data.scaling.RangeScaler`), so every split and every
    perturbed image is scaled the same way.
    """
    return InputScaling.for_activation(act, fill)(to_unit(images, dtype))
