r"""Activations as Legendre / proximal objects.

Every activation :math:`\rho` here is the proximal map of a convex function
:math:`\Psi = \phi - \tfrac12|\cdot|^2`, where :math:`\phi` is a Legendre function with
:math:`\nabla\phi = \rho^{-1}` on the open domain of :math:`\rho^{-1}`:

.. math::

    \rho(z) = \operatorname{prox}_\Psi(z) = \arg\min_x \tfrac12|x - z|^2 + \Psi(x)
    \iff z = \nabla\phi(\rho(z)).

One object carries every face of an activation: ``rho`` (also ``forward``, so it is a
drop-in ``nn.Module``), ``rho_inv``, ``phi``, ``psi``, ``phi_conj`` (the convex conjugate
:math:`\phi^*`, whose gradient is ``rho``) and ``prox(z, t)`` (the prox of :math:`t\Psi`).

Domain handling: ``rho_inv`` clamps its input into ``[lo + eps_lo, hi - eps_hi]``, where the
offsets come from :func:`domain_margin`: ``finfo(dtype).eps * |bound|`` for a nonzero bound
and ``finfo(dtype).tiny`` for a zero bound. That is, at most a couple of float steps inside
the open domain: a saturated float32 output such as ``sigmoid(20.) == 1.0`` maps back to a
finite, large ``rho_inv`` instead of ``inf``. ``phi``/``psi`` never clamp: they are ``+inf``
outside the closed domain.

The one registry is :func:`activation`; it accepts a name (with keyword parameters) or an
activation object, which it returns untouched.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bregnn.registry import Registry

__all__ = [
    "ACTIVATIONS",
    "ISRU",
    "Activation",
    "Asinh",
    "Atan",
    "Identity",
    "ReLU",
    "ScaledAtan",
    "ScaledTanh",
    "Sigmoid",
    "Sin",
    "SoftThreshold",
    "Softmax",
    "Softplus",
    "Tanh",
    "activation",
    "available_activations",
    "dilogarithm",
    "domain_margin",
]

HALF_PI = math.pi / 2


def domain_margin(bound: float, dtype: torch.dtype) -> float:
    """Distance kept from a finite domain ``bound`` when clamping into the open domain.

    ``finfo(dtype).eps * |bound|`` (a couple of float steps) for a nonzero bound and
    ``finfo(dtype).tiny`` for a bound at zero. In float32 that is ``1.19e-7`` at ``1`` and
    ``1.18e-38`` at ``0``.
    """
    finfo = torch.finfo(dtype)
    return finfo.eps * abs(bound) if bound != 0 else finfo.tiny


def dilogarithm(x: Tensor) -> Tensor:
    r"""The dilogarithm :math:`\mathrm{Li}_2(x) = \sum_{k\ge1} x^k/k^2` for ``x`` in ``[0, 1]``.

    Uses the series for ``x <= 1/2`` and the reflection
    :math:`\mathrm{Li}_2(x) = \pi^2/6 - \log x \log(1-x) - \mathrm{Li}_2(1-x)` above, so the
    series always converges at least like :math:`2^{-k}`. Differentiable by autograd.
    """
    refl = x > 0.5
    y = torch.where(refl, 1 - x, x)
    n_terms = 60 if y.dtype == torch.float64 else 30
    k = torch.arange(1, n_terms + 1, dtype=y.dtype, device=y.device)
    series = (y.unsqueeze(-1) ** k / k**2).sum(-1)
    safe_x = torch.where(refl, x, torch.full_like(x, 0.75))
    one_minus = (1 - safe_x).clamp(min=torch.finfo(x.dtype).tiny)  # Li2(1) = pi^2/6 exactly
    reflected = math.pi**2 / 6 - torch.log(safe_x) * torch.log(one_minus) - series
    return torch.where(refl, reflected, series)


def _outside_to_inf(value: Tensor, x: Tensor, lo: float, hi: float) -> Tensor:
    """Set ``value`` to ``+inf`` where ``x`` lies outside the closed interval ``[lo, hi]``."""
    outside = (x < lo) | (x > hi)
    if not outside.any():
        return value
    return torch.where(outside, torch.full_like(value, math.inf), value)


class Activation(nn.Module):
    r"""Base class: :math:`\rho = \operatorname{prox}_\Psi`, :math:`\Psi = \phi - \tfrac12|\cdot|^2`.

    Subclasses set ``name``, ``lo``/``hi`` (the open domain of ``rho_inv``, i.e. the range of
    ``rho``), ``lipschitz`` (an upper bound on ``rho'``), and implement ``rho``, ``_rho_inv``
    (on the open domain), ``_phi`` (on the closed domain) and optionally ``phi_conj`` and
    ``prox`` in closed form.
    """

    name: ClassVar[str] = ""
    invertible: ClassVar[bool] = True
    separable: ClassVar[bool] = True
    lo: float = -math.inf
    hi: float = math.inf
    lipschitz: float = 1.0

    # -- faces ------------------------------------------------------------------------------
    @property
    def domain(self) -> tuple[float, float]:
        """The open domain ``(lo, hi)`` of ``rho_inv`` (= the range of ``rho``)."""
        return (self.lo, self.hi)

    def forward(self, z: Tensor) -> Tensor:
        return self.rho(z)

    def rho(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def clamp_to_domain(self, y: Tensor) -> Tensor:
        """Clamp ``y`` into ``[lo + margin, hi - margin]`` (see :func:`domain_margin`)."""
        dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
        lo = self.lo + domain_margin(self.lo, dtype) if math.isfinite(self.lo) else None
        hi = self.hi - domain_margin(self.hi, dtype) if math.isfinite(self.hi) else None
        if lo is None and hi is None:
            return y
        return torch.clamp(y, min=lo, max=hi)

    def rho_inv(self, y: Tensor) -> Tensor:
        r""":math:`\rho^{-1} = \nabla\phi`; inputs are first clamped into the open domain."""
        if not self.invertible:
            raise ValueError(
                f"activation {self.name!r} is not invertible, so it has no rho_inv; "
                f"invertible activations: {available_activations(invertible=True)}"
            )
        return self._rho_inv(self.clamp_to_domain(y))

    def _rho_inv(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def rho_inv_rho(self, u: Tensor) -> Tensor:
        r""":math:`\rho^{-1}(\rho(u))` without the round trip: ``u`` itself, as ``rho`` maps
        the real line one-to-one onto its range (overridden where it does not)."""
        return u

    def phi(self, x: Tensor) -> Tensor:
        r"""Elementwise Legendre potential :math:`\phi`; ``+inf`` outside the closed domain."""
        inside = x.clamp(min=self.lo, max=self.hi)
        return _outside_to_inf(self._phi(inside), x, self.lo, self.hi)

    def _phi(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def psi(self, x: Tensor) -> Tensor:
        r""":math:`\Psi(x) = \phi(x) - x^2/2` elementwise (``+inf`` outside the domain)."""
        return self.phi(x) - 0.5 * x * x

    def phi_conj(self, z: Tensor) -> Tensor:
        r"""Elementwise convex conjugate :math:`\phi^*(z) = z\rho(z) - \phi(\rho(z))`.

        This is :math:`(\tfrac12|\cdot|^2 + \Psi)^*`; its derivative is ``rho``.
        """
        x = self.rho(z)
        return z * x - self._phi(x)

    def prox(self, z: Tensor, t: float | Tensor = 1.0) -> Tensor:
        r"""Proximal map of :math:`t\Psi`: :math:`\arg\min_x \tfrac12|x-z|^2 + t\Psi(x)`.

        ``t = 1`` gives ``rho(z)``. Otherwise the optimality condition
        :math:`(1-t)x + t\rho^{-1}(x) = z` is solved in the variable :math:`u = \rho^{-1}(x)`,
        where :math:`h(u) = (1-t)\rho(u) + tu - z` is increasing with slope at least
        :math:`m = t` (:math:`t \le 1`) or :math:`t - (t-1)L` (:math:`t > 1`, ``L`` the
        Lipschitz constant of ``rho``), so the root lies within :math:`|h(z)|/m` of ``z``;
        bisection over that bracket to full precision (batched, no Python loop over samples).
        """
        t = _check_step(t)
        if isinstance(t, float) and t == 1.0:
            return self.rho(z)
        return self._generic_prox(z, t)

    def _generic_prox(self, z: Tensor, t: float | Tensor) -> Tensor:
        t_t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        slope = torch.where(t_t <= 1, t_t, t_t - (t_t - 1) * self.lipschitz)
        if bool((slope <= 0).any()):
            raise ValueError(
                f"prox of t*Psi for {self.name!r} needs t < L/(L-1) = "
                f"{self.lipschitz / (self.lipschitz - 1):.4g} (Psi is not convex: rho is "
                f"{self.lipschitz:.4g}-Lipschitz); got t = {t}"
            )
        work = z.double() if z.dtype != torch.float64 else z
        t64 = t_t.double()

        def h(u: Tensor) -> Tensor:
            return (1 - t64) * self.rho(u) + t64 * u - work

        radius = h(work).abs() / slope.double()
        lo, hi = work - radius, work + radius
        with torch.no_grad():
            for _ in range(64):
                mid = 0.5 * (lo + hi)
                positive = h(mid) > 0
                hi = torch.where(positive, mid, hi)
                lo = torch.where(positive, lo, mid)
        return self.rho(0.5 * (lo + hi)).to(z.dtype)

    # -- the lifted Bregman loss -----------------------------------------------------------------
    def in_domain(self, x: Tensor) -> Tensor:
        """Per sample (last dimension reduced): is ``x`` in the closed domain of ``Psi``?"""
        return ((x >= self.lo) & (x <= self.hi)).all(-1)

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        r"""Per-sample :math:`B_\Psi(x, z) = \phi(x) + \phi^*(z) - \langle x, z\rangle`, summed
        over the last dimension, for ``x`` in the closed domain (see
        :func:`bregnn.lifted.bregman_loss`, which checks it). Subclasses override this with
        forms free of cancellation; rounding can push the generic form's exact zero
        slightly below 0, so it is clamped at 0."""
        return (self._phi(x) + self.phi_conj(z) - x * z).sum(-1).clamp(min=0)

    def bregman_loss_grad_x(self, x: Tensor, z: Tensor) -> Tensor:
        r"""The minimal-norm element of :math:`\partial_x B_\Psi(x, z) = \partial\phi(x) - z`:
        :math:`\rho^{-1}(x) - z` for invertible activations."""
        if not self.invertible:
            raise ValueError(
                f"the x-gradient of the Bregman loss is not available for {self.name!r}; "
                "use its prox instead"
            )
        return self.rho_inv(x) - z

    # -- bookkeeping --------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Constructor parameters (used by ``extra_repr`` and :attr:`key`)."""
        return {}

    @property
    def key(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """``(name, sorted parameters)``: hashable, equal for activations that compute the same
        function. Modules compare by identity (as every ``nn.Module``: value equality would
        make ``named_modules()`` drop equal siblings), so compare or hash this instead."""
        return (self.name, tuple(sorted(self.params().items())))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params().items())


def _check_step(t: float | Tensor) -> float | Tensor:
    if isinstance(t, Tensor):
        if bool((t <= 0).any()):
            raise ValueError(f"prox step t must be positive; got min(t) = {t.min().item()}")
        return t
    t = float(t)
    if not t > 0:
        raise ValueError(f"prox step t must be positive; got t = {t}")
    return t


def _xlogx(x: Tensor) -> Tensor:
    return torch.xlogy(x, x)


def _phi_tanh_unit(s: Tensor) -> Tensor:
    """phi of tanh on [-1, 1]: 1/2 log(1-s^2) + s artanh s, written finitely at the edges."""
    return 0.5 * (_xlogx(1 + s) + _xlogx(1 - s))


# -- invertible (Legendre) activations ---------------------------------------------------------
class Sigmoid(Activation):
    r""":math:`\rho = \sigma`, :math:`\rho^{-1} = \mathrm{logit}` on (0, 1),
    :math:`\phi(t) = t\log t + (1-t)\log(1-t)`, :math:`\phi^*(z) = \log(1 + e^z)`."""

    name = "sigmoid"
    lo, hi, lipschitz = 0.0, 1.0, 0.25

    def rho(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z)

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.log(y) - torch.log1p(-y)

    def _phi(self, x: Tensor) -> Tensor:
        return _xlogx(x) + _xlogx(1 - x)

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        return (_xlogx(x) + _xlogx(1 - x) + nn.functional.softplus(z) - x * z).sum(-1)

    def phi_conj(self, z: Tensor) -> Tensor:
        return nn.functional.softplus(z)


class Tanh(Activation):
    r""":math:`\rho = \tanh`, :math:`\rho^{-1} = \operatorname{artanh}` on (-1, 1),
    :math:`\phi(t) = \tfrac12\log(1-t^2) + t\operatorname{artanh}t`,
    :math:`\phi^*(z) = \log\cosh z`."""

    name = "tanh"
    lo, hi, lipschitz = -1.0, 1.0, 1.0

    def rho(self, z: Tensor) -> Tensor:
        return torch.tanh(z)

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.atanh(y)

    def _phi(self, x: Tensor) -> Tensor:
        return _phi_tanh_unit(x)

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        return (_phi_tanh_unit(x) + self.phi_conj(z) - x * z).sum(-1)

    def phi_conj(self, z: Tensor) -> Tensor:
        a = z.abs()
        return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


class ScaledTanh(Activation):
    r"""LeCun's :math:`\rho(z) = A\tanh(Bz)` (default :math:`A = 1.7159`, :math:`B = 0.6666`).

    :math:`\rho^{-1}(t) = \operatorname{artanh}(t/A)/B` on :math:`(-A, A)`,
    :math:`\phi(t) = \tfrac{A}{2B}\log(A^2 - t^2) + \tfrac{t}{B}\operatorname{artanh}(t/A)`.
    Note :math:`\rho' \le AB \approx 1.144 > 1`, so :math:`\Psi` is not convex and
    ``prox(z, t)`` exists only for :math:`t < AB/(AB-1)`.
    """

    name = "scaled_tanh"

    def __init__(self, A: float = 1.7159, B: float = 0.6666) -> None:
        super().__init__()
        if not (A > 0 and B > 0):
            raise ValueError(f"scaled_tanh needs A > 0 and B > 0; got A={A}, B={B}")
        self.A, self.B = float(A), float(B)
        self.lo, self.hi, self.lipschitz = -self.A, self.A, self.A * self.B

    def params(self) -> dict[str, Any]:
        return {"A": self.A, "B": self.B}

    def rho(self, z: Tensor) -> Tensor:
        return self.A * torch.tanh(self.B * z)

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.atanh(y / self.A) / self.B

    def _phi(self, x: Tensor) -> Tensor:
        # (A/2B) log(A^2 - t^2) + (t/B) artanh(t/A) = (A/B) (log A + phi_tanh(t/A))
        return (self.A / self.B) * (math.log(self.A) + _phi_tanh_unit(x / self.A))

    def phi_conj(self, z: Tensor) -> Tensor:
        a = (self.B * z).abs()
        log_cosh = a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)
        return (self.A / self.B) * (log_cosh - math.log(self.A))


class Atan(Activation):
    r""":math:`\rho = \arctan`, :math:`\rho^{-1} = \tan` on :math:`(-\pi/2, \pi/2)`,
    :math:`\phi(t) = -\log\cos t`, :math:`\phi^*(z) = z\arctan z - \tfrac12\log(1+z^2)`."""

    name = "atan"
    lo, hi, lipschitz = -HALF_PI, HALF_PI, 1.0

    def rho(self, z: Tensor) -> Tensor:
        return torch.atan(z)

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.tan(y)

    def _phi(self, x: Tensor) -> Tensor:
        return -torch.log(torch.cos(x))

    def phi_conj(self, z: Tensor) -> Tensor:
        return z * torch.atan(z) - 0.5 * torch.log1p(z * z)


class ScaledAtan(Activation):
    r""":math:`\rho(z) = \tfrac2\pi\arctan z` on (-1, 1); :math:`\rho^{-1}(t) = \tan(\pi t/2)`,
    :math:`\phi(t) = -\tfrac2\pi\log\cos(\pi t/2)`."""

    name = "scaled_atan"
    lo, hi, lipschitz = -1.0, 1.0, 2 / math.pi

    def rho(self, z: Tensor) -> Tensor:
        return torch.atan(z) / HALF_PI

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.tan(HALF_PI * y)

    def _phi(self, x: Tensor) -> Tensor:
        return -torch.log(torch.cos(HALF_PI * x)) / HALF_PI

    def phi_conj(self, z: Tensor) -> Tensor:
        return (z * torch.atan(z) - 0.5 * torch.log1p(z * z)) / HALF_PI


class ISRU(Activation):
    r"""Inverse square-root unit :math:`\rho(z) = z/\sqrt{1+z^2}` on (-1, 1);
    :math:`\rho^{-1}(t) = t/\sqrt{1-t^2}`, :math:`\phi(t) = -\sqrt{1-t^2}`,
    :math:`\phi^*(z) = \sqrt{1+z^2}`."""

    name = "isru"
    lo, hi, lipschitz = -1.0, 1.0, 1.0

    def rho(self, z: Tensor) -> Tensor:
        return z * torch.rsqrt(1 + z * z)

    def _rho_inv(self, y: Tensor) -> Tensor:
        return y * torch.rsqrt((1 - y) * (1 + y))

    def _phi(self, x: Tensor) -> Tensor:
        return -torch.sqrt((1 - x) * (1 + x))

    def phi_conj(self, z: Tensor) -> Tensor:
        return torch.sqrt(1 + z * z)


class Asinh(Activation):
    r""":math:`\rho = \operatorname{arsinh}` on :math:`\mathbb R`; :math:`\rho^{-1} = \sinh`,
    :math:`\phi = \cosh`, :math:`\phi^*(z) = z\operatorname{arsinh}z - \sqrt{1+z^2}`."""

    name = "asinh"

    def rho(self, z: Tensor) -> Tensor:
        return torch.asinh(z)

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.sinh(y)

    def _phi(self, x: Tensor) -> Tensor:
        return torch.cosh(x)

    def phi_conj(self, z: Tensor) -> Tensor:
        return z * torch.asinh(z) - torch.sqrt(1 + z * z)


class Softplus(Activation):
    r""":math:`\rho(z) = \tfrac1\beta\log(1 + e^{\beta z})` on :math:`(0, \infty)`.

    :math:`\rho^{-1}(t) = \tfrac1\beta\log(e^{\beta t} - 1)`, computed as
    :math:`t + \tfrac1\beta\log(-\mathrm{expm1}(-\beta t))` (finite for any ``beta``);
    :math:`\phi(t) = \tfrac{1}{\beta^2}\big(\tfrac{(\beta t)^2}{2} + \mathrm{Li}_2(e^{-\beta t})\big)`
    (integrate :math:`\rho^{-1}`; :math:`\mathrm{Li}_2` is :func:`dilogarithm`).
    """

    name = "softplus"
    lo, hi, lipschitz = 0.0, math.inf, 1.0

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"softplus needs beta > 0; got beta={beta}")
        self.beta = float(beta)

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def rho(self, z: Tensor) -> Tensor:
        return nn.functional.softplus(z, beta=self.beta)

    def _rho_inv(self, y: Tensor) -> Tensor:
        return y + torch.log(-torch.expm1(-self.beta * y)) / self.beta

    def _phi(self, x: Tensor) -> Tensor:
        bx = self.beta * x
        return (0.5 * bx * bx + dilogarithm(torch.exp(-bx))) / self.beta**2


class Sin(Activation):
    r""":math:`\rho(z) = \sin(\mathrm{clip}(z, -\pi/2, \pi/2))` on (-1, 1).

    :math:`\rho^{-1} = \arcsin`, :math:`\phi(t) = \sqrt{1-t^2} + t\arcsin t` on [-1, 1]. As
    :math:`\arcsin` is bounded, :math:`\phi` is not essentially smooth (not Legendre): its
    subdifferential at :math:`\pm1` is a half-line, which is exactly why the prox clips.
    """

    name = "sin"
    lo, hi, lipschitz = -1.0, 1.0, 1.0

    def rho(self, z: Tensor) -> Tensor:
        return torch.sin(torch.clamp(z, -HALF_PI, HALF_PI))

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.asin(y)

    def rho_inv_rho(self, u: Tensor) -> Tensor:
        return torch.clamp(u, -HALF_PI, HALF_PI)

    def _phi(self, x: Tensor) -> Tensor:
        return torch.sqrt((1 - x) * (1 + x)) + x * torch.asin(x)


# -- proximal, non-invertible activations -----------------------------------------------------
class ReLU(Activation):
    r""":math:`\rho(z) = \max(z, 0)`: :math:`\Psi` is the indicator of :math:`t \ge 0`,
    :math:`\phi(t) = t^2/2` on :math:`[0, \infty)`, :math:`\phi^*(z) = \max(z,0)^2/2`.
    The prox of :math:`t\Psi` is the projection for every ``t``."""

    name = "relu"
    invertible = False
    lo, hi = 0.0, math.inf

    def rho(self, z: Tensor) -> Tensor:
        return torch.relu(z)

    def _phi(self, x: Tensor) -> Tensor:
        return 0.5 * x * x

    def phi_conj(self, z: Tensor) -> Tensor:
        r = torch.relu(z)
        return 0.5 * r * r

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """:math:`\tfrac12|x - \\max(z, 0)|^2 + \\langle x, \\max(-z, 0)\rangle` (``x >= 0``)."""
        return (0.5 * (x - torch.relu(z)) ** 2 + x * torch.relu(-z)).sum(-1)

    def bregman_loss_grad_x(self, x: Tensor, z: Tensor) -> Tensor:
        """``x - z`` where ``x > 0``, ``-max(z, 0)`` at ``x = 0``."""
        return torch.where(x > 0, x - z, -torch.relu(z))

    def prox(self, z: Tensor, t: float | Tensor = 1.0) -> Tensor:
        _check_step(t)
        return torch.relu(z)


class SoftThreshold(Activation):
    r"""Soft-thresholding :math:`\rho(z) = \mathrm{sign}(z)\max(|z| - \alpha, 0)`:
    :math:`\Psi = \alpha|\cdot|`, :math:`\phi(t) = t^2/2 + \alpha|t|`; the prox of
    :math:`t\Psi` is soft-thresholding at :math:`t\alpha`."""

    name = "soft_threshold"
    invertible = False

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        if not alpha >= 0:
            raise ValueError(f"soft_threshold needs alpha >= 0; got alpha={alpha}")
        self.alpha = float(alpha)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def rho(self, z: Tensor) -> Tensor:
        return nn.functional.softshrink(z, self.alpha) if self.alpha > 0 else z

    def _phi(self, x: Tensor) -> Tensor:
        return 0.5 * x * x + self.alpha * x.abs()

    def phi_conj(self, z: Tensor) -> Tensor:
        r = torch.relu(z.abs() - self.alpha)
        return 0.5 * r * r

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """:math:`\tfrac12|x - S_\alpha(z)|^2 + \alpha|x|_1 - \\langle x,
        \\mathrm{clip}(z, -\alpha, \alpha)\rangle`."""
        a = self.alpha
        return (0.5 * (x - self.rho(z)) ** 2 + a * x.abs() - x * z.clamp(-a, a)).sum(-1)

    def bregman_loss_grad_x(self, x: Tensor, z: Tensor) -> Tensor:
        """``x - z + alpha sign(x)`` where ``x != 0``, ``-S_alpha(z)`` at ``x = 0``."""
        return torch.where(x != 0, x - z + self.alpha * torch.sign(x), -self.rho(z))

    def prox(self, z: Tensor, t: float | Tensor = 1.0) -> Tensor:
        t = _check_step(t)
        return torch.sign(z) * torch.relu(z.abs() - t * self.alpha)


class Identity(Activation):
    r""":math:`\rho(z) = z`: :math:`\Psi = 0`, :math:`\phi(t) = t^2/2 = \phi^*`; the prox is
    the identity and the Bregman loss is :math:`\tfrac12|x - z|^2`."""

    name = "identity"

    def rho(self, z: Tensor) -> Tensor:
        return z

    def _rho_inv(self, y: Tensor) -> Tensor:
        return y

    def _phi(self, x: Tensor) -> Tensor:
        return 0.5 * x * x

    def phi_conj(self, z: Tensor) -> Tensor:
        return 0.5 * z * z

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        return 0.5 * ((x - z) ** 2).sum(-1)

    def prox(self, z: Tensor, t: float | Tensor = 1.0) -> Tensor:
        _check_step(t)
        return z


class Softmax(Activation):
    r"""Softmax over the last dimension, the prox of the (non-separable)
    :math:`\Psi(u) = \sum_i u_i\log u_i - \tfrac12|u|^2` restricted to the probability simplex.

    ``phi`` and ``phi_conj`` are *not* elementwise here: they reduce over the last dimension
    (:math:`\phi(u) = \sum_i u_i\log u_i` on the simplex, :math:`\phi^*(z) = \mathrm{logsumexp}(z)`)
    and return a tensor without it; ``psi`` likewise. ``rho_inv`` is ``log`` (one of the
    preimages; softmax is invariant to adding a constant), so ``invertible`` is ``False``.
    """

    name = "softmax"
    invertible = False
    separable = False
    lo, hi = 0.0, 1.0

    def rho(self, z: Tensor) -> Tensor:
        return torch.softmax(z, dim=-1)

    def phi(self, x: Tensor, atol: float = 1e-5) -> Tensor:
        value = _xlogx(x.clamp(min=0)).sum(-1)
        off_simplex = ((x < 0).any(-1)) | ((x.sum(-1) - 1).abs() > atol)
        return torch.where(off_simplex, torch.full_like(value, math.inf), value)

    def psi(self, x: Tensor) -> Tensor:
        return self.phi(x) - 0.5 * (x * x).sum(-1)

    def phi_conj(self, z: Tensor) -> Tensor:
        return torch.logsumexp(z, dim=-1)

    def in_domain(self, x: Tensor, atol: float = 1e-5) -> Tensor:
        return (x >= 0).all(-1) & ((x.sum(-1) - 1).abs() <= atol)

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(x \| \mathrm{softmax}(z))`: cross-entropy minus the entropy
        of ``x`` (a shifted multinomial logistic loss)."""
        return _xlogx(x).sum(-1) - (x * torch.log_softmax(z, dim=-1)).sum(-1)

    def bregman_loss_grad_x(self, x: Tensor, z: Tensor) -> Tensor:
        raise ValueError(
            "the x-gradient of the softmax Bregman loss is not available "
            "(Psi is not separable); use its prox instead"
        )

    def prox(self, z: Tensor, t: float | Tensor = 1.0) -> Tensor:
        r"""Prox of :math:`t\Psi` on the simplex (``0 < t <= 1``).

        KKT: :math:`(1-t)x_i + t\log x_i = z_i - t - \nu` with :math:`\nu` fixing
        :math:`\sum_i x_i = 1`. For ``t = 1`` this is softmax; otherwise both the scalar
        equation (in :math:`u = \log x`) and :math:`\nu` are found by nested bisection.
        """
        t = _check_step(t)
        if isinstance(t, float) and t == 1.0:
            return self.rho(z)
        if bool((torch.as_tensor(t) > 1).any()):
            raise ValueError(f"softmax prox of t*Psi is implemented for 0 < t <= 1; got t = {t}")
        work = z.double()
        t64 = torch.as_tensor(t, dtype=torch.float64, device=z.device)

        def x_of(c: Tensor) -> Tensor:
            # (1-t) e^u + t u = c is increasing in u; its root u* satisfies u* <= c/t, and
            # u* >= min((c - (1-t))/t, 0).
            lo = torch.clamp((c - (1 - t64)) / t64, max=0.0) - 1
            hi = c / t64 + 1
            for _ in range(64):
                mid = 0.5 * (lo + hi)
                positive = (1 - t64) * torch.exp(mid) + t64 * mid - c > 0
                hi = torch.where(positive, mid, hi)
                lo = torch.where(positive, lo, mid)
            return torch.exp(0.5 * (lo + hi))

        base = work - t64
        # sum_i x_i(nu) decreases in nu: >= 1 at max(base) - (1-t), <= 1 at max(base) + t log n
        top = base.max(-1, keepdim=True).values
        nu_lo = top - (1 - t64) - 1
        nu_hi = top + t64 * math.log(z.shape[-1]) + 1
        with torch.no_grad():
            for _ in range(64):
                nu = 0.5 * (nu_lo + nu_hi)
                too_big = x_of(base - nu).sum(-1, keepdim=True) > 1
                nu_lo = torch.where(too_big, nu, nu_lo)
                nu_hi = torch.where(too_big, nu_hi, nu)
        x = x_of(base - 0.5 * (nu_lo + nu_hi))
        return (x / x.sum(-1, keepdim=True)).to(z.dtype)


#: The activation classes by name (:class:`~bregnn.registry.Registry`: case and ``-``/``_``
#: are ignored in look-ups).
ACTIVATIONS: Registry[type[Activation]] = Registry("activation")
for _cls in (
    Sigmoid,
    Tanh,
    ScaledTanh,
    Atan,
    ScaledAtan,
    ISRU,
    Asinh,
    Softplus,
    Sin,
    ReLU,
    SoftThreshold,
    Identity,
    Softmax,
):
    ACTIVATIONS.register(_cls.name, _cls)
del _cls


def available_activations(*, invertible: bool | None = None) -> list[str]:
    """Registered names, optionally only the (non-)invertible ones."""
    return [
        name
        for name, cls in ACTIVATIONS.items()
        if invertible is None or cls.invertible == invertible
    ]


def activation(spec: str | Activation, **params: Any) -> Activation:
    """The one registry: a name (with constructor ``params``) or an :class:`Activation`.

    >>> activation("softplus", beta=10.0)
    Softplus(beta=10.0)
    >>> act = activation("atan"); activation(act) is act
    True
    """
    if isinstance(spec, Activation):
        if params:
            raise ValueError(
                f"parameters {sorted(params)} given with an activation object {spec!r}; "
                "pass a name to construct one"
            )
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation must be a name or an Activation, got {type(spec).__name__}")
    name = ACTIVATIONS.key(spec)  # ValueError listing the valid names
    try:
        return ACTIVATIONS.get(name)(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters {params} for activation {name!r}: {err}") from None
