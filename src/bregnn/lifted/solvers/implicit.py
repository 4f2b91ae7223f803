r"""Implicit stochastic lifted training (the paper's Algorithm 1, LBN-S) and the lifted
baselines solved by the same scheme.

Per mini-batch :math:`k`: initialise :math:`X` by a forward pass with
:math:`\Theta^{k-1}`, then run ``inner_iters`` proximal-gradient steps
(:func:`~bregnn.lifted.solvers._step.joint_step`; simultaneous, or alternating ``Theta``
then ``X``) on

.. math::  \frac1m E_k(\Theta, X) + \frac{1}{2\tau_k}|\Theta - \Theta^{k-1}|^2

(the paper's equation 24), where :math:`E_k` is the lifted energy of the batch (a sum over
its :math:`m` samples); the iterations work on :math:`m` times it. Only the
parameters and the power-iteration vectors persist between batches: :math:`X` lives for one
batch, so memory does not grow with the data set.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.network import Params
from bregnn.lifted.solvers._step import (
    batch_metrics,
    initial_vectors,
    joint_step,
    literal_sweep,
    metric_names,
    warm_vectors,
)
from bregnn.lifted.solvers.base import Solver, check_positive, solver_config

__all__ = [
    "STEP_RULES",
    "ImplicitConfig",
    "ImplicitLiftedBregman",
    "ImplicitState",
]


STEP_RULES = ("simultaneous", "alternating", "blockwise", "literal")


@solver_config
class ImplicitConfig:
    """Settings of the implicit stochastic lifted solvers.

    Args:
        batch_size: samples per mini-batch.
        inner_iters: proximal-gradient iterations per batch (the paper's N).
        tau: the paper's tau_k of equation 24: each batch minimises the batch MEAN of the
            energy plus |Theta - Theta^(k-1)|^2 / (2 tau_k) (inf: no proximal term).
            Earlier versions weighted tau/2 against the batch SUM: their tau equals
            batch_size / tau_k (their 100 at batch 100 is tau_k = 1).
        step_scale: numerator of the block-Lipschitz step sizes (the paper uses 1.99).
        track: compute the batch energy and consistency after each batch (one extra
            forward pass; state.metrics).
        step_rule: how the blocks are swept: simultaneous (every block from the same
            iterate), alternating (Theta, then X at the new Theta: a Gauss-Seidel sweep,
            stable at step_scale 1.99 on the two-hidden-layer classifier), blockwise
            (Theta, then the odd hidden layers' X, then the even ones: three decoupled
            blocks, each step a descent step below 2) or literal (Algorithm 1 read
            literally: N iterations on each pair (Theta_l, x_(l-1)), l = L..1, both
            blocks of a pair stepped from the same iterate).
    """

    batch_size: int = 100
    inner_iters: int = 15
    tau: float = 100.0
    step_scale: float = 1.0
    track: bool = True
    step_rule: str = "simultaneous"

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("tau", self.tau)
        check_positive("step_scale", self.step_scale, upper=2.0)
        if self.step_rule not in STEP_RULES:
            raise ValueError(f"unknown step_rule {self.step_rule!r}; valid: {list(STEP_RULES)}")


class ImplicitState(NamedTuple):
    params: Params
    w_vectors: tuple[Tensor, ...]
    x_vectors: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


class ImplicitLiftedBregman(Solver):
    """LBN-S: implicit stochastic lifted Bregman learning (see the module doc). With
    ``penalty="quadratic"`` this is the classical lifted network (Askari et al.:
    :math:`\tfrac12|x_l - W_l x_{l-1} - b_l|^2` with :math:`x_l \\in \\operatorname{dom}\\Psi`),
    with ``penalty="mac"`` MAC-QP (:math:`\tfrac12|x_l - \rho(W_l x_{l-1} + b_l)|^2`,
    needs :math:`\rho'`), both trained by the same scheme."""

    penalties = ("bregman", "quadratic", "mac")
    Config = ImplicitConfig
    State = ImplicitState

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> ImplicitState:
        self.network.check_params(params)
        dtype, device = params.weights[0].dtype, params.weights[0].device
        w_vecs, x_vecs = initial_vectors(self.network, dtype, params)
        metrics = torch.full((len(self.metric_names()),), float("nan"), dtype=dtype, device=device)
        return ImplicitState(
            Params(
                tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
            ),
            w_vecs,
            x_vecs,
            torch.zeros((), dtype=torch.int64, device=device),
            metrics,
        )

    def metric_names(self) -> list[str]:
        return metric_names(self.network)

    @torch.no_grad()
    def update(self, state: ImplicitState, x0: Tensor, y: Tensor) -> ImplicitState:
        cfg = self.config
        anchor = self.params(state)
        params = anchor
        aux, _ = self.network.forward(anchor, x0)
        w_vecs, x_vecs = state.w_vectors, state.x_vectors
        if int(state.step) == 0:  # first batch: start the input norms warm too
            _, x_vecs = warm_vectors(w_vecs, x_vecs, inputs=(x0, *aux), network=self.network)
        # the batch input is fixed during the inner iterations: estimate |[x0, 1]|^2 once
        # (two warm-started power steps) instead of once per inner iteration
        vec0 = x_vecs[0]
        for _ in range(2):
            input_sq, vec0 = self.network.layers[0].theta_power_step(x0, vec0)
        x_vecs = (vec0, *x_vecs[1:])
        input_sq = float(input_sq)
        # equation 24 in the batch-sum units of the energy: sum + (m / tau_k) / 2 |.|^2
        tau_sum = x0.shape[0] / cfg.tau
        if cfg.step_rule == "literal":
            params, aux, w_vecs, x_vecs = literal_sweep(
                self.network, self.penalty, params, aux, x0, y, w_vecs, x_vecs,
                step_scale=cfg.step_scale, tau=tau_sum, anchor=anchor,
                inner_iters=cfg.inner_iters, input_sq=input_sq,
            )  # fmt: skip
        for _ in range(cfg.inner_iters if cfg.step_rule != "literal" else 0):
            params, aux, w_vecs, x_vecs = joint_step(
                self.network, self.penalty, params, aux, x0, y, w_vecs, x_vecs,
                step_scale=cfg.step_scale, tau=tau_sum, anchor=anchor, input_sq=input_sq,
                alternating=cfg.step_rule in ("alternating", "blockwise"),
                x_blocks=cfg.step_rule == "blockwise",
            )  # fmt: skip
        metrics = (
            batch_metrics(self.network, self.penalty, params, aux, x0, y)
            if cfg.track
            else state.metrics
        )
        return ImplicitState(params, w_vecs, x_vecs, state.step + 1, metrics)

    @torch.no_grad()
    def objective(self, state: ImplicitState, x0: Tensor, y: Tensor) -> Tensor:
        """:math:`E(\\Theta, X(\\Theta))/n` with :math:`X(\\Theta)` the forward pass (for the
        Bregman penalty the coupling terms vanish there and this is the training loss)."""
        params = self.params(state)
        aux, _ = self.network.forward(params, x0)
        return self.network.energy(params, x0, aux, y, self.penalty).total / x0.shape[0]
