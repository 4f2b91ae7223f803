r"""Adversarial robustness: FGSM (:math:`\ell_\infty`), PGD (:math:`\ell_2`), logit margin.

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
  make a sample less adversarial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FGSM",
    "PGDL2",
    "Attack",
    "fgsm",
    "logit_margin",
    "pgd_l2",
    "robust_accuracy",
    "true_class_margin",
]

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
) -> Tensor:
    r"""Projected gradient descent in the :math:`\ell_2` ball of radius ``eps`` (module
    docstring); ``step_size`` defaults to ``2.5 * eps / steps``. ``random_start`` starts from
    a point uniform in direction with radius ``eps * U^(1/d)`` (uniform in the ball), drawn
    from ``generator``. Returns the best (smallest true-class margin) iterate per sample,
    with :math:`\|x' - x\|_2 \le \epsilon` and :math:`x' \in [0, 1]^d`.
    """
    _check(eps, x)
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    alpha = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    if alpha < 0:
        raise ValueError(f"step_size must be >= 0; got {step_size}")
    x = x.detach()
    view = (-1, *([1] * (x.dim() - 1)))  # per-sample scalars against x
    with _EvalMode(model):
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
    return best.detach()


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

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        return pgd_l2(
            model, x, y, self.eps, self.steps, self.step_size, self.random_start, generator
        )


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
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    device = next(model.parameters()).device
    correct = 0
    with _EvalMode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            x_adv = attack(model, xb, yb, generator)
            with torch.no_grad():
                ok = (model(xb).argmax(1) == yb) & (model(x_adv).argmax(1) == yb)
            correct += int(ok.sum())
    return correct / max(len(x), 1)
