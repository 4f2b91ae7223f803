"""The small CNN with a (Bregman) fully connected head."""

from __future__ import annotations

import io

import pytest
import torch

from bregnn.activations import activation
from bregnn.models import ConvNet
from bregnn.nn import BregmanLinear


@pytest.mark.parametrize("variant", ["standard", "euclidean", "bregman"])
def test_shapes_and_head_layers(variant):
    net = ConvNet(1, 10, channels=(4, 8), hidden=(32, 32), activation="sigmoid", variant=variant)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert net.head.in_features == 8 * 4 * 4
    assert all(
        isinstance(layer, BregmanLinear) and layer.variant == variant for layer in net.head.layers
    )


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softplus", "atan"])
def test_features_lie_in_the_range_of_rho(name):
    act = activation(name)
    net = ConvNet(1, 10, channels=(4, 8), hidden=(16,), activation=act)
    features = net.features(10 * torch.randn(4, 1, 28, 28))
    assert (features > act.lo).all() and (features < act.hi).all()


def test_identity_init_bregman_head_with_equal_widths_is_the_identity():
    """W = 0, b = 0 and in == out: every Bregman hidden layer returns its input."""
    net = ConvNet(
        1, 10, channels=(2, 4), hidden=(64, 64), activation="tanh", init="identity"
    ).double()
    z = net.head.layers[0](net.features(torch.randn(2, 1, 28, 28, dtype=torch.float64)))
    torch.testing.assert_close(net.head.layers[1](z), z)


def test_torch_save_round_trip():
    net = ConvNet(1, 10, channels=(2, 4), hidden=(8,)).eval()
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), net(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": (4,)}, "two positive ints"),
        ({"image_size": 12}, "too small"),
        ({"variant": "bregman", "activation": "relu"}, "invertible"),
        ({"variant": "dual"}, "unknown variant 'dual'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvNet(**kwargs)
