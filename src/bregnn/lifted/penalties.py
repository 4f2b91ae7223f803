r"""Layer coupling penalties of lifted networks and regularisers on auxiliary variables.

A lifted network replaces :math:`x_l = \rho_l(z_l)`, :math:`z_l = W_l x_{l-1} + b_l`, by a
penalty :math:`P(x_l, z_l)`. Each penalty is split into a smooth part :math:`h(x, z)`
(differentiated in closed form) and, when ``uses_psi``, the prox-friendly
:math:`\Psi(x)` that goes into :math:`G`:

- ``bregman``: :math:`h = \tfrac12|x|^2 + \phi^*(z) - \langle x,z\rangle`,
  :math:`\nabla h = (x - z, \rho(z) - x)`, :math:`\Psi` in :math:`G`;
- ``quadratic`` (Askari et al.): :math:`h = \tfrac12|x - z|^2`,
  :math:`\nabla h = (x - z, z - x)`, :math:`\Psi` in :math:`G`;
- ``mac`` (MAC-QP): :math:`h = \tfrac12|x - \rho(z)|^2`,
  :math:`\nabla h = (x - \rho(z), \rho'(z)(\rho(z) - x))`, no :math:`G`.

``curvature_z(act)`` bounds the second derivative of :math:`h` in :math:`z`
(:math:`\rho' \le L_\rho` for Bregman, 1 for the quadratic penalty, :math:`L_\rho^2` for
MAC, exact on each linear piece of ReLU); the second derivative in :math:`x` is 1 for all.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from bregnn.activations import Activation, Softmax
from bregnn.registry import Registry

__all__ = [
    "L1",
    "PENALTIES",
    "BregmanPenalty",
    "MACPenalty",
    "Penalty",
    "QuadraticPenalty",
    "Regulariser",
    "get_penalty",
]


class Penalty:
    """Base class: the smooth part ``h`` of a coupling penalty and its closed-form gradients."""

    name: ClassVar[str] = ""
    uses_psi: ClassVar[bool] = True

    def value(self, x: Tensor, z: Tensor, act: Activation) -> Tensor:
        """Per-sample smooth part ``h(x, z)`` (summed over features)."""
        raise NotImplementedError

    def grads(self, x: Tensor, z: Tensor, act: Activation) -> tuple[Tensor, Tensor]:
        """``(grad_x h, grad_z h)``, elementwise."""
        raise NotImplementedError

    def curvature_z(self, act: Activation) -> float:
        """An upper bound on the second derivative of ``h`` in ``z``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BregmanPenalty(Penalty):
    r"""Lifted Bregman: :math:`h = \tfrac12|x|^2 + \phi^*(z) - \langle x,z\rangle`, so that
    :math:`h + \Psi(x) = B_\Psi(x, z)`."""

    name = "bregman"

    def value(self, x: Tensor, z: Tensor, act: Activation) -> Tensor:
        conj = act.phi_conj(z)
        if act.separable:
            conj = conj.sum(-1)
        return 0.5 * (x * x).sum(-1) + conj - (x * z).sum(-1)

    def grads(self, x: Tensor, z: Tensor, act: Activation) -> tuple[Tensor, Tensor]:
        return x - z, act.rho(z) - x

    def curvature_z(self, act: Activation) -> float:
        # the Hessian of logsumexp is diag(p) - pp^T <= 1/2; 1 is a safe bound
        return 1.0 if isinstance(act, Softmax) else float(act.lipschitz)


class QuadraticPenalty(Penalty):
    r"""Classical lifted network (Askari et al.): :math:`h = \tfrac12|x - z|^2`, with
    :math:`\Psi(x)` (for ReLU: :math:`x \ge 0`) in :math:`G`."""

    name = "quadratic"

    def value(self, x: Tensor, z: Tensor, act: Activation) -> Tensor:
        return 0.5 * ((x - z) ** 2).sum(-1)

    def grads(self, x: Tensor, z: Tensor, act: Activation) -> tuple[Tensor, Tensor]:
        diff = x - z
        return diff, -diff

    def curvature_z(self, act: Activation) -> float:
        return 1.0


class MACPenalty(Penalty):
    r"""Method of auxiliary coordinates, quadratic penalty:
    :math:`h = \tfrac12|x - \rho(z)|^2`, no :math:`G` term. Its gradient in :math:`z` needs
    :math:`\rho'` (computed with a local autograd call): exactly what lifted Bregman avoids."""

    name = "mac"
    uses_psi = False

    def value(self, x: Tensor, z: Tensor, act: Activation) -> Tensor:
        return 0.5 * ((x - act.rho(z)) ** 2).sum(-1)

    def grads(self, x: Tensor, z: Tensor, act: Activation) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            out = act.rho(zz)
            residual = out.detach() - x
            (g_z,) = torch.autograd.grad(out, zz, grad_outputs=residual)
        return -residual, g_z

    def curvature_z(self, act: Activation) -> float:
        return float(act.lipschitz) ** 2


PENALTIES: Registry[type[Penalty]] = Registry("penalty")
for _cls in (BregmanPenalty, QuadraticPenalty, MACPenalty):
    PENALTIES.register(_cls.name, _cls)


def get_penalty(spec: str | Penalty) -> Penalty:
    """A penalty by name (see :data:`PENALTIES`), or a :class:`Penalty` returned untouched."""
    if isinstance(spec, Penalty):
        return spec
    return PENALTIES.get(spec)()


class Regulariser:
    r"""A convex regulariser :math:`R(x_l)` on one auxiliary layer, folded into that layer's
    prox: ``prox(v, t, act, t_psi)`` returns
    :math:`\arg\min_x \tfrac12|x - v|^2 + t_\Psi\Psi(x) + tR(x)`."""

    def value(self, x: Tensor) -> Tensor:
        """Per-sample value (summed over features)."""
        raise NotImplementedError

    def prox(self, v: Tensor, t: Tensor | float, act: Activation, t_psi: Tensor | float) -> Tensor:
        raise NotImplementedError

    def check(self, act: Activation) -> None:
        """Raise ``ValueError`` if the prox composition is not exact for ``act``."""


class L1(Regulariser):
    r""":math:`R(x) = \alpha|x|_1`. The prox of :math:`t_\Psi\Psi + t\alpha|\cdot|_1` is
    :math:`\operatorname{prox}_{t_\Psi\Psi}\circ S_{t\alpha}` whenever
    :math:`\operatorname{prox}_{t_\Psi\Psi}` preserves signs and fixes 0 (sum the two
    optimality conditions: :math:`\partial|u| \subseteq \partial|x|` then); true for every
    increasing activation with :math:`\rho(0) = 0` (ReLU, soft-thresholding, tanh, identity,
    ...), checked by :meth:`check`. For ReLU it is :math:`\max(v - t\alpha, 0)`."""

    def __init__(self, alpha: float) -> None:
        if not alpha >= 0:
            raise ValueError(f"L1 regulariser needs alpha >= 0; got alpha={alpha}")
        self.alpha = float(alpha)

    def __repr__(self) -> str:
        return f"L1(alpha={self.alpha})"

    def value(self, x: Tensor) -> Tensor:
        return self.alpha * x.abs().sum(-1)

    def prox(self, v: Tensor, t: Tensor | float, act: Activation, t_psi: Tensor | float) -> Tensor:
        u = torch.sign(v) * torch.relu(v.abs() - t * self.alpha)
        if isinstance(t_psi, float) and t_psi == 0.0:
            return u
        return act.prox(u, t_psi)

    def check(self, act: Activation) -> None:
        if not act.separable:
            raise ValueError(f"L1 regulariser needs a separable activation; got {act.name!r}")
        probe = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
        out = act.prox(probe, 1.0)
        if out[1].abs() > 1e-12 or out[0] > 0 or out[2] < 0:
            raise ValueError(
                f"L1 regulariser folded into the prox needs rho(0) = 0 and a sign-preserving "
                f"rho; {act.name!r} is not (rho(-1), rho(0), rho(1) = {out.tolist()})"
            )
