r"""The lifted problem: parameters :math:`\Theta`, auxiliary variables :math:`X`, the energy.

A feed-forward network with layers :math:`(W_l, b_l)`, :math:`l = 1..L`, hidden
activations :math:`\rho_l = \operatorname{prox}_{\Psi_l}` and an output activation
:math:`\rho_L` (identity: MSE; softmax: cross-entropy) is lifted by auxiliary variables
:math:`X = (x_1, \dots, x_{L-1})` per sample (:math:`x_0` is the input, :math:`y` the
target). With a penalty :math:`P = h + \Psi` (see :mod:`bregnn.lifted.penalties`),
weights :math:`\lambda_l` and regularisers :math:`R_l`, the energy of a batch (a sum over
its samples) is

.. math::

    E(\Theta, X) = \underbrace{\sum_{l<L} \lambda_l h_l(x_l, z_l)
        + \lambda_L B_{\Psi_L}(y, z_L)}_{H(\Theta, X)\ \text{smooth}}
      + \underbrace{\sum_{l<L} \lambda_l\Psi_l(x_l) + R_l(x_l)}_{G(X)\ \text{prox-friendly}},
    \qquad z_l = W_l x_{l-1} + b_l.

With :math:`g_l = \lambda_l \nabla_z h_l(x_l, z_l)` (Bregman: :math:`\lambda_l(\rho_l(z_l) - x_l)`)
and :math:`g_L = \lambda_L(\rho_L(z_L) - y)`, the gradients of :math:`H` are, in closed form,

.. math::

    \nabla_{W_l} H = g_l^\top x_{l-1},\quad \nabla_{b_l} H = \textstyle\sum g_l,\quad
    \nabla_{x_l} H = \lambda_l \nabla_x h_l(x_l, z_l) + g_{l+1} W_{l+1}

(rows are samples). No derivative of an activation appears for the Bregman penalty.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from bregnn.activations import Activation, Identity, Softmax
from bregnn.activations import activation as get_activation
from bregnn.lifted.losses import bregman_loss
from bregnn.lifted.penalties import Penalty, Regulariser

__all__ = ["EnergyParts", "LiftedNetwork", "Params", "forward_objective", "one_hot"]

OUTPUTS = ("identity", "softmax")


class Params(NamedTuple):
    """Network parameters :math:`\\Theta`: weights ``(out, in)`` and biases ``(out,)``."""

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
    "nn.Linear (with bias), a leading nn.Flatten, and activations: "
    + ", ".join(f"nn.{c.__name__}" for c in TORCH_ACTIVATIONS)
    + " (Softmax as the output only) and every bregnn activation"
)


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


def forward_objective(network: LiftedNetwork, params: Params, x0: Tensor, y: Tensor) -> Tensor:
    r"""Per-sample :math:`\lambda_L B_{\Psi_L}(y, z_L) + \sum_l R_l(x_l)` at the forward
    pass: the lifted energy there (every Bregman coupling vanishes), i.e. the training
    objective of a network trained by backpropagation."""
    hidden, z_out = network.forward(params, x0)
    value = network.lambdas[-1] * bregman_loss(y, z_out, network.output)
    for x, reg in zip(hidden, network.regularisers, strict=True):
        if reg is not None:
            value = value + reg.value(x)
    return value


class LiftedNetwork:
    r"""Architecture and energy of a lifted feed-forward network (see the module doc).

    Args:
        sizes: layer widths ``(n_0, n_1, ..., n_L)``; ``n_0`` is the input dimension.
        activation: hidden activation(s): one name/object for all hidden layers, or one per
            hidden layer (``L - 1`` of them).
        output: ``"identity"`` (MSE, :math:`\tfrac12|z_L - y|^2`) or ``"softmax"``
            (:math:`B_{\text{softmax}}(y, z_L)`, a shifted cross-entropy).
        lambdas: penalty weights :math:`\lambda_1..\lambda_L` (default all 1).
        regularisers: ``{hidden layer index (1-based): Regulariser}``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation | Sequence[str | Activation] = "relu",
        output: str | Activation = "identity",
        lambdas: Sequence[float] | None = None,
        regularisers: dict[int, Regulariser] | None = None,
    ) -> None:
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or any(s <= 0 for s in sizes):
            raise ValueError(f"layer sizes must be >= 2 positive integers; got {list(sizes)}")
        self.sizes = sizes
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
        self.flatten = False

    # -- basics --------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def __repr__(self) -> str:
        acts = [a.name for a in self.activations]
        out = self.output.name
        return f"LiftedNetwork(sizes={list(self.sizes)}, activations={acts}, output={out})"

    def init_params(
        self, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Params:
        """Glorot-uniform weights :math:`U(\\pm\\sqrt{6/(n_{in}+n_{out})})`, zero biases."""
        weights, biases = [], []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            bound = math.sqrt(6.0 / (n_in + n_out))
            w = torch.rand(n_out, n_in, generator=generator, dtype=dtype) * (2 * bound) - bound
            weights.append(w)
            biases.append(torch.zeros(n_out, dtype=dtype))
        return Params(tuple(weights), tuple(biases))

    def check_params(self, params: Params) -> None:
        """``ValueError`` if ``params`` do not match :attr:`sizes`."""
        for l, (w, b) in enumerate(zip(params.weights, params.biases, strict=True), start=1):
            if tuple(w.shape) != (self.sizes[l], self.sizes[l - 1]) or b.shape[0] != self.sizes[l]:
                raise ValueError(f"layer {l}: weight {tuple(w.shape)} does not match {self.sizes}")

    def check_data(self, x0: Tensor, y: Tensor) -> None:
        """``ValueError`` naming the sizes when the data do not fit the layers."""
        if x0.ndim != 2 or x0.shape[1] != self.sizes[0]:
            raise ValueError(
                f"input has {tuple(x0.shape)[1:]} features but the first layer size is "
                f"{self.sizes[0]} (layers {list(self.sizes)})"
            )
        if y.ndim != 2 or y.shape[1] != self.sizes[-1] or y.shape[0] != x0.shape[0]:
            raise ValueError(
                f"targets of shape {tuple(y.shape)} do not fit the last layer size "
                f"{self.sizes[-1]} (layers {list(self.sizes)}) and {x0.shape[0]} samples"
            )

    # -- forward ------------------------------------------------------------------------------
    def forward(self, params: Params, x0: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """Plain forward pass: hidden outputs :math:`x_l = \\rho_l(z_l)` and :math:`z_L`."""
        hidden = []
        x = x0
        for w, b, act in zip(
            params.weights[:-1], params.biases[:-1], self.activations, strict=True
        ):
            x = act.rho(torch.addmm(b, x, w.T))
            hidden.append(x)
        return tuple(hidden), torch.addmm(params.biases[-1], x, params.weights[-1].T)

    def pre_activations(self, params: Params, x0: Tensor, aux: Sequence[Tensor]) -> list[Tensor]:
        """:math:`z_l = W_l x_{l-1} + b_l` for :math:`l = 1..L` from the auxiliary inputs."""
        inputs = (x0, *aux)
        return [
            torch.addmm(b, x, w.T)
            for x, w, b in zip(inputs, params.weights, params.biases, strict=True)
        ]

    @classmethod
    def from_module(cls, module: nn.Module) -> LiftedNetwork:
        """The lifted network of an ``nn.Sequential`` of ``nn.Linear`` layers separated by
        activation modules (torch's ``ReLU``, ``Sigmoid``, ``Tanh``, ``Identity``,
        ``Softmax`` as the output, and every bregnn activation), optionally led by an
        ``nn.Flatten``. Two ``Linear`` layers in a row have an identity activation between
        them; no output activation means the identity (MSE) output. :meth:`to_module`
        returns a copy of ``module`` (same layer classes) with the trained weights and
        :meth:`params_from_module` reads its current weights.

        Raises ``ValueError`` naming an unsupported layer and the supported kinds."""
        layers = list(module) if isinstance(module, nn.Sequential) else [module]
        flatten = bool(layers) and isinstance(layers[0], nn.Flatten)
        if flatten:
            layers = layers[1:]
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
                raise ValueError(
                    f"layer {i} ({type(layer).__name__}) is not supported by lifted training; "
                    f"supported: {SUPPORTED_LAYERS}"
                )
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

    def params_from_module(self, module: nn.Module | None = None) -> Params:
        """The weights and biases of the ``nn.Linear`` layers of ``module`` (default: the
        module this network was made from), as detached copies."""
        module = module if module is not None else self._template
        if module is None:
            raise ValueError("this network was not made by from_module; pass the module")
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        params = Params(
            tuple(lin.weight.detach().clone() for lin in linears),
            tuple(lin.bias.detach().clone() for lin in linears),
        )
        self.check_params(params)
        return params

    def to_module(self, params: Params) -> nn.Sequential:
        """An ``nn.Sequential`` with these weights whose forward pass is this network's:
        a copy of the module given to :meth:`from_module` (same layer classes), else
        ``nn.Linear`` and bregnn activation modules."""
        self.check_params(params)
        if self._template is not None:
            model = copy.deepcopy(self._template)
            linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
            with torch.no_grad():
                for lin, w, b in zip(linears, params.weights, params.biases, strict=True):
                    lin.weight.copy_(w)
                    lin.bias.copy_(b)
            return model
        layers: list[nn.Module] = []
        for l, (w, b) in enumerate(zip(params.weights, params.biases, strict=True)):
            lin = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype, device=w.device)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            layers.append(lin)
            if l < len(self.activations):
                layers.append(copy.deepcopy(self.activations[l]))
        if isinstance(self.output, Softmax):
            layers.append(Softmax())
        return nn.Sequential(*layers)

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
        self, params: Params, x0: Tensor, aux: Sequence[Tensor], y: Tensor, penalty: Penalty
    ) -> tuple[Params, tuple[Tensor, ...], list[Tensor]]:
        """Closed-form :math:`(\\nabla_\\Theta H, \\nabla_X H)` and the pre-activations."""
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
        g_w = tuple(g.T @ x for g, x in zip(g_z, inputs, strict=True))
        g_b = tuple(g.sum(0) for g in g_z)
        g_aux = tuple(
            torch.addmm(own, g_next, w_next)
            for own, g_next, w_next in zip(g_x_own, g_z[1:], params.weights[1:], strict=False)
        )
        return Params(g_w, g_b), g_aux, zs

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
        """Mean over samples of :math:`|x_l - \\rho_l(W_l x_{l-1} + b_l)|` per hidden layer."""
        return [
            (x - act.rho(z)).norm(dim=-1).mean()
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
        """Accuracy (plain forward pass) and per-layer linear fractions on ``(x0, labels)``."""
        correct = 0
        linear = torch.zeros(len(self.activations), dtype=torch.float64)
        for start in range(0, x0.shape[0], chunk):
            xb = x0[start : start + chunk]
            hidden, out = self.forward(params, xb)
            correct += int((out.argmax(-1) == labels[start : start + chunk]).sum())
            fr = self.linear_fraction(self.pre_activations(params, xb, hidden))
            if fr:
                linear += torch.stack(fr).double() * xb.shape[0]
        n = x0.shape[0]
        return {"accuracy": correct / n, "linear": (linear / n).tolist()}
