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

``inner_tol > 0`` ends a batch's inner iterations early: with :math:`F_n` the objective above
(times :math:`m`) after iteration :math:`n` (:math:`F_0` at the forward pass), the batch stops
after the first :math:`n` with :math:`F_{n-1} - F_n \le \mathrm{inner\_tol}\,|F_{n-1}|`, at
the latest after ``inner_iters``; every iteration before the last one therefore lowered
:math:`F` by more than ``inner_tol`` relative to its value. ``average > 0`` reports a
running average of the iterates :math:`\Theta^k` over the batches as the trained parameters
(averaged implicit SGD; :func:`running_average`) while the iterations continue from the last
iterate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.network import LiftedNetwork, Params
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
    "ImplicitAveragedState",
    "ImplicitConfig",
    "ImplicitLiftedBregman",
    "ImplicitState",
    "running_average",
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
        inner_tol: stopping test of the inner iterations (0: off, always inner_iters of
            them). With F_n the objective of the batch's sub-problem (equation 24) after
            inner iteration n, in the solver's units (the batch SUM of the energy plus
            (m / tau_k) |Theta - Theta^(k-1)|^2 / 2; F_0 at the forward pass), a batch
            stops after the first n with F_(n-1) - F_n <= inner_tol |F_(n-1)| (a relative
            decrease below inner_tol, or an increase), and after inner_iters at the latest.
            Each test costs one evaluation of the batch energy (a forward pass and the
            energy's terms). The mean number of inner iterations per batch is then the
            metric inner_iters. Not with the literal rule (it runs inner_iters on each
            layer pair).
        average: decay beta in [0, 1) of a running average of the iterates over the batches
            (0: off), averaged implicit SGD (Toulis and Airoldi): after batch k the trained
            parameters are Theta_bar_k = sum_(j<=k) beta^(k-j) Theta^j / sum_(j<=k)
            beta^(k-j), an exponentially weighted average over about 1 / (1 - beta) batches.
            Evaluation, the returned model and solver.params read Theta_bar; each batch's
            sub-problem (equation 24) stays anchored at the last iterate Theta^(k-1).
            One process only (not with data- or layer-parallel training).
    """

    batch_size: int = 100
    inner_iters: int = 15
    tau: float = 100.0
    step_scale: float = 1.0
    track: bool = True
    step_rule: str = "simultaneous"
    inner_tol: float = 0.0
    average: float = 0.0

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("tau", self.tau)
        check_positive("step_scale", self.step_scale, upper=2.0)
        if self.step_rule not in STEP_RULES:
            raise ValueError(f"unknown step_rule {self.step_rule!r}; valid: {list(STEP_RULES)}")
        if not (math.isfinite(self.inner_tol) and self.inner_tol >= 0):
            raise ValueError(f"inner_tol must be a finite number >= 0; got {self.inner_tol!r}")
        if self.inner_tol > 0 and self.step_rule == "literal":
            raise ValueError(
                f"inner_tol {self.inner_tol!r} needs a joint step rule; step_rule 'literal' "
                "runs inner_iters on each layer pair (use inner_tol 0)"
            )
        if not 0.0 <= self.average < 1.0:
            raise ValueError(f"average must be in [0, 1); got {self.average!r}")


class ImplicitState(NamedTuple):
    params: Params
    w_vectors: tuple[Tensor, ...]
    x_vectors: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


class ImplicitAveragedState(NamedTuple):
    """The state with ``average > 0``: ``params`` is the last iterate, ``average`` the
    running average that the solver reports as its parameters."""

    params: Params
    w_vectors: tuple[Tensor, ...]
    x_vectors: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor
    average: Params


def running_average(average: Params, params: Params, count: int, beta: float) -> Params:
    r""":math:`\bar\Theta_k = \bar\Theta_{k-1} + (\Theta^k - \bar\Theta_{k-1}) / w_k` with
    :math:`w_k = \sum_{j \le k}\beta^{k-j} = (1 - \beta^k)/(1 - \beta)` and ``count`` = k:
    the exponentially weighted average of :math:`\Theta^1..\Theta^k`, normalised (no pull
    towards the start)."""
    weight = (1.0 - beta) / (1.0 - beta**count)
    return Params(
        tuple(
            torch.lerp(a, p, weight) for a, p in zip(average.weights, params.weights, strict=True)
        ),
        tuple(torch.lerp(a, p, weight) for a, p in zip(average.biases, params.biases, strict=True)),
    )


class ImplicitLiftedBregman(Solver):
    r"""LBN-S: implicit stochastic lifted Bregman learning (see the module doc). With
    ``penalty="quadratic"`` this is the classical lifted network (Askari et al.:
    :math:`\tfrac12|x_l - W_l x_{l-1} - b_l|^2` with :math:`x_l \in \operatorname{dom}\Psi`),
    with ``penalty="mac"`` MAC-QP (:math:`\tfrac12|x_l - \rho(W_l x_{l-1} + b_l)|^2`,
    needs :math:`\rho'`), both trained by the same scheme."""

    penalties = ("bregman", "quadratic", "mac")
    Config = ImplicitConfig
    State = ImplicitState

    def __init__(self, network: LiftedNetwork, config: ImplicitConfig | None = None, **kwargs):
        super().__init__(network, config, **kwargs)
        if self.config.average > 0:
            self.State = ImplicitAveragedState
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                raise ValueError(
                    f"average {self.config.average!r} needs one process; this run has "
                    f"{dist.get_world_size()} (the ranks would average different iterates)"
                )

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> ImplicitState:
        self.network.check_params(params)
        dtype, device = params.weights[0].dtype, params.weights[0].device
        w_vecs, x_vecs = initial_vectors(self.network, dtype, params)
        metrics = torch.full((len(self.metric_names()),), float("nan"), dtype=dtype, device=device)
        state = ImplicitState(
            Params(
                tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
            ),
            w_vecs,
            x_vecs,
            torch.zeros((), dtype=torch.int64, device=device),
            metrics,
        )
        if self.config.average > 0:
            start = Params(
                tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
            )
            return ImplicitAveragedState(*state, average=start)
        return state

    def params(self, state: ImplicitState | ImplicitAveragedState) -> Params:
        """The trained parameters: the running average when ``average > 0``, else the last
        iterate."""
        return state.average if self.config.average > 0 else state.params

    def metric_names(self) -> list[str]:
        names = metric_names(self.network)
        return [*names, "inner_iters"] if self.config.inner_tol > 0 else names

    def sub_energy(
        self, params: Params, aux: tuple[Tensor, ...], x0: Tensor, y: Tensor, anchor: Params
    ) -> float:
        r"""The objective of a batch's sub-problem (equation 24) in the solver's units:
        :math:`E_k(\Theta, X) + \tfrac{m}{2\tau_k}|\Theta - \Theta^{k-1}|^2`, with
        :math:`E_k` the batch sum of the energy and ``anchor`` :math:`\Theta^{k-1}`."""
        value = self.network.energy(params, x0, aux, y, self.penalty).total
        if math.isfinite(self.config.tau):
            dist = sum(
                (p - a).square().sum()
                for p, a in zip(
                    (*params.weights, *params.biases),
                    (*anchor.weights, *anchor.biases),
                    strict=True,
                )
            )
            value = value + 0.5 * x0.shape[0] / self.config.tau * dist
        return float(value)

    @torch.no_grad()
    def update(self, state: ImplicitState, x0: Tensor, y: Tensor) -> ImplicitState:
        cfg = self.config
        anchor = state.params  # Theta^(k-1), the last iterate (not the running average)
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
        stopping = cfg.inner_tol > 0
        if stopping:
            previous = self.sub_energy(params, aux, x0, y, anchor)
        done = 0
        for _ in range(cfg.inner_iters if cfg.step_rule != "literal" else 0):
            params, aux, w_vecs, x_vecs = joint_step(
                self.network, self.penalty, params, aux, x0, y, w_vecs, x_vecs,
                step_scale=cfg.step_scale, tau=tau_sum, anchor=anchor, input_sq=input_sq,
                alternating=cfg.step_rule in ("alternating", "blockwise"),
                x_blocks=cfg.step_rule == "blockwise",
            )  # fmt: skip
            done += 1
            if stopping:
                current = self.sub_energy(params, aux, x0, y, anchor)
                if previous - current <= cfg.inner_tol * abs(previous):
                    break
                previous = current
        metrics = (
            batch_metrics(self.network, self.penalty, params, aux, x0, y)
            if cfg.track
            else state.metrics
        )
        if stopping:
            n_metrics = len(self.metric_names()) - 1
            count = torch.tensor([float(done)], dtype=metrics.dtype, device=metrics.device)
            metrics = torch.cat([metrics[:n_metrics], count])
        new = ImplicitState(params, w_vecs, x_vecs, state.step + 1, metrics)
        if cfg.average > 0:
            count = int(state.step) + 1
            return ImplicitAveragedState(
                *new, average=running_average(state.average, params, count, cfg.average)
            )
        return new

    @torch.no_grad()
    def objective(self, state: ImplicitState, x0: Tensor, y: Tensor) -> Tensor:
        """:math:`E(\\Theta, X(\\Theta))/n` with :math:`X(\\Theta)` the forward pass (for the
        Bregman penalty the coupling terms vanish there and this is the training loss)."""
        params = self.params(state)
        aux, _ = self.network.forward(params, x0)
        return self.network.energy(params, x0, aux, y, self.penalty).total / x0.shape[0]
