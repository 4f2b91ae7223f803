r"""Adversarial robustness: FGSM (:math:`\ell_\infty`), PGD (:math:`\ell_2`, with random
restarts), the gradient-free Square Attack (:math:`\ell_\infty` and :math:`\ell_2`), logit margin,
and the input gradient :func:`input_gradient` (a gradient-masking diagnostic).

All attacks work in *pixel space* :math:`[0, 1]`: the model must take pixel-space inputs and
apply its own input scaling (e.g. ``nn.Sequential(InputScaling.for_activation(act), net)``,
see :class:`bregnn.data.InputScaling`), so that ``eps`` means the same for every model.
They are batched (no loop over samples), put the model in eval mode for the attack (and
restore its mode), and differentiate with respect to the inputs only
(``torch.autograd.grad``), so no parameter ``.grad`` is written.

* FGSM (Goodfellow et al., 2015): :math:`x' = \operatorname{clip}_{[0,1]}\big(x + \epsilon\,
  \operatorname{sign}\nabla_x \ell(f(x), y)\big)`, :math:`\ell` the cross-entropy; default
  :math:`\epsilon = 8/255`.
* PGD in :math:`\ell_2` (Madry et al., 2018): from :math:`x^0 = x` (or a random point of the
  ball), ``steps`` normalised-gradient ascent steps of length ``step_size``, each followed by
  the projection onto :math:`\{x' : \|x' - x\|_2 \le \epsilon\} \cap [0, 1]^d` (rescale the
  perturbation onto the ball, then clip to the box; clipping towards :math:`x \in [0,1]^d`
  never increases the norm). Defaults: :math:`\epsilon = 0.5`, 20 steps, step size
  :math:`2.5\,\epsilon/\text{steps}` (so the iterates can cross the ball and back). The
  attack returns, per sample, the iterate with the smallest :func:`true_class_margin` seen so
  far (the clean input included): more steps with the same step size can therefore never
  make a sample less adversarial. With ``restarts = R > 1`` it runs ``R`` times, every run
  after the first from a random point of the ball (drawn from the ``generator``), and keeps
  per sample the worst case (smallest margin) over all runs.
* Square Attack (Andriushchenko et al., ECCV 2020; the authors' ``square-attack``
  repository, ``attack.py``): a score-based random search that uses only the model's outputs,
  so it is blind to masked or obfuscated gradients (the clamped :math:`\rho^{-1}` of a
  Bregman network could hide gradients from FGSM / PGD). It minimises the margin loss
  :func:`true_class_margin` per sample; each query changes the perturbation on a random
  square window whose area is the fraction ``p`` of the image, ``p`` following the authors'
  piecewise-constant schedule (:func:`square_p`), and keeps the candidate only if it lowers
  the sample's margin. Samples already misclassified are not queried further.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FGSM",
    "NORMS",
    "PGDL2",
    "Attack",
    "Square",
    "fgsm",
    "input_gradient",
    "logit_margin",
    "pgd_l2",
    "robust_accuracy",
    "square_attack",
    "square_p",
    "true_class_margin",
]

#: The norms of :func:`square_attack`.
NORMS = ("linf", "l2")
#: Default initial square fraction ``p`` per norm (``square-attack/attack.py``: "Linf
#: standard: 0.05, L2 standard: 0.1").
SQUARE_P_INIT = {"linf": 0.05, "l2": 0.1}

Attack = Callable[[nn.Module, Tensor, Tensor, "torch.Generator | None"], Tensor]


def logit_margin(logits: Tensor) -> Tensor:
    r"""Largest minus second-largest output per row, :math:`f_{(1)} - f_{(2)} \ge 0`.

    Shape: ``(N, K)`` with ``K >= 2`` to ``(N,)``.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2; got {tuple(logits.shape)}")
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def true_class_margin(logits: Tensor, y: Tensor) -> Tensor:
    r""":math:`f_y - \max_{j \ne y} f_j` per row: positive iff the sample is classified
    correctly (up to ties), and its absolute value is the :func:`logit_margin` then."""
    true = logits.gather(1, y.reshape(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.reshape(-1, 1), float("-inf"))
    return true - others.max(1).values


def _input_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Logits at ``x`` and the gradient of the summed cross-entropy w.r.t. ``x`` only."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x])
    return logits.detach(), grad


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> Tensor:
    r""":math:`\nabla_x \ell(f(x_n), y_n)` per sample (cross-entropy ``\ell``, the model in eval
    mode, batches of ``batch_size`` on the model's device), shaped like ``x``.

    A gradient-masking diagnostic: a huge or a vanishing input gradient next to a small
    robust accuracy gap between gradient and gradient-free attacks says which to trust.
    """
    batches = _batches(model, x, y, batch_size)
    with _EvalMode(model):
        grads = [_input_grad(model, xb, yb)[1].to(x.device) for xb, yb in batches]
    return torch.cat(grads) if grads else torch.zeros_like(x)


def _batches(model: nn.Module, x: Tensor, y: Tensor, batch_size: int):
    """``(x, y)`` in batches of ``batch_size``, moved to the model's device (checked first)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    device = next(model.parameters()).device
    return (
        (x[start : start + batch_size].to(device), y[start : start + batch_size].to(device))
        for start in range(0, len(x), batch_size)
    )


def _per_sample_norm(t: Tensor) -> Tensor:
    """``|t_n|_2`` over all but the first dimension, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def _project_l2(candidate: Tensor, x: Tensor, eps: float) -> Tensor:
    r"""Onto :math:`\{x' : \|x' - x\|_2 \le \epsilon\} \cap [0, 1]^d` per sample: rescale the
    perturbation into the ball, then clip to the box (for :math:`x \in [0, 1]^d` the clip moves
    every coordinate towards :math:`x`, so the norm stays :math:`\le \epsilon`)."""
    delta = candidate - x
    factor = torch.clamp(eps / _per_sample_norm(delta).clamp_min(1e-12), max=1.0)
    return (x + delta * factor).clamp(0, 1)


class _EvalMode:
    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _check(eps: float, x: Tensor) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"attacks take pixel-space inputs in [0, 1]; got values in "
            f"[{x.min().item():.4g}, {x.max().item():.4g}] (put the model's input scaling "
            f"inside the model)"
        )


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float = 8 / 255) -> Tensor:
    r"""Fast gradient sign method: :math:`\operatorname{clip}_{[0,1]}(x + \epsilon\,
    \operatorname{sign}\nabla_x \mathrm{CE}(f(x), y))`, an :math:`\ell_\infty` attack with
    :math:`\|x' - x\|_\infty \le \epsilon`. ``x`` in pixel space ``[0, 1]``."""
    _check(eps, x)
    with _EvalMode(model):
        _, grad = _input_grad(model, x, y)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def pgd_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float = 0.5,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    restarts: int = 1,
) -> Tensor:
    r"""Projected gradient descent in the :math:`\ell_2` ball of radius ``eps`` (module
    docstring); ``step_size`` defaults to ``2.5 * eps / steps``. ``random_start`` starts from
    a point uniform in direction with radius ``eps * U^(1/d)`` (uniform in the ball), drawn
    from ``generator``. ``restarts``: the number of runs; the first starts as
    ``random_start`` says, every further one from a random point. Returns the best (smallest
    true-class margin over every iterate of every run) point per sample, with
    :math:`\|x' - x\|_2 \le \epsilon` and :math:`x' \in [0, 1]^d`; a fixed ``generator``
    seed gives the same result.
    """
    _check(eps, x)
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1; got {restarts}")
    alpha = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    if alpha < 0:
        raise ValueError(f"step_size must be >= 0; got {step_size}")
    x = x.detach()
    view = (-1, *([1] * (x.dim() - 1)))  # per-sample scalars against x
    best, best_margin = None, None
    with _EvalMode(model):
        for run in range(restarts):
            candidate, margin = _pgd_l2_run(
                model, x, y, eps, steps, alpha, random_start or run > 0, generator
            )
            if best is None:
                best, best_margin = candidate, margin
                continue
            better = margin < best_margin
            best_margin = torch.where(better, margin, best_margin)
            best = torch.where(better.reshape(view), candidate, best)
    return best.detach()


def _pgd_l2_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int,
    alpha: float,
    random_start: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """One PGD run: the best iterate per sample and its true-class margin."""
    view = (-1, *([1] * (x.dim() - 1)))
    x_adv = x.clone()
    if random_start and eps > 0:
        device = generator.device if generator is not None else x.device
        direction = torch.randn(x.shape, generator=generator, device=device).to(x)
        d = x[0].numel()
        radius = eps * torch.rand(len(x), generator=generator, device=device).to(x) ** (1 / d)
        direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
        x_adv = _project_l2(x + direction * radius.reshape(view), x, eps)
    best = x.clone()
    best_margin = torch.full((len(x),), float("inf"), dtype=x.dtype, device=x.device)
    if random_start:  # the clean input is a candidate too
        with torch.no_grad():
            best_margin = true_class_margin(model(x), y)
    for step in range(steps + 1):
        if step < steps:
            logits, grad = _input_grad(model, x_adv, y)
        else:  # the last iterate is only evaluated
            with torch.no_grad():
                logits = model(x_adv)
        margin = true_class_margin(logits, y)
        better = margin < best_margin
        best_margin = torch.where(better, margin, best_margin)
        best = torch.where(better.reshape(view), x_adv, best)
        if step < steps:
            direction = grad / _per_sample_norm(grad).clamp_min(1e-12)
            x_adv = _project_l2(x_adv + alpha * direction, x, eps).detach()
    return best, best_margin


# -- Square Attack -----------------------------------------------------------------------------
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, 10000)


def square_p(p_init: float, iteration: int, queries: int) -> float:
    """The fraction ``p`` of the image a Square Attack window covers at ``iteration`` (0-based)
    of ``queries``: Andriushchenko et al.'s piecewise-constant schedule (``square-attack``,
    ``attack.py``, ``p_selection``), halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
    8000 ten-thousandths of the budget (``p_init / 512`` in the last fifth)."""
    t = int(iteration / queries * 10000)
    for halvings, bound in enumerate(_P_BOUNDS):
        if t <= bound:
            return p_init / 2**halvings
    return p_init


def _uniform_int(high: Tensor | int, n: int, gen: torch.Generator) -> Tensor:
    """``n`` integers uniform in ``[0, high)`` (``high >= 1``), on the CPU."""
    return (torch.rand(n, generator=gen, dtype=torch.float64) * high).long()


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Uniform random signs (+1 / -1) of ``shape``, float64 on the CPU."""
    return torch.randint(0, 2, shape, generator=gen).double() * 2 - 1


def _window_mask(top: Tensor, left: Tensor, s: int, h: int, w: int) -> Tensor:
    """``(n, 1, h, w)`` masks of the ``s x s`` windows with corners ``(top, left)``."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + s)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _window_index(top: Tensor, left: Tensor, s: int) -> tuple[Tensor, Tensor, Tensor]:
    """Advanced indices ``(sample, row, col)`` of per-sample ``s x s`` windows."""
    offsets = torch.arange(s, device=top.device)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    return torch.arange(len(top), device=top.device)[:, None, None], rows, cols


def _pseudo_gaussian_rectangle(a: int, b: int) -> Tensor:
    """The authors' ``pseudo_gaussian_pert_rectangles(a, b)``: nested centred rectangles
    weighted ``1 / (k + 1)^2``, unit Frobenius norm; float64 ``(a, b)``."""
    delta = torch.zeros(a, b, dtype=torch.float64)
    r0, c0 = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        delta[max(r0 - k, 0) : min(r0 - k + 2 * k + 1, a),
              max(c0 - k, 0) : min(c0 - k + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2  # fmt: skip
    return delta / delta.norm().clamp_min(1e-300)


def _meta_pseudo_gaussian(s: int, gen: torch.Generator) -> Tensor:
    """The authors' ``meta_pseudo_gaussian_pert(s)``: two pseudo-Gaussian halves of opposite
    sign, unit norm, transposed with probability 1/2; float64 ``(s, s)``."""
    delta = torch.zeros(s, s, dtype=torch.float64)
    half = s // 2
    if half:
        delta[:half] = _pseudo_gaussian_rectangle(half, s)
    delta[half:] = -_pseudo_gaussian_rectangle(s - half, s)
    delta = delta / delta.norm()
    if torch.rand(1, generator=gen).item() > 0.5:
        delta = delta.T.contiguous()
    return delta


def _square_size(p: float, h: int, w: int, norm: str) -> int:
    """The window side for fraction ``p`` of an ``h x w`` image: ``round(sqrt(p h w))``,
    at least 1 and at most ``min(h, w) - 1`` for l_inf; at least 3 and odd for l_2
    (``attack.py``), and at most ``min(h, w)``."""
    s = round(math.sqrt(p * h * w))
    if norm == "linf":
        return min(max(s, 1), max(min(h, w) - 1, 1))
    s = max(s, 3)
    s += 1 - s % 2
    return min(s, min(h, w))


def _margins(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return true_class_margin(model(x), y)


def square_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    queries: int = 1000,
    seed: int = 0,
    p_init: float | None = None,
    return_history: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The Square Attack (Andriushchenko et al., 2020): gradient-free, score-based.

    Minimises the margin loss :math:`f_y(x') - \max_{j \ne y} f_j(x')` over
    :math:`\|x' - x\|_\infty \le \epsilon` (``norm="linf"``) or :math:`\|x' - x\|_2 \le
    \epsilon` (``"l2"``), intersected with the pixel box :math:`[0, 1]`, by random search as
    in the authors' ``attack.py``:

    - ``linf``: start from vertical stripes :math:`x + \epsilon\,\sigma` (one random sign
      per sample, channel and column); each query redraws, per sample, the perturbation on
      one random ``s x s`` window as :math:`\pm\epsilon` per channel (redrawn, at most 10
      times, while it would not change the image);
    - ``l2``: start from a grid of pseudo-Gaussian bumps with random signs rescaled to norm
      :math:`\epsilon`; each query moves the mass of a second random window into a first
      one, adds a new bump with random signs per channel there, and rescales the whole
      perturbation to norm :math:`\epsilon`;

    then clips to the box and keeps the candidate for the samples whose margin it lowers.
    ``s`` follows :func:`square_p` (``p_init`` default 0.05 for ``linf``, 0.1 for ``l2``).
    Where this differs from ``attack.py``: windows are placed per sample (the authors draw one
    l_2 window per batch) with every corner ``0..H-s`` possible (``np.random.randint(0, h -
    s)`` never picks the last one); the l_inf redraw gives up after 10 tries (the authors'
    loop does not end when ``eps = 0``); the l_2 start centres its grid of bumps inside the
    image for every size (``(h - 5 s) // 2`` can push it out when ``h < 10``).

    Args:
        model: maps pixel-space images to logits (it is put in eval mode for the attack).
        x: images ``(N, C, H, W)`` in ``[0, 1]``, ``H, W >= 2``; y: labels ``(N,)``.
        eps: radius of the ball. queries: model evaluations per sample, the initial one
            included (a sample stops being queried once misclassified).
        seed: seeds the attack's own generator (the same seed gives the same result).
        return_history: also return the per-sample best margin after every query,
            ``(queries, N)``, non-increasing along the first axis.

    Returns:
        The adversarial images (per sample the candidate with the lowest margin, the
        perturbed start included; as in ``attack.py`` the clean image itself is not a
        candidate), and with ``return_history`` the margin history.
    """
    _check(eps, x)
    norm = norm.lower()
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {list(NORMS)}")
    if x.dim() != 4 or min(x.shape[2:]) < 2:
        raise ValueError(
            f"square_attack needs image batches (N, C, H, W) with H, W >= 2; got shape "
            f"{tuple(x.shape)}"
        )
    if queries < 1:
        raise ValueError(f"queries must be >= 1; got {queries}")
    p_init = SQUARE_P_INIT[norm] if p_init is None else float(p_init)
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be in (0, 1]; got {p_init}")
    gen = torch.Generator().manual_seed(int(seed))
    x = x.detach()
    with _EvalMode(model):
        step = _square_linf_step if norm == "linf" else _square_l2_step
        x_best = (_square_linf_init if norm == "linf" else _square_l2_init)(x, eps, gen)
        margin = _margins(model, x_best, y)
        history = [margin.clone()]
        n, _, h, w = x.shape
        view = (-1, 1, 1, 1)
        for it in range(queries - 1):
            idx = (margin > 0).nonzero().squeeze(1)
            if len(idx) == 0:
                history += [margin.clone()] * (queries - 1 - it)
                break
            s = _square_size(square_p(p_init, it, queries), h, w, norm)
            x_new = step(x[idx], x_best[idx], eps, s, gen)
            new_margin = _margins(model, x_new, y[idx])
            better = new_margin < margin[idx]
            margin[idx] = torch.where(better, new_margin, margin[idx])
            x_best[idx] = torch.where(better.reshape(view), x_new, x_best[idx])
            history.append(margin.clone())
    if return_history:
        return x_best, torch.stack(history)
    return x_best


def _square_linf_init(x: Tensor, eps: float, gen: torch.Generator) -> Tensor:
    n, c, _, w = x.shape
    stripes = _signs((n, c, 1, w), gen).to(x)
    return (x + eps * stripes).clamp(0, 1)


def _square_linf_step(
    x: Tensor, x_best: Tensor, eps: float, s: int, gen: torch.Generator
) -> Tensor:
    n, c, h, w = x.shape
    top = _uniform_int(h - s + 1, n, gen).to(x.device)
    left = _uniform_int(w - s + 1, n, gen).to(x.device)
    mask = _window_mask(top, left, s, h, w)
    delta = x_best - x
    pending = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(10):  # redraw while the new window would leave the image unchanged
        signs = _signs((n, c, 1, 1), gen).to(x)
        proposal = torch.where(mask, eps * signs, delta)
        delta = torch.where(pending.reshape(-1, 1, 1, 1), proposal, delta)
        changed = (((x + delta).clamp(0, 1) - x_best).abs() >= 1e-7) & mask
        pending = pending & ~changed.flatten(1).any(1)
        if not pending.any():
            break
    return (x + delta).clamp(0, 1)


def _square_l2_init(x: Tensor, eps: float, gen: torch.Generator) -> Tensor:
    n, c, h, w = x.shape
    s = max(min(h, w) // 5, 1)
    rows, cols = h // s, w // s
    top0, left0 = (h - s * rows) // 2, (w - s * cols) // 2
    delta = torch.zeros(n, c, h, w, dtype=torch.float64)
    for i in range(rows):
        for j in range(cols):
            bump = _meta_pseudo_gaussian(s, gen)[None, None] * _signs((n, c, 1, 1), gen)
            r, q = top0 + i * s, left0 + j * s
            delta[:, :, r : r + s, q : q + s] += bump
    delta = delta.to(x)
    return (x + delta / _per_sample_norm(delta).clamp_min(1e-12) * eps).clamp(0, 1)


def _square_l2_step(x: Tensor, x_best: Tensor, eps: float, s: int, gen: torch.Generator) -> Tensor:
    n, c, h, w = x.shape
    corners = [_uniform_int(size - s + 1, n, gen).to(x.device) for size in (h, w, h, w)]
    top, left, top2, left2 = corners
    mask = _window_mask(top, left, s, h, w)
    mask_both = mask | _window_mask(top2, left2, s, h, w)
    delta = x_best - x
    norm_window = (delta * mask).square().sum((2, 3), keepdim=True).sqrt()  # (n, c, 1, 1)
    norm_image = _per_sample_norm(delta)  # (n, 1, 1, 1)
    norm_both = (delta * mask_both).square().sum((2, 3), keepdim=True).sqrt()
    index = _window_index(top, left, s)
    old = delta.permute(0, 2, 3, 1)[index].permute(0, 3, 1, 2)  # (n, c, s, s)
    bump = _meta_pseudo_gaussian(s, gen).to(x)[None, None] * _signs((n, c, 1, 1), gen).to(x)
    new = bump + old / (1e-10 + norm_window)
    budget = ((eps**2 - norm_image.square()).clamp_min(0) / c + norm_both.square()).sqrt()
    new = new / new.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
    delta = torch.where(mask_both & ~mask, torch.zeros_like(delta), delta)
    delta.permute(0, 2, 3, 1)[index] = new.permute(0, 2, 3, 1)
    x_new = (x + delta / _per_sample_norm(delta).clamp_min(1e-12) * eps).clamp(0, 1)
    return _project_l2(x_new, x, eps)


@dataclass
class FGSM:
    """:func:`fgsm` as a picklable attack ``(model, x, y, generator) -> x_adv``."""

    eps: float = 8 / 255

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return fgsm(model, x, y, self.eps)


@dataclass
class PGDL2:
    """:func:`pgd_l2` as a picklable attack ``(model, x, y, generator) -> x_adv``."""

    eps: float = 0.5
    steps: int = 20
    step_size: float | None = None
    random_start: bool = False
    restarts: int = 1

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return pgd_l2(
            model, x, y, self.eps, self.steps, self.step_size, self.random_start, generator,
            self.restarts,
        )  # fmt: skip


@dataclass
class Square:
    """:func:`square_attack` as a picklable attack ``(model, x, y, generator) -> x_adv``; it
    draws from its own ``seed`` (the ``generator`` argument is not used)."""

    eps: float
    norm: str = "linf"
    queries: int = 1000
    seed: int = 0
    p_init: float | None = None

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return square_attack(model, x, y, self.eps, self.norm, self.queries, self.seed, self.p_init)


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: Attack,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Fraction of samples classified correctly both at ``x`` and at ``attack``'s output.

    ``x`` in pixel space ``[0, 1]`` (on any device; batches move to the model's device).
    Counting a sample as robust only when its clean prediction is also correct makes the
    result at most the clean accuracy (the usual convention; FGSM can, rarely, turn a wrong
    prediction right). ``eps = 0`` gives the clean accuracy.
    """
    batches = _batches(model, x, y, batch_size)
    correct = 0
    with _EvalMode(model):
        for xb, yb in batches:
            x_adv = attack(model, xb, yb, generator)
            with torch.no_grad():
                ok = (model(xb).argmax(1) == yb) & (model(x_adv).argmax(1) == yb)
            correct += int(ok.sum())
    return correct / max(len(x), 1)
