r"""Full-batch proximal gradient descent on :math:`(\Theta, X)` jointly (the paper's LBN-D).

The state keeps :math:`X` for every sample. Each :meth:`update` is one joint step
(:func:`~bregnn.lifted.solvers._step.joint_step`, no proximal term), optionally accelerated:

- ``"nesterov"``: step at :math:`u^k + \beta_k(u^k - u^{k-1})`, :math:`\beta_k = (k-1)/(k+2)`;
- ``"heavy-ball"``: :math:`u^{k+1} = \operatorname{prox}(u^k - t\nabla H(u^k)
  + \beta(u^k - u^{k-1}))` with constant ``momentum`` :math:`\beta`.

The energy is not convex, so both use a monotone restart: a momentum step that increases
:math:`E` is rejected and the momentum is reset (O'Donoghue & Candes), and a plain
proximal-gradient step is taken instead, with backtracking on the step size: every accepted
update leaves :math:`E` non-increasing.

One epoch is ``inner_iters`` updates.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.lifted.network import Params
from bregnn.lifted.solvers._step import batch_metrics, initial_vectors, joint_step, metric_names
from bregnn.lifted.solvers.base import Solver, check_positive, solver_config

__all__ = ["ACCELERATIONS", "ProximalGradientConfig", "ProximalGradientLifted", "ProximalState"]

ACCELERATIONS = ("none", "nesterov", "heavy-ball")


@solver_config
class ProximalGradientConfig:
    """Settings of LBN-D (Algorithm 1 with tau_k = 0 and the whole data as one batch).

    Args:
        inner_iters: proximal-gradient steps per epoch (the paper's N).
        step_scale: numerator of the block-Lipschitz step sizes.
        acceleration: one of none, nesterov, heavy-ball.
        momentum: heavy-ball momentum.
        backtrack: halve the step, at most max_backtracks times, until the energy does not
            increase (the blocks are coupled bilinearly, so no global Lipschitz constant of
            the joint gradient exists).
        max_backtracks: see backtrack.
        reinit_aux: start every epoch from X given by the forward pass, as Algorithm 1 does
            for every batch; False keeps X across epochs.
    """

    inner_iters: int = 15
    step_scale: float = 1.0
    acceleration: str = "none"
    momentum: float = 0.5
    backtrack: bool = True
    max_backtracks: int = 30
    reinit_aux: bool = True

    def __post_init__(self) -> None:
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("step_scale", self.step_scale, upper=2.0)
        if self.acceleration not in ACCELERATIONS:
            raise ValueError(
                f"unknown acceleration {self.acceleration!r}; valid: {list(ACCELERATIONS)}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}")
        if not (isinstance(self.max_backtracks, int) and self.max_backtracks >= 0):
            raise ValueError(f"max_backtracks must be an integer >= 0; got {self.max_backtracks!r}")


class ProximalState(NamedTuple):
    params: Params
    aux: tuple[Tensor, ...]
    prev_params: Params
    prev_aux: tuple[Tensor, ...]
    w_vectors: tuple[Tensor, ...]
    x_vectors: tuple[Tensor, ...]
    step: Tensor
    momentum_step: Tensor
    metrics: Tensor


def _lin(a: tuple[Tensor, ...], b: tuple[Tensor, ...], beta: float) -> tuple[Tensor, ...]:
    """``a + beta (a - b)`` per tensor."""
    return tuple(x + beta * (x - y) for x, y in zip(a, b, strict=True))


class ProximalGradientLifted(Solver):
    """LBN-D: full-batch proximal gradient on the lifted Bregman energy."""

    full_batch = True
    Config = ProximalGradientConfig
    State = ProximalState

    def metric_names(self) -> list[str]:
        return metric_names(self.network)

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> ProximalState:
        self.network.check_params(params)
        self.network.check_data(x0, y)
        aux, _ = self.network.forward(params, x0)
        w_vecs, x_vecs = initial_vectors(self.network, params.weights[0].dtype, params, (x0, *aux))
        params = Params(
            tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
        )
        metrics = batch_metrics(self.network, self.penalty, params, aux, x0, y)
        return ProximalState(
            params, aux, params, aux, w_vecs, x_vecs,
            metrics.new_zeros((), dtype=torch.int64), metrics.new_zeros((), dtype=torch.int64),
            metrics,
        )  # fmt: skip

    @torch.no_grad()
    def start_epoch(self, state: ProximalState, x0: Tensor, y: Tensor) -> ProximalState:
        r"""With ``reinit_aux``: :math:`X` from the forward pass of the current
        :math:`\Theta` (Algorithm 1), the momentum restarted."""
        if not self.config.reinit_aux:
            return state
        aux, _ = self.network.forward(state.params, x0)
        metrics = batch_metrics(self.network, self.penalty, state.params, aux, x0, y)
        return state._replace(
            aux=aux, prev_params=state.params, prev_aux=aux, metrics=metrics,
            momentum_step=torch.zeros_like(state.momentum_step),
        )  # fmt: skip

    def _momentum_point(self, state: ProximalState, k: int):
        """The point (and heavy-ball shift) of a momentum step, or ``None`` without one."""
        cfg = self.config
        if cfg.acceleration == "nesterov" and k > 0:
            beta = (k - 1) / (k + 2)
            params = Params(
                _lin(state.params.weights, state.prev_params.weights, beta),
                _lin(state.params.biases, state.prev_params.biases, beta),
            )
            return params, _lin(state.aux, state.prev_aux, beta), None
        if cfg.acceleration == "heavy-ball" and k > 0:
            beta = cfg.momentum

            def diff(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
                return tuple(beta * (u - v) for u, v in zip(a, b, strict=True))

            shift = (
                Params(
                    diff(state.params.weights, state.prev_params.weights),
                    diff(state.params.biases, state.prev_params.biases),
                ),
                diff(state.aux, state.prev_aux),
            )
            return self.params(state), state.aux, shift
        return None

    def _energy(self, metrics: Tensor) -> Tensor:
        return metrics[self.metric_names().index("energy")]

    def _accept(self, new: Tensor, old: Tensor) -> bool:
        tol = 4 * torch.finfo(new.dtype).eps * float(old.abs())
        return bool(new <= old + tol)

    @torch.no_grad()
    def update(self, state: ProximalState, x0: Tensor, y: Tensor) -> ProximalState:
        """One step: a momentum step if it does not increase :math:`E` (else restart), or a
        plain proximal-gradient step, backtracking (halving ``step_scale``, at most
        ``max_backtracks`` times) until :math:`E` does not increase."""
        cfg = self.config
        k = int(state.momentum_step)
        w_vecs, x_vecs = state.w_vectors, state.x_vectors
        point = self._momentum_point(state, k)
        if point is not None:
            params, aux, shift = point
            new_params, new_aux, w_vecs, x_vecs = joint_step(
                self.network, self.penalty, params, aux, x0, y, w_vecs, x_vecs,
                step_scale=cfg.step_scale, shift=shift,
            )  # fmt: skip
            metrics = batch_metrics(self.network, self.penalty, new_params, new_aux, x0, y)
            if self._accept(self._energy(metrics), self._energy(state.metrics)):
                return ProximalState(
                    new_params, new_aux, state.params, state.aux,
                    w_vecs, x_vecs, state.step + 1, state.momentum_step + 1, metrics,
                )  # fmt: skip
        # plain step from the current point (restart: the momentum is dropped)
        scale = cfg.step_scale
        for _ in range(cfg.max_backtracks + 1):
            new_params, new_aux, w_vecs, x_vecs = joint_step(
                self.network, self.penalty, self.params(state), state.aux, x0, y, w_vecs, x_vecs,
                step_scale=scale,
            )  # fmt: skip
            metrics = batch_metrics(self.network, self.penalty, new_params, new_aux, x0, y)
            if not cfg.backtrack or self._accept(
                self._energy(metrics), self._energy(state.metrics)
            ):
                return ProximalState(
                    new_params, new_aux, state.params, state.aux, w_vecs, x_vecs,
                    state.step + 1, torch.ones_like(state.momentum_step), metrics,
                )  # fmt: skip
            scale /= 2
        return state._replace(
            prev_params=state.params, prev_aux=state.aux,
            w_vectors=w_vecs, x_vectors=x_vecs, step=state.step + 1,
            momentum_step=torch.zeros_like(state.momentum_step),
        )  # fmt: skip

    @torch.no_grad()
    def objective(self, state: ProximalState, x0: Tensor, y: Tensor) -> Tensor:
        """:math:`E(\\Theta, X)/n` at the state's own auxiliary variables."""
        return (
            self.network.energy(self.params(state), x0, state.aux, y, self.penalty).total
            / (x0.shape[0])
        )
