r"""Residual lifted networks (the paper's outlook): :math:`B_\Psi(x_l - x_{l-1}, W_l x_{l-1} + b_l)`.

A residual hidden layer computes :math:`x_l = x_{l-1} + \rho_l(W_l x_{l-1} + b_l)`; its lifted
coupling penalises the *increment* :math:`d_l = x_l - x_{l-1}`:

.. math::

    E(\Theta, D) = \sum_{l<L}\lambda_l B_{\Psi_l}(d_l, z_l) + R_l(d_l)
      + \lambda_L B_{\Psi_L}(y, z_L), \qquad z_l = W_l x_{l-1} + b_l,\quad
      x_l = s_l x_{l-1} + d_l,

with :math:`s_l = 1` where layer :math:`l` has a skip connection (its input and output shapes
agree) and :math:`s_l = 0` otherwise. The auxiliary variables are the increments
:math:`D = (d_1, \dots, d_{L-1})`: then :math:`\Psi_l(d_l)` stays separable (its prox is the
activation's) and :math:`H` is smooth in :math:`D`. With
:math:`g_l = \lambda_l\nabla_z h(d_l, z_l)` (Bregman: :math:`\lambda_l(\rho_l(z_l) - d_l)`),
:math:`g_L = \lambda_L(\rho_L(z_L) - y)`, the gradients are, in closed form,

.. math::

    \nabla_{W_l}H = g_l^\top x_{l-1},\qquad
    \nabla_{d_l}H = \lambda_l\nabla_x h(d_l, z_l) + a_l,\qquad
    a_{L-1} = g_L W_L,\quad a_l = g_{l+1}W_{l+1} + s_{l+1}a_{l+1},

a backward recursion through the skip connections only: still no derivative of an activation.
With convolutional layers (``layers=`` of :mod:`bregnn.lifted.layers`) the same holds with
:math:`W_l x` read as the layer's affine map and :math:`g W` as its adjoint (a transposed
convolution); a skip connection joins every convolution that keeps the feature-map shape
(channels and size), as in a residual block of a CNN.
Every registered solver that works through ``LiftedNetwork``'s interface (``forward``,
``pre_activations``, ``smooth_grads``, ``prox_g``, ``energy``) trains this network unchanged
(``lbn-s``, ``lbn-d``, ``linbreg``, ``constrained``); the block solvers (``bcd``, ``admm``)
refuse it, since every :math:`d_l` enters all later layers. The core's step sizes for
:math:`X` use only the next layer's weights, which under-estimates the Lipschitz constant
of :math:`\nabla_{d_l}H` here; use ``step_scale <= 0.5``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor, nn

from bregnn.activations import Activation, Softmax
from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.penalties import Penalty

__all__ = ["ResidualLiftedNetwork", "ResidualMLP"]


class ResidualMLP(nn.Module):
    """The plain forward model of a :class:`ResidualLiftedNetwork`:
    :math:`x_l = s_l x_{l-1} + \\rho_l(W_l x_{l-1} + b_l)`, then the output layer
    (``linears`` may be any affine modules, e.g. ``nn.Conv2d`` or an ``nn.Sequential`` of a
    convolution and its pooling)."""

    def __init__(
        self, linears: Sequence[nn.Module], activations: Sequence[nn.Module], skips: Sequence[bool]
    ) -> None:
        super().__init__()
        if len(linears) != len(activations) + 1 or len(skips) != len(activations):
            raise ValueError("ResidualMLP needs one more linear layer than activations and skips")
        self.linears = nn.ModuleList(linears)
        self.acts = nn.ModuleList(activations)
        self.skips = tuple(bool(s) for s in skips)

    def forward(self, x: Tensor) -> Tensor:
        for lin, act, skip in zip(self.linears, self.acts, self.skips, strict=False):
            d = act(lin(x))
            x = x + d if skip else d
        return self.linears[-1](x)


class ResidualLiftedNetwork(LiftedNetwork):
    """A lifted network with skip connections wherever a hidden layer keeps its width
    (see the module doc). Same arguments as :class:`LiftedNetwork`; ``aux`` are increments."""

    residual = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skips: tuple[bool, ...] = tuple(
            self.shapes[l - 1] == self.shapes[l] for l in range(1, len(self.sizes) - 1)
        )
        if not any(self.skips):
            raise ValueError(
                f"no hidden layer of {list(self.sizes)} keeps its width, so no skip connection "
                "exists; use LiftedNetwork"
            )

    def __repr__(self) -> str:
        return super().__repr__().replace("LiftedNetwork", "ResidualLiftedNetwork", 1)

    def states(self, x0: Tensor, aux: Sequence[Tensor]) -> list[Tensor]:
        """Layer outputs :math:`x_1..x_{L-1}` from the increments."""
        xs, x = [], self.input_view(x0)
        for d, skip in zip(aux, self.skips, strict=True):
            x = x + d if skip else d
            xs.append(x)
        return xs

    def forward(self, params: Params, x0: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """Increments :math:`d_l = \\rho_l(z_l)` of the plain forward pass and :math:`z_L`."""
        incs, x = [], self.input_view(x0)
        for layer, w, b, act, skip in zip(
            self.layers[:-1], params.weights[:-1], params.biases[:-1], self.activations,
            self.skips, strict=True,
        ):  # fmt: skip
            d = act.rho(layer.forward(w, b, x))
            incs.append(d)
            x = x + d if skip else d
        return tuple(incs), self.layers[-1].forward(params.weights[-1], params.biases[-1], x)

    def pre_activations(self, params: Params, x0: Tensor, aux: Sequence[Tensor]) -> list[Tensor]:
        inputs = (x0, *self.states(x0, aux))
        return [
            layer.forward(w, b, x)
            for layer, x, w, b in zip(
                self.layers, inputs, params.weights, params.biases, strict=True
            )
        ]

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
        """Closed-form gradients of :math:`H` in :math:`(\\Theta, D)` (see the module doc);
        ``parts`` as for :meth:`LiftedNetwork.smooth_grads`."""
        if parts not in ("all", "params", "aux"):
            raise ValueError(f"parts must be 'all', 'params' or 'aux'; got {parts!r}")
        inputs = (x0, *self.states(x0, aux))
        zs = [
            layer.forward(w, b, x)
            for layer, x, w, b in zip(
                self.layers, inputs, params.weights, params.biases, strict=True
            )
        ]
        g_z, own = [], []
        for l, (d, z, act) in enumerate(zip(aux, zs, self.activations, strict=False)):
            gx, gz = penalty.grads(d, z, act)
            own.append(self.lambdas[l] * gx)
            g_z.append(self.lambdas[l] * gz)
        g_z.append(self.lambdas[-1] * (self.output.rho(zs[-1]) - y))
        grad = None
        if parts != "aux":
            pairs = [
                layer.param_grads(g, x)
                for layer, g, x in zip(self.layers, g_z, inputs, strict=True)
            ]
            grad = Params(tuple(g for g, _ in pairs), tuple(g for _, g in pairs))
        if parts == "params":
            return grad, None, zs
        n_hidden = len(aux)
        downstream: list[Tensor] = [zs[0]] * n_hidden
        acc = self.layers[-1].input_grad(g_z[-1], params.weights[-1])
        downstream[-1] = acc
        for l in range(n_hidden - 2, -1, -1):
            nxt = self.layers[l + 1].input_grad(g_z[l + 1], params.weights[l + 1])
            acc = nxt + acc if self.skips[l + 1] else nxt
            downstream[l] = acc
        g_aux = tuple(o + a for o, a in zip(own, downstream, strict=True))
        return grad, g_aux, zs

    def to_module(self, params: Params) -> nn.Module:
        """A :class:`ResidualMLP` with these weights (each affine map an ``nn.Linear`` /
        ``nn.Conv2d``, or an ``nn.Sequential`` of it with its pooling and flattening); a
        network on images takes them as ``(N, C, H, W)``."""
        self.check_params(params)
        linears = []
        for layer, w, b in zip(self.layers, params.weights, params.biases, strict=True):
            modules = layer.modules(w, b)
            linears.append(modules[0] if len(modules) == 1 else nn.Sequential(*modules))
        acts: list[Activation] = [copy.deepcopy(a) for a in self.activations]
        model: nn.Module = ResidualMLP(linears, acts, self.skips)
        if isinstance(self.output, Softmax):
            model = nn.Sequential(model, Softmax())
        return model
