"""FGSM / PGD-l2 / Square: the closed forms on linear models, the norm ball and pixel box,
eps = 0, monotonicity in the number of steps and queries, restarts, seeds, and no parameter
gradients."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from bregnn.attacks import (
    FGSM,
    PGDL2,
    Square,
    fgsm,
    input_gradient,
    logit_margin,
    pgd_l2,
    robust_accuracy,
    square_attack,
    square_p,
    true_class_margin,
)
from bregnn.data import InputScaling
from bregnn.models.mlp import MLP


def linear_problem(n: int = 200, d: int = 20, k: int = 2, seed: int = 0, lo=0.3, hi=0.7):
    """A linear classifier and inputs inside ``[lo, hi]^d`` labelled by a noisy teacher."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, k).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        model.bias.copy_(-model.weight.sum(1) * (lo + hi) / 2)
    x = lo + (hi - lo) * torch.rand(n, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        noisy = model(x) + 0.5 * torch.randn(n, k, generator=g, dtype=torch.float64)
    return model, x, noisy.argmax(1)


def pixel_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """1x6x6 images (two rows of 0/1 pixels on the box boundary) labelled by a fixed
    linear teacher with three classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    x[:, :, :2] = (x[:, :, :2] > 0.5).float()
    teacher = torch.randn(36, 3, generator=torch.Generator().manual_seed(100))
    return x, ((x.flatten(1) - 0.5) @ teacher).argmax(1)


def pixel_mlp(seed: int = 0, steps: int = 150) -> nn.Module:
    """A Bregman MLP on pixel-space images with its own input scaling, fit briefly (full
    batch Adam) to :func:`pixel_data` so that its decisions depend on the pixels."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        InputScaling.for_activation("sigmoid"),
        nn.Flatten(),
        MLP(36, [16, 16], 3, activation="sigmoid", variant="bregman"),
    )
    x, y = pixel_data(n=256, seed=1000 + seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def test_logit_margin():
    logits = torch.tensor([[1.0, 3.0, 2.5], [0.0, -1.0, 0.0], [5.0, 1.0, -2.0]])
    torch.testing.assert_close(logit_margin(logits), torch.tensor([0.5, 0.0, 4.0]))
    y = torch.tensor([1, 2, 1])
    torch.testing.assert_close(true_class_margin(logits, y), torch.tensor([0.5, 0.0, -4.0]))
    with pytest.raises(ValueError, match=r"\(N, K\) with K >= 2"):
        logit_margin(torch.zeros(3, 1))


def test_fgsm_linear_closed_form():
    model, x, y = linear_problem()
    eps = 0.1  # inputs in [0.3, 0.7]: no clipping
    x_adv = fgsm(model, x, y, eps)
    w = model.weight.detach()
    expected = x + eps * torch.sign(w[1 - y] - w[y])  # two classes: y' = 1 - y
    torch.testing.assert_close(x_adv, expected)


def test_input_gradient_linear_closed_form_and_batches():
    """For logits W x + b the cross-entropy's input gradient is W^T (softmax - onehot(y)),
    whatever the batching; the model's mode and parameter gradients are left alone."""
    model, x, y = linear_problem(n=37, k=3)
    model.train()
    w, b = model.weight.detach(), model.bias.detach()
    p = torch.softmax(x @ w.T + b, dim=1)
    expected = (p - nn.functional.one_hot(y, 3).double()) @ w
    for batch_size in (1, 8, 256):
        torch.testing.assert_close(input_gradient(model, x, y, batch_size), expected)
    assert model.training and model.weight.grad is None
    with pytest.raises(ValueError, match="batch_size must be positive"):
        input_gradient(model, x, y, 0)
    with pytest.raises(ValueError, match="37 inputs but 36 labels"):
        input_gradient(model, x, y[:-1])


def test_pgd_linear_closed_form():
    """Binary linear model, box inactive: the optimal l2 attack moves every sample by eps
    along w_y' - w_y, so sample i survives iff its margin exceeds eps * |w_y' - w_y|."""
    model, x, y = linear_problem()
    eps = 0.2  # each coordinate moves by at most 0.2: the box [0, 1] never binds
    w = model.weight.detach()
    dw = (w[1 - y] - w[y]).norm(dim=1)
    with torch.no_grad():
        margin = true_class_margin(model(x), y)
    x_adv = pgd_l2(model, x, y, eps=eps, steps=20)
    with torch.no_grad():
        adv_margin = true_class_margin(model(x_adv), y)
    attacked = margin > 0  # for correct samples the attack reaches the ball's boundary
    torch.testing.assert_close(adv_margin[attacked], (margin - eps * dw)[attacked])
    closed = ((margin - eps * dw) > 0).double().mean().item()
    assert robust_accuracy(model, x, y, PGDL2(eps=eps), batch_size=64) == pytest.approx(closed)
    assert 0 < closed < accuracy(model, x, y)


@pytest.mark.parametrize("attack", [FGSM(eps=0.0), PGDL2(eps=0.0), PGDL2(0.0, random_start=True)])
def test_eps_zero_is_clean_accuracy(attack):
    model = pixel_mlp()
    x, y = pixel_data()
    assert torch.equal(attack(model, x, y, torch.Generator().manual_seed(0)), x)
    assert robust_accuracy(model, x, y, attack, batch_size=16) == accuracy(model, x, y)


def test_fgsm_ball_and_box():
    model = pixel_mlp()
    x, y = pixel_data()
    eps = 8 / 255
    x_adv = fgsm(model, x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-7
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert ((x_adv - x).abs() > eps - 1e-7).float().mean() > 0.5  # it does move


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_ball_and_box(random_start):
    model = pixel_mlp()
    x, y = pixel_data()
    eps = 1.0
    x_adv = pgd_l2(
        model,
        x,
        y,
        eps=eps,
        steps=10,
        random_start=random_start,
        generator=torch.Generator().manual_seed(1),
    )
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert norms.max() > 0.5 * eps


def test_pgd_more_steps_never_helps_the_model():
    model = pixel_mlp(seed=2)
    x, y = pixel_data(n=96, seed=3)
    eps = 0.5
    with torch.no_grad():
        clean_margin = true_class_margin(model(x), y)
    # same step size: the best-so-far iterate can only improve with more steps
    margins, accs = [], []
    for steps in (0, 1, 2, 5, 10):
        x_adv = pgd_l2(model, x, y, eps=eps, steps=steps, step_size=0.1)
        with torch.no_grad():
            margins.append(true_class_margin(model(x_adv), y))
        accs.append(robust_accuracy(model, x, y, PGDL2(eps, steps, step_size=0.1)))
    torch.testing.assert_close(margins[0], clean_margin)
    for fewer, more in zip(margins, margins[1:]):
        assert torch.all(more <= fewer + 1e-6)
    assert accs == sorted(accs, reverse=True) and accs[-1] < accs[0]
    # default step size 2.5 * eps / steps, no random start: 1 vs 10 steps
    one = robust_accuracy(model, x, y, PGDL2(eps, steps=1))
    ten = robust_accuracy(model, x, y, PGDL2(eps, steps=10))
    assert ten <= one


def test_robust_accuracy_at_most_clean():
    model = pixel_mlp(seed=1)
    x, y = pixel_data(n=96, seed=5)
    clean = accuracy(model, x, y)
    for attack in (FGSM(), FGSM(0.1), PGDL2(), PGDL2(1.0, random_start=True)):
        robust = robust_accuracy(
            model, x, y, attack, batch_size=40, generator=torch.Generator().manual_seed(0)
        )
        assert robust <= clean
    assert robust_accuracy(model, x, y, PGDL2(2.0)) < clean


def test_no_parameter_gradients_and_mode_restored():
    model = pixel_mlp()
    x, y = pixel_data(n=8)
    model.train()
    fgsm(model, x, y)
    pgd_l2(model, x, y, steps=3)
    robust_accuracy(model, x, y, PGDL2(steps=2))
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    assert not x.requires_grad


def test_attacks_pickle_and_reject_bad_input():
    attack = pickle.loads(pickle.dumps(PGDL2(eps=0.3, steps=4)))
    assert attack == PGDL2(eps=0.3, steps=4)
    model = pixel_mlp()
    x, y = pixel_data(n=4)
    with pytest.raises(ValueError, match=r"eps must be >= 0; got -0\.1"):
        fgsm(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=r"pixel-space inputs in \[0, 1\]"):
        pgd_l2(model, x * 2 - 0.5, y)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        pgd_l2(model, x, y, steps=-1)
    with pytest.raises(ValueError, match="step_size must be >= 0"):
        pgd_l2(model, x, y, step_size=-1.0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        robust_accuracy(model, x, y, FGSM(), batch_size=0)
    with pytest.raises(ValueError, match="4 inputs but 3 labels"):
        robust_accuracy(model, x, y[:3], FGSM())


# -- PGD with random restarts ----------------------------------------------------------------------
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_restarts_keep_the_worst_case_per_sample(random_start):
    model = pixel_mlp(seed=2)
    x, y = pixel_data(n=64, seed=4)
    eps = 0.5

    def margins(restarts, seed=0):
        x_adv = pgd_l2(model, x, y, eps=eps, steps=3, random_start=random_start,
                       generator=torch.Generator().manual_seed(seed), restarts=restarts)  # fmt: skip
        with torch.no_grad():
            return x_adv, true_class_margin(model(x_adv), y)

    x1, one = margins(1)
    x3, three = margins(3)
    # the first run draws the same numbers, so more restarts can only lower each margin
    assert torch.all(three <= one + 1e-6)
    assert torch.any(three < one - 1e-4)
    assert torch.equal(margins(3)[0], x3)  # seeded: the same result
    assert not torch.equal(margins(3, seed=1)[0], x3)
    norms = (x3 - x).flatten(1).norm(dim=1)
    assert norms.max() <= eps + 1e-6 and x3.min() >= 0 and x3.max() <= 1
    robust = [robust_accuracy(model, x, y, PGDL2(eps, 3, restarts=r), batch_size=32,
                              generator=torch.Generator().manual_seed(0)) for r in (1, 4)]  # fmt: skip
    assert robust[1] <= robust[0]
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        pgd_l2(model, x, y, restarts=0)


# -- Square Attack ---------------------------------------------------------------------------------
def linear_image_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An undefended linear classifier of :func:`pixel_data` (the labelling teacher itself,
    so every clean prediction is right) and 128 of its images."""
    x, y = pixel_data(n=128, seed=7)
    teacher = torch.randn(36, 3, generator=torch.Generator().manual_seed(100))
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    with torch.no_grad():
        model[1].weight.copy_(teacher.T)
        model[1].bias.copy_(-0.5 * teacher.sum(0))
    return model, x, y


def test_square_p_schedule_follows_the_authors():
    # attack.py p_selection: p_init for the first 0.1% of the budget, then halved at
    # 0.5%, 2%, 5%, 10%, 20%, 40%, 60%, 80%
    n = 10000
    expected = {0: 1, 10: 1, 11: 2, 50: 2, 51: 4, 200: 4, 201: 8, 500: 8, 501: 16, 1000: 16,
                1001: 32, 2001: 64, 4001: 128, 6001: 256, 8001: 512, 9999: 512}  # fmt: skip
    for it, divisor in expected.items():
        assert square_p(0.8, it, n) == pytest.approx(0.8 / divisor)
    assert square_p(0.1, 5, 100) == pytest.approx(0.1 / 8)  # 5% of a 100-query budget


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.5)])
def test_square_attack_invariants(norm, eps):
    model, x, y = linear_image_model()
    x_adv, history = square_attack(model, x, y, eps, norm=norm, queries=60, seed=3,
                                   return_history=True)  # fmt: skip
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-6  # inside the ball
    assert x_adv.min() >= 0 and x_adv.max() <= 1  # inside the pixel box
    assert size.max() > 0.9 * eps  # and it does use the ball
    # the margin loss it minimises never increases, per sample, from query to query
    assert history.shape == (60, len(x))
    assert torch.all(history[1:] <= history[:-1])
    with torch.no_grad():
        final = true_class_margin(model(x_adv), y)
    torch.testing.assert_close(history[-1], final, rtol=0, atol=1e-5)
    # the same seed gives the same result; another seed another one
    again = square_attack(model, x, y, eps, norm=norm, queries=60, seed=3)
    assert torch.equal(again, x_adv)
    assert not torch.equal(square_attack(model, x, y, eps, norm=norm, queries=60, seed=4), x_adv)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_square_attack_breaks_an_undefended_linear_model(norm, eps):
    model, x, y = linear_image_model()
    assert accuracy(model, x, y) == 1.0
    robust = robust_accuracy(model, x, y, Square(eps, norm, queries=150, seed=0), batch_size=64)
    assert robust < 0.4  # from 100% clean accuracy, without a single gradient
    # about as strong as the gradient attacks, which are near-optimal on a linear model
    gradient = FGSM(eps) if norm == "linf" else PGDL2(eps, steps=20)
    assert robust <= robust_accuracy(model, x, y, gradient) + 0.3
    few = robust_accuracy(model, x, y, Square(eps, norm, queries=5, seed=0), batch_size=64)
    assert robust <= few


def test_square_attack_needs_no_gradients_and_leaves_the_model_alone():
    model = pixel_mlp()
    x, y = pixel_data(n=16)
    for p in model.parameters():
        p.requires_grad_(False)  # a gradient-free attack works on a frozen model too
    model.train()
    with torch.autograd.set_grad_enabled(False):
        x_adv = square_attack(model, x, y, 0.1, queries=10)
    assert model.training and x_adv.shape == x.shape and not x_adv.requires_grad
    # eps = 0: every candidate is the clean image
    assert torch.equal(square_attack(model, x, y, 0.0, norm="l2", queries=5), x)
    assert pickle.loads(pickle.dumps(Square(0.1, "l2"))) == Square(0.1, "l2")


def test_square_attack_rejects_bad_input():
    model, x, y = linear_image_model()
    with pytest.raises(ValueError, match=r"unknown norm 'l1'; valid norms: \['linf', 'l2'\]"):
        square_attack(model, x, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with H, W >= 2; got shape \(128, 36\)"):
        square_attack(model, x.flatten(1), y, 0.1)
    with pytest.raises(ValueError, match="queries must be >= 1"):
        square_attack(model, x, y, 0.1, queries=0)
    with pytest.raises(ValueError, match=r"p_init must be in \(0, 1\]"):
        square_attack(model, x, y, 0.1, p_init=2.0)
    with pytest.raises(ValueError, match="pixel-space inputs"):
        square_attack(model, x + 1, y, 0.1)
