r"""Pure tensor functions behind the modules of :mod:`bregnn.nn`.

.. math::

    \text{standard:}\; z^+ = \rho(Wz + b), \qquad
    \text{euclidean:}\; z^+ = \rho(Mz + Wz + b), \qquad
    \text{bregman:}\; z^+ = \rho(\rho^{-1}(Mz) + Wz + b),

where ``M`` is ``None`` (the identity, when ``in == out``) or a matrix whose rows lie on the
probability simplex, so ``Mz`` is a convex combination of the entries of ``z`` and stays in
the (convex) range of ``rho``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bregnn.activations import Activation, activation, available_activations

__all__ = ["VARIANTS", "bregman_divergence", "bregman_linear", "project_simplex"]

VARIANTS = ("standard", "euclidean", "bregman")


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
    return variant


def bregman_linear(
    z: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    act: Activation | str,
    variant: str = "bregman",
    mixing: Tensor | None = None,
) -> Tensor:
    r"""One (Bregman) layer; see the module docstring for the three ``variant`` formulas.

    Args:
        z: input ``(*, in_features)``; for ``bregman`` it must lie in the range of ``rho``
            (values outside are clamped into the open domain of ``rho_inv``).
        weight: ``W``, ``(out_features, in_features)``.
        bias: ``b``, ``(out_features,)`` or ``None``.
        act: the activation (name or object).
        variant: ``standard`` | ``euclidean`` | ``bregman``.
        mixing: ``M`` with simplex rows ``(out_features, in_features)``; ``None`` means the
            identity and requires ``in_features == out_features``.
    """
    act = activation(act)
    check_variant(variant)
    if variant == "bregman":
        if not act.invertible:
            raise ValueError(
                f"the bregman variant needs an invertible activation; {act.name!r} is not. "
                f"Invertible activations: {available_activations(invertible=True)}"
            )
        if mixing is None and weight.shape[0] != z.shape[-1]:
            raise _needs_square(variant, z, weight)
        # the fused node has no autocast rules: under mixed precision use the composition
        if act.has_closed_form_derivatives and not torch.is_autocast_enabled(z.device.type):
            skip = None if mixing is None else torch.nn.functional.linear(z, mixing)
            return _fused_bregman(z, skip, weight, bias, act)
    affine = torch.nn.functional.linear(z, weight, bias)
    if variant == "standard":
        return act.rho(affine)
    if mixing is None:
        if weight.shape[0] != z.shape[-1]:
            raise _needs_square(variant, z, weight)
        skip = z
    else:
        skip = torch.nn.functional.linear(z, mixing)
    if variant == "euclidean":
        return act.rho(skip + affine)
    return act.rho(act.rho_inv(skip) + affine)


def _needs_square(variant: str, z: Tensor, weight: Tensor) -> ValueError:
    return ValueError(
        f"a {variant} layer without a mixing matrix M needs in_features == "
        f"out_features; got {z.shape[-1]} -> {weight.shape[0]}"
    )


# -- the fused Bregman layer -------------------------------------------------------------------
def _needs_clamp(s: Tensor, lo: float | None, hi: float | None) -> bool:
    """Whether ``clamp(s, lo, hi)`` changes ``s``. On CPU one min/max pass decides it (and
    the clamp is skipped when nothing is out of bounds); elsewhere the clamp always runs,
    so no device synchronisation is needed."""
    if lo is None and hi is None:
        return False
    if s.device.type != "cpu" or s.numel() == 0:
        return True
    smallest, largest = torch.aminmax(s)
    return (lo is not None and smallest.item() < lo) or (hi is not None and largest.item() > hi)


def _fused_bregman(
    z: Tensor,
    skip: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    act: Activation,
) -> Tensor:
    if z.dim() == 2:
        return _FusedBregmanLinear.apply(z, skip, weight, bias, act)
    lead = z.shape[:-1]
    z2 = z.reshape(-1, z.shape[-1])
    skip2 = None if skip is None else skip.reshape(-1, skip.shape[-1])
    out = _FusedBregmanLinear.apply(z2, skip2, weight, bias, act)
    return out.reshape(*lead, weight.shape[0])


class _FusedBregmanLinear(torch.autograd.Function):
    r""":math:`y = \rho(\rho^{-1}(\mathrm{clamp}(s)) + Wz + b)` with ``s = skip`` (or ``z``
    when ``skip`` is ``None``), as one autograd node with closed-form derivatives:

    .. math::

        g_u = g\,\rho'(u),\quad \nabla_W = g_u^\top z,\quad \nabla_b = \textstyle\sum g_u,
        \quad \nabla_s = \mathbb 1_{\text{unclamped}}\,g_u\,(\rho^{-1})'(s),
        \quad \nabla_z = g_u W\;(+\,\nabla_s \text{ when } s = z).

    The clamp into the open domain (:meth:`Activation.clamp_to_domain`) passes gradient
    exactly where ``torch.clamp`` does (inputs inside the closed clamping interval). Under
    ``create_graph=True`` the backward differentiates the plain composition instead, so
    higher derivatives stay exact. Same values as the composition; fewer autograd nodes
    (one instead of six), which is what a deep narrow network pays for.
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        skip: Tensor | None,
        weight: Tensor,
        bias: Tensor | None,
        act: Activation,
    ) -> Tensor:
        s = z if skip is None else skip
        lo, hi = act.clamp_bounds(s.dtype)
        ctx.clamped = _needs_clamp(s, lo, hi)
        s_clamped = torch.clamp(s, lo, hi) if ctx.clamped else s
        t = act._rho_inv(s_clamped)
        u = torch.nn.functional.linear(z, weight, bias).add_(t)
        y = act.rho(u)
        ctx.act = act
        unclamped = (s_clamped == s) if ctx.clamped else None
        ctx.save_for_backward(z, skip, weight, bias, u, y, s_clamped, t, unclamped)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, skip, weight, bias, u, y, s_clamped, t, unclamped = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: differentiate the composition
            return _composed_grads(ctx.act, grad, z, skip, weight, bias, needs)
        g_u = grad * ctx.act.drho(u, y)
        g_z = g_skip = g_w = g_b = None
        if (needs[0] and skip is None) or needs[1]:
            g_s = g_u * ctx.act.drho_inv(s_clamped, t)
            if unclamped is not None:
                g_s = g_s.mul_(unclamped)
            if skip is None:
                g_z = torch.addmm(g_s, g_u, weight)
            else:
                g_skip = g_s
        if needs[0] and g_z is None:
            g_z = g_u.mm(weight)
        if needs[2]:
            g_w = g_u.t().mm(z)
        if bias is not None and needs[3]:
            g_b = g_u.sum(0)
        return g_z, g_skip, g_w, g_b, None


def _composed_grads(
    act: Activation,
    grad: Tensor,
    z: Tensor,
    skip: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    needs: tuple[bool, ...],
) -> tuple[Tensor | None, ...]:
    inputs = (z, skip, weight, bias)
    wanted = [i for i, x in enumerate(inputs) if x is not None and needs[i]]
    s = z if skip is None else skip
    y = act.rho(act.rho_inv(s) + torch.nn.functional.linear(z, weight, bias))
    grads = torch.autograd.grad(y, [inputs[i] for i in wanted], grad, create_graph=True)
    out: list[Tensor | None] = [None] * 5
    for i, g in zip(wanted, grads):
        out[i] = g
    return tuple(out)


def bregman_divergence(x: Tensor, y: Tensor, act: Activation | str) -> Tensor:
    r"""Bregman divergence of ``phi``: :math:`D_\phi(x, y) = \phi(x) - \phi(y) -
    \langle\nabla\phi(y), x - y\rangle`, summed over the last dimension."""
    act = activation(act)
    return (act.phi(x) - act.phi(y) - act.rho_inv(y) * (x - y)).sum(-1)


def project_simplex(v: Tensor, dim: int = -1) -> Tensor:
    r"""Euclidean projection of each slice of ``v`` along ``dim`` onto the probability simplex.

    Solves :math:`\min_u \tfrac12|u - v|^2` s.t. :math:`u \ge 0, \sum u = 1` by the sort-based
    algorithm (Held et al.; Duchi et al. 2008): :math:`u = \max(v - \theta, 0)`.
    """
    v = v.movedim(dim, -1)
    n = v.shape[-1]
    sorted_v, _ = torch.sort(v, dim=-1, descending=True)
    cumsum = sorted_v.cumsum(-1) - 1
    ks = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    support = sorted_v - cumsum / ks > 0
    k = support.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)
    theta = cumsum.gather(-1, k) / (k + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0).movedim(-1, dim)
