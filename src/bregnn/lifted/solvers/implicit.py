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
:math:`F` by more than ``inner_tol`` relative to its value. ``theta_step="majoriser"``
replaces the gradient step on :math:`\Theta` of the alternating and blockwise rules by the
minimiser of a quadratic upper model of each layer's :math:`\Theta_l` problem at fixed
:math:`X` (:func:`majoriser_theta_step`). ``average > 0`` reports a running average of
the iterates :math:`\Theta^k` over the batches as the trained parameters (averaged implicit
SGD; :func:`running_average`) while the iterations continue from the last iterate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.layers import Dense
from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.penalties import Penalty
from bregnn.lifted.solvers._step import (
    batch_metrics,
    initial_vectors,
    joint_step,
    literal_sweep,
    metric_names,
    output_curvature,
    warm_vectors,
    x_step_sizes,
)
from bregnn.lifted.solvers.base import Solver, check_positive, solver_config

__all__ = [
    "STEP_RULES",
    "THETA_STEPS",
    "ImplicitAveragedState",
    "ImplicitConfig",
    "ImplicitLiftedBregman",
    "ImplicitState",
    "MajoriserFactor",
    "majoriser_factor",
    "majoriser_solve",
    "majoriser_sweep",
    "majoriser_theta_step",
    "running_average",
]


STEP_RULES = ("simultaneous", "alternating", "blockwise", "literal")
THETA_STEPS = ("gradient", "majoriser")


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
        theta_step: the Theta step of the alternating and blockwise rules: gradient (a
            gradient step of step_scale / L_Theta_l on each layer) or majoriser (dense
            layers: each Theta_l = [W_l, b_l] jumps to the minimiser of the quadratic upper
            model of its sub-problem at fixed X, whose Hessian is
            M_l = lambda_l c_l Xt^T Xt + mu I, with Xt = [x_(l-1), 1] over the batch, c_l the
            curvature bound of the penalty in z and mu = m / tau_k: the step
            -(gradient) M_l^-1 never increases the sub-problem and solves a quadratic layer,
            such as the MSE output, exactly; step_scale then applies to the X steps only).
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
    theta_step: str = "gradient"
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
        if self.theta_step not in THETA_STEPS:
            raise ValueError(f"unknown theta_step {self.theta_step!r}; valid: {list(THETA_STEPS)}")
        if not 0.0 <= self.average < 1.0:
            raise ValueError(f"average must be in [0, 1); got {self.average!r}")
        if self.theta_step != "gradient" and self.step_rule not in ("alternating", "blockwise"):
            raise ValueError(
                f"theta_step {self.theta_step!r} needs step_rule 'alternating' or 'blockwise' "
                f"(Theta stepped at fixed X); got step_rule {self.step_rule!r}"
            )


def _augmented(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)


class MajoriserFactor(NamedTuple):
    r"""A Cholesky factor for :func:`majoriser_theta_step`: of
    :math:`M = k\tilde X^\top\tilde X + \mu I` (``sample_space=False``) or of
    :math:`\tfrac{\mu}{k} I + \tilde X\tilde X^\top` (``sample_space=True``, Woodbury),
    whichever is smaller; ``inputs`` is :math:`\tilde X`."""

    inputs: Tensor
    cholesky: Tensor
    sample_space: bool
    k: float
    mu: float


def majoriser_factor(layer_input: Tensor, k: float, mu: float) -> MajoriserFactor:
    """Factor the metric of a dense layer's majoriser for the batch ``layer_input`` (rows are
    samples). ``mu`` is raised to ``100 eps k |X~|_F^2`` when smaller (a larger ``mu`` keeps
    ``M`` a majoriser and the factorisation well conditioned; ``tau = inf`` gives 0)."""
    xt = _augmented(layer_input.reshape(layer_input.shape[0], -1))
    m, n = xt.shape
    floor = 100 * torch.finfo(xt.dtype).eps * k * float(xt.square().sum())
    mu = max(mu, floor, torch.finfo(xt.dtype).tiny)
    if k == 0:
        return MajoriserFactor(xt, xt.new_ones(0, 0), False, k, mu)
    eye = torch.eye(min(m, n), dtype=xt.dtype, device=xt.device)
    if n <= m:
        gram = torch.addmm(eye, xt.T, xt, beta=mu, alpha=k)
        return MajoriserFactor(xt, torch.linalg.cholesky(gram), False, k, mu)
    gram = torch.addmm(eye, xt, xt.T, beta=mu / k)
    return MajoriserFactor(xt, torch.linalg.cholesky(gram), True, k, mu)


def majoriser_solve(factor: MajoriserFactor, p: Tensor) -> Tensor:
    """:math:`P M^{-1}` for the rows ``p`` (one per output unit) of a layer's gradient."""
    if factor.k == 0:
        return p / factor.mu
    if not factor.sample_space:
        return torch.cholesky_solve(p.T, factor.cholesky).T
    xt = factor.inputs
    coef = torch.cholesky_solve((p @ xt.T).T, factor.cholesky).T
    return (p - coef @ xt) / factor.mu


def majoriser_theta_step(
    network: LiftedNetwork,
    penalty: Penalty,
    params: Params,
    grad: Params,
    inputs: tuple[Tensor, ...],
    *,
    tau: float,
    anchor: Params,
    first: MajoriserFactor | None = None,
) -> Params:
    r"""The Theta step of ``theta_step="majoriser"`` (dense layers). Given :math:`X`, layer
    :math:`l`'s part of the sub-problem, :math:`\lambda_l\sum_i h(x_{l,i}, \Theta_l\tilde
    x_{l-1,i}) + \tfrac\mu2|\Theta_l - \Theta_l^{k-1}|^2`, has a gradient :math:`P_l`
    (``grad`` plus the proximal term) and lies below its quadratic model with the metric
    :math:`M_l = \lambda_l c_l\tilde X_{l-1}^\top\tilde X_{l-1} + \mu I` (the curvature of
    :math:`h` in :math:`z` is at most :math:`c_l` and :math:`z` is linear in
    :math:`\Theta_l`); the step :math:`\Theta_l - P_l M_l^{-1}` minimises that model, so it
    never increases the sub-problem and it is exact when the layer's term is quadratic with
    curvature :math:`c_l` (the MSE output layer). ``tau`` is :math:`\mu` (batch-sum units),
    ``inputs`` the layer inputs ``(x0, x_1, ...)``, ``first`` the factor of layer 1 when
    already known (its input, the batch, is fixed during the inner iterations)."""
    curv = [penalty.curvature_z(a) for a in network.activations]
    curv.append(output_curvature(network))
    weights, biases = [], []
    for l, layer in enumerate(network.layers):
        w, b = params.weights[l], params.biases[l]
        gw, gb = grad.weights[l], grad.biases[l]
        if tau > 0:
            gw = gw.add(w - anchor.weights[l], alpha=tau)
            gb = gb.add(b - anchor.biases[l], alpha=tau)
        if l == 0 and first is not None:
            factor = first
        else:
            flat = layer.prepare(inputs[l])
            factor = majoriser_factor(flat, network.lambdas[l] * curv[l], tau)
        step = majoriser_solve(factor, torch.cat([gw, gb[:, None]], dim=1))
        weights.append(w - step[:, :-1])
        biases.append(b - step[:, -1])
    return Params(tuple(weights), tuple(biases))


def majoriser_sweep(
    network: LiftedNetwork,
    penalty: Penalty,
    params: Params,
    aux: tuple[Tensor, ...],
    x0: Tensor,
    y: Tensor,
    w_vecs: tuple[Tensor, ...],
    *,
    step_scale: float,
    tau: float,
    anchor: Params,
    first: MajoriserFactor | None,
    x_blocks: bool,
) -> tuple[Params, tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One inner iteration of the alternating (``x_blocks``: blockwise) rule with the
    majoriser Theta step (:func:`majoriser_theta_step`), then the X step(s) of
    :func:`~bregnn.lifted.solvers._step.joint_step` at the new Theta. Returns
    ``(params, aux, w_vecs)``."""
    grad, _, _ = network.smooth_grads(params, x0, aux, y, penalty, parts="params")
    new_params = majoriser_theta_step(
        network, penalty, params, grad, (x0, *aux), tau=tau, anchor=anchor, first=first
    )
    step_x, new_w_vecs = x_step_sizes(network, penalty, new_params.weights, w_vecs, step_scale)
    n = len(aux)
    groups = (range(0, n, 2), range(1, n, 2)) if x_blocks else (range(n),)
    new_aux = list(aux)
    for group in groups:  # x_1, x_3, ... then x_2, x_4, ...: each set decoupled
        _, grad_aux, _ = network.smooth_grads(new_params, x0, new_aux, y, penalty, parts="aux")
        for i in group:
            half = torch.add(new_aux[i], grad_aux[i], alpha=-step_x[i])
            new_aux[i] = network.prox_layer(i, half, step_x[i], penalty)
    return new_params, tuple(new_aux), tuple(new_w_vecs)


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
        if self.config.theta_step == "majoriser":
            plain = all(isinstance(layer, Dense) and not layer.post for layer in network.layers)
            if not plain or getattr(network, "residual", False):
                raise ValueError(
                    "theta_step 'majoriser' needs a feed-forward network of dense layers (the "
                    f"Gram matrix of each layer's inputs); got {network!r}"
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
        majoriser = cfg.theta_step == "majoriser"
        if majoriser:  # layer 1's input is the batch: factor its metric once
            k = self.network.lambdas[0] * (
                self.penalty.curvature_z(self.network.activations[0])
                if self.network.activations
                else output_curvature(self.network)
            )
            first = majoriser_factor(self.network.layers[0].prepare(x0), k, tau_sum)
        done = 0
        for _ in range(cfg.inner_iters if cfg.step_rule != "literal" else 0):
            if majoriser:
                params, aux, w_vecs = majoriser_sweep(
                    self.network, self.penalty, params, aux, x0, y, w_vecs,
                    step_scale=cfg.step_scale, tau=tau_sum, anchor=anchor, first=first,
                    x_blocks=cfg.step_rule == "blockwise",
                )  # fmt: skip
            else:
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
