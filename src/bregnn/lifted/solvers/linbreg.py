r"""Linearised Bregman iterations on the parameters: sparse weights (the paper's Section 4.1.2).

The weights move in the mirror geometry of

.. math::  J(W) = \mu|W|_1 + \tfrac1{2\delta}|W|^2,

whose subgradient variable :math:`v \in \partial J(W)` takes the gradient steps and is mapped
back by :math:`W = \nabla J^*(v) = \delta\,\operatorname{shrink}(v, \mu)`,
:math:`\operatorname{shrink}(v, \mu) = \operatorname{sign}(v)\max(|v| - \mu, 0)` ("LinBreg"):

.. math::

    v_l \leftarrow v_l - t_l\nabla_{W_l}H(\Theta, X), \qquad W_l = \delta\operatorname{shrink}(v_l, \mu).

A weight is non-zero only once its accumulated gradient exceeds :math:`\mu` (inverse scale
space): larger :math:`\mu` gives sparser weights. Biases take plain gradient steps. Per
mini-batch (as LBN-S): :math:`X` starts at the forward pass, then ``inner_iters`` joint steps
update :math:`v, b` as above and :math:`X` by a proximal-gradient step on the lifted energy.
Step sizes are ``step_scale`` over the block Lipschitz constants
(:math:`t_l = s/(\delta\lambda_l c_l|\tilde X_{l-1}|^2)` for :math:`v_l`, the core's
constants otherwise). With :math:`\mu = 0`, :math:`\delta = 1` this is exactly the core's joint
proximal-gradient step without proximal term.

The initial weights are reproduced exactly: :math:`v^0 = W^0/\delta + \mu\operatorname{sign}(W^0)`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.network import Params
from bregnn.lifted.solvers._step import (
    batch_metrics,
    initial_vectors,
    metric_names,
    theta_step_sizes,
    warm_vectors,
    x_step_sizes,
)
from bregnn.lifted.solvers.base import Solver, check_positive, solver_config

__all__ = ["LinBreg", "LinBregConfig", "LinBregState", "shrink", "weight_sparsity"]


def shrink(v: Tensor, mu: float) -> Tensor:
    r""":math:`\operatorname{sign}(v)\max(|v| - \mu, 0)`, the prox of :math:`\mu|\cdot|_1`."""
    return torch.sign(v) * torch.relu(v.abs() - mu)


def weight_sparsity(weights: tuple[Tensor, ...]) -> float:
    """Percentage of exact zeros over all weight matrices."""
    zeros = sum(int((w == 0).sum()) for w in weights)
    return 100.0 * zeros / sum(w.numel() for w in weights)


@solver_config
class LinBregConfig:
    """``batch_size``, ``inner_iters`` (N), sparsity weight ``mu`` (:math:`\\mu \\ge 0`),
    scale ``delta`` (:math:`\\delta > 0`), ``step_scale`` in (0, 2)."""

    batch_size: int = 100
    inner_iters: int = 15
    mu: float = 0.01
    delta: float = 1.0
    step_scale: float = 1.0

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("delta", self.delta)
        check_positive("step_scale", self.step_scale, upper=2.0)
        if not self.mu >= 0:
            raise ValueError(f"mu must be >= 0; got {self.mu!r}")


class LinBregState(NamedTuple):
    params: Params
    v: tuple[Tensor, ...]
    w_vectors: tuple[Tensor, ...]
    x_vectors: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


class LinBreg(Solver):
    """``linbreg``: lifted training with linearised Bregman iterations on the weights."""

    Config = LinBregConfig
    State = LinBregState

    def metric_names(self) -> list[str]:
        return [*metric_names(self.network), "weight_sparsity"]

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> LinBregState:
        self.network.check_params(params)
        cfg = self.config
        dtype, device = params.weights[0].dtype, params.weights[0].device
        w_vecs, x_vecs = initial_vectors(self.network, dtype, params)
        v = tuple(w / cfg.delta + cfg.mu * torch.sign(w) for w in params.weights)
        metrics = torch.full((len(self.metric_names()),), float("nan"), dtype=dtype, device=device)
        return LinBregState(
            Params(
                tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
            ),
            v,
            w_vecs,
            x_vecs,
            torch.zeros((), dtype=torch.int64, device=device),
            metrics,
        )

    @torch.no_grad()
    def update(self, state: LinBregState, x0: Tensor, y: Tensor) -> LinBregState:
        cfg = self.config
        net, pen = self.network, self.penalty
        (weights, biases), v = state.params, state.v
        aux, _ = net.forward(Params(weights, biases), x0)
        w_vecs, x_vecs = state.w_vectors, state.x_vectors
        if int(state.step) == 0:  # first batch: start the input norms warm too
            _, x_vecs = warm_vectors(w_vecs, x_vecs, inputs=(x0, *aux), network=net)
        for _ in range(cfg.inner_iters):
            step_b, new_x_vecs = theta_step_sizes(net, pen, (x0, *aux), x_vecs, cfg.step_scale)
            step_x, new_w_vecs = x_step_sizes(net, pen, weights, w_vecs, cfg.step_scale)
            grad, grad_aux, _ = net.smooth_grads(Params(weights, biases), x0, aux, y, pen)
            v = tuple(
                vl - (t / cfg.delta) * g for vl, g, t in zip(v, grad.weights, step_b, strict=True)
            )
            weights = tuple(cfg.delta * shrink(vl, cfg.mu) for vl in v)
            biases = tuple(b - t * g for b, g, t in zip(biases, grad.biases, step_b, strict=True))
            half = [x - t * g for x, g, t in zip(aux, grad_aux, step_x, strict=True)]
            aux = net.prox_g(half, step_x, pen)
            w_vecs, x_vecs = new_w_vecs, new_x_vecs
        params = Params(weights, biases)
        base = batch_metrics(net, pen, params, aux, x0, y)
        sparsity = torch.tensor([weight_sparsity(weights)], dtype=base.dtype, device=base.device)
        return LinBregState(params, v, w_vecs, x_vecs, state.step + 1, torch.cat([base, sparsity]))

    @torch.no_grad()
    def objective(self, state: LinBregState, x0: Tensor, y: Tensor) -> Tensor:
        """:math:`E(\\Theta, X(\\Theta))/n` at the forward pass (the training loss)."""
        params = self.params(state)
        aux, _ = self.network.forward(params, x0)
        return self.network.energy(params, x0, aux, y, self.penalty).total / x0.shape[0]
