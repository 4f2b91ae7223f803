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
outside the closed domain and never NaN. "Outside" is decided exactly, against the closed
domain rounded inward to the input's dtype (:meth:`Activation.closed_domain`): for example
``float32(pi/2) = 1.5707964 > pi/2`` lies outside the domain of ``atan``, so ``phi`` is
``+inf`` there, while the largest ``float32`` below ``pi/2`` gets a finite ``phi``.

Inputs outside the range of ``rho``: the clamp of ``rho_inv`` is meant for values *on* the
edge (saturated outputs of ``rho``, convex combinations of them rounded a few ulps past it).
Values genuinely outside the closed range ``[lo, hi]`` (by more than
:func:`domain_tolerance`, far beyond rounding) are data that were not scaled into the range,
for example pixels in ``[0, 255]`` fed to a sigmoid Bregman layer: clamped, they all map to
the same value and the network learns nothing. ``rho_inv`` then warns once per activation
object (a ``UserWarning`` naming the range and :class:`bregnn.data.RangeScaler`), or, for an
activation built with ``strict=True`` (``activation("tanh", strict=True)``,
``Tanh(strict=True)``), raises ``ValueError`` on every such call.

The one registry is :func:`activation`; it accepts a name (with keyword parameters) or an
activation object, which it returns untouched.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

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
    "domain_tolerance",
]

HALF_PI = math.pi / 2
#: ``pi/2 - HALF_PI``: the part of pi/2 that float64 cannot hold.
HALF_PI_LO = 6.123233995736766e-17


def domain_margin(bound: float, dtype: torch.dtype) -> float:
    """Distance kept from a finite domain ``bound`` when clamping into the open domain.

    ``finfo(dtype).eps * |bound|`` (a couple of float steps) for a nonzero bound and
    ``finfo(dtype).tiny`` for a bound at zero. In float32 that is ``1.19e-7`` at ``1`` and
    ``1.18e-38`` at ``0``.
    """
    finfo = torch.finfo(dtype)
    return finfo.eps * abs(bound) if bound != 0 else finfo.tiny


def domain_tolerance(bound: float, dtype: torch.dtype) -> float:
    """How far past a finite domain ``bound`` an input of ``rho_inv`` may lie before it counts
    as outside the range of ``rho`` (a warning, or ``ValueError`` in strict mode):
    ``sqrt(finfo(dtype).eps) * max(1, |bound|)``, i.e. ``3.5e-4`` at ``1`` in float32 and
    ``1.5e-8`` in float64. Rounding (a few ``eps``, also in long convex combinations) stays
    far below it; unscaled data lies far above it."""
    return math.sqrt(torch.finfo(dtype).eps) * max(1.0, abs(bound))


def dilogarithm(x: Tensor) -> Tensor:
    r"""The dilogarithm :math:`\mathrm{Li}_2(x) = \sum_{k\ge1} x^k/k^2` for ``x`` in ``[0, 1]``.

    Uses the series for ``x <= 1/2`` and the reflection
    :math:`\mathrm{Li}_2(x) = \pi^2/6 - \log x \log(1-x) - \mathrm{Li}_2(1-x)` above, so the
    series always converges at least like :math:`2^{-k}`. Differentiable by autograd.
    """
    refl = x > 0.5
    y = torch.where(refl, 1 - x, x)
    series = _li2_series(y)
    safe_x = torch.where(refl, x, torch.full_like(x, 0.75))
    one_minus = (1 - safe_x).clamp(min=torch.finfo(x.dtype).tiny)  # Li2(1) = pi^2/6 exactly
    reflected = math.pi**2 / 6 - torch.log(safe_x) * torch.log(one_minus) - series
    return torch.where(refl, reflected, series)


def _half_log1p_square(z: Tensor) -> Tensor:
    r""":math:`\tfrac12\log(1 + z^2)` without overflow: :math:`\log|z| + \tfrac12\log(1 +
    z^{-2})` for :math:`|z| > 1` (``z * z`` overflows float32 beyond :math:`1.8\cdot10^{19}`)."""
    a = z.abs()
    big = a > 1
    safe_big = torch.where(big, a, 2.0)
    safe_small = torch.where(big, 0.0, z)
    far = torch.log(safe_big) + 0.5 * torch.log1p(safe_big.reciprocal().square())
    return torch.where(big, far, 0.5 * torch.log1p(safe_small * safe_small))


def _li2_series(y: Tensor) -> Tensor:
    r""":math:`\sum_{k\ge1} y^k/k^2` for ``y`` in ``[0, 1/2]`` by Horner's rule. The terms
    dropped after ``n`` sum to at most :math:`2^{-n}/n^2` (relative ``1e-19`` for float64's
    60 terms, ``1e-10`` for the 24 of lower precisions, well below their ``eps``)."""
    n_terms = 60 if y.dtype == torch.float64 else 24
    acc = torch.zeros_like(y)
    for k in range(n_terms, 0, -1):
        acc = y * (acc + 1.0 / (k * k))
    return acc


def _li2_exp_neg(t: Tensor) -> Tensor:
    r""":math:`\mathrm{Li}_2(e^{-t})` for ``t >= 0``, accurate (value and slope) down to
    ``t = 0``: for :math:`t \le \log 2` the reflection in :math:`w = 1 - e^{-t}` (``-expm1``)
    uses ``t`` itself, where :func:`dilogarithm` would get ``exp(-t)`` rounded to 1.
    """
    small = t <= math.log(2)
    w = -torch.expm1(-torch.where(small, t, torch.zeros_like(t)))
    # one series for both branches: in w = 1 - e^-t (small t) or in e^-t (large t)
    series = _li2_series(torch.where(small, w, torch.exp(-torch.where(small, 1.0, t))))
    log_w = torch.log(w.clamp(min=torch.finfo(w.dtype).tiny))
    return torch.where(small, math.pi**2 / 6 + t * log_w - series, series)


def _float_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


@functools.lru_cache(maxsize=1024)
def _closed_bounds(lo: float, hi: float, dtype: torch.dtype) -> tuple[float, float]:
    """The smallest and largest ``dtype`` values in ``[lo, hi]`` (each bound rounded inward)."""

    def inward(bound: float, direction: float) -> float:
        if not math.isfinite(bound):
            return bound
        value = torch.tensor(bound, dtype=torch.float64).to(dtype)
        if (float(value) - bound) * direction < 0:  # rounding went outward: one step back
            value = torch.nextafter(value, torch.tensor(direction * math.inf, dtype=dtype))
        return float(value)

    return inward(lo, 1.0), inward(hi, -1.0)


@functools.cache
def _half_pi_split(dtype: torch.dtype) -> tuple[float, float]:
    """``(head, tail)`` with ``head`` = pi/2 rounded to ``dtype`` and ``tail = pi/2 - head``."""
    head = float(torch.tensor(HALF_PI, dtype=torch.float64).to(dtype))
    return head, (HALF_PI - head) + HALF_PI_LO


def _half_pi_minus_abs(x: Tensor) -> Tensor:
    r""":math:`\pi/2 - |x|` to full relative precision in ``x``'s dtype.

    :math:`\pi/2` is split into its value rounded to the dtype plus the remainder; the first
    subtraction is exact for :math:`|x| \ge \pi/4` (Sterbenz), so the distance to the edge of
    ``atan``'s domain keeps all its digits where :math:`\cos x` would cancel (in float32,
    ``cos(float32(pi/2))`` is *negative*). Negative outside :math:`[-\pi/2, \pi/2]`.
    """
    head, tail = _half_pi_split(x.dtype)
    return (head - x.abs()) + tail


class Activation(nn.Module):
    r"""Base class: :math:`\rho = \operatorname{prox}_\Psi`, :math:`\Psi = \phi - \tfrac12|\cdot|^2`.

    Subclasses set ``name``, ``lo``/``hi`` (the open domain of ``rho_inv``, i.e. the range of
    ``rho``), ``lipschitz`` (an upper bound on ``rho'``), and implement ``rho``, ``_rho_inv``
    (on the open domain), ``_phi`` (on the closed domain) and optionally ``phi_conj`` and
    ``prox`` in closed form.

    Args:
        strict: ``rho_inv`` raises ``ValueError`` for inputs outside the range of ``rho``
            instead of warning once and clamping them (see the module docstring).
    """

    name: ClassVar[str] = ""
    invertible: ClassVar[bool] = True
    separable: ClassVar[bool] = True
    lo: float = -math.inf
    hi: float = math.inf
    lipschitz: float = 1.0
    strict: bool = False
    _warned_outside: bool = False

    def __init__(self, *, strict: bool = False) -> None:
        super().__init__()
        self.strict = bool(strict)

    # -- faces ------------------------------------------------------------------------------
    @property
    def domain(self) -> tuple[float, float]:
        """The open domain ``(lo, hi)`` of ``rho_inv`` (= the range of ``rho``)."""
        return (self.lo, self.hi)

    def forward(self, z: Tensor) -> Tensor:
        return self.rho(z)

    def rho(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def closed_domain(self, dtype: torch.dtype) -> tuple[float, float]:
        """The smallest and largest ``dtype`` values in the closed domain ``[lo, hi]``.

        A bound that ``dtype`` cannot hold is rounded inward: in float32 the upper bound of
        ``atan`` is ``1.5707963`` (just below pi/2), not ``float32(pi/2) = 1.5707964``.
        """
        return _closed_bounds(self.lo, self.hi, dtype)

    def outside_domain(self, x: Tensor) -> Tensor:
        """Elementwise: is ``x`` outside the closed domain ``[lo, hi]``? Exact in every dtype
        (compared with :meth:`closed_domain`)."""
        lo, hi = self.closed_domain(_float_dtype(x))
        return (x < lo) | (x > hi)

    def clamp_to_closed_domain(self, x: Tensor) -> Tensor:
        """Clamp ``x`` into :meth:`closed_domain` (no margin: edges stay edges)."""
        lo, hi = self.closed_domain(_float_dtype(x))
        return x.clamp(min=lo, max=hi)

    def clamp_to_domain(self, y: Tensor) -> Tensor:
        """Clamp ``y`` into ``[lo + margin, hi - margin]`` (see :func:`domain_margin`)."""
        dtype = _float_dtype(y)
        lo = self.lo + domain_margin(self.lo, dtype) if math.isfinite(self.lo) else None
        hi = self.hi - domain_margin(self.hi, dtype) if math.isfinite(self.hi) else None
        if lo is None and hi is None:
            return y
        return torch.clamp(y, min=lo, max=hi)

    def rho_inv(self, y: Tensor) -> Tensor:
        r""":math:`\rho^{-1} = \nabla\phi`; inputs are first clamped into the open domain.

        Inputs outside the closed range ``[lo, hi]`` of ``rho`` by more than
        :func:`domain_tolerance` warn once per activation object (``UserWarning``) or, with
        ``strict=True``, raise ``ValueError``; see the module docstring.
        """
        if not self.invertible:
            raise ValueError(
                f"activation {self.name!r} is not invertible, so it has no rho_inv; "
                f"invertible activations: {available_activations(invertible=True)}"
            )
        if self.strict or not self._warned_outside:
            self._check_range(y)
        return self._rho_inv(self.clamp_to_domain(y))

    def _check_range(self, y: Tensor) -> None:
        if not (math.isfinite(self.lo) or math.isfinite(self.hi)):
            return
        dtype = _float_dtype(y)
        lo = self.lo - domain_tolerance(self.lo, dtype) if math.isfinite(self.lo) else -math.inf
        hi = self.hi + domain_tolerance(self.hi, dtype) if math.isfinite(self.hi) else math.inf
        if not bool(((y < lo) | (y > hi)).any()):
            return
        found = (
            f"rho_inv of {self.name!r} got inputs outside the range [{self.lo:.6g}, "
            f"{self.hi:.6g}] of rho (min {y.min().item():.4g}, max {y.max().item():.4g})"
        )
        scale = "scale the data into the range, e.g. with bregnn.data.RangeScaler"
        if self.strict:
            raise ValueError(f"{found}: {scale} (strict=True)")
        self._warned_outside = True
        warnings.warn(
            f"{found}; they are clamped into it, so they all map to the same few values: "
            f"{scale} (warned once per activation object)",
            UserWarning,
            stacklevel=3,
        )

    def _rho_inv(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def rho_inv_rho(self, u: Tensor) -> Tensor:
        r""":math:`\rho^{-1}(\rho(u))` without the round trip: ``u`` itself, as ``rho`` maps
        the real line one-to-one onto its range (overridden where it does not, as ``sin``).
        ``ValueError`` for a non-invertible activation, which has no ``rho_inv``."""
        if not self.invertible:
            raise ValueError(
                f"activation {self.name!r} is not invertible, so rho_inv(rho(u)) is not "
                f"defined; invertible activations: {available_activations(invertible=True)}"
            )
        return u

    def phi(self, x: Tensor) -> Tensor:
        r"""Elementwise Legendre potential :math:`\phi`; ``+inf`` outside the closed domain
        (:meth:`outside_domain`) and where :math:`\phi` is infinite on its edge (``atan``,
        ``scaled_atan``), never NaN. Its autograd gradient is NaN-free too (0 outside)."""
        value = self._phi(self.clamp_to_closed_domain(x))
        return torch.where(self.outside_domain(x), math.inf, value)

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

        Differentiable in ``z`` and in ``t`` (a tensor ``t`` broadcastable to ``z``) for every
        ``t``, by implicit differentiation of the optimality condition
        :math:`x + t\Psi'(x) = z` (see :meth:`_prox_vjp`); the bisection itself builds no graph.
        """
        t = _check_step(t)
        if isinstance(t, float) and t == 1.0:
            return self.rho(z)
        return self._generic_prox(z, t)

    def _generic_prox(self, z: Tensor, t: float | Tensor) -> Tensor:
        return _ImplicitProx.apply(z, torch.as_tensor(t, dtype=z.dtype, device=z.device), self)

    @torch.no_grad()
    def _prox_solve(self, z: Tensor, t_t: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, u)`` in float64: the prox of ``t Psi`` at ``z`` and ``u = rho_inv(x)``."""
        slope = torch.where(t_t <= 1, t_t, t_t - (t_t - 1) * self.lipschitz)
        if bool((slope <= 0).any()):
            raise ValueError(
                f"prox of t*Psi for {self.name!r} needs t < L/(L-1) = "
                f"{self.lipschitz / (self.lipschitz - 1):.4g} (Psi is not convex: rho is "
                f"{self.lipschitz:.4g}-Lipschitz); got t = {_step_repr(t_t)}"
            )
        work = z.double()
        t64 = t_t.double()

        def h(u: Tensor) -> Tensor:
            return (1 - t64) * self.rho(u) + t64 * u - work

        radius = h(work).abs() / slope.double()
        lo, hi = work - radius, work + radius
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            positive = h(mid) > 0
            hi = torch.where(positive, mid, hi)
            lo = torch.where(positive, lo, mid)
        u = 0.5 * (lo + hi)
        return self.rho(u), u

    def _prox_vjp(self, grad: Tensor, t: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(grad_z, grad_t)`` (elementwise) of ``x = prox(z, t)`` for the upstream ``grad``.

        Differentiating :math:`x + t\Psi'(x) = z` with :math:`\Psi''(x) = 1/\rho'(u) - 1`:

        .. math::

            \frac{\partial x}{\partial z} = \frac{1}{1 + t\Psi''(x)}
            = \frac{\rho'(u)}{(1-t)\rho'(u) + t}, \qquad
            \frac{\partial x}{\partial t} = -\Psi'(x)\frac{\partial x}{\partial z}
            = -(u - x)\frac{\partial x}{\partial z},

        finite everywhere (0 where ``rho`` saturates); the denominator is at least
        :math:`\min(t, t - (t-1)L) > 0`. :math:`\rho'(u)` comes from autograd of ``rho``.
        """
        with torch.enable_grad():
            leaf = u.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(self.rho(leaf).sum(), leaf)
        dx_dz = slope / ((1 - t) * slope + t)
        return grad * dx_dz, -grad * dx_dz * (u - x)

    # -- the lifted Bregman loss -----------------------------------------------------------------
    def in_domain(self, x: Tensor) -> Tensor:
        """Per sample (last dimension reduced): is ``x`` in the closed domain of ``Psi``?"""
        return ~self.outside_domain(x).any(-1)

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
        fields = [f"{k}={v}" for k, v in self.params().items()]
        return ", ".join(fields + (["strict=True"] if self.strict else []))


class _ImplicitProx(torch.autograd.Function):
    """``act.prox(z, t)`` solved without a graph (``act._prox_solve``, in float64) and
    differentiated implicitly (``act._prox_vjp``)."""

    @staticmethod
    def forward(ctx, z: Tensor, t: Tensor, act: Activation) -> Tensor:
        x, aux = act._prox_solve(z, t)
        ctx.act = act
        ctx.save_for_backward(t, x, aux)
        return x.to(z.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        t, x, aux = ctx.saved_tensors
        grad_z, grad_t = ctx.act._prox_vjp(grad.to(x.dtype), t.to(x.dtype), x, aux)
        return (
            grad_z.to(grad.dtype) if ctx.needs_input_grad[0] else None,
            grad_t.sum_to_size(t.shape).to(t.dtype) if ctx.needs_input_grad[1] else None,
            None,
        )


def _step_repr(t: Tensor) -> str:
    return f"{t.item():g}" if t.numel() == 1 else f"max(t) = {t.max().item():g}"


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
    r""":math:`x\log x` with :math:`0\log 0 = 0`, and a finite autograd slope
    :math:`\log(\mathrm{tiny})` at ``x = 0`` (``xlogy(x, x)`` differentiates to ``0/0``)."""
    return x * torch.log(x.clamp(min=torch.finfo(_float_dtype(x)).tiny))


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

    def __init__(self, A: float = 1.7159, B: float = 0.6666, *, strict: bool = False) -> None:
        super().__init__(strict=strict)
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
        # float32 atan(z) rounds to float32(pi/2) > pi/2 for |z| > 6e7: keep it in the range
        return self.clamp_to_closed_domain(torch.atan(z))

    def _rho_inv(self, y: Tensor) -> Tensor:
        return torch.tan(y)

    def _phi(self, x: Tensor) -> Tensor:
        # cos x = sin(pi/2 - |x|), with the distance to the edge kept exactly
        return -torch.log(torch.sin(_half_pi_minus_abs(x).clamp(min=0)))

    def phi_conj(self, z: Tensor) -> Tensor:
        return z * torch.atan(z) - _half_log1p_square(z)

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\sum \phi(x) - \tfrac12\log(1 + z^2) + z(\arctan z - x)`: the generic form
        with :math:`z\arctan z - xz` grouped, which would overflow float32 (to
        ``inf - inf``) for :math:`|z| > 10^{38}` and lose all digits long before."""
        return (self._phi(x) - _half_log1p_square(z) + z * (torch.atan(z) - x)).sum(-1).clamp(min=0)


class ScaledAtan(Activation):
    r""":math:`\rho(z) = \tfrac2\pi\arctan z` on (-1, 1); :math:`\rho^{-1}(t) = \tan(\pi t/2)`,
    :math:`\phi(t) = -\tfrac2\pi\log\cos(\pi t/2)`."""

    name = "scaled_atan"
    lo, hi, lipschitz = -1.0, 1.0, 2 / math.pi

    def rho(self, z: Tensor) -> Tensor:
        return torch.atan(z) / HALF_PI

    def _rho_inv(self, y: Tensor) -> Tensor:
        # near the edge tan(pi y/2) = sign(y) / tan(pi (1 - |y|)/2): 1 - |y| is exact there,
        # pi y/2 is not (a relative error of 0.4 one float64 step inside the edge)
        a = y.abs()
        near = a > 0.5
        edge = torch.sign(y) / torch.tan(HALF_PI * (1 - torch.where(near, a, 0.5)))
        return torch.where(near, edge, torch.tan(HALF_PI * torch.where(near, 0.0, y)))

    def _phi(self, x: Tensor) -> Tensor:
        # cos(pi x/2) = sin(pi (1 - |x|)/2); 1 - |x| is exact near the edge, where phi = +inf
        return -torch.log(torch.sin(HALF_PI * (1 - x.abs()).clamp(min=0))) / HALF_PI

    def phi_conj(self, z: Tensor) -> Tensor:
        return (z * torch.atan(z) - _half_log1p_square(z)) / HALF_PI

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\sum \phi(x) - \tfrac2\pi\tfrac12\log(1 + z^2) + z(\rho(z) - x)` (the
        generic form with :math:`z\rho(z) - xz` grouped, as for ``atan``)."""
        value = self._phi(x) - _half_log1p_square(z) / HALF_PI + z * (self.rho(z) - x)
        return value.sum(-1).clamp(min=0)


class ISRU(Activation):
    r"""Inverse square-root unit :math:`\rho(z) = z/\sqrt{1+z^2}` on (-1, 1);
    :math:`\rho^{-1}(t) = t/\sqrt{1-t^2}`, :math:`\phi(t) = -\sqrt{1-t^2}`,
    :math:`\phi^*(z) = \sqrt{1+z^2}`."""

    name = "isru"
    lo, hi, lipschitz = -1.0, 1.0, 1.0

    def rho(self, z: Tensor) -> Tensor:
        return z / torch.hypot(z, torch.ones_like(z))  # z * rsqrt(1 + z^2) is 0 once z^2 = inf

    def _rho_inv(self, y: Tensor) -> Tensor:
        return y * torch.rsqrt((1 - y) * (1 + y))

    def _phi(self, x: Tensor) -> Tensor:
        # two square roots: the slope at |x| = 1 is +-inf (= rho_inv), not inf * 0 = NaN
        a = x.abs()
        return -torch.sqrt(1 - a) * torch.sqrt(1 + a)

    def phi_conj(self, z: Tensor) -> Tensor:
        return torch.hypot(z, torch.ones_like(z))


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
        return z * torch.asinh(z) - torch.hypot(z, torch.ones_like(z))


class Softplus(Activation):
    r""":math:`\rho(z) = \tfrac1\beta\log(1 + e^{\beta z})` on :math:`(0, \infty)`.

    :math:`\rho^{-1}(t) = \tfrac1\beta\log(e^{\beta t} - 1)`, computed as
    :math:`t + \tfrac1\beta\log(-\mathrm{expm1}(-\beta t))` (finite for any ``beta``);
    :math:`\phi(t) = \tfrac{1}{\beta^2}\big(\tfrac{(\beta t)^2}{2} + \mathrm{Li}_2(e^{-\beta t})\big)`
    (integrate :math:`\rho^{-1}`; :math:`\mathrm{Li}_2` is :func:`dilogarithm`).
    """

    name = "softplus"
    lo, hi, lipschitz = 0.0, math.inf, 1.0

    def __init__(self, beta: float = 1.0, *, strict: bool = False) -> None:
        super().__init__(strict=strict)
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
        return (0.5 * bx * bx + _li2_exp_neg(bx)) / self.beta**2

    def bregman_loss(self, x: Tensor, z: Tensor) -> Tensor:
        r""":math:`\sum \tfrac12(x-y)^2 + (x-y)\,\mathrm{softplus}_\beta(-z)
        + (\mathrm{Li}_2(e^{-\beta x}) - \mathrm{Li}_2(e^{-\beta y}))/\beta^2` with
        :math:`y = \rho(z)`: this is :math:`\phi(x) - \phi(y) - z(x - y)` with
        :math:`y - z = \mathrm{softplus}_\beta(-z)`. No term grows like :math:`z^2` (the
        generic form subtracts such terms and overflows to NaN in float32 for
        :math:`|z| > 10^{19}`), and it is exactly 0 at :math:`x = \rho(z)`."""
        y = self.rho(z)
        gap = x - y
        li2 = (_li2_exp_neg(self.beta * x) - _li2_exp_neg(self.beta * y)) / self.beta**2
        shift = nn.functional.softplus(-z, beta=self.beta)
        return (0.5 * gap * gap + gap * shift + li2).sum(-1).clamp(min=0)


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
        # at |x| = 1, phi = pi/2 |x| with slope asin(+-1) = +-pi/2 (the formula's slope
        # there is inf - inf)
        edge = x.abs() >= 1
        inner = torch.where(edge, torch.zeros_like(x), x)
        smooth = torch.sqrt((1 - inner) * (1 + inner)) + inner * torch.asin(inner)
        return torch.where(edge, HALF_PI * x.abs(), smooth)


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

    def __init__(self, alpha: float = 0.1, *, strict: bool = False) -> None:
        super().__init__(strict=strict)
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
        r"""The gradient of the loss as written on the positive orthant,
        :math:`\log x + 1 - \log\mathrm{softmax}(z)` (on the simplex any multiple of the ones
        vector may be added: it is normal to the simplex). Where :math:`x_i = 0` the entropy's
        slope is :math:`-\infty`; :math:`\log x_i` is taken at ``finfo.tiny`` instead, as
        ``rho_inv`` clamps."""
        tiny = torch.finfo(_float_dtype(x)).tiny
        return torch.log(x.clamp(min=tiny)) + 1 - torch.log_softmax(z, dim=-1)

    def prox(self, z: Tensor, t: float | Tensor = 1.0) -> Tensor:
        r"""Prox of :math:`t\Psi` on the simplex (``0 < t <= 1``).

        KKT: :math:`(1-t)x_i + t\log x_i = z_i - t - \nu` with :math:`\nu` fixing
        :math:`\sum_i x_i = 1`. For ``t = 1`` this is softmax; otherwise both the scalar
        equation (in :math:`u = \log x`) and :math:`\nu` are found by nested bisection,
        differentiable in ``z`` and ``t`` by implicit differentiation (:meth:`_prox_vjp`).
        """
        t = _check_step(t)
        if isinstance(t, float) and t == 1.0:
            return self.rho(z)
        if bool((torch.as_tensor(t) > 1).any()):
            raise ValueError(f"softmax prox of t*Psi is implemented for 0 < t <= 1; got t = {t}")
        return _ImplicitProx.apply(z, torch.as_tensor(t, dtype=z.dtype, device=z.device), self)

    @torch.no_grad()
    def _prox_solve(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        work = z.double()
        t64 = t.double()

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
        for _ in range(64):
            nu = 0.5 * (nu_lo + nu_hi)
            too_big = x_of(base - nu).sum(-1, keepdim=True) > 1
            nu_lo = torch.where(too_big, nu, nu_lo)
            nu_hi = torch.where(too_big, nu_hi, nu)
        x = x_of(base - 0.5 * (nu_lo + nu_hi))
        x = x / x.sum(-1, keepdim=True)
        return x, x

    def _prox_vjp(self, grad: Tensor, t: Tensor, x: Tensor, _: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(grad_z, grad_t)`` by implicit differentiation of the KKT system: with
        :math:`a_i = x_i / ((1-t)x_i + t)` and :math:`c_i = \log x_i + 1 - x_i = \Psi'(x)_i`,
        :math:`dx = J(dz - c\,dt)` for the symmetric :math:`J = \mathrm{diag}(a) -
        aa^\top/\textstyle\sum_i a_i` (the multiplier :math:`\nu` keeps :math:`\sum_i dx_i = 0`),
        so ``grad_z = J grad`` and ``grad_t = -(J grad) * c``."""
        a = x / ((1 - t) * x + t)
        jg = a * grad - a * (a * grad).sum(-1, keepdim=True) / a.sum(-1, keepdim=True)
        c = torch.log(x.clamp(min=torch.finfo(x.dtype).tiny)) + 1 - x
        return jg, -jg * c


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
