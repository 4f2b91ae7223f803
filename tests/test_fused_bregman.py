"""The fused Bregman layer of :mod:`bregnn.functional` agrees with the plain composition
``rho(rho_inv(Mz) + Wz + b)`` in values, first derivatives (also where the domain clamp is
active) and second derivatives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bregnn import functional as F
from bregnn.activations import activation, available_activations
from bregnn.nn import BregmanLinear

FUSED = available_activations(invertible=True)  # every one has closed-form derivatives


def plain(act, z, weight, bias, mixing):
    skip = z if mixing is None else nn.functional.linear(z, mixing)
    return act.rho(act.rho_inv(skip) + nn.functional.linear(z, weight, bias))


def make_inputs(name, mixing, dtype=torch.float64, lead=(3, 2)):
    gen = torch.Generator().manual_seed(0)
    n_in, n_out = (5, 4) if mixing else (4, 4)
    act = activation(name)
    lo, hi = act.domain
    lo, hi = max(lo, -2.0), min(hi, 2.0)
    z = lo + (hi - lo) * torch.rand(*lead, n_in, generator=gen, dtype=dtype)
    weight = torch.randn(n_out, n_in, generator=gen, dtype=dtype)
    bias = torch.randn(n_out, generator=gen, dtype=dtype)
    m = torch.softmax(torch.randn(n_out, n_in, generator=gen, dtype=dtype), 1) if mixing else None
    return act, z, weight, bias, m


@pytest.mark.parametrize("mixing", [False, True])
@pytest.mark.parametrize("name", FUSED)
def test_fused_matches_composition_values_and_gradients(name, mixing):
    act, z, weight, bias, m = make_inputs(name, mixing)
    lo, hi = act.domain
    if lo > -2 and hi < 2:  # on and beyond the domain edge: the clamp is active
        z[0, 0, 0] = hi
        z[1, 1, 1] = lo - 0.5
    leaves = [t.requires_grad_() for t in (z, weight, bias, *([m] if mixing else []))]
    fused = F.bregman_linear(z, weight, bias, act, "bregman", m)
    reference = plain(act, z, weight, bias, m)
    assert torch.equal(fused, reference)
    node = F.bregman_linear(z[0], weight, bias, act, "bregman", m).grad_fn
    assert "Fused" in type(node).__name__  # one autograd node for the whole layer
    probe = torch.randn_like(fused)
    got = torch.autograd.grad(fused, leaves, probe)
    want = torch.autograd.grad(reference, leaves, probe)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mixing", [False, True])
@pytest.mark.parametrize("name", ["atan", "asinh", "tanh"])
def test_fused_gradcheck_and_gradgradcheck(name, mixing):
    act, z, weight, bias, m = make_inputs(name, mixing, lead=(3,))
    if name == "tanh":
        z = 0.8 * z  # stay away from the clamp, where finite differences are meaningless
    inputs = tuple(t.requires_grad_() for t in (z, weight, bias, *([m] if mixing else [])))

    def layer(*args):
        return F.bregman_linear(
            args[0], args[1], args[2], act, "bregman", args[3] if mixing else None
        )

    assert torch.autograd.gradcheck(layer, inputs)
    assert torch.autograd.gradgradcheck(layer, inputs)


def test_fused_float32_layer_trains_like_the_composition():
    torch.manual_seed(0)
    layer = BregmanLinear(6, 3, "sigmoid")
    z = torch.rand(8, 6)
    out = layer(z)
    torch.testing.assert_close(out, plain(layer.act, z, layer.weight, layer.bias, layer.mixing))
    out.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    plain(layer.act, z, layer.weight, layer.bias, layer.mixing).square().sum().backward()
    for g, p in zip(grads, layer.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_unlisted_activations_use_the_composition():
    act, z, weight, bias, _ = make_inputs("isru", False)
    out = F.bregman_linear(z.requires_grad_(), weight, bias, act, "bregman")
    assert "Fused" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, plain(act, z, weight, bias, None))


def test_fused_layer_still_rejects_non_square_without_mixing():
    act, z, weight, bias, _ = make_inputs("atan", False)
    with pytest.raises(ValueError, match="needs in_features == out_features"):
        F.bregman_linear(z, weight[:3], bias[:3], act, "bregman")
