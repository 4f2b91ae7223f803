r"""ADMM for the sub-problems of lifted block coordinate descent (the paper's Appendix B.2).

The sweep is that of :mod:`bregnn.lifted.solvers.bcd` (:math:`\Theta`, odd :math:`X`, even
:math:`X`), each block solved by ``admm_iters`` iterations of scaled ADMM with penalty
:math:`\beta`.

**Theta sub-problem** (equation 39) of layer :math:`l`, with target :math:`T`
(:math:`x_l`, or :math:`y` for the output), inputs :math:`\tilde X = [x_{l-1}, 1]`:

.. math::

    \min_{\tilde W, Z}\ \lambda\sum_i \big(\phi^*(z_i) - \langle t_i, z_i\rangle\big)
      + \tfrac\tau2|\tilde W - \tilde W^j|^2 \quad\text{s.t.}\quad Z = \tilde X\tilde W^\top.

The term :math:`\tfrac\tau2|\tilde W - \tilde W^j|^2` (``tau > 0``) keeps the problem well
defined when :math:`\tilde X` is rank deficient. Iterations:

- :math:`\tilde W`-step, a least-squares solve with one Cholesky factor per sub-problem:
  :math:`(\tau I + \beta\tilde X^\top\tilde X)\tilde W^\top = \tau\tilde W^{j\top}
  + \beta\tilde X^\top(Z - U)`;
- :math:`Z`-step, elementwise: :math:`Z = \operatorname{prox}_{s\phi^*}(\tilde X\tilde W^\top
  + U + sT)`, :math:`s = \lambda/\beta`, where by Moreau
  :math:`\operatorname{prox}_{s\phi^*}(w) = w - s\,\operatorname{prox}_{\Psi/(1+s)}\big(\tfrac{w}{1+s}\big)`
  (so :math:`w - z = s\rho(z)`: no derivative of the activation);
- :math:`U \leftarrow U + \tilde X\tilde W^\top - Z`.

**X sub-problem** of hidden layer :math:`l` with neighbours fixed, split as
:math:`v = x`, :math:`s = W_{l+1}x + b_{l+1}`:

.. math::

    \min\ \lambda_l(\tfrac12|x|^2 - \langle x, z_l\rangle) + \lambda_l\Psi_l(v) + R_l(v)
      + \lambda_{l+1}(\phi_{l+1}^*(s) - \langle t, s\rangle),

with :math:`x`-step :math:`((\lambda_l + \beta)I + \beta W^\top W)x = \lambda_l z_l
+ \beta(v - u_1) + \beta W^\top(s - b - u_2)` (one Cholesky factor, all samples),
:math:`v`-step :math:`\operatorname{prox}_{(\lambda_l\Psi_l + R_l)/\beta}(x + u_1)`,
:math:`s`-step the :math:`Z`-step above, and dual updates. The returned :math:`x_l` is
:math:`v` (it lies in :math:`\operatorname{dom}\Psi_l`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.activations import Activation
from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.solvers.base import check_positive, solver_config
from bregnn.lifted.solvers.bcd import BlockCoordinateDescent, augmented, layer_prox

__all__ = [
    "ADMMConfig",
    "ADMMState",
    "LiftedADMM",
    "admm_theta",
    "admm_w_step",
    "admm_x",
    "check_dense_network",
    "prox_conj",
]


@solver_config
class ADMMConfig:
    """``inner_iters`` sweeps per epoch, ``admm_iters`` ADMM iterations per sub-problem,
    penalty ``beta``, proximal weight ``tau > 0`` on :math:`\\Theta`."""

    inner_iters: int = 15
    admm_iters: int = 20
    beta: float = 1.0
    tau: float = 1.0

    def __post_init__(self) -> None:
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("admm_iters", self.admm_iters, integer=True)
        check_positive("beta", self.beta)
        check_positive("tau", self.tau)


class ADMMState(NamedTuple):
    params: Params
    aux: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


def check_dense_network(network: LiftedNetwork, name: str) -> None:
    r"""ADMM's sub-problems are linear solves with :math:`\tilde X^\top\tilde X` and
    :math:`W^\top W`; for a convolution the :math:`x`-step would factorise
    :math:`(\lambda_l + \beta)I + \beta K^\top K` of size :math:`CHW` (a dense
    solve per feature map, infeasible beyond tiny images): convolutional networks are
    refused."""
    if network.convolutional:
        raise ValueError(
            f"{name} does not support convolutional layers; use lbn-s, lbn-d, "
            "lifted-quadratic, bcd, constrained, linbreg or sgd-bp (its x sub-problem "
            "factorises (lambda + beta) I + beta K^T K, a matrix of size C*H*W per feature map)"
        )


def prox_conj(act: Activation, w: Tensor, s: float) -> Tensor:
    r""":math:`\operatorname{prox}_{s\phi^*}(w) = \arg\min_z s\phi^*(z) + \tfrac12|z - w|^2
    = w - s\operatorname{prox}_{\Psi/(1+s)}(w/(1+s))` (Moreau's identity)."""
    return w - s * act.prox(w / (1 + s), 1.0 / (1 + s))


def admm_w_step(
    xt: Tensor, z_minus_u: Tensor, w_anchor: Tensor, tau: float, beta: float, chol: Tensor
) -> Tensor:
    r"""The least-squares :math:`\tilde W`-step: :math:`\arg\min_{\tilde W}
    \tfrac\tau2|\tilde W - \tilde W^j|^2 + \tfrac\beta2|\tilde X\tilde W^\top - (Z - U)|^2`,
    given the Cholesky factor ``chol`` of :math:`\tau I + \beta\tilde X^\top\tilde X`."""
    rhs = tau * w_anchor.T + beta * (xt.T @ z_minus_u)
    return torch.cholesky_solve(rhs, chol).T


def admm_theta(
    act: Activation,
    lam: float,
    inputs: Tensor,
    target: Tensor,
    w: Tensor,
    b: Tensor,
    tau: float,
    beta: float,
    iters: int,
) -> tuple[Tensor, Tensor]:
    """ADMM on the Theta sub-problem of one layer (equation 39; see the module doc)."""
    xt = augmented(inputs)
    anchor = torch.cat([w, b[:, None]], dim=1)
    eye = torch.eye(xt.shape[1], dtype=xt.dtype, device=xt.device)
    chol = torch.linalg.cholesky(tau * eye + beta * (xt.T @ xt))
    s = lam / beta
    wt = anchor
    z = xt @ wt.T
    u = torch.zeros_like(z)
    for _ in range(iters):
        wt = admm_w_step(xt, z - u, anchor, tau, beta, chol)
        pred = xt @ wt.T
        z = prox_conj(act, pred + u + s * target, s)
        u = u + pred - z
    return wt[:, :-1].contiguous(), wt[:, -1].contiguous()


def admm_x(
    network: LiftedNetwork,
    penalty,
    params: Params,
    layer: int,
    prev: Tensor,
    x: Tensor,
    nxt: Tensor,
    beta: float,
    iters: int,
) -> Tensor:
    """ADMM on the X sub-problem of hidden layer ``layer`` (see the module doc)."""
    lam = network.lambdas[layer - 1]
    lam_next = network.lambdas[layer]
    next_act = network.output if layer + 1 == network.n_layers else network.activations[layer]
    z_l = torch.addmm(params.biases[layer - 1], prev, params.weights[layer - 1].T)
    w, b = params.weights[layer], params.biases[layer]
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    chol = torch.linalg.cholesky((lam + beta) * eye + beta * (w.T @ w))
    s_scale = lam_next / beta
    v = x
    s = torch.addmm(b, x, w.T)
    u1, u2 = torch.zeros_like(x), torch.zeros_like(s)
    for _ in range(iters):
        rhs = lam * z_l + beta * (v - u1) + beta * (s - b - u2) @ w
        x = torch.cholesky_solve(rhs.T, chol).T
        v = layer_prox(network, penalty, layer, x + u1, 1.0 / beta)
        pred = torch.addmm(b, x, w.T)
        s = prox_conj(next_act, pred + u2 + s_scale * nxt, s_scale)
        u1 = u1 + x - v
        u2 = u2 + pred - s
    return v


class LiftedADMM(BlockCoordinateDescent):
    """``admm``: block coordinate descent whose blocks are solved by ADMM (dense layers only:
    see :func:`check_dense_network`)."""

    Config = ADMMConfig
    State = ADMMState

    def __init__(self, network: LiftedNetwork, config: ADMMConfig | None = None, **kwargs) -> None:
        super().__init__(network, config, **kwargs)
        check_dense_network(network, self.name)

    def theta_block(self, params: Params, x0: Tensor, aux: Sequence[Tensor], y: Tensor) -> Params:
        cfg = self.config
        net = self.network
        inputs, targets = (x0, *aux), (*aux, y)
        acts = (*net.activations, net.output)
        weights, biases = [], []
        for l in range(net.n_layers):
            w, b = admm_theta(
                acts[l], net.lambdas[l], inputs[l], targets[l], params.weights[l],
                params.biases[l], cfg.tau, cfg.beta, cfg.admm_iters,
            )  # fmt: skip
            weights.append(w)
            biases.append(b)
        return Params(tuple(weights), tuple(biases))

    def x_layer(
        self, params: Params, layer: int, x0: Tensor, aux: Sequence[Tensor], y: Tensor
    ) -> Tensor:
        inputs, targets = (x0, *aux), (*aux, y)
        return admm_x(
            self.network, self.penalty, params, layer, inputs[layer - 1], aux[layer - 1],
            targets[layer], self.config.beta, self.config.admm_iters,
        )  # fmt: skip
