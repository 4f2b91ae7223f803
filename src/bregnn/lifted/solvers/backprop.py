r"""Back-propagation baselines in the same harness: the loss is the batch mean
:math:`\ell(\Theta) = \tfrac1m\sum_i F_i(\Theta)` of the solver's per-sample objective
(default :func:`~bregnn.lifted.network.forward_objective`: the output loss
:math:`\lambda_L B_{\Psi_L}(y_i, z_L(x_i))`, MSE for the identity output, plus the
regularisers of the hidden layers, e.g. the sparse autoencoder's :math:`\alpha|x_3|_1`),
differentiated by autograd through the activations.

- ``sgd-bp``: :math:`\Theta \leftarrow \Theta - \eta\,v`, :math:`v \leftarrow \mu v +
  \nabla\ell_{\text{batch}}(\Theta)` (plain SGD for :math:`\mu = 0`);
- ``gd-bp``: the same on the full data, ``inner_iters`` steps per epoch;
- ``isgd-bp``: implicit SGD (equation 22), per batch
  :math:`\Theta^k \approx \arg\min_\Theta \ell_{\text{batch}}(\Theta)
  + \tfrac1{2\tau}|\Theta - \Theta^{k-1}|^2` by ``inner_iters`` gradient steps of size
  :math:`\eta`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.network import Params
from bregnn.lifted.solvers.base import Objective, Solver, check_positive, solver_config

__all__ = [
    "SGD",
    "BackpropConfig",
    "BackpropState",
    "FullBatchGD",
    "FullBatchGDConfig",
    "ImplicitSGD",
    "ImplicitSGDConfig",
    "objective_and_grads",
]


def objective_and_grads(
    objective: Objective, network, params: Params, x0: Tensor, y: Tensor
) -> tuple[Tensor, Params]:
    """Batch mean of ``objective`` and its autograd gradient ``Params``."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (*params.weights, *params.biases)]
        n = len(params.weights)
        p = Params(tuple(leaves[:n]), tuple(leaves[n:]))
        loss = objective(network, p, x0, y).mean()
        grads = torch.autograd.grad(loss, leaves)
    return loss.detach(), Params(tuple(grads[:n]), tuple(grads[n:]))


@solver_config
class BackpropConfig:
    """``batch_size``, learning rate ``lr`` (on the batch-mean loss), ``momentum``."""

    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.0

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}")


@solver_config
class FullBatchGDConfig:
    """``inner_iters`` gradient steps per epoch, ``lr``, ``momentum``."""

    inner_iters: int = 15
    lr: float = 0.5
    momentum: float = 0.0

    def __post_init__(self) -> None:
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}")


@solver_config
class ImplicitSGDConfig:
    """Settings of implicit SGD (the paper's equation 22).

    Args:
        batch_size: samples per mini-batch.
        inner_iters: gradient steps of size lr per batch (the paper's N).
        tau: the paper's tau of equation 22: each batch minimises the batch mean of the
            objective plus |Theta - Theta^k|^2 / (2 tau). Earlier versions weighted tau/2
            against the batch sum: their tau equals batch_size / tau here.
        lr: step size of the inner gradient steps.
    """

    batch_size: int = 100
    inner_iters: int = 15
    tau: float = 100.0
    lr: float = 0.1

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("tau", self.tau)
        check_positive("lr", self.lr)


class BackpropState(NamedTuple):
    params: Params
    velocity_w: tuple[Tensor, ...]
    velocity_b: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


class SGD(Solver):
    """``sgd-bp``: mini-batch SGD (with optional heavy-ball momentum) and backprop."""

    divergence_setting = "lr"
    Config = BackpropConfig
    State = BackpropState

    def metric_names(self) -> list[str]:
        return ["loss"]

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> BackpropState:
        self.network.check_params(params)
        w0 = params.weights[0]
        return BackpropState(
            Params(
                tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
            ),
            tuple(torch.zeros_like(w) for w in params.weights),
            tuple(torch.zeros_like(b) for b in params.biases),
            w0.new_zeros((), dtype=torch.int64),
            w0.new_full((1,), float("nan")),
        )

    def loss_and_grad(self, params: Params, x0: Tensor, y: Tensor) -> tuple[Tensor, Params]:
        """The batch mean of the objective and its gradient in ``params``."""
        return objective_and_grads(self.objective_fn, self.network, params, x0, y)

    def update(self, state: BackpropState, x0: Tensor, y: Tensor) -> BackpropState:
        cfg = self.config
        loss, grad = self.loss_and_grad(self.params(state), x0, y)
        vw = tuple(
            cfg.momentum * v + g for v, g in zip(state.velocity_w, grad.weights, strict=True)
        )
        vb = tuple(cfg.momentum * v + g for v, g in zip(state.velocity_b, grad.biases, strict=True))
        weights = tuple(w - cfg.lr * v for w, v in zip(state.params.weights, vw, strict=True))
        biases = tuple(b - cfg.lr * v for b, v in zip(state.params.biases, vb, strict=True))
        return BackpropState(Params(weights, biases), vw, vb, state.step + 1, loss.reshape(1))

    @torch.no_grad()
    def objective(self, state: BackpropState, x0: Tensor, y: Tensor) -> Tensor:
        return self.objective_fn(self.network, self.params(state), x0, y).mean()


class FullBatchGD(SGD):
    """``gd-bp``: full-batch gradient descent with backprop."""

    full_batch = True
    Config = FullBatchGDConfig


class ImplicitSGD(SGD):
    """``isgd-bp``: implicit SGD, the proximal step solved by inner gradient steps."""

    Config = ImplicitSGDConfig

    def update(self, state: BackpropState, x0: Tensor, y: Tensor) -> BackpropState:
        cfg = self.config
        anchor = self.params(state)
        weights, biases = anchor.weights, anchor.biases
        prox = 1.0 / cfg.tau
        for _ in range(cfg.inner_iters):
            loss, grad = self.loss_and_grad(Params(weights, biases), x0, y)
            # gradient of the batch mean loss + |Theta - anchor|^2 / (2 tau)  (eq. 22)
            weights = tuple(
                w - cfg.lr * (g + prox * (w - a))
                for w, g, a in zip(weights, grad.weights, anchor.weights, strict=True)
            )
            biases = tuple(
                b - cfg.lr * (g + prox * (b - a))
                for b, g, a in zip(biases, grad.biases, anchor.biases, strict=True)
            )
        return BackpropState(
            Params(weights, biases), state.velocity_w, state.velocity_b, state.step + 1,
            loss.reshape(1),
        )  # fmt: skip
