"""Multi-layer perceptrons of Bregman (or standard / euclidean) layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from bregnn.activations import Activation
from bregnn.nn.linear import BregmanLinear

__all__ = ["MLP", "LayerDiagnostics"]


class LayerDiagnostics(NamedTuple):
    """Per hidden layer ``l = 1..L``: ``outputs[l]`` is :math:`z_l` (``outputs[0]`` the input),
    ``param_norms[l-1] = sqrt(|W_l|_F^2 + |b_l|^2)``, and
    ``step_norms[l-1] = mean_i |z_l^{(i)} - z_{l-1}^{(i)}|`` (defined where widths agree,
    NaN elsewhere) — the quantities of the paper's Figure 3."""

    outputs: list[Tensor]
    param_norms: Tensor
    step_norms: Tensor


class MLP(nn.Module):
    r"""``len(hidden)`` (Bregman) layers followed by a linear output layer (no softmax).

    Args:
        in_features: input width.
        hidden: widths of the hidden layers.
        out_features: output width (number of classes).
        activation, variant, init, mixing: passed to every :class:`~bregnn.nn.BregmanLinear`
            (``mixing="projected"``: the paper's projected ``M``, kept on the simplex by
            :func:`bregnn.train.fit` after every step).

    Example::

        >>> model = MLP(2, [2, 2, 2], 2, activation="atan", variant="bregman")
        >>> model(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str | Activation = "sigmoid",
        variant: str = "bregman",
        init: str = "random",
        mixing: str = "softmax",
    ) -> None:
        super().__init__()
        widths = [int(in_features), *map(int, hidden)]
        if any(w <= 0 for w in [*widths, out_features]):
            raise ValueError(f"layer widths must be positive; got {[*widths, out_features]}")
        self.layers = nn.ModuleList(
            BregmanLinear(a, b, activation, variant, init, mixing=mixing)
            for a, b in zip(widths, widths[1:])
        )
        self.head = nn.Linear(widths[-1], int(out_features))
        self.in_features, self.out_features = widths[0], int(out_features)

    @property
    def act(self) -> Activation:
        return self.layers[0].act if len(self.layers) else None

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        """``[x, z_1, ..., z_L]``: the input and every hidden layer's output, as the forward
        pass computes them. Each layer hands its pre-activation ``u`` to the next, which uses
        ``rho_inv(rho(u))`` (:meth:`Activation.rho_inv_rho`: ``u`` itself for all but ``sin``)
        instead of ``rho_inv`` of its input: a stack of square Bregman layers is then the
        residual map ``u <- u + W rho(u) + b``, with no ``rho_inv`` and no clamping after the
        first layer. This is the function the layers compute one by one, except where ``rho``
        saturates: there ``rho_inv`` of a layer's output clamps (float32
        ``rho_inv(sigmoid(20.)) = 15.94``), and the chain keeps the exact ``u``."""
        outputs, u = [x], None
        for layer in self.layers:
            takes = u is not None and layer.takes_rho_inv_z
            rho_inv_x = layer.act.rho_inv_rho(u) if takes else None
            u = layer.preactivation(outputs[-1], rho_inv_z=rho_inv_x)
            outputs.append(layer.act.rho(u))
        return outputs

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's output (see :meth:`layer_outputs`)."""
        return self.layer_outputs(x)[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def diagnostics(self, x: Tensor) -> LayerDiagnostics:
        """Every hidden layer's output for ``x`` (:meth:`layer_outputs`: those of the network
        that is trained, pre-activation chain included) plus the Figure-3 norms."""
        outputs = self.layer_outputs(x)
        norms, steps = [], []
        for layer, prev, cur in zip(self.layers, outputs, outputs[1:]):
            sq = layer.weight.square().sum()
            if layer.bias is not None:
                sq = sq + layer.bias.square().sum()
            norms.append(sq.sqrt())
            if prev.shape == cur.shape:
                steps.append((cur - prev).norm(dim=-1).mean())
            else:
                steps.append(torch.tensor(float("nan")))
        return LayerDiagnostics(outputs, torch.stack(norms), torch.stack(steps))
