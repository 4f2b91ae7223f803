r"""Reusable verification of an activation's faces (in the spirit of pyproximal's checks).

:func:`check_activation` verifies, on sample points of the domain, that

- :math:`\rho(\rho^{-1}(y)) = y` (invertible activations);
- autograd's :math:`\nabla\phi = \rho^{-1}`;
- the prox optimality condition :math:`z - \rho(z) \in \partial\Psi(\rho(z))`, checked as
  :math:`\rho(z)` minimising :math:`\tfrac12|x - z|^2 + \Psi(x)` against perturbed points;
- the Fenchel–Young equality :math:`\phi(\rho(z)) + \phi^*(z) = z\rho(z)` and inequality
  :math:`\phi(x) + \phi^*(z) \ge xz`;
- :math:`B_\Psi(x, z) = \phi(x) + \phi^*(z) - xz \ge \tfrac{1}{2L}|x - \rho(z)|^2` with
  ``L = max(1, act.lipschitz)``: :math:`\phi` is :math:`1/L`-strongly convex when
  :math:`\rho' \le L` (for the usual 1-Lipschitz activations this is the paper's bound
  :math:`\tfrac12|x - \rho(z)|^2`);
- :math:`\nabla_z B_\Psi(x, z) = \rho(z) - x` by autograd;
- ``rho`` monotone;
- ``prox(z, t)`` satisfies :math:`(1-t)x + t\rho^{-1}(x) = z` for ``t != 1``;
- at each finite edge of the domain (in ``dtype``), ``phi`` and its autograd slope are never
  NaN, ``phi`` is finite one float step inside and ``+inf`` one step outside.

It raises ``AssertionError`` naming the failed property, so a user-defined activation can be
checked with one call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bregnn.activations import Activation, activation

__all__ = ["check_activation", "domain_samples"]


def domain_samples(act: Activation, n: int = 257, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` points strictly inside the open domain of ``act`` (clipped to ``[-5, 5]``)."""
    lo, hi = act.domain
    lo_s = max(lo, -5.0) if math.isfinite(lo) else -5.0
    hi_s = min(hi, 5.0) if math.isfinite(hi) else 5.0
    pts = torch.linspace(lo_s, hi_s, n + 2, dtype=dtype)[1:-1]
    return pts


def _close(name: str, got: Tensor, want: Tensor, rtol: float, atol: float) -> None:
    if not torch.allclose(got, want, rtol=rtol, atol=atol):
        err = (got - want).abs().max().item()
        raise AssertionError(f"{name}: max abs error {err:.3e} (rtol={rtol}, atol={atol})")


def check_activation(
    act: Activation | str,
    dtype: torch.dtype = torch.float64,
    n: int = 257,
    seed: int = 0,
) -> None:
    """Verify every face of ``act`` (see the module docstring); raise ``AssertionError``."""
    act = activation(act)
    if not act.separable:
        _check_softmax_like(act, dtype, seed)
        return
    double = dtype == torch.float64
    tol = 1e-9 if double else 2e-4  # identities
    gtol = 1e-6 if double else 1e-4  # autograd comparisons
    otol = 1e-9 if double else 1e-5  # relative slack in inequalities
    gen = torch.Generator().manual_seed(seed)
    z = 4 * torch.randn(n, generator=gen, dtype=dtype)
    x_rho = act.rho(z)
    lo, hi = act.domain
    huge = torch.tensor([-1e30, 1e30], dtype=dtype)  # saturated: rounding must stay in range
    if bool(act.outside_domain(torch.cat([x_rho, act.rho(huge)])).any()):
        raise AssertionError("rho leaves its declared range")
    if bool((torch.diff(act.rho(torch.sort(z).values)) < -tol).any()):
        raise AssertionError("rho is not monotone")

    if act.invertible:
        y = domain_samples(act, n, dtype)
        _close("rho(rho_inv(y)) == y", act.rho(act.rho_inv(y)), y, rtol=tol, atol=tol)
        yg = y.clone().requires_grad_(True)
        (grad_phi,) = torch.autograd.grad(act.phi(yg).sum(), yg)
        _close("autograd grad(phi) == rho_inv", grad_phi, act.rho_inv(y), rtol=gtol, atol=gtol)

    # Fenchel-Young equality at x = rho(z) and inequality elsewhere
    fy = act._phi(x_rho) + act.phi_conj(z) - z * x_rho
    _close("Fenchel-Young equality", fy, torch.zeros_like(fy), 0, gtol * (1 + z.abs().max().item()))
    x_any = x_rho[torch.randperm(n, generator=gen)]
    gap = act.phi(x_any) + act.phi_conj(z) - z * x_any
    bound = 0.5 / max(1.0, act.lipschitz) * (x_any - x_rho) ** 2
    if bool((gap < bound - gtol * (1 + gap.abs() + z.abs())).any()):
        raise AssertionError("B_Psi(x, z) >= 1/(2L) |x - rho(z)|^2 violated")

    # prox optimality: rho(z) beats perturbed feasible points of 1/2|x - z|^2 + Psi(x)
    def objective(x: Tensor) -> Tensor:
        return 0.5 * (x - z) ** 2 + act.psi(x)

    best = objective(x_rho)
    for delta in (1e-3, -1e-3, 1e-1, -1e-1):
        trial = x_rho + delta
        inside = (trial > lo) & (trial < hi)
        worse = objective(trial)
        if bool((inside & (worse < best - otol * (1 + best.abs() + z.abs()))).any()):
            raise AssertionError(f"prox optimality violated: x = rho(z) + {delta} does better")

    # grad_z B(x, z) = rho(z) - x
    zg = z.clone().requires_grad_(True)
    (grad_z,) = torch.autograd.grad((act.phi_conj(zg) - x_any * zg).sum(), zg)
    _close("grad_z B_Psi == rho(z) - x", grad_z, act.rho(z) - x_any, rtol=gtol, atol=gtol)

    # prox of t*Psi solves its optimality condition
    if act.invertible:
        for t in (0.3, min(2.0, 0.99 * _max_step(act))):
            x = act.prox(z, t)
            _close(
                f"prox(z, {t:.3g}) optimality (1-t)x + t rho_inv(x) = z",
                act.rho((z - (1 - t) * x) / t),
                x,
                rtol=1e-5,
                atol=1e-5 if dtype == torch.float64 else 1e-3,
            )

    _check_edges(act, dtype)


def _check_edges(act: Activation, dtype: torch.dtype) -> None:
    for bound, inward in zip(act.closed_domain(dtype), (math.inf, -math.inf)):
        if not math.isfinite(bound):
            continue
        edge = torch.tensor(bound, dtype=dtype)
        inside = torch.nextafter(edge, torch.tensor(inward, dtype=dtype))
        outside = torch.nextafter(edge, torch.tensor(-inward, dtype=dtype))
        x = torch.stack([edge, inside, outside]).requires_grad_(True)
        value = act.phi(x)
        (slope,) = torch.autograd.grad(value.sum(), x)
        if bool(value.isnan().any() | slope.isnan().any()):
            raise AssertionError(f"phi or its slope is NaN at the domain edge {bound!r}")
        if not math.isfinite(value[1].item()):
            raise AssertionError(f"phi is not finite one float step inside the edge {bound!r}")
        if value[2].item() != math.inf:
            raise AssertionError(f"phi is not +inf one float step outside the edge {bound!r}")


def _max_step(act: Activation) -> float:
    return math.inf if act.lipschitz <= 1 else act.lipschitz / (act.lipschitz - 1)


def _check_softmax_like(act: Activation, dtype: torch.dtype, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(64, 7, generator=gen, dtype=dtype)
    x = act.rho(z)
    _close("rho lands on the simplex", x.sum(-1), torch.ones(64, dtype=dtype), 0, 1e-6)
    fy = act.phi(x) + act.phi_conj(z) - (x * z).sum(-1)
    _close("Fenchel-Young equality", fy, torch.zeros_like(fy), 0, 1e-6)
    other = act.rho(3 * torch.randn(64, 7, generator=gen, dtype=dtype))
    gap = act.phi(other) + act.phi_conj(z) - (other * z).sum(-1)
    if bool((gap < 0.5 * ((other - x) ** 2).sum(-1) - 1e-6).any()):
        raise AssertionError("B_Psi(x, z) >= 1/2 |x - rho(z)|^2 violated")
    zg = z.clone().requires_grad_(True)
    (grad_z,) = torch.autograd.grad((act.phi_conj(zg) - (other * zg).sum(-1)).sum(), zg)
    _close("grad_z B_Psi == rho(z) - x", grad_z, x - other, 1e-5, 1e-6)
