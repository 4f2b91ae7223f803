"""Bregman layers: formulas, identity initialisation, the simplex mixing matrix, serialisation."""

from __future__ import annotations

import io

import pytest
import torch

from bregnn import functional as F
from bregnn.activations import activation, available_activations
from bregnn.checks import domain_samples
from bregnn.models import MLP
from bregnn.nn import BregmanLinear, SimplexRows, mixing_zero_share

INVERTIBLE = available_activations(invertible=True)


def _inputs_in_range(name: str, n: int = 16, width: int = 5) -> torch.Tensor:
    act = activation(name)
    pts = domain_samples(act, n * width).reshape(n, width)
    return pts[torch.randperm(n, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("name", INVERTIBLE)
def test_zero_weights_give_the_identity_for_every_invertible_activation(name: str) -> None:
    layer = BregmanLinear(5, 5, name, "bregman", init="identity").double()
    z = _inputs_in_range(name)
    assert torch.allclose(layer(z), z, rtol=1e-12, atol=1e-12)
    layer32 = BregmanLinear(5, 5, name, "bregman", init="identity")
    assert torch.allclose(layer32(z.float()), z.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_layer_matches_its_formula(variant: str) -> None:
    torch.manual_seed(0)
    layer = BregmanLinear(4, 3, "tanh", variant).double()
    z = 0.9 * torch.rand(7, 4, dtype=torch.float64) - 0.45
    affine = z @ layer.weight.T + layer.bias
    if variant == "standard":
        want = torch.tanh(affine)
    else:
        skip = z @ layer.mixing.T
        want = torch.tanh((skip if variant == "euclidean" else torch.atanh(skip)) + affine)
    assert torch.allclose(layer(z), want)


def test_standard_identity_init_is_w_equal_i() -> None:
    layer = BregmanLinear(3, 3, "atan", "standard", init="identity")
    assert torch.equal(layer.weight, torch.eye(3)) and torch.equal(layer.bias, torch.zeros(3))


def test_bregman_gradients_match_finite_differences() -> None:
    torch.manual_seed(0)
    layer = BregmanLinear(3, 4, "sigmoid", "bregman").double()
    z = torch.rand(5, 3, dtype=torch.float64) * 0.8 + 0.1

    def f(w, b, logits, inp):
        return F.bregman_linear(inp, w, b, "sigmoid", "bregman", torch.softmax(logits, 1))

    args = (layer.weight, layer.bias, layer.mixing_logits, z.requires_grad_())
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_mixing_rows_stay_on_the_simplex_and_train(optim: str) -> None:
    torch.manual_seed(0)
    model = MLP(6, [4, 8], 3, activation="sigmoid")
    first = model.layers[0]
    before = first.mixing.detach().clone()
    opt = (
        torch.optim.SGD(model.parameters(), lr=5.0)
        if optim == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.05)
    )
    x, y = torch.rand(32, 6), torch.randint(0, 3, (32,))
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for layer in model.layers:
        m = layer.mixing
        assert (m >= 0).all() and torch.allclose(m.sum(1), torch.ones(m.shape[0]), atol=1e-6)
    assert (first.mixing - before).abs().max() > 1e-4


def test_mixing_setter_round_trips_through_right_inverse() -> None:
    layer = BregmanLinear(3, 2, "atan")
    target = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    layer.mixing = target
    assert torch.allclose(layer.mixing, target, atol=1e-6)
    with pytest.raises(ValueError, match="summing to 1"):
        layer.mixing = torch.ones(2, 3)
    square = BregmanLinear(3, 3, "atan")
    assert square.mixing is None
    with pytest.raises(ValueError, match="no mixing matrix"):
        square.mixing = torch.eye(3)


def test_simplex_rows_also_works_as_a_torch_parametrization() -> None:
    lin = torch.nn.Linear(4, 3, bias=False)
    start = torch.softmax(torch.randn(3, 4), dim=1)
    with torch.no_grad():
        lin.weight.copy_(start)
    torch.nn.utils.parametrize.register_parametrization(lin, "weight", SimplexRows())
    assert torch.allclose(lin.weight, start, atol=1e-6)
    with torch.no_grad():
        lin.parametrizations.weight.original.add_(torch.randn(3, 4))
    assert torch.allclose(lin.weight.sum(1), torch.ones(3)) and (lin.weight >= 0).all()


def test_project_simplex_is_the_euclidean_projection() -> None:
    gen = torch.Generator().manual_seed(0)
    v = 3 * torch.randn(50, 7, generator=gen, dtype=torch.float64)
    u = F.project_simplex(v)
    assert (u >= 0).all() and torch.allclose(u.sum(-1), torch.ones(50, dtype=torch.float64))
    # variational inequality <v - u, w - u> <= 0 for every w on the simplex (vertices suffice)
    vertices = torch.eye(7, dtype=torch.float64)
    ineq = ((v - u).unsqueeze(1) * (vertices.unsqueeze(0) - u.unsqueeze(1))).sum(-1)
    assert (ineq <= 1e-12).all()
    assert torch.allclose(F.project_simplex(u), u)  # idempotent
    assert torch.allclose(F.project_simplex(v.T, dim=0), u.T)


def _project_simplex_by_sorting(v: torch.Tensor) -> torch.Tensor:
    """The sort-based projection (Held et al.; Duchi et al. 2008), last dimension."""
    n = v.shape[-1]
    sorted_v = torch.sort(v, dim=-1, descending=True).values
    cumsum = sorted_v.cumsum(-1) - 1
    ks = torch.arange(1, n + 1, dtype=v.dtype)
    k = (sorted_v - cumsum / ks > 0).to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)
    return torch.clamp(v - cumsum.gather(-1, k) / (k + 1).to(v.dtype), min=0)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_project_simplex_equals_the_sort_based_projection(scale) -> None:
    gen = torch.Generator().manual_seed(1)
    v = scale * torch.randn(64, 300, generator=gen, dtype=torch.float64)
    near = F.project_simplex(torch.rand(64, 300, generator=gen, dtype=torch.float64) - 0.5)
    near = near + 1e-3 * torch.randn(64, 300, generator=gen, dtype=torch.float64)
    ties = torch.randint(-2, 3, (64, 300), generator=gen).double()  # many equal entries
    for w in (v, near, ties, torch.zeros(3, 5, dtype=torch.float64), v[:, :1]):
        torch.testing.assert_close(F.project_simplex(w), _project_simplex_by_sorting(w),
                                   rtol=0, atol=1e-12)  # fmt: skip


def test_torch_save_and_state_dict_round_trips_give_identical_outputs() -> None:
    torch.manual_seed(0)
    model = MLP(5, [7, 7, 3], 2, activation="softplus", variant="bregman")
    x = torch.rand(9, 5) + 0.05
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), model(x))
    fresh = MLP(5, [7, 7, 3], 2, activation="softplus", variant="bregman")
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), model(x))


def test_diagnostics_match_a_manual_forward() -> None:
    torch.manual_seed(0)
    model = MLP(2, [2, 2, 2], 2, activation="atan")
    x = torch.rand(10, 2) - 0.5
    diag = model.diagnostics(x)
    z = x
    for i, layer in enumerate(model.layers):
        nxt = layer(z)
        assert torch.allclose(diag.outputs[i + 1], nxt)
        assert torch.isclose(diag.step_norms[i], (nxt - z).norm(dim=1).mean())
        norm = torch.cat([layer.weight.flatten(), layer.bias]).norm()
        assert torch.isclose(diag.param_norms[i], norm)
        z = nxt


def test_error_messages() -> None:
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        BregmanLinear(2, 2, "gelu")
    with pytest.raises(ValueError, match="invertible activation; 'relu'.*sigmoid"):
        BregmanLinear(2, 2, "relu", "bregman")
    with pytest.raises(ValueError, match="unknown variant 'resnet'.*standard"):
        BregmanLinear(2, 2, "tanh", "resnet")
    with pytest.raises(ValueError, match="unknown init 'xavier'.*identity"):
        BregmanLinear(2, 2, "tanh", init="xavier")
    with pytest.raises(ValueError, match="in_features=3; got shape \\(4, 2\\)"):
        BregmanLinear(3, 3, "tanh")(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="in_features == out_features"):
        F.bregman_linear(torch.zeros(1, 2), torch.zeros(3, 2), None, "tanh", "bregman")
    with pytest.raises(ValueError, match="widths must be positive"):
        MLP(2, [0], 2)
    BregmanLinear(2, 2, "relu", "standard")  # a standard layer may use any activation


@pytest.mark.parametrize("name", INVERTIBLE)
def test_mlp_preactivation_chain_equals_applying_the_layers_one_by_one(name: str) -> None:
    torch.manual_seed(0)
    model = MLP(5, [6, 6, 6, 4], 3, activation=name, variant="bregman").double()
    with torch.no_grad():  # keep the pre-activations moderate: no saturation, no clamping
        for layer in model.layers:
            layer.weight.mul_(0.2)
            layer.bias.mul_(0.2)
    x = _inputs_in_range(name, n=8, width=5).requires_grad_(True)
    chained = model.features(x)
    z = x
    for layer in model.layers:
        z = layer(z)
    assert torch.allclose(chained, z, rtol=1e-9, atol=1e-10)
    probe = torch.randn_like(z)
    leaves = [x, *model.layers.parameters()]
    got = torch.autograd.grad(chained, leaves, probe)
    want = torch.autograd.grad(z, leaves, probe)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-7, atol=1e-9)


def test_mlp_chain_keeps_saturated_sigmoid_layers_exact() -> None:
    # float32 sigmoid(20) == 1: layer by layer, rho_inv must clamp and loses the value 20;
    # the pre-activation chain hands u = 20 on unchanged
    model = MLP(1, [1, 1], 1, activation="sigmoid", variant="bregman", init="identity")
    with torch.no_grad():
        model.layers[0].bias.fill_(25.0)
    x = torch.tensor([[0.5]])
    u1 = model.layers[0].preactivation(x)
    assert torch.allclose(model.layers[1].preactivation(torch.sigmoid(u1), rho_inv_z=u1), u1)
    assert model.layers[1].preactivation(torch.sigmoid(u1)).item() < u1.item() - 5


@pytest.mark.parametrize("variant", ["standard", "euclidean"])
def test_mlp_of_a_non_invertible_activation_never_asks_for_rho_inv(variant: str) -> None:
    torch.manual_seed(0)
    model = MLP(3, [3, 4, 4], 2, activation="relu", variant=variant)
    x = torch.randn(5, 3)
    z = x
    for layer in model.layers:
        z = layer(z)
    assert torch.equal(model.features(x), z)
    assert not any(layer.takes_rho_inv_z for layer in model.layers)


def test_diagnostics_describe_the_trained_network_exactly_in_saturation() -> None:
    # layer 1: u = 20, float32 sigmoid(20.) == 1.0; layer 2 (W = 0, b = 0) hands u = 20 on:
    # forward gives sigmoid(20.) == 1.0, the literal rho(rho_inv(1.0)) gives 0.99999988
    model = MLP(1, [1, 1, 1], 1, activation="sigmoid", variant="bregman", init="identity")
    with torch.no_grad():
        model.layers[0].bias.fill_(20.0)
    x = torch.tensor([[0.5]])
    diag = model.diagnostics(x)
    assert diag.outputs[-1].item() == 1.0
    assert model.layers[1](diag.outputs[1]).item() < 1.0  # the literal composition
    assert torch.equal(diag.outputs[-1], model.features(x))
    for got, want in zip(diag.outputs, model.layer_outputs(x), strict=True):
        assert torch.equal(got, want)
    torch.manual_seed(0)
    deep = MLP(3, [4, 4, 4], 2, activation="tanh", variant="bregman")
    with torch.no_grad():
        for layer in deep.layers:
            layer.bias.mul_(40)  # saturate
    x = 0.9 * torch.rand(6, 3) - 0.45
    assert torch.equal(deep.diagnostics(x).outputs[-1], deep.features(x))


# -- projected mixing (the paper's App. B) ---------------------------------------------------------
def _on_simplex(m: torch.Tensor, atol: float = 1e-6) -> bool:
    ones = torch.ones(m.shape[0], dtype=m.dtype)
    return bool((m >= 0).all()) and torch.allclose(m.sum(1), ones, atol=atol)


def test_projected_mixing_is_a_plain_parameter_on_the_simplex() -> None:
    torch.manual_seed(0)
    layer = BregmanLinear(30, 5, "sigmoid", mixing="projected")
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"weight", "bias", "mixing_weight"}
    assert layer.mixing is layer.mixing_weight and layer.projected
    assert _on_simplex(layer.mixing)
    # the projection of U(-1/sqrt(30), 1/sqrt(30)) rows is sparse: exact zeros from the start
    assert (layer.mixing == 0).any()
    eye = BregmanLinear(3, 5, "sigmoid", init="identity", mixing="projected").mixing
    assert torch.equal(eye, torch.eye(3)[[0, 1, 2, 0, 1]])
    assert "mixing='projected'" in repr(layer)
    layer.mixing = torch.full((5, 30), 1 / 30)
    assert torch.allclose(layer.mixing, torch.full((5, 30), 1 / 30))
    with pytest.raises(ValueError, match="summing to 1"):
        layer.mixing = torch.ones(5, 30)
    with pytest.raises(ValueError, match=r"unknown mixing 'sparsemax'; valid mixings: \['softmax'"):
        BregmanLinear(3, 5, "sigmoid", mixing="sparsemax")


def test_project_is_the_exact_euclidean_projection_and_softmax_layers_ignore_it() -> None:
    torch.manual_seed(0)
    layer = BregmanLinear(6, 4, "tanh", mixing="projected").double()
    off = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        layer.mixing_weight.copy_(off)
    layer.project_()
    torch.testing.assert_close(layer.mixing, F.project_simplex(off, dim=1), rtol=0, atol=0)
    softmax = BregmanLinear(6, 4, "tanh")
    before = softmax.mixing_logits.detach().clone()
    softmax.project_()  # nothing to project
    assert torch.equal(softmax.mixing_logits, before)
    model = MLP(6, [4, 4, 2], 3, "tanh", mixing="projected")
    from bregnn.nn import project_constraints_

    assert project_constraints_(model) == 3  # every BregmanLinear has project_
    assert sum(layer.projected for layer in model.layers) == 2  # 6 -> 4 and 4 -> 2


def test_fit_keeps_projected_rows_on_the_simplex_with_exact_zeros() -> None:
    from bregnn.train import TrainConfig, fit

    torch.manual_seed(0)
    model = MLP(12, [6, 3], 3, activation="sigmoid", mixing="projected")
    start = [layer.mixing.detach().clone() for layer in model.layers]
    x = 0.1 + 0.8 * torch.rand(96, 12)
    y = (x[:, :3] * torch.tensor([1.0, 2.0, 3.0])).argmax(1)
    seen = []

    def after_step_loss(out, target):  # records M at every step: before the next forward
        seen.append([layer.mixing.detach().clone() for layer in model.layers])
        return torch.nn.functional.cross_entropy(out, target)

    fit(model, (x, y), TrainConfig(lr=2.0, epochs=4, batch_size=16, progress=False),
        loss_fn=after_step_loss)  # fmt: skip
    assert len(seen) == 4 * 6
    for mixings in [*seen, [layer.mixing for layer in model.layers]]:
        for m in mixings:
            assert _on_simplex(m, atol=1e-5)
    final = [layer.mixing.detach() for layer in model.layers]
    assert all((f - s).abs().max() > 1e-3 for f, s in zip(final, start))  # M trains
    assert all((f == 0).any() for f in final)  # the projection yields exact zeros
    zeros = sum(int((f == 0).sum()) for f in final) / sum(f.numel() for f in final)
    assert mixing_zero_share(model) == pytest.approx(zeros) and zeros > 0


def test_softmax_mixing_is_unchanged_by_the_projected_option() -> None:
    torch.manual_seed(0)
    a = BregmanLinear(6, 4, "tanh")
    torch.manual_seed(0)
    b = BregmanLinear(6, 4, "tanh", mixing="softmax")
    assert {n for n, _ in a.named_parameters()} == {"weight", "bias", "mixing_logits"}
    assert torch.equal(a.mixing_logits, b.mixing_logits) and not a.projected
    assert (a.mixing > 0).all()  # softmax rows: never an exact zero
    assert mixing_zero_share(a) == 0.0
    assert mixing_zero_share(BregmanLinear(4, 4, "tanh")) is None  # square: no M
    assert mixing_zero_share(MLP(6, [4], 2, "tanh", variant="standard")) is None
