r"""Block coordinate descent on the lifted energy (the paper's Appendix B.1).

The energy :math:`E(\Theta, X) = \sum_{l<L}\lambda_l B_{\Psi_l}(x_l, W_l x_{l-1} + b_l)
+ R_l(x_l) + \lambda_L B_{\Psi_L}(y, W_L x_{L-1} + b_L)` couples :math:`x_l` only to its
neighbours :math:`x_{l-1}, x_{l+1}` and to :math:`\Theta_l, \Theta_{l+1}`. One sweep
(:meth:`BlockCoordinateDescent.update`) therefore minimises over three blocks in turn:

1. :math:`\Theta`: given :math:`X` the layers decouple, each a (generalised) regression
   :math:`\min_{\Theta_l} \lambda_l\sum_i h_l(x_{l,i}, \Theta_l\tilde x_{l-1,i})
   + \tfrac\tau2|\Theta_l - \Theta_l^k|^2` with :math:`\tilde x = [x; 1]`;
2. the odd-indexed :math:`x_1, x_3, \dots`: given the even ones they decouple;
3. the even-indexed :math:`x_2, x_4, \dots`.

Within a block every variable sees only variables of the other blocks, so updating the block
"in parallel" (all from the same values) equals updating its variables one by one; all
samples are updated at once (batched). Per variable:

- closed form where one exists: the identity output / an identity hidden layer makes the
  :math:`\Theta_l` problem linear least squares,
  :math:`(\lambda_l\tilde X^\top\tilde X + \tau I)\tilde W^\top = \lambda_l\tilde X^\top T
  + \tau\tilde W^{k\top}` (Cholesky; ``lstsq`` for ``tau = 0``), and an
  identity hidden layer :math:`x_l` without regulariser whose next layer is the identity
  (or the MSE output) has the exact minimiser
  :math:`(\lambda_l I + \lambda_{l+1}W^\top W)x = \lambda_l z_l + \lambda_{l+1}W^\top(t - b)`;
- otherwise ``theta_iters`` gradient steps / ``x_iters`` proximal-gradient steps of size
  ``step_scale`` over the block Lipschitz constant (:math:`\lambda_l c_l|\tilde X|_2^2 + \tau`
  for :math:`\Theta_l`, :math:`\lambda_l + \lambda_{l+1}c_{l+1}|W_{l+1}|_2^2` for
  :math:`x_l`; spectral norms by power iteration). These steps never increase the block
  objective (for ``step_scale < 2``), so a sweep never increases :math:`E`.

Convolutional layers (:mod:`bregnn.lifted.layers`) have the same blocks with :math:`\Theta_l
\tilde x` read as the affine map :math:`A_l(x; \Theta_l)`: their :math:`\Theta_l` and
:math:`x_l` problems take the gradient / proximal-gradient steps (the norms by power
iterations with ``conv2d`` and its adjoints), also where a dense layer would have a closed
form: the least-squares solves above are for plain dense layers only.

Full-batch: the state keeps :math:`X` for every sample; one epoch is ``inner_iters``
sweeps. Only the Bregman penalty of the core (``penalty_name = "bregman"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from bregnn.activations import Identity
from bregnn.lifted.layers import Dense
from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.penalties import Penalty
from bregnn.lifted.solvers._step import batch_metrics, metric_names
from bregnn.lifted.solvers.base import Solver, check_positive, solver_config

__all__ = [
    "BCDConfig",
    "BCDState",
    "BlockCoordinateDescent",
    "augmented",
    "check_block_network",
    "input_sq_norm",
    "layer_prox",
    "next_layer_grad",
    "sq_spectral_norm",
    "theta_block_gradient_steps",
    "theta_block_least_squares",
    "theta_sq_norm",
    "x_block_closed_form",
    "x_block_prox_steps",
]


@solver_config
class BCDConfig:
    """Settings: ``inner_iters`` sweeps per epoch, ``theta_iters`` / ``x_iters`` inner
    steps for blocks without a closed form, proximal weight ``tau`` on :math:`\\Theta`
    (``tau = 0``: none), ``step_scale`` in (0, 2)."""

    inner_iters: int = 15
    theta_iters: int = 5
    x_iters: int = 5
    tau: float = 0.0
    step_scale: float = 1.0

    def __post_init__(self) -> None:
        check_positive("inner_iters", self.inner_iters, integer=True)
        check_positive("theta_iters", self.theta_iters, integer=True)
        check_positive("x_iters", self.x_iters, integer=True)
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0; got {self.tau!r}")
        check_positive("step_scale", self.step_scale, upper=2.0)


class BCDState(NamedTuple):
    params: Params
    aux: tuple[Tensor, ...]
    step: Tensor
    metrics: Tensor


# -- helpers shared with the ADMM solver --------------------------------------------------------
def check_block_network(network: LiftedNetwork, name: str) -> None:
    """Block methods need the plain feed-forward coupling (``x_l`` meets only neighbours)."""
    if getattr(network, "residual", False):
        raise ValueError(
            f"{name} needs a plain feed-forward LiftedNetwork; in a residual network every "
            "x_l enters every later layer, so the odd/even blocks are not independent"
        )


def augmented(x: Tensor) -> Tensor:
    """:math:`[x, 1]` (a column of ones appended)."""
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)


def _plain(network: LiftedNetwork, layer: int) -> bool:
    """Is layer ``layer`` (1-based) a plain dense map :math:`Wx + b`?"""
    affine = network.layers[layer - 1]
    return isinstance(affine, Dense) and affine._plain


def _sq_norm_steps(step, operand: Tensor, v: Tensor, iters: int) -> Tensor:
    norm = operand.new_zeros(())
    for _ in range(iters):
        norm, v = step(operand, v)
    return norm


def theta_sq_norm(network: LiftedNetwork, layer: int, inputs: Tensor, iters: int = 30) -> Tensor:
    r""":math:`|\Theta_l \mapsto A_l(X; \Theta_l)|_2^2` over the batch ``inputs`` (dense:
    :math:`|[X, 1]|_2^2` by :func:`sq_spectral_norm`), ``iters`` power iterations from a fixed
    start."""
    if _plain(network, layer):
        return sq_spectral_norm(augmented(inputs))
    affine = network.layers[layer - 1]
    v = affine.theta_vector(inputs.dtype, inputs.device)
    return _sq_norm_steps(affine.theta_power_step, inputs, v, iters)


def input_sq_norm(network: LiftedNetwork, layer: int, weight: Tensor, iters: int = 30) -> Tensor:
    r""":math:`|K_l|_2^2` of layer ``layer``'s map on its input (dense: :math:`|W_l|_2^2`)."""
    if _plain(network, layer):
        return sq_spectral_norm(weight)
    affine = network.layers[layer - 1]
    v = affine.input_vector(weight.dtype, weight.device)
    return _sq_norm_steps(affine.input_power_step, weight, v, iters)


def sq_spectral_norm(a: Tensor, iters: int = 30) -> Tensor:
    """:math:`|A|_2^2` by ``iters`` power iterations on :math:`A^\\top A` (from a fixed start,
    so deterministic); exact for the dominant singular value up to the iteration error."""
    v = torch.ones(a.shape[1], dtype=a.dtype, device=a.device)
    v = v / v.norm()
    norm = a.new_zeros(())
    for _ in range(iters):
        u = a.T @ (a @ v)
        norm = u.norm()
        if norm == 0:
            return norm
        v = u / norm
    return norm


def _curvature(network: LiftedNetwork, penalty: Penalty, layer: int) -> float:
    """Bound on the second ``z``-derivative of layer ``layer`` (1-based; ``L``: output)."""
    if layer == network.n_layers:
        return 1.0
    return penalty.curvature_z(network.activations[layer - 1])


def _target_grad_z(
    network: LiftedNetwork, penalty: Penalty, layer: int, target: Tensor, z: Tensor
) -> Tensor:
    r""":math:`\lambda_l\nabla_z h_l(t, z)`; for the output :math:`\lambda_L(\rho_L(z) - y)`."""
    lam = network.lambdas[layer - 1]
    if layer == network.n_layers:
        return lam * (network.output.rho(z) - target)
    return lam * penalty.grads(target, z, network.activations[layer - 1])[1]


def _is_quadratic(network: LiftedNetwork, layer: int) -> bool:
    """Is layer ``layer``'s term quadratic in its pre-activation (identity activation)?"""
    if layer == network.n_layers:
        return isinstance(network.output, Identity)
    return isinstance(network.activations[layer - 1], Identity)


def layer_prox(network: LiftedNetwork, penalty: Penalty, layer: int, v: Tensor, t) -> Tensor:
    r""":math:`\operatorname{prox}_{t(\lambda_l\Psi_l + R_l)}(v)` for hidden layer ``layer``."""
    act = network.activations[layer - 1]
    t_psi = t * network.lambdas[layer - 1] if penalty.uses_psi else 0.0
    reg = network.regularisers[layer - 1]
    if reg is not None:
        return reg.prox(v, t, act, t_psi)
    if penalty.uses_psi:
        return act.prox(v, t_psi)
    return v


def theta_block_least_squares(
    inputs: Tensor, target: Tensor, lam: float, tau: float, w: Tensor, b: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Exact :math:`\arg\min_{W,b} \tfrac\lambda2|T - XW^\top - b|^2 + \tfrac\tau2
    |[W, b] - [W^k, b^k]|^2`: for ``tau > 0`` the normal equations
    :math:`(\lambda\tilde X^\top\tilde X + \tau I)\tilde W^\top = \lambda\tilde X^\top T
    + \tau\tilde W^{k\top}` by Cholesky (deterministic); for ``tau = 0`` the minimum-norm
    least-squares solution (``torch.linalg.lstsq`` with the SVD driver ``gelsd`` on the CPU;
    on CUDA, whose ``lstsq`` has only the full-rank QR driver, the pseudo-inverse, also by
    an SVD, so a rank-deficient batch gets the same solution on both devices)."""
    xt = augmented(inputs)
    if tau > 0:
        wk = torch.cat([w, b[:, None]], dim=1)
        eye = torch.eye(xt.shape[1], dtype=xt.dtype, device=xt.device)
        chol = torch.linalg.cholesky(lam * (xt.T @ xt) + tau * eye)
        sol = torch.cholesky_solve(lam * (xt.T @ target) + tau * wk.T, chol).T
    else:
        if xt.device.type == "cpu":
            sol = torch.linalg.lstsq(xt, target, driver="gelsd").solution.T
        else:
            sol = (torch.linalg.pinv(xt) @ target).T
    return sol[:, :-1].contiguous(), sol[:, -1].contiguous()


def theta_block_gradient_steps(
    network: LiftedNetwork,
    penalty: Penalty,
    layer: int,
    inputs: Tensor,
    target: Tensor,
    w: Tensor,
    b: Tensor,
    tau: float,
    iters: int,
    step_scale: float,
) -> tuple[Tensor, Tensor]:
    """``iters`` gradient steps on layer ``layer``'s :math:`\\Theta` problem (see module doc)."""
    lam = network.lambdas[layer - 1]
    affine = network.layers[layer - 1]
    step = step_scale / (
        lam * _curvature(network, penalty, layer) * theta_sq_norm(network, layer, inputs) + tau
    )
    w0, b0 = w, b
    for _ in range(iters):
        g = _target_grad_z(network, penalty, layer, target, affine.forward(w, b, inputs))
        gw, gb = affine.param_grads(g, inputs)
        if tau > 0:
            gw, gb = gw + tau * (w - w0), gb + tau * (b - b0)
        w, b = w - step * gw, b - step * gb
    return w, b


def next_layer_grad(
    network: LiftedNetwork, penalty: Penalty, params: Params, layer: int, x: Tensor, nxt: Tensor
) -> Tensor:
    r""":math:`\nabla_{x_l}` of the next layer's term: :math:`g_{l+1} W_{l+1}` with
    :math:`g_{l+1} = \lambda_{l+1}\nabla_z h_{l+1}(x_{l+1}, W_{l+1}x_l + b_{l+1})`."""
    w, b = params.weights[layer], params.biases[layer]
    affine = network.layers[layer]
    return affine.input_grad(
        _target_grad_z(network, penalty, layer + 1, nxt, affine.forward(w, b, x)), w
    )


def x_block_prox_steps(
    network: LiftedNetwork,
    penalty: Penalty,
    params: Params,
    layer: int,
    prev: Tensor,
    x: Tensor,
    nxt: Tensor,
    iters: int,
    step_scale: float,
) -> Tensor:
    """``iters`` proximal-gradient steps on hidden layer ``layer``'s :math:`x_l` problem
    given its neighbours ``prev`` (:math:`x_{l-1}`) and ``nxt`` (:math:`x_{l+1}` or ``y``)."""
    lam = network.lambdas[layer - 1]
    act = network.activations[layer - 1]
    z = network.layers[layer - 1].forward(params.weights[layer - 1], params.biases[layer - 1], prev)
    lip = lam + network.lambdas[layer] * _curvature(network, penalty, layer + 1) * (
        input_sq_norm(network, layer + 1, params.weights[layer])
    )
    step = step_scale / lip
    for _ in range(iters):
        grad = lam * penalty.grads(x, z, act)[0] + next_layer_grad(
            network, penalty, params, layer, x, nxt
        )
        x = layer_prox(network, penalty, layer, x - step * grad, step)
    return x


def x_block_closed_form(
    network: LiftedNetwork, params: Params, layer: int, prev: Tensor, nxt: Tensor
) -> Tensor:
    r"""Exact minimiser for an identity hidden layer (no regulariser) followed by an
    identity layer: :math:`(\lambda_l I + \lambda_{l+1}W^\top W)x = \lambda_l z_l
    + \lambda_{l+1}W^\top(t - b)`, one Cholesky factorisation for all samples."""
    lam, lam_next = network.lambdas[layer - 1], network.lambdas[layer]
    z = torch.addmm(params.biases[layer - 1], prev, params.weights[layer - 1].T)
    w, b = params.weights[layer], params.biases[layer]
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    chol = torch.linalg.cholesky(lam * eye + lam_next * (w.T @ w))
    rhs = lam * z + lam_next * (nxt - b) @ w
    return torch.cholesky_solve(rhs.T, chol).T


def has_x_closed_form(network: LiftedNetwork, penalty: Penalty, layer: int) -> bool:
    """Whether :func:`x_block_closed_form` is exact for hidden layer ``layer``."""
    return (
        penalty.name in ("bregman", "quadratic")
        and _plain(network, layer)
        and _plain(network, layer + 1)
        and isinstance(network.activations[layer - 1], Identity)
        and network.regularisers[layer - 1] is None
        and _is_quadratic(network, layer + 1)
    )


class BlockCoordinateDescent(Solver):
    """``bcd``: Theta block, then odd and even X blocks (see the module doc)."""

    full_batch = True
    Config = BCDConfig
    State = BCDState

    def __init__(self, network: LiftedNetwork, config: BCDConfig | None = None, **kwargs) -> None:
        super().__init__(network, config, **kwargs)
        check_block_network(network, self.name)

    def metric_names(self) -> list[str]:
        return metric_names(self.network)

    def init_state(self, params: Params, x0: Tensor, y: Tensor) -> BCDState:
        self.network.check_params(params)
        self.network.check_data(x0, y)
        aux, _ = self.network.forward(params, x0)
        metrics = batch_metrics(self.network, self.penalty, params, aux, x0, y)
        return self.State(
            Params(
                tuple(w.clone() for w in params.weights), tuple(b.clone() for b in params.biases)
            ),
            tuple(aux),
            metrics.new_zeros((), dtype=torch.int64),
            metrics,
        )

    # -- blocks ------------------------------------------------------------------------------
    def theta_block(self, params: Params, x0: Tensor, aux: Sequence[Tensor], y: Tensor) -> Params:
        """Minimise over every :math:`\\Theta_l` given :math:`X` (layers are independent)."""
        cfg = self.config
        inputs, targets = (x0, *aux), (*aux, y)
        weights, biases = [], []
        for l in range(1, self.network.n_layers + 1):
            w, b = params.weights[l - 1], params.biases[l - 1]
            if _is_quadratic(self.network, l) and _plain(self.network, l):
                w, b = theta_block_least_squares(
                    inputs[l - 1], targets[l - 1], self.network.lambdas[l - 1], cfg.tau, w, b
                )
            else:
                w, b = theta_block_gradient_steps(
                    self.network, self.penalty, l, inputs[l - 1], targets[l - 1], w, b,
                    cfg.tau, cfg.theta_iters, cfg.step_scale,
                )  # fmt: skip
            weights.append(w)
            biases.append(b)
        return Params(tuple(weights), tuple(biases))

    def x_layer(
        self, params: Params, layer: int, x0: Tensor, aux: Sequence[Tensor], y: Tensor
    ) -> Tensor:
        """The new :math:`x_l` given its neighbours in ``aux`` (1-based ``layer``)."""
        inputs, targets = (x0, *aux), (*aux, y)
        prev, x, nxt = inputs[layer - 1], aux[layer - 1], targets[layer]
        if has_x_closed_form(self.network, self.penalty, layer):
            return x_block_closed_form(self.network, params, layer, prev, nxt)
        cfg = self.config
        return x_block_prox_steps(
            self.network, self.penalty, params, layer, prev, x, nxt, cfg.x_iters, cfg.step_scale
        )

    def x_block(
        self, params: Params, layers: Sequence[int], x0: Tensor, aux: Sequence[Tensor], y: Tensor
    ) -> tuple[Tensor, ...]:
        """Update the hidden layers ``layers`` in parallel: every one from the same ``aux``."""
        new = list(aux)
        for l in layers:
            new[l - 1] = self.x_layer(params, l, x0, aux, y)
        return tuple(new)

    @torch.no_grad()
    def update(self, state: BCDState, x0: Tensor, y: Tensor) -> BCDState:
        params = self.theta_block(self.params(state), x0, state.aux, y)
        n_hidden = len(self.network.activations)
        aux = self.x_block(params, range(1, n_hidden + 1, 2), x0, state.aux, y)
        aux = self.x_block(params, range(2, n_hidden + 1, 2), x0, aux, y)
        metrics = batch_metrics(self.network, self.penalty, params, aux, x0, y)
        return self.State(params, aux, state.step + 1, metrics)

    @torch.no_grad()
    def objective(self, state: BCDState, x0: Tensor, y: Tensor) -> Tensor:
        """:math:`E(\\Theta, X)/n` at the state's own auxiliary variables."""
        parts = self.network.energy(self.params(state), x0, state.aux, y, self.penalty)
        return parts.total / x0.shape[0]
