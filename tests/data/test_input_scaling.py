"""Pixel space to model input: the affine map hits the activation's target interval exactly,
stays in the domain of ``rho_inv``, inverts, standardises, and pickles with a model."""

from __future__ import annotations

import io

import pytest
import torch

from bregnn.activations import activation
from bregnn.data import (
    DATASETS,
    InputScaling,
    dataset_spec,
    target_interval,
    to_activation_range,
    to_unit,
)

ACTS = ["sigmoid", "tanh", "scaled_tanh", "atan", "isru", "asinh", "softplus", "sin"]


@pytest.mark.parametrize("name", ACTS)
def test_to_activation_range_endpoints_and_domain(name):
    act = activation(name)
    lo, hi = target_interval(act, 0.9)
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    z = to_activation_range(pixels, act)
    assert z.dtype == torch.float32 and z.shape == pixels.shape
    assert z.min().item() == pytest.approx(lo, abs=1e-6)
    assert z.max().item() == pytest.approx(hi, abs=1e-6)
    # affine: equal pixel steps are equal steps in the target interval
    steps = z.flatten().diff()
    torch.testing.assert_close(steps, torch.full_like(steps, (hi - lo) / 255))
    dom_lo, dom_hi = act.domain
    assert dom_lo < z.min().item() and z.max().item() < dom_hi
    assert torch.isfinite(act.rho_inv(z)).all()
    # the same map as a module on pixel space [0, 1]
    module = InputScaling.for_activation(name)
    torch.testing.assert_close(module(to_unit(pixels)), z)


def test_inverse_and_per_channel_normalisation():
    spec = dataset_spec("cifar10")
    scaling = InputScaling.normalize(spec.mean, spec.std)
    u = torch.rand(7, 3, 4, 4, dtype=torch.float64)
    v = scaling(u)
    mean = torch.tensor(spec.mean, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float64).reshape(1, 3, 1, 1)
    torch.testing.assert_close(v, (u - mean) / std, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scaling.inverse(v), u)
    # data with exactly the given statistics are standardised to mean 0, std 1 per channel
    raw = torch.randn(4096, 3, 2, 2, dtype=torch.float64)
    flat = raw.transpose(0, 1).reshape(3, -1)
    raw = (raw - flat.mean(1).reshape(1, 3, 1, 1)) / flat.std(1).reshape(1, 3, 1, 1)
    data = raw * std + mean
    out = scaling(data).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(out.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(1), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)


def test_scaling_is_a_buffer_module_that_saves():
    model = torch.nn.Sequential(
        InputScaling.for_activation("tanh"), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    assert {"0.scale", "0.shift"} <= set(model.state_dict())
    assert all(p.requires_grad for p in model.parameters()) and len(list(model.parameters())) == 2
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    x = torch.rand(3, 1, 2, 2)
    torch.testing.assert_close(again(x), model(x))
    assert "scale=" in repr(model[0])


def test_registry_specs_are_consistent():
    for name, spec in DATASETS.items():
        c = spec.shape[0]
        assert len(spec.mean) == len(spec.std) == c
        assert len(set(spec.classes)) == spec.num_classes
        assert all(len(r.md5) == 32 and int(r.md5, 16) >= 0 for r in spec.remote)
        assert dataset_spec(name) is spec
    assert dataset_spec("cifar100").num_classes == 100
    assert dataset_spec("mnist").num_classes == 10


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected uint8 images"):
        to_activation_range(torch.rand(2, 1, 3, 3), "sigmoid")
    with pytest.raises(ValueError, match="same number of channels"):
        InputScaling([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="finite and nonzero"):
        InputScaling(0.0, 1.0)
    with pytest.raises(ValueError, match="all stds > 0"):
        InputScaling.normalize([0.5], [0.0])
    with pytest.raises(ValueError, match=r"3 channels but the input has shape \(2, 1, 4, 4\)"):
        InputScaling.normalize([0.5] * 3, [0.2] * 3)(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="fill must be in"):
        to_activation_range(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), "tanh", fill=1.5)
