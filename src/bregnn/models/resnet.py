r"""CIFAR ResNets (He et al., 2016) with standard or Bregman residual blocks.

Standard basic block (``variant="standard"``, any activation, ReLU included):

.. math::

    z^+ = \rho\big(S(z) + \mathrm{BN}_2(\mathrm{Conv}_2\,\rho(\mathrm{BN}_1(\mathrm{Conv}_1 z)))\big)

Bregman basic block (``variant="bregman"``, an invertible activation :math:`\rho` whose
range is the open domain of :math:`\rho^{-1} = \nabla\phi`):

.. math::

    z^+ = \rho\big(\rho^{-1}(S(z)) + \mathrm{BN}_2(\mathrm{Conv}_2\,
          \rho(\mathrm{BN}_1(\mathrm{Conv}_1 z)))\big)

so the residual branch is added in the *dual* (pre-activation) space and the block is the
identity :math:`z^+ = S(z)` when the residual branch vanishes (``zero_init_residual``).
Every tensor that reaches :math:`\rho^{-1}` lies in the range of :math:`\rho`: the stem
ends with :math:`\rho`, each block ends with :math:`\rho`, and the shortcut :math:`S` maps
that range into itself:

- ``shortcut="pad"`` (option A of He et al.; the CIFAR ResNet20..1202): spatial
  subsampling plus new channels filled with ``fill``; ``fill = 0`` for the standard block and
  ``fill = rho(0)`` for the Bregman block, so the new channels have :math:`\rho^{-1} = 0`
  exactly as zero padding in the dual space.
- ``shortcut="conv"`` (option B; the CIFAR ResNet18): a strided 1x1 convolution (+ BN) for the
  standard block; for the Bregman block a strided 1x1 convolution whose weight rows lie on the
  probability simplex (softmax of free logits, the mixing matrix ``M`` of
  :class:`~bregnn.nn.BregmanLinear` applied per pixel) and no BN, so every output pixel is a
  convex combination of input channels and stays in the (convex) range of :math:`\rho`.

Parameter counts (this table is parsed and checked by ``tests/models/test_resnet.py``; the Bregman
variant has exactly the same count for the option-A networks, and ``2 * (128 + 256 + 512)``
fewer for ResNet18, which has no BN on its simplex shortcuts):

=========  ======  ==========  ==================
model      depth   parameters  (CIFAR-10 head)
=========  ======  ==========  ==================
resnet20   20      269,722     0.27M
resnet32   32      464,154     0.46M
resnet44   44      658,586     0.66M
resnet56   56      853,018     0.85M
resnet110  110     1,727,962   1.7M
resnet1202 1202    19,421,274  19.4M
resnet18   18      11,173,962  11.2M
=========  ======  ==========  ==================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bregnn.activations import Activation, activation, available_activations
from bregnn.nn.linear import SimplexRows
from bregnn.registry import Registry

__all__ = [
    "BLOCKS",
    "RESNETS",
    "RESNET_VARIANTS",
    "SHORTCUTS",
    "BasicBlock",
    "BregmanBasicBlock",
    "PadShortcut",
    "ResNet",
    "SimplexConvShortcut",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
]

SHORTCUTS = ("pad", "conv")


def _conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    r"""Option-A shortcut: ``z[:, :, ::stride, ::stride]`` with ``planes - in_planes`` new
    channels filled with the constant ``fill`` (half before, half after the old ones).

    Parameter-free. ``fill = rho(0)`` keeps the Bregman block's dual-space padding at
    :math:`\rho^{-1}(\text{fill}) = 0`.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, fill: float = 0.0) -> None:
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"PadShortcut cannot shrink channels: {in_planes} -> {planes}")
        self.in_planes, self.planes, self.stride, self.fill = in_planes, planes, stride, fill

    def pad(self, z: Tensor, fill: float) -> Tensor:
        """Subsample ``z`` and pad its channels with ``fill``."""
        if self.stride != 1:
            z = z[:, :, :: self.stride, :: self.stride]
        extra = self.planes - self.in_planes
        if extra == 0:
            return z
        before = extra // 2
        return nn.functional.pad(z, (0, 0, 0, 0, before, extra - before), value=fill)

    def forward(self, z: Tensor) -> Tensor:
        return self.pad(z, self.fill)

    def extra_repr(self) -> str:
        return f"{self.in_planes} -> {self.planes}, stride={self.stride}, fill={self.fill:.6g}"


class SimplexConvShortcut(nn.Module):
    r"""Strided 1x1 convolution whose ``(planes, in_planes)`` weight has rows on the
    probability simplex (``softmax`` of the Parameter ``mixing_logits``, see
    :class:`~bregnn.nn.linear.SimplexRows`): each output pixel is a convex combination of the
    input channels at the same (subsampled) position, so it stays in any interval that holds
    the input. Used as the Bregman block's projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.in_planes, self.planes, self.stride = in_planes, planes, stride
        self.simplex = SimplexRows()
        self.mixing_logits = nn.Parameter(torch.randn(planes, in_planes))

    @property
    def mixing(self) -> Tensor:
        """The row-stochastic ``(planes, in_planes)`` mixing matrix ``M``."""
        return self.simplex(self.mixing_logits)

    def forward(self, z: Tensor) -> Tensor:
        weight = self.mixing.to(z.dtype)[:, :, None, None]
        return nn.functional.conv2d(z, weight, stride=self.stride)

    def extra_repr(self) -> str:
        return f"{self.in_planes} -> {self.planes}, stride={self.stride}"


def _projection(in_planes: int, planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(planes),
    )


class BasicBlock(nn.Module):
    r"""Standard basic block :math:`\rho(S(z) + \mathrm{BN}_2\mathrm{Conv}_2\rho(\mathrm{BN}_1
    \mathrm{Conv}_1 z))`; ``act`` may be any registered activation (ReLU included)."""

    expansion = 1

    @classmethod
    def check_activation(cls, act: Activation) -> None:
        """Raise ``ValueError`` if ``act`` cannot be used in this block (any activation can)."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        act: Activation,
        shortcut: str = "pad",
    ) -> None:
        super().__init__()
        self.check_activation(act)
        self.act = act
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = self._make_shortcut(in_planes, planes, stride, shortcut)

    def _make_shortcut(self, in_planes: int, planes: int, stride: int, kind: str) -> nn.Module:
        if stride == 1 and in_planes == planes:
            return nn.Identity()
        if kind == "pad":
            return PadShortcut(in_planes, planes, stride, fill=0.0)
        return _projection(in_planes, planes, stride)

    def residual(self, z: Tensor) -> Tensor:
        """The residual branch :math:`\\mathrm{BN}_2\\mathrm{Conv}_2\\rho(\\mathrm{BN}_1\\mathrm{Conv}_1 z)`."""
        return self.bn2(self.conv2(self.act(self.bn1(self.conv1(z)))))

    def forward_dual(self, z: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(z+, a)``: the block's output ``z+ = rho(a)`` and its pre-activation ``a``.
        ``u`` (the previous pre-activation) is unused by the standard block."""
        pre = self.shortcut(z) + self.residual(z)
        return self.act(pre), pre

    def forward(self, z: Tensor) -> Tensor:
        return self.forward_dual(z)[0]


class BregmanBasicBlock(BasicBlock):
    r"""Bregman basic block :math:`\rho(\rho^{-1}(S(z)) + \mathrm{BN}_2\mathrm{Conv}_2
    \rho(\mathrm{BN}_1\mathrm{Conv}_1 z))` (see the module docstring).

    The input must lie in the range of ``rho`` (it does inside :class:`ResNet`). The coupling
    :math:`\rho(\rho^{-1}(s) + r)` is evaluated in at least float32 even under autocast:
    :math:`\rho^{-1}` is steep near the ends of the domain, where float16 loses everything.
    """

    @classmethod
    def check_activation(cls, act: Activation) -> None:
        """The Bregman block needs ``rho_inv``: ``ValueError`` for a non-invertible ``act``."""
        if not act.invertible:
            raise ValueError(
                f"the bregman variant needs an invertible activation; {act.name!r} is not. "
                f"Invertible activations: {available_activations(invertible=True)}"
            )

    def _make_shortcut(self, in_planes: int, planes: int, stride: int, kind: str) -> nn.Module:
        if stride == 1 and in_planes == planes:
            return nn.Identity()
        if kind == "pad":
            fill = float(self.act.rho(torch.zeros((), dtype=torch.float64)))
            return PadShortcut(in_planes, planes, stride, fill=fill)
        return SimplexConvShortcut(in_planes, planes, stride)

    def dual_shortcut(self, z: Tensor, u: Tensor | None = None) -> Tensor:
        r""":math:`\rho^{-1}(S(z))`. Given ``u`` with :math:`\rho(u) = z` (the previous
        block's pre-activation), the identity and the option-A shortcut act on
        :math:`\rho^{-1}(\rho(u))` (:meth:`~bregnn.activations.Activation.rho_inv_rho`: ``u``
        itself, clipped for ``sin``) directly (subsampling commutes with the elementwise
        :math:`\rho^{-1}`, and the padded channels are :math:`\rho^{-1}(\rho(0)) = 0`),
        which skips :math:`\rho^{-1}`."""
        shortcut = self.shortcut
        if u is None or isinstance(shortcut, SimplexConvShortcut):
            return self.act.rho_inv(shortcut(z))
        u = self.act.rho_inv_rho(u)
        if isinstance(shortcut, PadShortcut):
            return shortcut.pad(u, fill=0.0)
        return u

    def forward_dual(self, z: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(z+, a)`` with ``a = rho_inv(S(z)) + residual(z)`` and ``z+ = rho(a)``; see
        :meth:`dual_shortcut` for ``u``."""
        residual = self.residual(z)
        dtype = torch.promote_types(residual.dtype, torch.float32)
        with torch.autocast(device_type=z.device.type, enabled=False):
            u_skip = self.dual_shortcut(z.to(dtype), None if u is None else u.to(dtype))
            pre = u_skip + residual.to(dtype)
            return self.act.rho(pre), pre


#: The block class of each ``variant`` of :class:`ResNet`.
BLOCKS: Registry[type[BasicBlock]] = Registry("variant")
BLOCKS.register("standard", BasicBlock)
BLOCKS.register("bregman", BregmanBasicBlock)
RESNET_VARIANTS = tuple(BLOCKS)


class ResNet(nn.Module):
    r"""A ResNet for small images: 3x3 stem (conv, BN, :math:`\rho`), one stage per entry of
    ``layers`` (the first block of stage ``i > 0`` halves the resolution), global average
    pooling and a linear classifier.

    Args:
        block: the block class (:class:`BasicBlock` or :class:`BregmanBasicBlock`); ``None``
            picks it from ``variant``.
        layers: blocks per stage, e.g. ``(3, 3, 3)`` for ResNet20.
        num_classes: classifier outputs.
        activation: a registered name or an :class:`~bregnn.activations.Activation`
            (default ``softplus``); ``activation_params`` are passed to the registry
            (e.g. ``{"beta": 10}``).
        variant: ``standard`` or ``bregman``.
        widths: channels per stage (``(16, 32, 64)`` CIFAR ResNets, ``(64, 128, 256, 512)``
            ResNet18); the stem has ``widths[0]`` channels.
        shortcut: ``pad`` (option A) or ``conv`` (option B), see the module docstring.
        in_channels: image channels.
        zero_init_residual: zero the last BN's weight *and* shift of every block, so that
            each residual branch is 0 at initialisation; a Bregman block is then exactly its
            shortcut (the identity for non-downsampling blocks).
        activation_params: keyword parameters for the activation registry.
        reuse_preactivation: hand each block the previous pre-activation (see
            :meth:`features`): no :math:`\rho^{-1}` per block, and exact where ``rho``
            saturates (see :meth:`features` for when the two paths differ).

    Average pooling keeps the features in the range of ``rho`` (a convex combination).
    The input must be scaled into the activation range for neither variant; the stem takes
    any real input.
    """

    def __init__(
        self,
        block: type[BasicBlock] | None,
        layers: Sequence[int],
        num_classes: int = 10,
        activation: str | Activation = "softplus",
        variant: str = "bregman",
        widths: Sequence[int] = (16, 32, 64),
        shortcut: str = "pad",
        in_channels: int = 3,
        zero_init_residual: bool = False,
        activation_params: dict | None = None,
        reuse_preactivation: bool = True,
    ) -> None:
        super().__init__()
        variant = BLOCKS.key(variant)  # ValueError naming the valid variants
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid shortcuts: {list(SHORTCUTS)}")
        if len(layers) != len(widths) or any(n <= 0 for n in layers):
            raise ValueError(
                f"layers {list(layers)} must be positive, one per stage width {list(widths)}"
            )
        if num_classes <= 0 or in_channels <= 0:
            raise ValueError(
                f"num_classes and in_channels must be positive; got {num_classes}, {in_channels}"
            )
        self.act = (
            activation
            if isinstance(activation, Activation)
            else _make_act(activation, activation_params)
        )
        self.variant, self.shortcut_kind = variant, shortcut
        self.reuse_preactivation = bool(reuse_preactivation)
        self.block = block if block is not None else BLOCKS.get(variant)
        self.block.check_activation(self.act)
        self.in_planes = int(widths[0])
        self.conv1 = _conv3x3(in_channels, self.in_planes)
        self.bn1 = nn.BatchNorm2d(self.in_planes)
        self.stages = nn.Sequential(
            *(
                self._make_layer(int(w), int(n), stride=1 if i == 0 else 2)
                for i, (w, n) in enumerate(zip(widths, layers))
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.in_planes, num_classes)
        self.reset_parameters(zero_init_residual)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(self.block(self.in_planes, planes, s, self.act, self.shortcut_kind))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """Kaiming-normal (fan-out) convolutions, PyTorch's default classifier, BN ``(1, 0)``;
        optionally zero the last BN (weight and shift) of every block."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
                    nn.init.zeros_(m.bn2.bias)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features (in the range of ``rho``), shape ``(N, widths[-1])``.

        With ``reuse_preactivation`` each block receives the previous pre-activation ``a``
        beside ``z = rho(a)``, so a Bregman block gets :math:`\rho^{-1}(z) = a` without
        evaluating :math:`\rho^{-1}` (see :meth:`BregmanBasicBlock.dual_shortcut`); otherwise
        each block is called on ``z`` alone and evaluates :math:`\rho^{-1}(\rho(a))`.

        In exact arithmetic the two are the same function. In floating point the per-block
        path carries the rounding error of :math:`\rho(a)` multiplied by the slope
        :math:`1/\rho'(a)` of :math:`\rho^{-1}`, which is large near the edges of the range
        (float32 ``sigmoid``: ``rho_inv(sigmoid(15.)) = 14.84``), and where :math:`\rho`
        *saturates* the paths differ outright: :math:`\rho(a)` rounds onto an edge of its
        range (or within the margin of :func:`~bregnn.activations.domain_margin`), ``rho_inv``
        clamps it, and the per-block path continues from the clamped value instead of ``a``.
        For example float32 ``sigmoid(a) == 1.0`` from ``a = 16.64`` on and ``rho_inv(1.0) =
        15.94``; float64 softplus with ``beta = 1000`` underflows below ``finfo.tiny`` for
        ``a < -0.702`` and ``rho_inv`` returns ``-0.7015`` for all of them, which moves the
        logits of a ResNet20 by up to about 1. The reused pre-activation is the exact one.
        """
        pre = self.bn1(self.conv1(x))
        z = self.act(pre)
        if not self.reuse_preactivation:
            return self.pool(self.stages(z)).flatten(1)
        for stage in self.stages:
            for block in stage:
                z, pre = block.forward_dual(z, pre)
        return self.pool(z).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, shortcut={self.shortcut_kind!r}"


def _make_act(name: str, params: dict | None) -> Activation:
    return activation(name, **(params or {}))


def _cifar_resnet(depth: int, **kwargs) -> ResNet:
    n = (depth - 2) // 6
    return ResNet(None, (n, n, n), widths=(16, 32, 64), shortcut="pad", **kwargs)


def resnet20(**kwargs) -> ResNet:
    """ResNet20 (3 stages x 3 blocks, 0.27M parameters); ``kwargs`` go to :class:`ResNet`."""
    return _cifar_resnet(20, **kwargs)


def resnet32(**kwargs) -> ResNet:
    """ResNet32 (3 x 5 blocks, 0.46M parameters)."""
    return _cifar_resnet(32, **kwargs)


def resnet44(**kwargs) -> ResNet:
    """ResNet44 (3 x 7 blocks, 0.66M parameters)."""
    return _cifar_resnet(44, **kwargs)


def resnet56(**kwargs) -> ResNet:
    """ResNet56 (3 x 9 blocks, 0.85M parameters)."""
    return _cifar_resnet(56, **kwargs)


def resnet110(**kwargs) -> ResNet:
    """ResNet110 (3 x 18 blocks, 1.7M parameters)."""
    return _cifar_resnet(110, **kwargs)


def resnet1202(**kwargs) -> ResNet:
    """ResNet1202 (3 x 200 blocks, 19.4M parameters)."""
    return _cifar_resnet(1202, **kwargs)


def resnet18(**kwargs) -> ResNet:
    """CIFAR-style ResNet18: 3x3 stem, basic blocks (2, 2, 2, 2), 64..512 channels,
    projection shortcuts (11.2M parameters)."""
    return ResNet(None, (2, 2, 2, 2), widths=(64, 128, 256, 512), shortcut="conv", **kwargs)


#: The factories by name (the ``--model`` choices of ``bregnn image-classify``).
RESNETS: Registry[Callable[..., ResNet]] = Registry("resnet")
for _factory in (resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202, resnet18):
    RESNETS.register(_factory.__name__, _factory)
del _factory
