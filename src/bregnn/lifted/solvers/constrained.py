r"""The constrained lifted formulation with projected dual ascent (the paper's Appendix B.3).

Instead of fixed penalty weights, the couplings become constraints:

.. math::

    \min_{\Theta, X}\ \tfrac1n\sum_i B_{\Psi_L}(y_i, z_{L,i}) + R(X)
    \quad\text{s.t.}\quad c_l(\Theta, X) = \tfrac1n\sum_i B_{\Psi_l}(x_{l,i}, z_{l,i})
    \le \varepsilon_l,\ l < L,

with Lagrangian :math:`\mathcal L = \text{loss} + R + \sum_l \lambda_l(c_l - \varepsilon_l)`,
:math:`\lambda \ge 0`. One :meth:`ConstrainedLifted.update` takes ``primal_iters`` joint
proximal-gradient steps on :math:`\mathcal L(\cdot, \lambda)` (the lifted energy with
weights :math:`\lambda_l`, :func:`~bregnn.lifted.solvers._step.joint_step`), then one projected
dual ascent step

.. math::  \lambda_l \leftarrow \max\big(0,\ \lambda_l + \eta\,(c_l - \varepsilon_l)\big).

The dual variables are exactly non-negative. The primal step sizes scale with
:math:`\lambda_l`, so the primal step uses :math:`\max(\lambda_l, \lambda_{\min})`
(``lambda_floor``) to stay finite when a constraint is inactive (:math:`\lambda_l = 0`).
Full-batch: :math:`X` for every sample lives in the state.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.losses import bregman_loss
from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.solvers._step import batch_metrics, initial_vectors, joint_step
from bregnn.lifted.solvers._step import metric_names as lifted_metric_names
from bregnn.lifted.solvers.base import Solver, check_positive, solver_config

__all__ = ["ConstrainedConfig", "ConstrainedLifted", "ConstrainedState", "constraint_values"]


@solver_config
class ConstrainedConfig:
    """``inner_iters`` updates per epoch; each is ``primal_iters`` primal steps and one dual
    step of size ``dual_step``; tolerances ``eps``; initial multipliers ``init_lambda``;
    ``lambda_floor`` for the primal step sizes; ``step_scale`` in (0, 2)."""

    inner_iters: int = 15
    primal_iters: int = 5
    dual_step: float = 1.0
    eps: float = 1e-3
    init_lambda: float = 1.0
    lambda_floor: float = 1e-3
    step_scale: float = 1.0

    def __post_init__(self) -> None:
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("primal_iters", self.primal_iters, integer=True)
        check_positive("dual_step", self.dual_step)
        check_positive("lambda_floor", self.lambda_floor)
        check_positive("step_scale", self.step_scale, upper=2.0)
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0; got {self.eps!r}")
        if not self.init_lambda >= 0:
            raise ValueError(f"init_lambda must be >= 0; got {self.init_lambda!r}")


class ConstrainedState(NamedTuple):
    params: Params
    aux: tuple[Tensor, ...]
    lambdas: Tensor
    w_vectors: tuple[Tensor, ...]
    x_vectors: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


def constraint_values(
    network: LiftedNetwork, params: Params, x0: Tensor, aux: tuple[Tensor, ...]
) -> Tensor:
    r""":math:`c_l = \tfrac1n\sum_i B_{\Psi_l}(x_{l,i}, W_l x_{l-1,i} + b_l)` per hidden layer."""
    zs = network.pre_activations(params, x0, aux)
    return torch.stack(
        [
            bregman_loss(x.flatten(1), z.flatten(1), act).mean()
            for x, z, act in zip(aux, zs, network.activations, strict=False)
        ]
    )


class ConstrainedLifted(Solver):
    """``constrained``: primal proximal-gradient steps and projected dual ascent on lambda."""

    full_batch = True
    Config = ConstrainedConfig
    State = ConstrainedState

    def metric_names(self) -> list[str]:
        n = len(self.network.activations)
        return [*lifted_metric_names(self.network), *(f"lambda_{l}" for l in range(1, n + 1))]

    def weighted_network(self, lambdas: Tensor) -> LiftedNetwork:
        """A shallow copy of the network with hidden weights :math:`\\max(\\lambda, \\lambda_{\\min})`
        (the output weight stays that of the network)."""
        net = copy.copy(self.network)
        floor = self.config.lambda_floor
        hidden = [max(float(v), floor) for v in lambdas.tolist()]
        net.lambdas = (*hidden, self.network.lambdas[-1])
        return net

    def _metrics(self, params: Params, aux, lambdas: Tensor, x0: Tensor, y: Tensor) -> Tensor:
        base = batch_metrics(self.weighted_network(lambdas), self.penalty, params, aux, x0, y)
        return torch.cat([base, lambdas.to(base.dtype)])

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> ConstrainedState:
        self.network.check_params(params)
        self.network.check_data(x0, y)
        dtype, device = params.weights[0].dtype, params.weights[0].device
        aux, _ = self.network.forward(params, x0)
        lambdas = torch.full(
            (len(self.network.activations),), self.config.init_lambda, dtype=dtype, device=device
        )
        w_vecs, x_vecs = initial_vectors(self.network, dtype, params, (x0, *aux))
        return ConstrainedState(
            Params(
                tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
            ),
            tuple(aux),
            lambdas,
            w_vecs,
            x_vecs,
            torch.zeros((), dtype=torch.int64, device=device),
            self._metrics(params, aux, lambdas, x0, y),
        )

    def dual_step(self, lambdas: Tensor, constraints: Tensor) -> Tensor:
        r""":math:`\max(0, \lambda + \eta(c - \varepsilon))`."""
        cfg = self.config
        return torch.clamp(lambdas + cfg.dual_step * (constraints - cfg.eps), min=0.0)

    @torch.no_grad()
    def update(self, state: ConstrainedState, x0: Tensor, y: Tensor) -> ConstrainedState:
        cfg = self.config
        net = self.weighted_network(state.lambdas)
        params, aux = self.params(state), state.aux
        w_vecs, x_vecs = state.w_vectors, state.x_vectors
        for _ in range(cfg.primal_iters):
            params, aux, w_vecs, x_vecs = joint_step(
                net, self.penalty, params, aux, x0, y, w_vecs, x_vecs, step_scale=cfg.step_scale
            )
        lambdas = self.dual_step(
            state.lambdas, constraint_values(self.network, params, x0, aux).to(state.lambdas.dtype)
        )
        return ConstrainedState(
            params, tuple(aux), lambdas, w_vecs, x_vecs, state.step + 1,
            self._metrics(params, aux, lambdas, x0, y),
        )  # fmt: skip

    @torch.no_grad()
    def objective(self, state: ConstrainedState, x0: Tensor, y: Tensor) -> Tensor:
        """The training loss at the forward pass of :math:`\\Theta` (where every constraint
        holds with :math:`c_l = 0`), per sample."""
        params = self.params(state)
        aux, _ = self.network.forward(params, x0)
        return self.network.energy(params, x0, aux, y, self.penalty).total / x0.shape[0]
