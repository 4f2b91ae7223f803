"""FGSM / PGD-l2: the closed forms on linear models, the norm ball and pixel box, eps = 0,
monotonicity in the number of steps, and no parameter gradients."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from bregnn.attacks import (
    FGSM,
    PGDL2,
    fgsm,
    logit_margin,
    pgd_l2,
    robust_accuracy,
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
