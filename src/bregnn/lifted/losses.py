r"""The lifted Bregman loss and its gradients.

For a proximal activation :math:`\rho = \operatorname{prox}_\Psi` with
:math:`\phi = \tfrac12|\cdot|^2 + \Psi`,

.. math::

    B_\Psi(x, z) = \phi(x) + \phi^*(z) - \langle x, z\rangle
    = \tfrac12|x|^2 + \Psi(x) + (\tfrac12|\cdot|^2 + \Psi)^*(z) - \langle x, z\rangle \ge 0,

with :math:`\nabla_z B_\Psi(x, z) = \rho(z) - x` (no derivative of :math:`\rho`) and
:math:`\partial_x B_\Psi(x, z) = \partial\Psi(x) + x - z`. Since :math:`\phi` is 1-strongly
convex, :math:`B_\Psi(x, z) \ge \tfrac12|x - \rho(z)|^2`, with equality to zero iff
:math:`x = \rho(z)`. Values are per sample: summed over the last (feature) dimension.

Closed forms (the paper's; each activation's ``bregman_loss`` method), free of the
cancellation in the generic form:

- ReLU: :math:`\tfrac12|x - \max(z,0)|^2 + \langle x, \max(-z, 0)\rangle` for :math:`x \ge 0`;
- soft-thresholding :math:`S_\alpha`: :math:`\tfrac12|x - S_\alpha(z)|^2 + \alpha|x|_1
  - \langle x, \mathrm{clip}(z, -\alpha, \alpha)\rangle`;
- sigmoid: :math:`\sum x\log x + (1-x)\log(1-x) + \log(1+e^z) - xz`;
- tanh: :math:`\sum \tfrac12[(1+x)\log(1+x) + (1-x)\log(1-x)] + \log\cosh z - xz`;
- identity: :math:`\tfrac12|x - z|^2`;
- atan: :math:`\sum -\log\cos x - \tfrac12\log(1+z^2) + z(\arctan z - x)` (scaled atan
  alike), softplus: :math:`\sum \tfrac12(x-y)^2 + (x-y)\,\mathrm{softplus}_\beta(-z) +
  (\mathrm{Li}_2(e^{-\beta x}) - \mathrm{Li}_2(e^{-\beta y}))/\beta^2`, :math:`y = \rho(z)`:
  no term grows like :math:`z^2`;
- softmax: :math:`\sum_i x_i\log x_i + \operatorname{logsumexp}(z) - \langle x, z\rangle
  = \mathrm{KL}(x\,\|\,\mathrm{softmax}(z))` on the simplex (a shifted multinomial logistic
  loss: cross-entropy minus the entropy of ``x``).

Any other activation of the registry uses ``phi(x) + phi_conj(z) - <x, z>``.
Outside :math:`\operatorname{dom}\Psi` the loss is ``+inf`` (never NaN), or ``checked=True``
raises a ``ValueError``.

Autograd of :func:`bregman_loss` returns the closed forms :func:`bregman_loss_grad_x` and
:func:`bregman_loss_grad_z`, not the derivative of the formula: at a saturated ``x`` (float32
``sigmoid(30.) == 1.0``) the formula's derivative is ``inf - inf``, while
:math:`\rho^{-1}(x) - z` is finite (``rho_inv`` clamps), and no derivative of the activation
is ever taken. Second derivatives are not available.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bregnn.activations import Activation, activation

__all__ = ["bregman_loss", "bregman_loss_grad_x", "bregman_loss_grad_z", "in_domain"]


def in_domain(x: Tensor, act: Activation | str) -> Tensor:
    """Per-sample boolean: does every feature of ``x`` lie in the closed domain of ``Psi``?"""
    return activation(act).in_domain(x)


def bregman_loss(x: Tensor, z: Tensor, act: Activation | str, *, checked: bool = False) -> Tensor:
    r"""Per-sample :math:`B_\Psi(x, z)` (summed over the last dimension); see the module doc.

    Args:
        x: points in (the closure of) the range of ``rho``, shape ``(..., n)``.
        z: pre-activations, same shape as ``x``.
        act: an activation of the registry (name or object).
        checked: raise ``ValueError`` instead of returning ``+inf`` when ``x`` leaves the
            domain of ``Psi``.

    Returns:
        Tensor of shape ``(...)``: ``+inf`` where ``x`` is outside ``dom Psi``.
    """
    act = activation(act)
    if x.shape != z.shape:
        raise ValueError(
            f"x and z must have the same shape; got {tuple(x.shape)}, {tuple(z.shape)}"
        )
    inside = act.in_domain(x)
    if checked and not bool(inside.all()):
        raise ValueError(
            f"x leaves the domain of Psi for {act.name!r} (closed range of rho: "
            f"[{act.lo}, {act.hi}]{'' if act.separable else ', summing to 1'})"
        )
    value = _BregmanLoss.apply(act.clamp_to_closed_domain(x), z, act)
    return torch.where(inside, value, math.inf)


class _BregmanLoss(torch.autograd.Function):
    """``act.bregman_loss(x, z)`` for ``x`` in the closed domain, differentiated in closed form:
    ``grad_x = act.bregman_loss_grad_x(x, z)``, ``grad_z = act.rho(z) - x``."""

    @staticmethod
    def forward(ctx, x: Tensor, z: Tensor, act: Activation) -> Tensor:
        ctx.act = act
        ctx.save_for_backward(x, z)
        return act.bregman_loss(x, z)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, z = ctx.saved_tensors
        act, grad = ctx.act, grad.unsqueeze(-1)
        grad_x = grad * act.bregman_loss_grad_x(x, z) if ctx.needs_input_grad[0] else None
        grad_z = grad * (act.rho(z) - x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_z, None


def bregman_loss_grad_z(x: Tensor, z: Tensor, act: Activation | str) -> Tensor:
    r""":math:`\nabla_z B_\Psi(x, z) = \rho(z) - x` (no derivative of the activation)."""
    return activation(act).rho(z) - x


def bregman_loss_grad_x(x: Tensor, z: Tensor, act: Activation | str) -> Tensor:
    r"""The minimal-norm element of :math:`\partial_x B_\Psi(x, z) = \partial\Psi(x) + x - z`
    (:meth:`Activation.bregman_loss_grad_x`): :math:`\rho^{-1}(x) - z` for invertible
    activations, the one-sided forms for ReLU and soft-thresholding."""
    return activation(act).bregman_loss_grad_x(x, z)
