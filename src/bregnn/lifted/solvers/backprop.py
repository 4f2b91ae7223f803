r"""Back-propagation baselines in the same harness: the loss is the network's output loss
:math:`\ell(\Theta) = \tfrac1m\sum_i \lambda_L B_{\Psi_L}(y_i, z_L(x_i))` (MSE for the
identity output), differentiated by autograd through the activations.

- ``sgd-bp``: :math:`\Theta \leftarrow \Theta - \eta\,v`, :math:`v \leftarrow \mu v +
  \nabla\ell_{\text{batch}}(\Theta)` (plain SGD for :math:`\mu = 0`);
- ``gd-bp``: the same on the full data, ``inner_iters`` steps per epoch;
- ``isgd-bp``: implicit SGD, per batch
  :math:`\Theta^k \approx \arg\min_\Theta m\,\ell_{\text{batch}}(\Theta)
  + \tfrac\tau2|\Theta - \Theta^{k-1}|^2` by ``inner_iters`` gradient steps of size
  :math:`\eta/m` (the batch objective is a sum over samples, as in LBN-S).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.losses import bregman_loss
from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.solvers.base import Solver, check_positive

__all__ = [
    "SGD",
    "BackpropConfig",
    "BackpropState",
    "FullBatchGD",
    "FullBatchGDConfig",
    "ImplicitSGD",
    "ImplicitSGDConfig",
    "loss_and_grads",
]


def loss_and_grads(network: LiftedNetwork, params: Params, x0: Tensor, y: Tensor):
    """Mean output loss and its autograd gradient ``Params``."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (*params.weights, *params.biases)]
        n = len(params.weights)
        p = Params(tuple(leaves[:n]), tuple(leaves[n:]))
        _, z_out = network.forward(p, x0)
        loss = network.lambdas[-1] * bregman_loss(y, z_out, network.output).mean()
        grads = torch.autograd.grad(loss, leaves)
    return loss.detach(), Params(tuple(grads[:n]), tuple(grads[n:]))


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class ImplicitSGDConfig:
    """``batch_size``, ``inner_iters`` gradient steps of size ``lr/m`` per batch, ``tau``."""

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
    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    velocity_w: tuple[Tensor, ...]
    velocity_b: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


class SGD(Solver):
    """``sgd-bp``: mini-batch SGD (with optional heavy-ball momentum) and backprop."""

    name = "sgd-bp"
    Config = BackpropConfig
    State = BackpropState

    def metric_names(self) -> list[str]:
        return ["loss"]

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> BackpropState:
        self.network.check_params(params)
        return BackpropState(
            tuple(w.clone() for w in params.weights),
            tuple(b.clone() for b in params.biases),
            tuple(torch.zeros_like(w) for w in params.weights),
            tuple(torch.zeros_like(b) for b in params.biases),
            torch.zeros((), dtype=torch.int64),
            torch.full((1,), float("nan"), dtype=params.weights[0].dtype),
        )

    def loss_and_grad(self, params: Params, x0: Tensor, y: Tensor) -> tuple[Tensor, Params]:
        """The training loss of a batch and its gradient in ``params`` (override to train
        another objective with the same updates)."""
        return loss_and_grads(self.network, params, x0, y)

    def update(self, state: BackpropState, x0: Tensor, y: Tensor) -> BackpropState:
        cfg = self.config
        loss, grad = self.loss_and_grad(self.params(state), x0, y)
        vw = tuple(
            cfg.momentum * v + g for v, g in zip(state.velocity_w, grad.weights, strict=True)
        )
        vb = tuple(cfg.momentum * v + g for v, g in zip(state.velocity_b, grad.biases, strict=True))
        weights = tuple(w - cfg.lr * v for w, v in zip(state.weights, vw, strict=True))
        biases = tuple(b - cfg.lr * v for b, v in zip(state.biases, vb, strict=True))
        return BackpropState(weights, biases, vw, vb, state.step + 1, loss.reshape(1))

    @torch.no_grad()
    def objective(self, state: BackpropState, x0: Tensor, y: Tensor) -> Tensor:
        _, z_out = self.network.forward(self.params(state), x0)
        return self.network.lambdas[-1] * bregman_loss(y, z_out, self.network.output).mean()


class FullBatchGD(SGD):
    """``gd-bp``: full-batch gradient descent with backprop."""

    name = "gd-bp"
    full_batch = True
    Config = FullBatchGDConfig


class ImplicitSGD(SGD):
    """``isgd-bp``: implicit SGD, the proximal step solved by inner gradient steps."""

    name = "isgd-bp"
    Config = ImplicitSGDConfig

    def update(self, state: BackpropState, x0: Tensor, y: Tensor) -> BackpropState:
        cfg = self.config
        m = x0.shape[0]
        eta = cfg.lr / m
        anchor = self.params(state)
        weights, biases = anchor.weights, anchor.biases
        for _ in range(cfg.inner_iters):
            loss, grad = self.loss_and_grad(Params(weights, biases), x0, y)
            # gradient of m * mean loss + tau/2 |Theta - anchor|^2
            weights = tuple(
                w - eta * (m * g + cfg.tau * (w - a))
                for w, g, a in zip(weights, grad.weights, anchor.weights, strict=True)
            )
            biases = tuple(
                b - eta * (m * g + cfg.tau * (b - a))
                for b, g, a in zip(biases, grad.biases, anchor.biases, strict=True)
            )
        return BackpropState(
            weights, biases, state.velocity_w, state.velocity_b, state.step + 1, loss.reshape(1)
        )
