r"""ResNets (He et al., 2016) with standard or Bregman residual blocks: the CIFAR family
ResNet20..1202 and the ImageNet-style family ResNet18..152.

Standard basic block (``variant="standard"``, any activation, ReLU included; eq. 17 of
Frecon et al., ICML 2022, with ReLU):

.. math::

    z^+ = \rho\big(S(z) + \mathrm{BN}_2(\mathrm{Conv}_2\,\rho(\mathrm{BN}_1(\mathrm{Conv}_1 z)))\big)

Bregman basic block (``variant="bregman"``, eq. 18; an invertible activation :math:`\rho`
whose range is the open domain of :math:`\rho^{-1} = \nabla\phi`):

.. math::

    z^+ = \rho\big(\rho^{-1}(S(z)) + \mathrm{BN}_2(\mathrm{Conv}_2\,
          \rho(\mathrm{BN}_1(\mathrm{Conv}_1 z)))\big)

so the residual branch is added in the *dual* (pre-activation) space and the block is the
identity :math:`z^+ = S(z)` when the residual branch vanishes (``zero_init_residual``).
The bottleneck blocks (ResNet50/101/152) have the residual branch
:math:`\mathrm{BN}_3\mathrm{Conv}^{1\times1}_3\rho(\mathrm{BN}_2\mathrm{Conv}^{3\times3}_2
\rho(\mathrm{BN}_1\mathrm{Conv}^{1\times1}_1 z))` with the stride on the 3x3 convolution
(torchvision's "ResNet v1.5", as in bregmanet's ``resnet_large.py``) and four times as many
output channels as ``planes``.

Every tensor that reaches :math:`\rho^{-1}` lies in the range of :math:`\rho`: the stem ends
with :math:`\rho` (and, for the ImageNet stem, a max-pool, which keeps values where they
are), each block ends with :math:`\rho`, and the shortcut :math:`S` maps that range into
itself:

- ``shortcut="pad"`` (option A of He et al.; the CIFAR ResNets): spatial subsampling plus
  new channels filled with ``fill``; ``fill = 0`` for the standard block and
  ``fill = rho(0)`` for the Bregman block, so the new channels have :math:`\rho^{-1} = 0`
  exactly as zero padding in the dual space (bregmanet's option ``'E'``).
- ``shortcut="conv"`` (option B; torchvision's ``downsample``): a strided 1x1 convolution
  (+ BN) for the standard block; for the Bregman block a strided 1x1 convolution whose
  weight rows lie on the probability simplex (softmax of free logits, the mixing matrix
  ``M`` of :class:`~bregnn.nn.BregmanLinear` applied per pixel) and no BN, so every output
  pixel is a convex combination of input channels and stays in the (convex) range of
  :math:`\rho`.

The two families (``stem``):

- ``cifar``: 3x3 stride-1 convolution, BN, :math:`\rho`. The CIFAR ResNets (Idelbayev's
  ``pytorch_resnet_cifar10``, which bregmanet's ``resnet_small.py`` reworks) use it with
  widths 16/32/64 and option-A shortcuts.
- ``imagenet``: 7x7 stride-2 convolution, BN, :math:`\rho`, 3x3 stride-2 max-pool
  (torchvision's ResNets and bregmanet's ``resnet_large.py``: the authors' ``bresnet18``,
  used for CIFAR-100 in Table 4, has this stem). ``resnet18..152`` default to it; ``stem=
  "cifar"`` gives the common CIFAR adaptation (32x32 inputs keep their resolution).

Defaults that follow the papers and the authors' code:

- ``activation=None`` is ReLU for the standard variant (eq. 17) and softplus with
  :data:`BREGMANET_SOFTPLUS_BETA` ``= 1000`` for the Bregman variant (bregmanet's
  ``utils/activation.py``: ``get('softplus')`` reads the name as beta = 1000; Tables 3-4
  use softplus for the Bregman networks);
- ``init="fan_in"`` for the CIFAR family: Kaiming-normal with ``mode="fan_in"`` (gain
  :math:`\sqrt2`) on every convolution *and* on the classifier's weight (Idelbayev's
  ``_weights_init``: ``init.kaiming_normal_(m.weight)`` for ``nn.Linear`` and ``nn.Conv2d``;
  kept in bregmanet's ``resnet_small.py``), biases as PyTorch initialises them;
- ``init="fan_out"`` for the ImageNet family: Kaiming-normal ``mode="fan_out"`` on the
  convolutions and PyTorch's default classifier (torchvision and bregmanet's
  ``resnet_large.py``);
- shortcuts of the ImageNet family: ``conv`` for the standard variant (torchvision) and
  ``pad`` with ``rho(0)`` for the Bregman variant (bregmanet's ``resnet_large.py`` builds
  ``BregmanBasicBlock(option='E')``; its ``downsample`` convolution is created but never used,
  and its ``BregmanBottleneck`` applies :math:`\rho^{-1}` to a BN output that can leave the
  range of :math:`\rho`, so the padded shortcut is used for both Bregman block types here).

Parameter counts (this table is parsed and checked by ``tests/models/test_resnet.py``;
standard variant, default stem and shortcut; CIFAR family with a 10-class head, ImageNet
family with a 1000-class head, the counts of torchvision's ``resnet18..152``). The Bregman
variant has the same count for the CIFAR family and fewer parameters for the ImageNet family
(no ``downsample`` convolutions with its padded shortcuts):

==========  =====  ==========  ======================
model       depth  parameters  family
==========  =====  ==========  ======================
resnet20    20     269,722     cifar (0.27M)
resnet32    32     464,154     cifar (0.46M)
resnet44    44     658,586     cifar (0.66M)
resnet56    56     853,018     cifar (0.85M)
resnet110   110    1,727,962   cifar (1.7M)
resnet1202  1202   19,421,274  cifar (19.4M)
resnet18    18     11,689,512  imagenet (11.7M)
resnet34    34     21,797,672  imagenet (21.8M)
resnet50    50     25,557,032  imagenet (25.6M)
resnet101   101    44,549,160  imagenet (44.5M)
resnet152   152    60,192,808  imagenet (60.2M)
==========  =====  ==========  ======================
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
    "BLOCK_KINDS",
    "BOTTLENECKS",
    "BREGMANET_SOFTPLUS_BETA",
    "IMAGENET_RESNETS",
    "INITS",
    "RESNETS",
    "RESNET_VARIANTS",
    "SHORTCUTS",
    "STEMS",
    "BasicBlock",
    "Bottleneck",
    "BregmanBasicBlock",
    "BregmanBottleneck",
    "PadShortcut",
    "ResNet",
    "SimplexConvShortcut",
    "default_activation",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnet1202",
]

SHORTCUTS = ("pad", "conv")
STEMS = ("cifar", "imagenet")
INITS = ("fan_in", "fan_out")

#: The softplus sharpness of the authors' code: bregmanet's ``utils/activation.py``,
#: ``get(activation_name)``: ``'softplus'`` without a number in the name gives ``beta = 1000``.
BREGMANET_SOFTPLUS_BETA = 1000.0


def default_activation(variant: str) -> Activation:
    """The activation a ResNet of ``variant`` gets when none is given: ReLU for ``standard``
    (eq. 17 of the paper), softplus with beta = :data:`BREGMANET_SOFTPLUS_BETA` for
    ``bregman`` (the activation of Tables 3-4 as the authors' code reads it)."""
    if BLOCKS.key(variant) == "standard":
        return activation("relu")
    return activation("softplus", beta=BREGMANET_SOFTPLUS_BETA)


def _conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)


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
    return nn.Sequential(_conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    r"""Standard basic block :math:`\rho(S(z) + \mathrm{BN}_2\mathrm{Conv}_2\rho(\mathrm{BN}_1
    \mathrm{Conv}_1 z))`; ``act`` may be any registered activation (ReLU included).
    The block has ``planes * expansion`` output channels."""

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
        self._build_residual(in_planes, planes, stride)
        out_planes = planes * self.expansion
        self.shortcut = self._make_shortcut(in_planes, out_planes, stride, shortcut)

    def _build_residual(self, in_planes: int, planes: int, stride: int) -> None:
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN that ends the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2

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
            fill = float(self.act.rho(torch.zeros((), dtype=torch.float64, device="cpu")))
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


class Bottleneck(BasicBlock):
    r"""Standard bottleneck block (torchvision's, stride on the 3x3 convolution):
    :math:`\rho(S(z) + \mathrm{BN}_3\mathrm{Conv}_3\rho(\mathrm{BN}_2\mathrm{Conv}_2
    \rho(\mathrm{BN}_1\mathrm{Conv}_1 z)))` with ``planes`` inner and ``4 * planes`` output
    channels."""

    expansion = 4

    def _build_residual(self, in_planes: int, planes: int, stride: int) -> None:
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def residual(self, z: Tensor) -> Tensor:
        """The residual branch (three convolutions, see the class docstring)."""
        hidden = self.act(self.bn1(self.conv1(z)))
        hidden = self.act(self.bn2(self.conv2(hidden)))
        return self.bn3(self.conv3(hidden))


class BregmanBottleneck(Bottleneck, BregmanBasicBlock):
    r"""Bregman bottleneck block: the bottleneck's residual branch (:class:`Bottleneck`)
    added in the dual space, :math:`\rho(\rho^{-1}(S(z)) + \text{residual}(z))`, with the
    shortcut, the pre-activation reuse and the float32 coupling of
    :class:`BregmanBasicBlock`."""


#: The basic block class of each ``variant`` of :class:`ResNet`.
BLOCKS: Registry[type[BasicBlock]] = Registry("variant")
BLOCKS.register("standard", BasicBlock)
BLOCKS.register("bregman", BregmanBasicBlock)
RESNET_VARIANTS = tuple(BLOCKS)
#: The bottleneck block class of each ``variant``.
BOTTLENECKS: Registry[type[BasicBlock]] = Registry("variant")
BOTTLENECKS.register("standard", Bottleneck)
BOTTLENECKS.register("bregman", BregmanBottleneck)
#: The ``block`` names :class:`ResNet` accepts, each a registry of variants.
BLOCK_KINDS: Registry[Registry[type[BasicBlock]]] = Registry("block")
BLOCK_KINDS.register("basic", BLOCKS)
BLOCK_KINDS.register("bottleneck", BOTTLENECKS)


class ResNet(nn.Module):
    r"""A ResNet: a stem (``cifar``: 3x3 conv, BN, :math:`\rho`; ``imagenet``: 7x7 stride-2
    conv, BN, :math:`\rho`, 3x3 stride-2 max-pool), one stage per entry of ``layers`` (the
    first block of stage ``i > 0`` halves the resolution), global average pooling and a
    linear classifier.

    Args:
        block: ``"basic"`` (default when ``None``), ``"bottleneck"``, or a block class; a
            name picks the class of ``variant`` (:data:`BLOCK_KINDS`).
        layers: blocks per stage, e.g. ``(3, 3, 3)`` for ResNet20.
        num_classes: classifier outputs.
        activation: a registered name or an :class:`~bregnn.activations.Activation`;
            ``None`` is :func:`default_activation` of ``variant`` (ReLU for ``standard``,
            softplus with beta = 1000 for ``bregman``); ``activation_params`` are passed to
            the registry (e.g. ``{"beta": 10}``).
        variant: ``standard`` or ``bregman``.
        widths: ``planes`` per stage (``(16, 32, 64)`` CIFAR ResNets, ``(64, 128, 256,
            512)`` the ImageNet family); the stem has ``widths[0]`` channels, a stage
            ``widths[i] * block.expansion``.
        shortcut: ``pad`` (option A) or ``conv`` (option B), see the module docstring.
        in_channels: image channels.
        zero_init_residual: zero the last BN's weight *and* shift of every block, so that
            each residual branch is 0 at initialisation; a Bregman block is then exactly its
            shortcut (the identity for non-downsampling blocks).
        activation_params: keyword parameters for the activation registry.
        reuse_preactivation: hand each block the previous pre-activation (see
            :meth:`features`): no :math:`\rho^{-1}` per block, and exact where ``rho``
            saturates (see :meth:`features` for when the two paths differ).
        stem: ``cifar`` or ``imagenet`` (see :data:`STEMS`).
        init: ``fan_in`` (Idelbayev's CIFAR ResNets: Kaiming-normal fan-in on convolutions
            and the classifier weight) or ``fan_out`` (torchvision: Kaiming-normal fan-out on
            convolutions, PyTorch's default classifier); see :meth:`reset_parameters`.

    Average pooling keeps the features in the range of ``rho`` (a convex combination).
    The input must be scaled into the activation range for neither variant; the stem takes
    any real input.
    """

    def __init__(
        self,
        block: type[BasicBlock] | str | None,
        layers: Sequence[int],
        num_classes: int = 10,
        activation: str | Activation | None = None,
        variant: str = "bregman",
        widths: Sequence[int] = (16, 32, 64),
        shortcut: str = "pad",
        in_channels: int = 3,
        zero_init_residual: bool = False,
        activation_params: dict | None = None,
        reuse_preactivation: bool = True,
        stem: str = "cifar",
        init: str = "fan_in",
    ) -> None:
        super().__init__()
        variant = BLOCKS.key(variant)  # ValueError naming the valid variants
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid shortcuts: {list(SHORTCUTS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; valid stems: {list(STEMS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid inits: {list(INITS)}")
        if len(layers) != len(widths) or any(n <= 0 for n in layers):
            raise ValueError(
                f"layers {list(layers)} must be positive, one per stage width {list(widths)}"
            )
        if num_classes <= 0 or in_channels <= 0:
            raise ValueError(
                f"num_classes and in_channels must be positive; got {num_classes}, {in_channels}"
            )
        self.act = _make_act(activation, activation_params, variant)
        self.variant, self.shortcut_kind = variant, shortcut
        self.stem, self.init = stem, init
        self.reuse_preactivation = bool(reuse_preactivation)
        if block is None or isinstance(block, str):
            self.block = BLOCK_KINDS.get(block or "basic").get(variant)
        else:
            self.block = block
        self.block.check_activation(self.act)
        self.in_planes = int(widths[0])
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(
                in_channels, self.in_planes, kernel_size=7, stride=2, padding=3, bias=False
            )
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = _conv3x3(in_channels, self.in_planes)
            self.maxpool = nn.Identity()
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
            self.in_planes = planes * self.block.expansion
        return nn.Sequential(*layers)

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """Initialise every layer as ``self.init`` says, BN to ``(1, 0)``; optionally zero
        the last BN (weight and shift) of every block.

        ``fan_in``: ``nn.init.kaiming_normal_(weight)`` with its defaults (``mode="fan_in"``,
        gain :math:`\\sqrt2`: std :math:`\\sqrt{2/\\text{fan\\_in}}`) on every convolution and
        on the classifier weight, the classifier bias as ``nn.Linear`` draws it (Idelbayev's
        ``_weights_init``). ``fan_out``: ``kaiming_normal_(mode="fan_out",
        nonlinearity="relu")`` on the convolutions, ``nn.Linear``'s own initialisation for
        the classifier (torchvision)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=self.init, nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
                if self.init == "fan_in":
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.last_bn.weight)
                    nn.init.zeros_(m.last_bn.bias)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features (in the range of ``rho``), shape ``(N, widths[-1] * expansion)``.

        With ``reuse_preactivation`` each block receives the previous pre-activation ``a``
        beside ``z = rho(a)``, so a Bregman block gets :math:`\rho^{-1}(z) = a` without
        evaluating :math:`\rho^{-1}` (see :meth:`BregmanBasicBlock.dual_shortcut`); otherwise
        each block is called on ``z`` alone and evaluates :math:`\rho^{-1}(\rho(a))`. The
        ImageNet stem's max-pool is applied to ``a`` on the first path and to ``rho(a)`` on
        the second: the same values, as every activation is non-decreasing.

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
        if not self.reuse_preactivation:
            z = self.maxpool(self.act(pre))
            return self.pool(self.stages(z)).flatten(1)
        pre = self.maxpool(pre)
        z = self.act(pre)
        for stage in self.stages:
            for block in stage:
                z, pre = block.forward_dual(z, pre)
        return self.pool(z).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant!r}, stem={self.stem!r}, shortcut={self.shortcut_kind!r}, "
            f"init={self.init!r}"
        )


def _make_act(spec: str | Activation | None, params: dict | None, variant: str) -> Activation:
    if isinstance(spec, Activation):
        if params:
            raise ValueError("activation_params apply to an activation name, not an object")
        return spec
    if spec is None:
        act = default_activation(variant)
        if not params:
            return act
        defaults = {"beta": BREGMANET_SOFTPLUS_BETA} if act.name == "softplus" else {}
        return activation(act.name, **{**defaults, **params})
    return activation(spec, **(params or {}))


def _cifar_resnet(depth: int, **kwargs) -> ResNet:
    n = (depth - 2) // 6
    options = {"shortcut": "pad", "stem": "cifar", "init": "fan_in", **kwargs}
    return ResNet(None, (n, n, n), widths=(16, 32, 64), **options)


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


def _imagenet_resnet(block: str, layers: Sequence[int], **kwargs) -> ResNet:
    variant = BLOCKS.key(kwargs.get("variant", "bregman"))
    options = {
        "num_classes": 1000,
        "shortcut": "conv" if variant == "standard" else "pad",
        "stem": "imagenet",
        "init": "fan_out",
        **kwargs,
    }
    return ResNet(block, layers, widths=(64, 128, 256, 512), **options)


def resnet18(**kwargs) -> ResNet:
    """ResNet18: basic blocks (2, 2, 2, 2), 64..512 channels, ImageNet stem by default
    (``stem="cifar"`` for the 3x3 one), 1000 classes by default (11.7M parameters)."""
    return _imagenet_resnet("basic", (2, 2, 2, 2), **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet34: basic blocks (3, 4, 6, 3) (21.8M parameters)."""
    return _imagenet_resnet("basic", (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet50: bottleneck blocks (3, 4, 6, 3) (25.6M parameters)."""
    return _imagenet_resnet("bottleneck", (3, 4, 6, 3), **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet101: bottleneck blocks (3, 4, 23, 3) (44.5M parameters)."""
    return _imagenet_resnet("bottleneck", (3, 4, 23, 3), **kwargs)


def resnet152(**kwargs) -> ResNet:
    """ResNet152: bottleneck blocks (3, 8, 36, 3) (60.2M parameters)."""
    return _imagenet_resnet("bottleneck", (3, 8, 36, 3), **kwargs)


#: The factories by name (the ``--model`` choices of ``bregnn image-classify``).
RESNETS: Registry[Callable[..., ResNet]] = Registry("resnet")
for _factory in (
    resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202,
    resnet18, resnet34, resnet50, resnet101, resnet152,
):  # fmt: skip
    RESNETS.register(_factory.__name__, _factory)
del _factory
#: The factories of the ImageNet-style family (they take ``stem``).
IMAGENET_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
