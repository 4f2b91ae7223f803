r"""The affine maps a lifted network is made of: :class:`Dense` and :class:`Conv`, with fixed
linear operators (:class:`AvgPool`, :class:`Flatten`) composed in.

Layer :math:`l` of a lifted network maps the auxiliary variable :math:`x_{l-1}` (a vector,
or a feature map of shape ``(C, H, W)`` per sample) to its pre-activation

.. math::  z_l = A_l(x_{l-1}; \Theta_l) = Q_l\big(K_{W_l}(P_l x_{l-1}) + b_l\big),

where :math:`K_W` is the core map (a matrix product for :class:`Dense`, a 2-d convolution
for :class:`Conv`, the bias broadcast over the spatial positions), :math:`P_l` the fixed
linear operators applied to the layer's input (``pre``) and :math:`Q_l` those applied to
its output (``post``). The map is affine in :math:`x_{l-1}` for fixed :math:`\Theta_l`
and linear in :math:`\Theta_l = (W_l, b_l)` for fixed :math:`x_{l-1}`; the lifted energy
needs exactly its two adjoints:

- in the parameters (:meth:`AffineLayer.param_grads`): :math:`g \mapsto (\nabla_W, \nabla_b)`
  of :math:`\langle g, z\rangle`; for a convolution the weight-gradient
  ``torch.nn.grad.conv2d_weight`` of :math:`Q^\top g`, and the sum of :math:`Q^\top g` over
  samples and positions;
- in the input (:meth:`AffineLayer.input_grad`): :math:`P^\top K_W^\top Q^\top g`, for a
  convolution by ``torch.nn.grad.conv2d_input`` (a transposed convolution).

**Pooling is composed, not lifted.** Average pooling is linear, so it is folded into the
affine map next to it: into the *following* map when it comes after an activation (the
usual conv - ReLU - avgpool - conv: :math:`P_l` is the pooling), into the *preceding*
map when it sits between an affine map and its activation (:math:`Q_l`). A pooling layer of
its own would need its own auxiliary variable and an identity-activation coupling that holds
only approximately, so the lifted network would not be the network that is evaluated; as a
fixed operator inside :math:`A_l` it adds no variable, no penalty and no parameter, and the
closed-form gradients stay exact. The auxiliary variable before a pooling is the activation
output at full resolution, which the forward pass computes anyway. ``Flatten`` is handled
the same way (an isometry).

**Step sizes** (see :mod:`bregnn.lifted.solvers._step`) need two squared spectral norms per
layer, both by warm-started power iterations whose vectors are ordinary tensors:

- :meth:`AffineLayer.theta_power_step`: :math:`|\Theta \mapsto A(X; \Theta)|_2^2` over a batch
  :math:`X` (for :class:`Dense` the :math:`|[X, \mathbf 1]|_2^2` of the augmented input
  matrix). Every output unit or channel has its own row or filter and they all see the
  same input (and ``AvgPool``/``Flatten`` act per channel), so the map is block diagonal
  with identical blocks: the vector is one row ``[w; b]`` (``(n_in + 1,)``), or one filter
  and its bias (``(C_in * kh * kw + 1,)``) whose convolution with the batch and the
  weight-gradient of the result form one power step;
- :meth:`AffineLayer.input_power_step`: :math:`|K_l|_2^2` of the per-sample linear map
  :math:`x \mapsto Q K_W P x` (for :class:`Dense` the :math:`|W|_2^2`), with a vector of the
  layer's input shape: ``conv2d`` forward and ``conv_transpose2d`` back.

**Without a bias** (``nn.Conv2d(..., bias=False)``) a layer's bias is an empty tensor of
shape ``(0,)``: it enters no map, its gradient is empty, and every elementwise solver update
(gradient steps, proximal terms, momentum, averaging) leaves it empty, so the bias stays
fixed at zero in every solver without a special case.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input, conv2d_weight

__all__ = [
    "AffineLayer",
    "AvgPool",
    "Conv",
    "Dense",
    "Flatten",
    "LinearOp",
    "Shape",
]

Shape = tuple[int, ...]


def _shape(shape: int | Sequence[int]) -> Shape:
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


# -- fixed linear operators ---------------------------------------------------------------------
class LinearOp:
    """A parameter-free linear map on per-sample feature tensors (batched on dim 0)."""

    def out_shape(self, in_shape: Shape) -> Shape:
        """Per-sample output shape for a per-sample input of shape ``in_shape``."""
        raise NotImplementedError

    def apply(self, x: Tensor) -> Tensor:
        """The map, on a batch ``x`` of shape ``(N, *in_shape)``."""
        raise NotImplementedError

    def adjoint(self, g: Tensor, in_shape: Shape) -> Tensor:
        """The adjoint map: from ``(N, *out_shape(in_shape))`` back to ``(N, *in_shape)``."""
        raise NotImplementedError

    def module(self) -> nn.Module:
        """The torch module computing the map."""
        raise NotImplementedError


class Flatten(LinearOp):
    """``x.flatten(1)`` (torch's ``nn.Flatten()``); its adjoint reshapes back."""

    def __repr__(self) -> str:
        return "Flatten()"

    def out_shape(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)

    def apply(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def adjoint(self, g: Tensor, in_shape: Shape) -> Tensor:
        return g.reshape(g.shape[0], *in_shape)

    def module(self) -> nn.Module:
        return nn.Flatten()


class AvgPool(LinearOp):
    """2-d average pooling with the arguments of ``nn.AvgPool2d``; the adjoint is
    ``aten.avg_pool2d_backward`` (exact for every padding, ``ceil_mode``,
    ``count_include_pad`` and ``divisor_override``)."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None and stride != [] else self.kernel_size
        self.padding = _pair(padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    @classmethod
    def from_module(cls, pool: nn.AvgPool2d) -> AvgPool:
        return cls(
            pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
            pool.count_include_pad, pool.divisor_override,
        )  # fmt: skip

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value}"
            for name, value, default in (
                ("ceil_mode", self.ceil_mode, False),
                ("count_include_pad", self.count_include_pad, True),
                ("divisor_override", self.divisor_override, None),
            )
            if value != default
        )
        return f"AvgPool({self.kernel_size}, stride={self.stride}, padding={self.padding}{extra})"

    def _args(self) -> tuple:
        return (
            self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, self.divisor_override,
        )  # fmt: skip

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise ValueError(f"average pooling needs feature maps (C, H, W); got shape {in_shape}")
        probe = torch.empty(1, *in_shape, device="meta")
        try:
            return tuple(F.avg_pool2d(probe, *self._args()).shape[1:])
        except RuntimeError as err:
            raise ValueError(
                f"{self!r} does not fit feature maps of shape {in_shape}: {err}"
            ) from None

    def _tiles(self, height: int, width: int) -> bool:
        """Whether the windows tile the map without overlap or padding (kernel = stride, no
        padding, no partial window): then every input pixel is in at most one window."""
        kh, kw = self.kernel_size
        return (
            self.stride == self.kernel_size
            and self.padding == (0, 0)
            and (not self.ceil_mode or (height % kh == 0 and width % kw == 0))
        )

    def apply(self, x: Tensor) -> Tensor:
        if not self._tiles(x.shape[-2], x.shape[-1]) or (
            x.requires_grad and torch.is_grad_enabled()
        ):
            return F.avg_pool2d(x, *self._args())
        # non-overlapping windows, outside autograd: the window sums as strided slices, added
        # in the kernel's order (row by row, left to right) and divided by the same count, so
        # the result is avg_pool2d's for float32 and float64 (about twice as fast on a CPU)
        kh, kw = self.kernel_size
        h, w = x.shape[-2] // kh, x.shape[-1] // kw
        x = x[..., : h * kh, : w * kw]
        parts = [x[..., i::kh, j::kw] for i in range(kh) for j in range(kw)]
        total = parts[0] + parts[1] if len(parts) > 1 else parts[0].clone()
        for part in parts[2:]:
            total.add_(part)
        return total.div_(self.divisor_override or kh * kw)

    def adjoint(self, g: Tensor, in_shape: Shape) -> Tensor:
        height, width = in_shape[-2:]
        if self._tiles(height, width):
            # each output's share goes to the pixels of its window, and pixels outside
            # every window (floor mode) get zero: what avg_pool2d_backward computes
            kh, kw = self.kernel_size
            n, c, h, w = g.shape
            share = g / (self.divisor_override or kh * kw)
            tiled = (h * kh, w * kw) == (height, width)
            out = (g.new_empty if tiled else g.new_zeros)(n, c, height, width)
            for i in range(kh):
                for j in range(kw):
                    out[..., i : h * kh : kh, j : w * kw : kw] = share
            return out
        like = g.new_zeros(()).expand(g.shape[0], *in_shape)
        return torch.ops.aten.avg_pool2d_backward(
            g.contiguous(), like, list(self.kernel_size), list(self.stride), list(self.padding),
            self.ceil_mode, self.count_include_pad, self.divisor_override,
        )  # fmt: skip

    def module(self) -> nn.Module:
        return nn.AvgPool2d(*self._args())


def _chain_shapes(ops: Sequence[LinearOp], shape: Shape) -> list[Shape]:
    """``[shape, after op 1, after op 2, ...]``."""
    shapes = [shape]
    for op in ops:
        shapes.append(op.out_shape(shapes[-1]))
    return shapes


def _apply(ops: Sequence[LinearOp], x: Tensor) -> Tensor:
    for op in ops:
        x = op.apply(x)
    return x


def _adjoint(ops: Sequence[LinearOp], g: Tensor, shapes: Sequence[Shape]) -> Tensor:
    for op, shape in zip(reversed(ops), reversed(shapes[:-1]), strict=True):
        g = op.adjoint(g, shape)
    return g


# -- affine layers ------------------------------------------------------------------------------
class AffineLayer:
    r""":math:`z = Q(K_W(P x) + b)` (see the module doc). Attributes: ``in_shape`` (per-sample
    shape of :math:`x`), ``out_shape`` (of :math:`z`), ``pre`` (:math:`P`), ``post``
    (:math:`Q`), ``weight_shape``, ``bias`` (whether there is a bias)."""

    in_shape: Shape
    out_shape: Shape
    pre: tuple[LinearOp, ...]
    post: tuple[LinearOp, ...]
    weight_shape: Shape
    bias: bool

    def _setup_ops(self, in_shape: Shape, pre: Sequence[LinearOp]) -> Shape:
        self.in_shape = _shape(in_shape)
        self.pre = tuple(pre)
        self._pre_shapes = _chain_shapes(self.pre, self.in_shape)
        self._last_input: tuple | None = None
        return self._pre_shapes[-1]

    def __getstate__(self) -> dict:
        state = {**self.__dict__, "_last_input": None}
        if "_last_forward" in state:
            state["_last_forward"] = None
        return state

    def prepare(self, x: Tensor) -> Tensor:
        """:math:`P x`: ``x`` viewed as ``(N, *in_shape)`` with the ``pre`` operators applied.
        The result for the last ``x`` is remembered (the same tensor object, not modified
        since, outside autograd): within one step the energy, its gradients and the step
        sizes all read a layer's input, and pooling it once per step is enough."""
        x = self.as_input(x)
        if not self.pre:
            return x
        last = self._last_input
        if last is not None and last[0]() is x and last[1] == x._version:
            return last[2]
        out = _apply(self.pre, x)
        if not (x.requires_grad and torch.is_grad_enabled()):
            self._last_input = (weakref.ref(x), x._version, out)
        return out

    def _finish(self, core_out: Shape, post: Sequence[LinearOp]) -> None:
        self.post = tuple(post)
        self._core_out = core_out
        self._post_shapes = _chain_shapes(self.post, core_out)
        self.out_shape = self._post_shapes[-1]

    @property
    def bias_shape(self) -> Shape:
        return (self.weight_shape[0],) if self.bias else (0,)

    @property
    def n_in(self) -> int:
        """Number of input features per sample."""
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        """Number of pre-activations per sample."""
        return math.prod(self.out_shape)

    def as_input(self, x: Tensor) -> Tensor:
        """``x`` (rows, or batched tensors of ``in_shape``) viewed as ``(N, *in_shape)``."""
        if tuple(x.shape[1:]) == self.in_shape:
            return x
        return x.reshape(x.shape[0], *self.in_shape)

    def _ops_repr(self) -> str:
        parts = []
        if self.pre:
            parts.append(f"pre={list(self.pre)}")
        if self.post:
            parts.append(f"post={list(self.post)}")
        return (", " + ", ".join(parts)) if parts else ""

    # -- the map and its adjoints --------------------------------------------------------------
    def forward(self, weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
        """:math:`z = Q(K_W(P x) + b)` for a batch ``x``."""
        raise NotImplementedError

    def param_grads(self, g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Adjoint in the parameters: the gradients in :math:`(W, b)` of
        :math:`\sum_i \langle g_i, z_i\rangle` (``g`` of shape ``(N, *out_shape)``)."""
        raise NotImplementedError

    def input_grad(self, g: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
        r"""Adjoint in the input: :math:`P^\top K_W^\top Q^\top g` (plus ``add``), shape
        ``(N, *in_shape)``."""
        raise NotImplementedError

    # -- power iterations ------------------------------------------------------------------------
    def theta_vector(self, dtype: torch.dtype, device=None) -> Tensor:
        """Deterministic start vector of :meth:`theta_power_step`."""
        raise NotImplementedError

    def input_vector(self, dtype: torch.dtype, device=None) -> Tensor:
        """Deterministic start vector of :meth:`input_power_step` (shape ``in_shape``)."""
        raise NotImplementedError

    def theta_power_step(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        r"""One power step for :math:`|\Theta \mapsto A(x;\Theta)|_2^2` over the batch ``x``:
        the estimate (a lower bound of the squared norm for a unit ``v``, clamped below by
        the exact norm of the bias direction) and the next unit vector."""
        raise NotImplementedError

    def input_power_step(self, weight: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        r"""One power step for :math:`|x \mapsto Q K_W P x|_2^2` (per sample)."""
        raise NotImplementedError

    # -- parameters and modules ------------------------------------------------------------------
    def init_params(
        self, generator: torch.Generator | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Glorot-uniform weight :math:`U(\\pm\\sqrt{6/(fan_{in}+fan_{out})})`, zero bias."""
        raise NotImplementedError

    def core_module(self, weight: Tensor, bias: Tensor) -> nn.Module:
        """``nn.Linear`` / ``nn.Conv2d`` holding ``weight`` and ``bias``."""
        raise NotImplementedError

    def modules(self, weight: Tensor, bias: Tensor) -> list[nn.Module]:
        """The torch modules computing this map: ``pre``, the core layer, ``post``."""
        return [
            *(op.module() for op in self.pre),
            self.core_module(weight, bias),
            *(op.module() for op in self.post),
        ]

    def check_params(self, weight: Tensor, bias: Tensor, layer: int) -> None:
        """``ValueError`` when the shapes do not fit this layer."""
        if tuple(weight.shape) != self.weight_shape or tuple(bias.shape) != self.bias_shape:
            raise ValueError(
                f"layer {layer}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} do "
                f"not match {self!r} (weight {self.weight_shape}, bias {self.bias_shape})"
            )


class Dense(AffineLayer):
    r"""A fully connected map :math:`z = Q(W P x + b)`, ``W`` of shape ``(out, in)``.

    Args:
        in_shape: per-sample shape of the input (an int for vectors).
        out_features: number of outputs.
        pre: fixed operators applied to the input first (their result must be a vector,
            e.g. ``(AvgPool(2), Flatten())`` after a convolution).
        post: fixed operators applied to the output (only ``Flatten`` makes sense here).
    """

    bias = True

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_features: int,
        *,
        pre: Sequence[LinearOp] = (),
        post: Sequence[LinearOp] = (),
    ) -> None:
        flat = self._setup_ops(in_shape, pre)
        if len(flat) != 1:
            raise ValueError(
                f"a dense layer needs vector inputs; its input has shape {flat} after {self.pre} "
                "(put a Flatten before it)"
            )
        self.in_features, self.out_features = flat[0], int(out_features)
        if self.in_features <= 0 or self.out_features <= 0:
            raise ValueError(f"dense layer sizes must be positive; got {flat[0]}, {out_features}")
        self.weight_shape = (self.out_features, self.in_features)
        self._finish((self.out_features,), post)
        self._plain = not self.pre and not self.post

    def __repr__(self) -> str:
        return f"Dense({self.in_shape} -> {self.out_features}{self._ops_repr()})"

    def _flat(self, x: Tensor) -> Tensor:
        return x if not self.pre else self.prepare(x)

    def forward(self, weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
        return self._after_input(weight, bias, self._flat(x))

    def _after_input(self, weight: Tensor, bias: Tensor, flat: Tensor) -> Tensor:
        z = torch.addmm(bias, flat, weight.T)
        return _apply(self.post, z) if self.post else z

    def _core_grad(self, g: Tensor) -> Tensor:
        return _adjoint(self.post, g, self._post_shapes) if self.post else g

    def param_grads(self, g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        g = self._core_grad(g)
        return g.T @ self._flat(x), g.sum(0)

    def input_grad(self, g: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
        g = self._core_grad(g)
        if not self.pre:
            return g @ weight if add is None else torch.addmm(add, g, weight)
        back = _adjoint(self.pre, g @ weight, self._pre_shapes)
        return back if add is None else add + back

    def theta_vector(self, dtype: torch.dtype, device=None) -> Tensor:
        n = self.in_features + 1
        return torch.full((n,), n**-0.5, dtype=dtype, device=device)

    def input_vector(self, dtype: torch.dtype, device=None) -> Tensor:
        if not self.pre:
            n = self.in_features
            return torch.full((n,), n**-0.5, dtype=dtype, device=device)
        return _probe(self.in_shape, dtype, device)

    def theta_power_step(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        from bregnn.lifted.solvers.base import power_step_augmented  # the solvers import us

        return power_step_augmented(self._flat(x), v)

    def input_power_step(self, weight: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self._plain:
            from bregnn.lifted.solvers.base import power_step

            return power_step(weight, v)
        zero = weight.new_zeros(()).expand(self.out_features)
        u = self._after_input(weight, zero, _apply(self.pre, v.unsqueeze(0)))
        return _normalised(self.input_grad(u, weight)[0], v)

    def init_params(
        self, generator: torch.Generator | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        n_in, n_out = self.in_features, self.out_features
        bound = math.sqrt(6.0 / (n_in + n_out))
        w = torch.rand(n_out, n_in, generator=generator, dtype=dtype) * (2 * bound) - bound
        return w, torch.zeros(n_out, dtype=dtype)

    def core_module(self, weight: Tensor, bias: Tensor) -> nn.Module:
        lin = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            lin.weight.copy_(weight)
            lin.bias.copy_(bias)
        return lin


class Conv(AffineLayer):
    r"""A 2-d convolution :math:`z = Q(W \star P x + b)` with the arguments of ``nn.Conv2d``
    (``groups = 1``, zero padding), ``W`` of shape ``(C_out, C_in, kh, kw)``.

    Args:
        in_shape: per-sample input shape ``(C, H, W)``.
        out_channels: number of filters.
        kernel_size, stride, padding, dilation: as for ``nn.Conv2d`` (``padding`` may be
            ``"valid"``, or ``"same"`` when the padding it implies is symmetric).
        bias: whether the layer has a bias (without one it is an empty tensor, see the
            module doc).
        pre, post: fixed operators before and after the convolution.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = True,
        *,
        pre: Sequence[LinearOp] = (),
        post: Sequence[LinearOp] = (),
    ) -> None:
        shape = self._setup_ops(in_shape, pre)
        if len(shape) != 3:
            raise ValueError(
                f"a convolution needs feature maps (C, H, W); its input has shape {shape}"
            )
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        if padding == "valid":
            padding = 0
        elif padding == "same":
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            if any(t % 2 for t in total):
                raise ValueError(
                    "padding='same' with an even dilated kernel pads asymmetrically, which "
                    "lifted training does not support; give the padding explicitly"
                )
            padding = tuple(t // 2 for t in total)
        self.padding = _pair(padding)
        self.in_channels, self.out_channels = shape[0], int(out_channels)
        self.bias = bool(bias)
        self.weight_shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self._conv_in = shape
        probe = torch.empty(1, *shape, device="meta")
        kernel = torch.empty(self.weight_shape, device="meta")
        try:
            core = F.conv2d(probe, kernel, None, self.stride, self.padding, self.dilation).shape
        except RuntimeError:
            core = (0, 0, 0, 0)
        if min(core[1:]) <= 0:
            raise ValueError(
                f"the convolution (kernel {self.kernel_size}, stride {self.stride}, padding "
                f"{self.padding}, dilation {self.dilation}) leaves no output on input shape {shape}"
            )
        core = tuple(core)
        self._finish(core[1:], post)
        self._post_filter_shapes = _chain_shapes(self.post, (1, *core[2:]))
        self._last_forward: tuple | None = None
        # |Q 1|^2 per sample for one channel: the exact squared norm of the bias direction
        ones = torch.ones(1, 1, *core[2:], dtype=torch.float64)
        self._bias_sq = float(_apply(self.post, ones).pow(2).sum()) if self.bias else 0.0

    def __repr__(self) -> str:
        opts = f"k={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.dilation != (1, 1):
            opts += f", dilation={self.dilation}"
        if not self.bias:
            opts += ", bias=False"
        return f"Conv({self.in_shape} -> {self.out_channels} channels, {opts}{self._ops_repr()})"

    @classmethod
    def from_module(
        cls,
        conv: nn.Conv2d,
        in_shape: Sequence[int],
        pre: Sequence[LinearOp] = (),
        post: Sequence[LinearOp] = (),
    ) -> Conv:
        """The map of an ``nn.Conv2d`` (zero padding, ``groups = 1``) on inputs of ``in_shape``."""
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(
                f"{conv}: lifted training supports nn.Conv2d with groups=1 and "
                f"padding_mode='zeros' (got groups={conv.groups}, padding_mode="
                f"{conv.padding_mode!r})"
            )
        return cls(
            in_shape, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.bias is not None, pre=pre, post=post,
        )  # fmt: skip

    def _conv_args(self) -> tuple:
        return self.stride, self.padding, self.dilation

    def _input(self, x: Tensor) -> Tensor:
        return self.prepare(x)

    def forward(self, weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
        r""":math:`z = Q(K_W(P x) + b)`. The result for the last ``(weight, bias, x)`` is
        remembered (the same tensor objects, none of them modified since, outside autograd):
        a layer whose parameters and input both did not change since its last evaluation
        returns the same ``z``. In the alternating sweep this is the first layer: its input
        (the batch) is fixed, and its parameters do not change between the :math:`X` half of
        one step and the :math:`\Theta` half of the next, nor after the last step (the
        energy of the batch), nor between the forward pass initialising :math:`X` and the
        first step; so its convolution, on the largest feature map, is computed once per
        step instead of twice."""
        key = (weight, bias, x)
        if any(t.is_inference() for t in key):  # no version counters to check
            return self._after_input(weight, bias, self._input(x))
        last = self._last_forward
        if (
            last is not None
            and last[1]._version == last[2]
            and all(r() is t and v == t._version for (r, v), t in zip(last[0], key, strict=True))
        ):
            return last[1]
        z = self._after_input(weight, bias, self._input(x))
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in key)):
            refs = tuple((weakref.ref(t), t._version) for t in key)
            self._last_forward = (refs, z, z._version)
        return z

    def _after_input(self, weight: Tensor, bias: Tensor, xin: Tensor) -> Tensor:
        z = F.conv2d(xin, weight, bias if self.bias else None, *self._conv_args())
        if not self.bias and bias.requires_grad:
            # the empty bias enters as its (zero) sum, so that autograd (the backprop
            # baselines) gives it its empty gradient instead of calling it unused
            z = z + bias.sum()
        return _apply(self.post, z) if self.post else z

    def _core_grad(self, g: Tensor) -> Tensor:
        return _adjoint(self.post, g, self._post_shapes) if self.post else g

    def param_grads(self, g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        g = self._core_grad(g)
        gw = conv2d_weight(self._input(x), self.weight_shape, g, *self._conv_args())
        gb = g.sum((0, 2, 3)) if self.bias else g.new_zeros(0)
        return gw, gb

    def input_grad(self, g: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
        g = self._core_grad(g)
        back = conv2d_input((g.shape[0], *self._conv_in), weight, g, *self._conv_args())
        if self.pre:
            back = _adjoint(self.pre, back, self._pre_shapes)
        # back is a new tensor: add in place (the same sums as add + back)
        return back if add is None else back.add_(add)

    def theta_vector(self, dtype: torch.dtype, device=None) -> Tensor:
        n = math.prod(self.weight_shape[1:]) + int(self.bias)
        return _probe((n,), dtype, device)

    def input_vector(self, dtype: torch.dtype, device=None) -> Tensor:
        return _probe(self.in_shape, dtype, device)

    def theta_power_step(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        xin = self._input(x)
        filt = (1, *self.weight_shape[1:])
        k = math.prod(filt)
        u = F.conv2d(xin, v[:k].view(filt), v[k:] if self.bias else None, *self._conv_args())
        if self.post:  # Q^T Q on one channel
            u = _adjoint(self.post, _apply(self.post, u), self._post_filter_shapes)
        gw = conv2d_weight(xin, filt, u, *self._conv_args()).flatten()
        nxt = torch.cat([gw, u.sum().reshape(1)]) if self.bias else gw
        norm, vec = _normalised(nxt, v)
        return norm.clamp(min=x.shape[0] * self._bias_sq), vec

    def input_power_step(self, weight: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        zero = weight.new_zeros(self.bias_shape)
        u = self._after_input(weight, zero, _apply(self.pre, v.unsqueeze(0)))
        return _normalised(self.input_grad(u, weight)[0], v)

    def init_params(
        self, generator: torch.Generator | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        area = self.kernel_size[0] * self.kernel_size[1]
        fan_in, fan_out = self.in_channels * area, self.out_channels * area
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = torch.rand(self.weight_shape, generator=generator, dtype=dtype) * (2 * bound) - bound
        return w, torch.zeros(self.bias_shape, dtype=dtype)

    def core_module(self, weight: Tensor, bias: Tensor) -> nn.Module:
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, bias=self.bias, dtype=weight.dtype, device=weight.device,
        )  # fmt: skip
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias:
                conv.bias.copy_(bias)
        return conv


def _probe(shape: Shape, dtype: torch.dtype, device=None) -> Tensor:
    """A fixed pseudo-random unit tensor (seed 0): a start vector of power iterations that is
    not orthogonal to the dominant singular vector of a convolution (a constant one nearly is
    when the dominant mode oscillates)."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(shape, generator=gen, dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


def _normalised(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(|u|, u / |u|)``, keeping ``v`` where ``u = 0``."""
    norm = u.norm()
    safe = norm.clamp(min=torch.finfo(u.dtype).tiny)
    return norm, torch.where(norm > 0, u / safe, v)
