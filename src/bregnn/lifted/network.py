r"""The lifted problem: parameters :math:`\Theta`, auxiliary variables :math:`X`, the energy.

A feed-forward network with affine layers :math:`z_l = A_l(x_{l-1}; \Theta_l)`,
:math:`\Theta_l = (W_l, b_l)`, :math:`l = 1..L` (dense: :math:`W_l x_{l-1} + b_l`;
convolutional, with average pooling and flattening composed in: see
:mod:`bregnn.lifted.layers`), hidden activations :math:`\rho_l = \operatorname{prox}_{\Psi_l}`
and an output activation :math:`\rho_L` (identity: MSE; softmax: cross-entropy) is lifted by
auxiliary variables :math:`X = (x_1, \dots, x_{L-1})` per sample (:math:`x_0` is the input,
:math:`y` the target; a hidden :math:`x_l` is a vector or a feature map ``(C, H, W)``).
With a penalty :math:`P = h + \Psi` (see :mod:`bregnn.lifted.penalties`), weights
:math:`\lambda_l` and regularisers :math:`R_l`, the energy of a batch (a sum over its
samples) is

.. math::

    E(\Theta, X) = \underbrace{\sum_{l<L} \lambda_l h_l(x_l, z_l)
        + \lambda_L B_{\Psi_L}(y, z_L)}_{H(\Theta, X)\ \text{smooth}}
      + \underbrace{\sum_{l<L} \lambda_l\Psi_l(x_l) + R_l(x_l)}_{G(X)\ \text{prox-friendly}},
    \qquad z_l = A_l(x_{l-1}; \Theta_l).

With :math:`g_l = \lambda_l \nabla_z h_l(x_l, z_l)` (Bregman: :math:`\lambda_l(\rho_l(z_l) - x_l)`)
and :math:`g_L = \lambda_L(\rho_L(z_L) - y)`, the gradients of :math:`H` are, in closed form,
the two adjoints of the affine maps applied to :math:`g`:

.. math::

    \nabla_{\Theta_l} H = (\partial_\Theta A_l)^* g_l,\qquad
    \nabla_{x_l} H = \lambda_l \nabla_x h_l(x_l, z_l) + K_{l+1}^\top g_{l+1};

for dense layers :math:`\nabla_{W_l} H = g_l^\top x_{l-1}`, :math:`\nabla_{b_l} H = \sum g_l`,
:math:`K_{l+1}^\top g_{l+1} = g_{l+1} W_{l+1}` (rows are samples); for convolutions the
weight-gradient and the transposed convolution. No derivative of an activation appears for
the Bregman penalty.

The input :math:`x_0` and the target :math:`y` are rows (``(N, features)``; a network on
images takes them flattened or as ``(N, C, H, W)``), the output :math:`z_L` is a row per
sample; ``sizes`` counts the features of every layer and ``shapes`` gives their per-sample
shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from bregnn.activations import Activation, Identity, Softmax
from bregnn.activations import activation as get_activation
from bregnn.lifted.layers import AffineLayer, AvgPool, Conv, Dense, Flatten, LinearOp
from bregnn.lifted.losses import bregman_loss
from bregnn.lifted.penalties import Penalty, Regulariser

__all__ = ["EnergyParts", "LiftedNetwork", "Params", "forward_objective", "one_hot"]

OUTPUTS = ("identity", "softmax")


class Params(NamedTuple):
    """Network parameters :math:`\\Theta`: weights ``(out, in)`` (convolutions:
    ``(C_out, C_in, kh, kw)``) and biases ``(out,)`` (``(0,)``: a layer without bias)."""

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]


class EnergyParts(NamedTuple):
    """Batch sums: ``coupling[l]`` (the full penalty :math:`\\lambda_l(h_l + \\Psi_l)` of
    hidden layer ``l+1``), ``regulariser`` (sum of the :math:`R_l`), ``loss``
    (:math:`\\lambda_L B_{\\Psi_L}(y, z_L)`), ``total``."""

    coupling: tuple[Tensor, ...]
    regulariser: Tensor
    loss: Tensor
    total: Tensor


def one_hot(labels: Tensor, n_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot targets of shape ``(n, n_classes)``."""
    return nn.functional.one_hot(labels, n_classes).to(dtype)


def _check_hidden_activation(act: Activation, layer: int) -> None:
    if not isinstance(act, Activation):
        raise ValueError(f"layer {layer}: activation {act!r} is not a proximal Activation")
    if float(act.lipschitz) > 1.0:
        raise ValueError(
            f"layer {layer}: activation {act.name!r} has no usable prox for lifted training "
            f"(rho is {act.lipschitz:.4g}-Lipschitz > 1, so Psi is not convex and prox_{{t Psi}} "
            "does not exist for large t); use a 1-Lipschitz proximal activation"
        )
    if isinstance(act, Softmax):
        raise ValueError(
            f"layer {layer}: softmax is only supported as the output activation "
            "(its prox of t*Psi exists for t <= 1 only)"
        )


TORCH_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.Identity: "identity",
    nn.Softmax: "softmax",
}
SUPPORTED_LAYERS = (
    "nn.Linear (with bias), nn.Conv2d (any stride, padding, dilation; bias or not; groups=1, "
    "zero padding), nn.AvgPool2d, nn.Flatten, and activations: "
    + ", ".join(f"nn.{c.__name__}" for c in TORCH_ACTIVATIONS)
    + " (Softmax as the output only) and every bregnn activation"
)
# why the common layers that are not affine maps are refused
_NOT_AFFINE = {
    "MaxPool": "max pooling is not linear (use nn.AvgPool2d)",
    "AdaptiveMaxPool": "max pooling is not linear (use nn.AvgPool2d)",
    "BatchNorm": "batch normalisation depends on the statistics of the batch, not an affine map "
    "of one sample's features",
    "Dropout": "dropout is random",
}


def _activation_of(layer: nn.Module) -> Activation | None:
    """The proximal activation a module computes, or ``None`` for other modules."""
    if isinstance(layer, Activation):
        return layer
    name = TORCH_ACTIVATIONS.get(type(layer))
    if name is None:
        return None
    if isinstance(layer, nn.Softmax) and layer.dim not in (-1, 1, None):
        raise ValueError(f"{layer}: lifted training needs the softmax over the features (dim=-1)")
    return get_activation(name)


def _unsupported(i: int, layer: nn.Module) -> ValueError:
    name = type(layer).__name__
    reason = next((r for k, r in _NOT_AFFINE.items() if name.startswith(k)), None)
    why = f": {reason}" if reason else ""
    return ValueError(
        f"layer {i} ({name}) is not supported by lifted training{why}; "
        f"supported: {SUPPORTED_LAYERS}"
    )


def _fixed_op(layer: nn.Module) -> LinearOp | None:
    """The fixed linear operator a module computes (``Flatten``, ``AvgPool2d``), else ``None``."""
    if isinstance(layer, nn.Flatten):
        if layer.start_dim != 1 or layer.end_dim != -1:
            raise ValueError(f"{layer}: lifted training supports nn.Flatten() (start_dim=1) only")
        return Flatten()
    if isinstance(layer, nn.AvgPool2d):
        return AvgPool.from_module(layer)
    return None


def forward_objective(network: LiftedNetwork, params: Params, x0: Tensor, y: Tensor) -> Tensor:
    r"""Per-sample :math:`\lambda_L B_{\Psi_L}(y, z_L) + \sum_l R_l(x_l)` at the forward
    pass: the lifted energy there (every Bregman coupling vanishes), i.e. the training
    objective of a network trained by backpropagation."""
    hidden, z_out = network.forward(params, x0)
    value = network.lambdas[-1] * bregman_loss(y, z_out, network.output)
    for x, reg in zip(hidden, network.regularisers, strict=True):
        if reg is not None:
            value = value + reg.value(x.flatten(1))
    return value


class LiftedNetwork:
    r"""Architecture and energy of a lifted feed-forward network (see the module doc).

    Args:
        sizes: layer widths ``(n_0, n_1, ..., n_L)`` of a dense network; ``n_0`` is the
            input dimension.
        activation: hidden activation(s): one name/object for all hidden layers, or one per
            hidden layer (``L - 1`` of them).
        output: ``"identity"`` (MSE, :math:`\tfrac12|z_L - y|^2`) or ``"softmax"``
            (:math:`B_{\text{softmax}}(y, z_L)`, a shifted cross-entropy).
        lambdas: penalty weights :math:`\lambda_1..\lambda_L` (default all 1).
        regularisers: ``{hidden layer index (1-based): Regulariser}``.
        layers: instead of ``sizes``, the affine maps
            (:class:`~bregnn.lifted.layers.Dense`, :class:`~bregnn.lifted.layers.Conv`), each
            taking the output shape of the one before; the last one gives vectors.

    Attributes:
        layers: the affine maps (``Dense`` layers for ``sizes``).
        sizes: number of features of the input and of every layer's output,
            ``(n_0, ..., n_L)``; for a feature map ``C * H * W``.
        shapes: per-sample shapes of the input and of every layer's output (``(n,)`` for
            vectors, ``(C, H, W)`` for feature maps): the shapes of :math:`x_0, x_1, \dots`.
        flatten: whether inputs are given as images and flattened to rows (see
            :meth:`from_module`).
    """

    def __init__(
        self,
        sizes: Sequence[int] | None = None,
        activation: str | Activation | Sequence[str | Activation] = "relu",
        output: str | Activation = "identity",
        lambdas: Sequence[float] | None = None,
        regularisers: dict[int, Regulariser] | None = None,
        *,
        layers: Sequence[AffineLayer] | None = None,
    ) -> None:
        if layers is None:
            if sizes is None:
                raise ValueError("give the layer sizes or the layers of the network")
            sizes = tuple(int(s) for s in sizes)
            if len(sizes) < 2 or any(s <= 0 for s in sizes):
                raise ValueError(f"layer sizes must be >= 2 positive integers; got {list(sizes)}")
            layers = tuple(Dense(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        else:
            if sizes is not None:
                raise ValueError("give the layer sizes or the layers of the network, not both")
            layers = tuple(layers)
            _check_layers(layers)
            sizes = (layers[0].n_in, *(layer.n_out for layer in layers))
        self.layers: tuple[AffineLayer, ...] = layers
        self.sizes = sizes
        self.shapes = (layers[0].in_shape, *(layer.out_shape for layer in layers))
        n_hidden = len(sizes) - 2
        if isinstance(activation, (str, nn.Module)):
            specs = [activation] * n_hidden
        else:
            specs = list(activation)
            if len(specs) != n_hidden:
                raise ValueError(
                    f"{len(specs)} activations given for {n_hidden} hidden layers {list(sizes)}"
                )
        acts = []
        for i, spec in enumerate(specs, start=1):
            if isinstance(spec, nn.Module) and not isinstance(spec, Activation):
                raise ValueError(
                    f"layer {i}: {type(spec).__name__} is not a proximal activation (no prox); "
                    "use bregnn.activations.activation(name) for a registered one"
                )
            act = get_activation(spec)
            _check_hidden_activation(act, i)
            acts.append(act)
        self.activations: tuple[Activation, ...] = tuple(acts)
        out = get_activation(output)
        if not isinstance(out, (Identity, Softmax)):
            raise ValueError(f"unknown output {output!r}; valid outputs: {list(OUTPUTS)}")
        self.output = out
        lambdas = (1.0,) * (len(sizes) - 1) if lambdas is None else tuple(map(float, lambdas))
        if len(lambdas) != len(sizes) - 1 or not all(lam > 0 for lam in lambdas):
            raise ValueError(
                f"lambdas must be {len(sizes) - 1} positive numbers (one per layer); got {lambdas}"
            )
        self.lambdas = lambdas
        regs: list[Regulariser | None] = [None] * n_hidden
        for layer, reg in (regularisers or {}).items():
            if not 1 <= layer <= n_hidden:
                raise ValueError(f"regulariser on layer {layer}: hidden layers are 1..{n_hidden}")
            reg.check(self.activations[layer - 1])
            regs[layer - 1] = reg
        self.regularisers = tuple(regs)
        self._template: nn.Module | None = None
        self.flatten = len(self.shapes[0]) > 1

    # -- basics --------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def convolutional(self) -> bool:
        """Whether any layer is more than a plain dense map (a convolution, a pooling or
        flattening operator, feature-map inputs)."""
        return not all(isinstance(layer, Dense) and layer._plain for layer in self.layers)

    def __repr__(self) -> str:
        def show(act: Activation) -> str:  # the parameters too: runs record this text
            params = ", ".join(f"{k}={v!r}" for k, v in act.params().items())
            return f"{act.name}({params})" if params else act.name

        acts = [show(a) for a in self.activations]
        out = show(self.output)
        if not self.convolutional:
            return f"LiftedNetwork(sizes={list(self.sizes)}, activations={acts}, output={out})"
        return f"LiftedNetwork(layers={list(self.layers)}, activations={acts}, output={out})"

    def init_params(
        self,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> Params:
        """Glorot-uniform weights :math:`U(\\pm\\sqrt{6/(fan_{in}+fan_{out})})` (dense:
        :math:`fan = n`; convolutions: channels times kernel area), zero biases. The numbers
        are drawn on the CPU (from ``generator``, a CPU generator) and then moved to
        ``device``, so a seed gives the same weights on every device."""
        weights, biases = [], []
        for layer in self.layers:
            w, b = layer.init_params(generator, dtype)
            weights.append(w.to(device) if device is not None else w)
            biases.append(b.to(device) if device is not None else b)
        return Params(tuple(weights), tuple(biases))

    def check_params(self, params: Params) -> None:
        """``ValueError`` if ``params`` do not match the layers."""
        for l, (layer, w, b) in enumerate(
            zip(self.layers, params.weights, params.biases, strict=True), start=1
        ):
            if not self.convolutional:
                if (
                    tuple(w.shape) != (self.sizes[l], self.sizes[l - 1])
                    or b.shape[0] != self.sizes[l]
                ):
                    raise ValueError(
                        f"layer {l}: weight {tuple(w.shape)} does not match {self.sizes}"
                    )
            else:
                layer.check_params(w, b, l)

    def check_data(self, x0: Tensor, y: Tensor) -> None:
        """``ValueError`` naming the sizes when the data do not fit the layers (inputs as
        rows, or of the input shape)."""
        rows = x0.ndim == 2 and x0.shape[1] == self.sizes[0]
        if not (rows or tuple(x0.shape[1:]) == self.shapes[0]):
            raise ValueError(
                f"input has {tuple(x0.shape)[1:]} features but the first layer size is "
                f"{self.sizes[0]} (layers {list(self.sizes)})"
            )
        if y.ndim != 2 or y.shape[1] != self.sizes[-1] or y.shape[0] != x0.shape[0]:
            raise ValueError(
                f"targets of shape {tuple(y.shape)} do not fit the last layer size "
                f"{self.sizes[-1]} (layers {list(self.sizes)}) and {x0.shape[0]} samples"
            )

    def input_view(self, x0: Tensor) -> Tensor:
        """The input ``x0`` (rows or of the input shape) as ``(N, *shapes[0])``."""
        return self.layers[0].as_input(x0)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, params: Params, x0: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """Plain forward pass: hidden outputs :math:`x_l = \\rho_l(z_l)` and :math:`z_L`."""
        hidden = []
        x = x0
        for layer, w, b, act in zip(
            self.layers[:-1], params.weights[:-1], params.biases[:-1], self.activations,
            strict=True,
        ):  # fmt: skip
            x = act.rho(layer.forward(w, b, x))
            hidden.append(x)
        return tuple(hidden), self.layers[-1].forward(params.weights[-1], params.biases[-1], x)

    def pre_activations(self, params: Params, x0: Tensor, aux: Sequence[Tensor]) -> list[Tensor]:
        """:math:`z_l = A_l(x_{l-1}; \\Theta_l)` for :math:`l = 1..L` from the auxiliary
        inputs."""
        inputs = (x0, *aux)
        return [
            layer.forward(w, b, x)
            for layer, x, w, b in zip(
                self.layers, inputs, params.weights, params.biases, strict=True
            )
        ]

    @classmethod
    def from_module(
        cls, module: nn.Module, input_shape: Sequence[int] | None = None
    ) -> LiftedNetwork:
        """The lifted network of an ``nn.Sequential`` of affine layers (``nn.Linear``,
        ``nn.Conv2d``) separated by activation modules (torch's ``ReLU``, ``Sigmoid``,
        ``Tanh``, ``Identity``, ``Softmax`` as the output, and every bregnn activation), with
        ``nn.AvgPool2d`` and ``nn.Flatten`` anywhere between them; a dense network may start
        with an ``nn.Flatten`` (its inputs are then flattened). Two affine layers in a row
        have an identity activation between them; no output activation means the identity
        (MSE) output. :meth:`to_module` returns a copy of ``module`` (same layer classes)
        with the trained weights and :meth:`params_from_module` reads its current weights.

        Average pooling and flattening are fixed linear operators composed into the affine
        map next to them (see :mod:`bregnn.lifted.layers`): into the following map when they
        come after an activation, into the preceding one when they come between an affine
        map and its activation. A convolution without bias keeps a bias of shape ``(0,)``:
        fixed at zero. If the output layer gives feature maps, the lifted output is their
        flattened rows.

        Args:
            module: the model.
            input_shape: the per-sample input shape ``(C, H, W)``; needed when the network
                has convolutions or pooling (:func:`~bregnn.lifted.fit.fit` passes the shape
                of its data), ignored otherwise.

        Raises ``ValueError`` naming an unsupported layer and the supported kinds."""
        layers = list(module) if isinstance(module, nn.Sequential) else [module]
        flatten = bool(layers) and isinstance(layers[0], nn.Flatten)
        spatial = any(isinstance(m, (nn.Conv2d, nn.AvgPool2d)) for m in layers)
        if not spatial and not any(isinstance(m, nn.Flatten) for m in layers[1:]):
            return cls._from_dense_module(module, layers[int(flatten) :], flatten)
        if input_shape is None:
            if spatial:
                raise ValueError(
                    "a network with nn.Conv2d or nn.AvgPool2d layers needs its per-sample "
                    "input_shape (C, H, W) (fit passes the shape of its data)"
                )
            first = next((m for m in layers if isinstance(m, nn.Linear)), None)
            input_shape = (first.in_features,) if first is not None else (0,)
        return cls._from_spatial_module(module, layers, tuple(int(s) for s in input_shape))

    @classmethod
    def _from_dense_module(
        cls, module: nn.Module, layers: list[nn.Module], flatten: bool
    ) -> LiftedNetwork:
        linears: list[nn.Linear] = []
        acts: list[Activation | None] = []
        for i, layer in enumerate(layers, start=int(flatten)):
            if isinstance(layer, nn.Linear):
                if layer.bias is None:
                    raise ValueError(
                        f"layer {i} ({layer}): lifted training needs a bias; "
                        "use nn.Linear(..., bias=True)"
                    )
                if linears and len(acts) < len(linears):
                    acts.append(get_activation("identity"))
                linears.append(layer)
                continue
            act = _activation_of(layer)
            if act is None:
                raise _unsupported(i, layer)
            if len(acts) >= len(linears):
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) follows another activation or starts "
                    "the network; put an nn.Linear before every activation"
                )
            acts.append(act)
        if not linears:
            raise ValueError(
                f"no nn.Linear layer in {type(module).__name__}; supported: {SUPPORTED_LAYERS}"
            )
        output = acts.pop() if len(acts) == len(linears) else get_activation("identity")
        for l, (prev, nxt) in enumerate(zip(linears[:-1], linears[1:], strict=True), start=1):
            if prev.out_features != nxt.in_features:
                raise ValueError(
                    f"linear layer {l} has {prev.out_features} outputs but linear layer {l + 1} "
                    f"takes {nxt.in_features} inputs"
                )
        sizes = [linears[0].in_features, *(lin.out_features for lin in linears)]
        net = cls(sizes, acts, output=output)
        net._template = module
        net.flatten = flatten
        return net

    @classmethod
    def _from_spatial_module(
        cls, module: nn.Module, layers: list[nn.Module], input_shape: tuple[int, ...]
    ) -> LiftedNetwork:
        affine: list[AffineLayer] = []
        acts: list[Activation] = []
        pending: list[LinearOp] = []  # fixed operators since the last affine map/activation
        shape = input_shape  # per-sample shape of the data at this point

        def close_post() -> None:  # operators between an affine map and its activation
            nonlocal pending
            if pending:
                last = affine[-1]
                affine[-1] = _rebuild(last, post=(*last.post, *pending))
                pending = []

        for i, layer in enumerate(layers):
            op = _fixed_op(layer)
            if op is not None:
                try:
                    shape = op.out_shape(shape)
                except ValueError as err:
                    raise ValueError(f"layer {i} ({type(layer).__name__}): {err}") from None
                pending.append(op)
                continue
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                if affine and len(acts) < len(affine):
                    close_post()
                    acts.append(get_activation("identity"))
                in_shape = affine[-1].out_shape if affine else input_shape
                try:
                    new = _affine_of(layer, in_shape, tuple(pending))
                except ValueError as err:
                    raise ValueError(f"layer {i} ({type(layer).__name__}): {err}") from None
                pending = []
                affine.append(new)
                shape = new.out_shape
                continue
            act = _activation_of(layer)
            if act is None:
                raise _unsupported(i, layer)
            if len(acts) >= len(affine):
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) follows another activation or starts "
                    "the network; put an nn.Linear or nn.Conv2d before every activation"
                )
            close_post()
            acts.append(act)
        if not affine:
            raise ValueError(
                f"no nn.Linear or nn.Conv2d layer in {type(module).__name__}; "
                f"supported: {SUPPORTED_LAYERS}"
            )
        if len(acts) == len(affine):
            if pending:
                raise ValueError(
                    f"{type(pending[0]).__name__} after the output activation is not supported; "
                    "end the network with an affine layer and its activation"
                )
            output = acts.pop()
        else:
            close_post()
            output = get_activation("identity")
        if len(affine[-1].out_shape) > 1:
            if isinstance(output, Softmax):
                raise ValueError(
                    "a softmax output over feature maps is not supported: flatten them and "
                    "end with nn.Linear"
                )
            affine[-1] = _rebuild(affine[-1], post=(*affine[-1].post, Flatten()))
        net = cls(layers=affine, activation=acts, output=output)
        net._template = module
        return net

    def params_from_module(self, module: nn.Module | None = None) -> Params:
        """The weights and biases of the ``nn.Linear`` and ``nn.Conv2d`` layers of
        ``module`` (default: the module this network was made from), as detached copies (a
        layer without bias gets an empty one)."""
        module = module if module is not None else self._template
        if module is None:
            raise ValueError("this network was not made by from_module; pass the module")
        cores = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        params = Params(
            tuple(m.weight.detach().clone() for m in cores),
            tuple(
                m.bias.detach().clone() if m.bias is not None else m.weight.new_zeros(0).detach()
                for m in cores
            ),
        )
        self.check_params(params)
        return params

    def to_module(self, params: Params) -> nn.Sequential:
        """An ``nn.Sequential`` with these weights whose forward pass is this network's:
        a copy of the module given to :meth:`from_module` (same layer classes), else
        ``nn.Linear`` / ``nn.Conv2d`` (with ``nn.AvgPool2d``, ``nn.Flatten``) and bregnn
        activation modules."""
        self.check_params(params)
        if self._template is not None:
            model = copy.deepcopy(self._template)
            cores = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
            with torch.no_grad():
                for core, w, b in zip(cores, params.weights, params.biases, strict=True):
                    core.weight.copy_(w)
                    if core.bias is not None:
                        core.bias.copy_(b)
            return model
        modules: list[nn.Module] = []
        for l, (layer, w, b) in enumerate(
            zip(self.layers, params.weights, params.biases, strict=True)
        ):
            modules.extend(layer.modules(w, b))
            if l < len(self.activations):
                modules.append(copy.deepcopy(self.activations[l]))
        if isinstance(self.output, Softmax):
            modules.append(Softmax())
        return nn.Sequential(*modules)

    # -- energy -------------------------------------------------------------------------------
    def energy(
        self, params: Params, x0: Tensor, aux: Sequence[Tensor], y: Tensor, penalty: Penalty
    ) -> EnergyParts:
        """:math:`E(\\Theta, X)` summed over the batch, split into its parts."""
        zs = self.pre_activations(params, x0, aux)
        return self.energy_from(zs, aux, y, penalty)

    def energy_from(
        self, zs: Sequence[Tensor], aux: Sequence[Tensor], y: Tensor, penalty: Penalty
    ) -> EnergyParts:
        """The energy from precomputed pre-activations ``zs`` (see :meth:`pre_activations`)."""
        coupling = []
        reg_total = zs[-1].new_zeros(())
        for l, (x, z, act) in enumerate(zip(aux, zs, self.activations, strict=False)):
            value = penalty.value(x, z, act)
            if penalty.uses_psi:
                psi = act.psi(x)
                value = value + (psi.sum(-1) if act.separable else psi)
            coupling.append(self.lambdas[l] * value.sum())
            if self.regularisers[l] is not None:
                reg_total = reg_total + self.regularisers[l].value(x).sum()
        loss = self.lambdas[-1] * bregman_loss(y, zs[-1], self.output).sum()
        total = loss + reg_total + sum(coupling, zs[-1].new_zeros(()))
        return EnergyParts(tuple(coupling), reg_total, loss, total)

    def smooth_grads(
        self,
        params: Params,
        x0: Tensor,
        aux: Sequence[Tensor],
        y: Tensor,
        penalty: Penalty,
        *,
        parts: str = "all",
    ) -> tuple[Params | None, tuple[Tensor, ...] | None, list[Tensor]]:
        """Closed-form :math:`(\\nabla_\\Theta H, \\nabla_X H)` and the pre-activations;
        ``parts="params"`` or ``"aux"`` computes only that gradient (the other is ``None``)."""
        if parts not in ("all", "params", "aux"):
            raise ValueError(f"parts must be 'all', 'params' or 'aux'; got {parts!r}")
        zs = self.pre_activations(params, x0, aux)
        inputs = (x0, *aux)
        g_z: list[Tensor] = []
        g_x_own: list[Tensor] = []
        for l, (x, z, act) in enumerate(zip(aux, zs, self.activations, strict=False)):
            gx, gz = penalty.grads(x, z, act)
            lam = self.lambdas[l]
            g_x_own.append(gx if lam == 1.0 else lam * gx)
            g_z.append(gz if lam == 1.0 else lam * gz)
        g_out = self.output.rho(zs[-1]) - y
        g_z.append(g_out if self.lambdas[-1] == 1.0 else self.lambdas[-1] * g_out)
        grad = g_aux = None
        if parts != "aux":
            pairs = [
                layer.param_grads(g, x)
                for layer, g, x in zip(self.layers, g_z, inputs, strict=True)
            ]
            grad = Params(tuple(g for g, _ in pairs), tuple(g for _, g in pairs))
        if parts != "params":
            g_aux = tuple(
                layer.input_grad(g_next, w_next, add=own)
                for own, g_next, w_next, layer in zip(
                    g_x_own, g_z[1:], params.weights[1:], self.layers[1:], strict=False
                )
            )
        return grad, g_aux, zs

    def prox_g(self, aux: Sequence[Tensor], steps: Sequence[Tensor | float], penalty: Penalty):
        """Per hidden layer :math:`x_l \\mapsto
        \\operatorname{prox}_{t_l(\\lambda_l\\Psi_l + R_l)}(x_l)` (see :meth:`prox_layer`)."""
        return tuple(
            self.prox_layer(l, v, t, penalty)
            for l, (v, t) in enumerate(zip(aux, steps, strict=True))
        )

    def prox_layer(self, l: int, v: Tensor, t: Tensor | float, penalty: Penalty) -> Tensor:
        """:math:`\\operatorname{prox}_{t(\\lambda\\Psi + R)}(v)` of hidden layer ``l``
        (0-based)."""
        act, reg = self.activations[l], self.regularisers[l]
        t_psi = t * self.lambdas[l] if penalty.uses_psi else 0.0
        if reg is not None:
            return reg.prox(v, t, act, t_psi)
        if penalty.uses_psi:
            return act.prox(v, t_psi)
        return v

    # -- diagnostics --------------------------------------------------------------------------
    def consistency(self, zs: Sequence[Tensor], aux: Sequence[Tensor]) -> list[Tensor]:
        """Mean over samples of :math:`|x_l - \\rho_l(z_l)|` per hidden layer."""
        return [
            (x - act.rho(z)).flatten(1).norm(dim=1).mean()
            for x, z, act in zip(aux, zs, self.activations, strict=False)
        ]

    def linear_fraction(self, zs: Sequence[Tensor], tol: float = 1e-6) -> list[Tensor]:
        r"""Per hidden layer, the fraction of (sample, unit) pairs on which the unit acts
        linearly in the forward pass: :math:`\rho(z) = z` (for ReLU: :math:`z \ge 0`), up to
        ``tol * (1 + |z|)``."""
        return [
            ((act.rho(z) - z).abs() <= tol * (1 + z.abs())).to(z.dtype).mean()
            for z, act in zip(zs, self.activations, strict=False)
        ]

    @torch.no_grad()
    def evaluate(self, params: Params, x0: Tensor, labels: Tensor, chunk: int = 20000) -> dict:
        """Accuracy (plain forward pass) and per-layer linear fractions on ``(x0, labels)``
        (in chunks of ``chunk`` samples; for feature maps fewer, so that a chunk's largest
        layer holds at most :math:`2^{24}` numbers)."""
        if self.convolutional:
            chunk = max(1, min(chunk, 2**24 // max(self.sizes)))
        correct = 0
        linear = torch.zeros(len(self.activations), dtype=torch.float64, device=x0.device)
        for start in range(0, x0.shape[0], chunk):
            xb = x0[start : start + chunk]
            hidden, out = self.forward(params, xb)
            correct += int((out.argmax(-1) == labels[start : start + chunk]).sum())
            fr = self.linear_fraction(self.pre_activations(params, xb, hidden))
            if fr:
                linear += torch.stack(fr).double() * xb.shape[0]
        n = x0.shape[0]
        return {"accuracy": correct / n, "linear": (linear / n).tolist()}


def _check_layers(layers: Sequence[AffineLayer]) -> None:
    """The layers are affine maps, each taking the output shape of the one before, the last
    giving vectors."""
    if not layers or not all(isinstance(layer, AffineLayer) for layer in layers):
        raise ValueError(
            f"layers must be a non-empty sequence of Dense / Conv layers; got {list(layers)}"
        )
    for l, (prev, nxt) in enumerate(zip(layers[:-1], layers[1:], strict=True), start=1):
        if prev.out_shape != nxt.in_shape:
            raise ValueError(
                f"layer {l} gives outputs of shape {prev.out_shape} but layer {l + 1} takes "
                f"inputs of shape {nxt.in_shape}"
            )
    if len(layers[-1].out_shape) != 1:
        raise ValueError(
            f"the output layer gives feature maps of shape {layers[-1].out_shape}; give it "
            "post=(Flatten(),) (the lifted output is a row per sample)"
        )


def _affine_of(layer: nn.Module, in_shape: tuple[int, ...], pre: tuple) -> AffineLayer:
    """The :class:`AffineLayer` of an ``nn.Linear`` / ``nn.Conv2d`` on inputs of ``in_shape``."""
    if isinstance(layer, nn.Conv2d):
        return Conv.from_module(layer, in_shape, pre)
    if layer.bias is None:
        raise ValueError(f"{layer}: lifted training needs a bias; use nn.Linear(..., bias=True)")
    dense = Dense(in_shape, layer.out_features, pre=pre)
    if dense.in_features != layer.in_features:
        raise ValueError(
            f"{layer} takes {layer.in_features} inputs but receives {dense.in_features} "
            f"features (shape {in_shape})"
        )
    return dense


def _rebuild(layer: AffineLayer, post: tuple) -> AffineLayer:
    """``layer`` with other ``post`` operators."""
    if isinstance(layer, Conv):
        return Conv(
            layer.in_shape, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
            layer.dilation, layer.bias, pre=layer.pre, post=post,
        )  # fmt: skip
    return Dense(layer.in_shape, layer.out_features, pre=layer.pre, post=post)
