r"""One joint proximal-gradient step on :math:`(\Theta, X)` of a lifted energy.

Split :math:`E = H + G` (see :mod:`bregnn.lifted.network`) plus an optional proximal term
:math:`\tfrac\tau2|\Theta - \Theta^{\mathrm{ref}}|^2` in :math:`H`. Every block takes a
gradient step on :math:`H` with its own step size, then :math:`X` takes the prox of
:math:`G`; all blocks are updated simultaneously from one evaluation of the residuals
(the cost of one forward and one backward pass). Step sizes are ``step_scale`` over the
Lipschitz constant of the block gradient:

- :math:`\Theta_l = [W_l, b_l]`: :math:`H` depends on it through
  :math:`\lambda_l\sum_i h(x_{l,i}, \Theta_l\tilde x_{l-1,i})` with
  :math:`\tilde x = [x; 1]`, so
  :math:`L_{\Theta_l} = \lambda_l\,c_l\,|\tilde X_{l-1}|_2^2 + \tau`, where :math:`c_l` bounds
  :math:`\partial_z^2 h` (``Penalty.curvature_z``: :math:`L_\rho`, 1 for ReLU) and
  :math:`\tilde X_{l-1}` is the batch matrix of inputs with a column of ones;
- :math:`x_l` (per sample): :math:`\partial_x^2 h = 1` in its own layer and
  :math:`W_{l+1}^\top \partial_z^2 h\,W_{l+1}` in the next, so
  :math:`L_{x_l} = \lambda_l + \lambda_{l+1} c_{l+1} |W_{l+1}|_2^2`.

For a convolutional layer (:mod:`bregnn.lifted.layers`) :math:`|\tilde X_{l-1}|^2` becomes
the squared norm of the linear map :math:`\Theta_l \mapsto A_l(X_{l-1}; \Theta_l)` over the
batch and :math:`|W_{l+1}|^2` that of the convolution on one sample, :math:`|K_{l+1}|^2`; the
power vectors are then tensors of one filter (with its bias) and of the layer's input shape.

With :math:`\lambda = 1`, ReLU and the MSE output these are
:math:`\tau_W = 1.99/(|\tilde X_{l-1}|^2 + \tau)` and :math:`\tau_x = 1.99/(1 + |W_{l+1}|^2)`:
the paper's constants up to the terms its split puts elsewhere. Squared spectral norms come
from warm-started power iterations (:func:`~bregnn.lifted.solvers.base.power_step`).
The power-iteration estimates are lower bounds of the norms (warm-started, they converge
within a few steps as the matrices change slowly). The blocks are coupled bilinearly
(:math:`z_l = W_l x_{l-1}`), so the joint gradient has no global Lipschitz constant and a
simultaneous step of ``step_scale = 1.99`` (the paper's choice) is not a descent step: on
Fashion-MNIST it diverged. LBN-S therefore defaults to ``step_scale = 1.0`` and LBN-D
backtracks on it (:mod:`~bregnn.lifted.solvers.proximal`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from bregnn.lifted.network import LiftedNetwork, Params
from bregnn.lifted.penalties import Penalty
from bregnn.lifted.solvers.base import power_step, power_step_augmented

__all__ = [
    "gradient_step",
    "initial_vectors",
    "joint_step",
    "literal_sweep",
    "output_curvature",
    "theta_step_sizes",
    "warm_vectors",
    "x_step_sizes",
]


def output_curvature(network: LiftedNetwork) -> float:
    """Bound on the second derivative of the output loss in ``z_L`` (1 for MSE and softmax)."""
    return 1.0


def initial_vectors(
    network: LiftedNetwork,
    dtype: torch.dtype,
    params: Params | None = None,
    inputs: Sequence[Tensor] | None = None,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Starting vectors of the power iterations for the input maps :math:`K_2..K_L`
    (dense: :math:`W_2..W_L`) and for the parameter maps of every layer (dense: the
    augmented inputs :math:`\tilde X_0..\tilde X_{L-1}`): deterministic vectors of each
    layer's shapes (:meth:`~bregnn.lifted.layers.AffineLayer.input_vector`,
    :meth:`~bregnn.lifted.layers.AffineLayer.theta_vector`; constant for dense layers), warmed
    by power iterations to convergence (:func:`warm_vectors`) on ``params`` and on the layer
    inputs ``inputs = (x0, x_1, ..., x_{L-1})`` when given, so that the first step sizes use
    the spectral norms, not a cold under-estimate of them."""
    device = params.weights[0].device if params is not None else None
    w_vecs = tuple(layer.input_vector(dtype, device) for layer in network.layers[1:])
    x_vecs = tuple(layer.theta_vector(dtype, device) for layer in network.layers)
    return warm_vectors(w_vecs, x_vecs, params, inputs, network=network)


def _converge(step, matrix: Tensor, vec: Tensor, tol: float, max_iters: int) -> Tensor:
    previous = 0.0
    for _ in range(max_iters):
        estimate, vec = step(matrix, vec)
        estimate = float(estimate)
        if abs(estimate - previous) <= tol * estimate:
            break
        previous = estimate
    return vec


def warm_vectors(
    w_vecs: Sequence[Tensor],
    x_vecs: Sequence[Tensor],
    params: Params | None = None,
    inputs: Sequence[Tensor] | None = None,
    tol: float = 1e-4,
    max_iters: int = 500,
    *,
    network: LiftedNetwork | None = None,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Power iterations from ``w_vecs`` on the input maps of layers :math:`2..L` of
    ``params`` and from ``x_vecs`` on the parameter maps over the layer ``inputs``, each
    until the estimate changes by less than ``tol`` (relative) or ``max_iters`` steps
    (vectors without a matrix are returned as they are). ``network`` gives the layers
    (default: dense layers, :math:`|W_l|^2` and :math:`|[X, 1]|^2`)."""
    if params is not None:
        if network is None:
            steps = [power_step] * len(w_vecs)
        else:
            steps = [layer.input_power_step for layer in network.layers[1:]]
        w_vecs = [
            _converge(step, w, v, tol, max_iters)
            for step, w, v in zip(steps, params.weights[1:], w_vecs, strict=True)
        ]
    if inputs is not None:
        if network is None:
            steps = [power_step_augmented] * len(x_vecs)
        else:
            steps = [layer.theta_power_step for layer in network.layers]
        x_vecs = [
            _converge(step, x, v, tol, max_iters)
            for step, x, v in zip(steps, inputs, x_vecs, strict=True)
        ]
    return tuple(w_vecs), tuple(x_vecs)


def _curvatures(network: LiftedNetwork, penalty: Penalty) -> list[float]:
    return [penalty.curvature_z(a) for a in network.activations] + [output_curvature(network)]


def theta_step_sizes(
    network: LiftedNetwork,
    penalty: Penalty,
    inputs: Sequence[Tensor],
    x_vecs: Sequence[Tensor],
    step_scale: float,
    tau: float = 0.0,
    input_sq: float | None = None,
) -> tuple[list[float], tuple[Tensor, ...]]:
    """Steps ``step_scale / L_Theta_l`` of every layer from the layer inputs
    ``(x0, x_1, ..., x_{L-1})`` (see the module doc), and the updated power vectors;
    ``input_sq`` is :math:`|\\tilde X_0|_2^2` when already known."""
    lambdas, curv = network.lambdas, _curvatures(network, penalty)
    steps, vecs = [], []
    for l, (layer, inp, vec) in enumerate(zip(network.layers, inputs, x_vecs, strict=True)):
        if l == 0 and input_sq is not None:
            sq = input_sq
        else:
            sq, vec = layer.theta_power_step(inp, vec)
            sq = float(sq)
        vecs.append(vec)
        steps.append(step_scale / (lambdas[l] * curv[l] * sq + tau))
    _check_steps("W", steps, step_scale)
    return steps, tuple(vecs)


def x_step_sizes(
    network: LiftedNetwork,
    penalty: Penalty,
    weights: Sequence[Tensor],
    w_vecs: Sequence[Tensor],
    step_scale: float,
) -> tuple[list[float], tuple[Tensor, ...]]:
    """Steps ``step_scale / L_x_l`` of every hidden layer from the weights (see the module
    doc), and the updated power vectors."""
    lambdas, curv = network.lambdas, _curvatures(network, penalty)
    steps, vecs = [], []
    for l, (layer, vec) in enumerate(zip(network.layers[1:], w_vecs, strict=True)):
        sq, vec = layer.input_power_step(weights[l + 1], vec)
        vecs.append(vec)
        steps.append(step_scale / (lambdas[l] + lambdas[l + 1] * curv[l + 1] * float(sq)))
    _check_steps("x", steps, step_scale)
    return steps, tuple(vecs)


def gradient_step(
    p: Tensor, g: Tensor, t: float, tau: float = 0.0, anchor: Tensor | None = None
) -> Tensor:
    """:math:`p - t(g + \\tau(p - a))`, fused as :math:`(1 - t\\tau)p + t\\tau a - tg`
    (``tau = 0``: :math:`p - tg`): a gradient step on a parameter block with the proximal
    term of the implicit solvers."""
    if tau > 0:
        return p.mul(1 - t * tau).add_(anchor, alpha=t * tau).add_(g, alpha=-t)
    return torch.add(p, g, alpha=-t)


def _descend(x: Tensor, g: Tensor, t: float) -> Tensor:
    """:math:`x - t g` written into ``g``: a gradient of the auxiliary variables is a new
    tensor that nothing else holds (the same kernel and numbers as ``torch.add``, without
    allocating another feature map per layer and step)."""
    if g.shape != x.shape or g.dtype != x.dtype or g.requires_grad or g._base is not None:
        return torch.add(x, g, alpha=-t)
    return torch.add(x, g, alpha=-t, out=g)


def joint_step(
    network: LiftedNetwork,
    penalty: Penalty,
    params: Params,
    aux: Sequence[Tensor],
    x0: Tensor,
    y: Tensor,
    w_vecs: Sequence[Tensor],
    x_vecs: Sequence[Tensor],
    *,
    step_scale: float,
    tau: float = 0.0,
    anchor: Params | None = None,
    shift: tuple[Params, Sequence[Tensor]] | None = None,
    input_sq: float | None = None,
    alternating: bool = False,
    x_blocks: bool = False,
) -> tuple[Params, tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]]:
    """One step (see the module doc). ``anchor`` is :math:`\\Theta^{\\mathrm{ref}}` of the
    proximal term (needed when ``tau > 0``); ``shift`` is added to every block before the
    prox (heavy-ball momentum); ``input_sq`` is :math:`|\\tilde X_0|_2^2` when the caller
    already knows it (the input of a batch does not change during its inner iterations).
    ``alternating``: update :math:`\\Theta` first, then take the :math:`X` step on the
    gradient at the new :math:`\\Theta` (with :math:`L_{x}` from the new weights): a
    Gauss-Seidel sweep over the two blocks (one more residual evaluation per step). Given
    :math:`X` the layers' :math:`\\Theta_l` decouple, so the :math:`\\Theta` step decreases the
    energy for ``step_scale < 2``; the :math:`x_l` of consecutive hidden layers are coupled
    (:math:`x_l` enters layer :math:`l+1` through :math:`K_{l+1}x_l`), and their simultaneous
    step, each with its own block constant, is guaranteed to descend for every
    ``step_scale < 2`` only with one hidden layer. On the CNN of :mod:`bregnn.experiments.lifted_cnn` (two
    hidden feature-map layers) ``step_scale = 1.99`` raised the batch energy while each
    layer's step alone lowered it; ``1.0`` descended.
    ``x_blocks`` (with ``alternating``): the :math:`X` step in two blocks, the odd hidden
    layers and then the even ones at the new odd ones; within each block the variables are
    decoupled, so every block step with ``step_scale < 2`` descends.
    Returns ``(params, aux, w_vecs, x_vecs)``."""
    step_w, new_x_vecs = theta_step_sizes(
        network, penalty, (x0, *aux), x_vecs, step_scale, tau, input_sq
    )
    if not alternating:
        step_x, new_w_vecs = x_step_sizes(network, penalty, params.weights, w_vecs, step_scale)
    grad, grad_aux, _ = network.smooth_grads(
        params, x0, aux, y, penalty, parts="params" if alternating else "all"
    )
    weights, biases = [], []
    for l, (w, b, gw, gb, t) in enumerate(
        zip(params.weights, params.biases, grad.weights, grad.biases, step_w, strict=True)
    ):
        w_new = gradient_step(w, gw, t, tau, anchor.weights[l] if tau > 0 else None)
        b_new = gradient_step(b, gb, t, tau, anchor.biases[l] if tau > 0 else None)
        if shift is not None:
            w_new, b_new = w_new + shift[0].weights[l], b_new + shift[0].biases[l]
        weights.append(w_new)
        biases.append(b_new)
    new_params = Params(tuple(weights), tuple(biases))
    if alternating:
        step_x, new_w_vecs = x_step_sizes(network, penalty, new_params.weights, w_vecs, step_scale)
        if x_blocks:
            new_aux = list(aux)
            for parity in (0, 1):  # x_1, x_3, ... then x_2, x_4, ...: each set decoupled
                _, grad_aux, _ = network.smooth_grads(
                    new_params, x0, new_aux, y, penalty, parts="aux"
                )
                for i in range(parity, len(aux), 2):
                    half_i = _descend(new_aux[i], grad_aux[i], step_x[i])
                    new_aux[i] = network.prox_layer(i, half_i, step_x[i], penalty)
            return new_params, tuple(new_aux), tuple(new_w_vecs), tuple(new_x_vecs)
        _, grad_aux, _ = network.smooth_grads(new_params, x0, aux, y, penalty, parts="aux")
    half = [_descend(x, g, t) for x, g, t in zip(aux, grad_aux, step_x, strict=True)]
    if shift is not None:
        half = [h + s for h, s in zip(half, shift[1], strict=True)]
    new_aux = network.prox_g(half, step_x, penalty)
    return new_params, new_aux, tuple(new_w_vecs), tuple(new_x_vecs)


def literal_sweep(
    network: LiftedNetwork,
    penalty: Penalty,
    params: Params,
    aux: Sequence[Tensor],
    x0: Tensor,
    y: Tensor,
    w_vecs: Sequence[Tensor],
    x_vecs: Sequence[Tensor],
    *,
    step_scale: float,
    inner_iters: int,
    tau: float = 0.0,
    anchor: Params | None = None,
    input_sq: float | None = None,
) -> tuple[Params, tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]]:
    r"""Algorithm 1 of the paper read literally: for :math:`l = L, \dots, 1`,
    ``inner_iters`` iterations on the pair :math:`(\Theta_l, x_{l-1})` while every other
    block stays fixed. Each iteration takes, from the same iterate :math:`n` (the algorithm's
    :math:`x_j` update uses :math:`\Theta_{j+1}^n`, the pair's parameters before their
    update), a gradient step on :math:`\Theta_l` (step ``step_scale`` over
    :math:`\lambda_l c_l|\tilde X_{l-1}|^2 + \tau`) and a proximal-gradient step on
    :math:`x_{l-1}` (step ``step_scale`` over :math:`\lambda_{l-1} + \lambda_l c_l|W_l|^2`;
    none for :math:`l = 1`, whose input is the data). ``tau``/``anchor`` as in
    :func:`joint_step`. Returns ``(params, aux, w_vecs, x_vecs)``."""
    weights, biases = list(params.weights), list(params.biases)
    aux, w_vecs, x_vecs = list(aux), list(w_vecs), list(x_vecs)
    lambdas, curv = network.lambdas, _curvatures(network, penalty)
    for l in range(network.n_layers - 1, -1, -1):  # 0-based layer index of Theta_l
        for _ in range(inner_iters):
            current = Params(tuple(weights), tuple(biases))
            inputs = (x0, *aux)
            if l == 0 and input_sq is not None:
                sq = input_sq
            else:
                sq_t, x_vecs[l] = network.layers[l].theta_power_step(inputs[l], x_vecs[l])
                sq = float(sq_t)
            t = step_scale / (lambdas[l] * curv[l] * sq + tau)
            _check_steps("W", [t], step_scale)
            grad, grad_aux, _ = network.smooth_grads(current, x0, aux, y, penalty)
            w, b = weights[l], biases[l]
            gw, gb = grad.weights[l], grad.biases[l]
            if tau > 0:
                gw = gw + tau * (w - anchor.weights[l])
                gb = gb + tau * (b - anchor.biases[l])
            if l > 0:  # the x step at the same iterate: |W_l^n|^2 and the gradient above
                sq_w, w_vecs[l - 1] = network.layers[l].input_power_step(w, w_vecs[l - 1])
                t_x = step_scale / (lambdas[l - 1] + lambdas[l] * curv[l] * float(sq_w))
                _check_steps("x", [t_x], step_scale)
                half = aux[l - 1] - t_x * grad_aux[l - 1]
                aux[l - 1] = network.prox_layer(l - 1, half, t_x, penalty)
            weights[l], biases[l] = w - t * gw, b - t * gb
    return Params(tuple(weights), tuple(biases)), tuple(aux), tuple(w_vecs), tuple(x_vecs)


def _check_steps(name: str, steps: Sequence[float], step_scale: float) -> None:
    for l, t in enumerate(steps, start=1):
        if not (math.isfinite(t) and t > 0):
            raise FloatingPointError(
                f"the lifted iteration diverged: step size tau_{name} of layer {l} is {t} "
                f"(non-finite spectral norm estimate); lower step_scale (now {step_scale})"
            )


def batch_metrics(
    network: LiftedNetwork, penalty: Penalty, params: Params, aux: Sequence[Tensor], x0, y
) -> Tensor:
    """``[energy, loss, coupling_1.., consistency_1..]``, per-sample means over the batch."""
    zs = network.pre_activations(params, x0, aux)
    parts = network.energy_from(zs, aux, y, penalty)
    m = x0.shape[0]
    values = [parts.total / m, parts.loss / m, *(c / m for c in parts.coupling)]
    values += network.consistency(zs, aux)
    return torch.stack([v.reshape(()) for v in values]).detach()


def metric_names(network: LiftedNetwork) -> list[str]:
    n = len(network.activations)
    return (
        ["energy", "loss"]
        + [f"coupling_{l}" for l in range(1, n + 1)]
        + [f"consistency_{l}" for l in range(1, n + 1)]
    )
