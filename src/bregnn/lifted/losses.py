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

Closed forms (the paper's), used for the named activations:

- ReLU: :math:`\tfrac12|x - \max(z,0)|^2 + \langle x, \max(-z, 0)\rangle` for :math:`x \ge 0`;
- soft-thresholding :math:`S_\alpha`: :math:`\tfrac12|x - S_\alpha(z)|^2 + \alpha|x|_1
  - \langle x, \mathrm{clip}(z, -\alpha, \alpha)\rangle`;
- sigmoid: :math:`\sum x\log x + (1-x)\log(1-x) + \log(1+e^z) - xz`;
- tanh: :math:`\sum \tfrac12[(1+x)\log(1+x) + (1-x)\log(1-x)] + \log\cosh z - xz`;
- identity: :math:`\tfrac12|x - z|^2`;
- softmax: :math:`\sum_i x_i\log x_i + \operatorname{logsumexp}(z) - \langle x, z\rangle
  = \mathrm{KL}(x\,\|\,\mathrm{softmax}(z))` on the simplex (a shifted multinomial logistic
  loss: cross-entropy minus the entropy of ``x``).

Any other activation of the registry uses ``phi(x) + phi_conj(z) - <x, z>``.
Outside :math:`\operatorname{dom}\Psi` the loss is ``+inf`` (never NaN), or ``checked=True``
raises a ``ValueError``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bregnn.activations import (
    Activation,
    Identity,
    ReLU,
    Sigmoid,
    Softmax,
    SoftThreshold,
    Tanh,
    activation,
)

__all__ = ["bregman_loss", "bregman_loss_grad_x", "bregman_loss_grad_z", "in_domain"]


def _xlogx(x: Tensor) -> Tensor:
    return torch.xlogy(x, x)


def in_domain(x: Tensor, act: Activation, atol: float = 1e-5) -> Tensor:
    """Per-sample boolean: does every feature of ``x`` lie in the closed domain of ``Psi``?"""
    if isinstance(act, Softmax):
        return ((x >= 0).all(-1)) & ((x.sum(-1) - 1).abs() <= atol)
    return ((x >= act.lo) & (x <= act.hi)).all(-1)


def _closed_form(x: Tensor, z: Tensor, act: Activation) -> Tensor | None:
    if isinstance(act, Identity):
        return 0.5 * ((x - z) ** 2).sum(-1)
    if isinstance(act, ReLU):
        r = torch.relu(z)
        return (0.5 * (x - r) ** 2 + x * torch.relu(-z)).sum(-1)
    if isinstance(act, SoftThreshold):
        a = act.alpha
        s = act.rho(z)
        return (0.5 * (x - s) ** 2 + a * x.abs() - x * z.clamp(-a, a)).sum(-1)
    xc = x.clamp(act.lo, act.hi)
    if isinstance(act, Sigmoid):
        return (_xlogx(xc) + _xlogx(1 - xc) + torch.nn.functional.softplus(z) - xc * z).sum(-1)
    if isinstance(act, Tanh):
        a = z.abs()
        log_cosh = a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)
        return (0.5 * (_xlogx(1 + xc) + _xlogx(1 - xc)) + log_cosh - xc * z).sum(-1)
    if isinstance(act, Softmax):
        return _xlogx(xc).sum(-1) - (xc * torch.log_softmax(z, dim=-1)).sum(-1)
    return None


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
    inside = in_domain(x, act)
    if checked and not bool(inside.all()):
        raise ValueError(
            f"x leaves the domain of Psi for {act.name!r} (closed range of rho: "
            f"[{act.lo}, {act.hi}]{', summing to 1' if isinstance(act, Softmax) else ''})"
        )
    value = _closed_form(x, z, act)
    if value is None:
        xc = x.clamp(act.lo, act.hi)
        phi = act.phi(xc)
        conj = act.phi_conj(z)
        if act.separable:
            phi, conj = phi.sum(-1), conj.sum(-1)
        value = phi + conj - (xc * z).sum(-1)
        # rounding can make the exact-zero minimum slightly negative
        value = value.clamp(min=0)
    return torch.where(inside, value, torch.full_like(value, math.inf))


def bregman_loss_grad_z(x: Tensor, z: Tensor, act: Activation | str) -> Tensor:
    r""":math:`\nabla_z B_\Psi(x, z) = \rho(z) - x` (no derivative of the activation)."""
    return activation(act).rho(z) - x


def bregman_loss_grad_x(x: Tensor, z: Tensor, act: Activation | str) -> Tensor:
    r"""The minimal-norm element of :math:`\partial_x B_\Psi(x, z) = \partial\Psi(x) + x - z`.

    Invertible activations: :math:`\rho^{-1}(x) - z` (as :math:`\partial\phi = \rho^{-1}`).
    ReLU: :math:`x - z` where :math:`x > 0` and :math:`-\max(z, 0)` at :math:`x = 0`.
    Soft-thresholding: :math:`x - z + \alpha\,\mathrm{sign}(x)` where :math:`x \ne 0` and
    :math:`-S_\alpha(z)` at :math:`x = 0`. Identity: :math:`x - z`.
    """
    act = activation(act)
    if isinstance(act, Identity):
        return x - z
    if isinstance(act, ReLU):
        return torch.where(x > 0, x - z, -torch.relu(z))
    if isinstance(act, SoftThreshold):
        return torch.where(x != 0, x - z + act.alpha * torch.sign(x), -act.rho(z))
    if act.invertible:
        return act.rho_inv(x) - z
    raise ValueError(
        f"bregman_loss_grad_x is not available for {act.name!r} (Psi is not separable); "
        "use its prox instead"
    )
