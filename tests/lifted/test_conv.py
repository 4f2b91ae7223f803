"""Lifted training of convolutional networks: the conv layers' adjoints and norms, the closed-form
gradients of the conv energy, from_module / to_module, flat memory, and fit with every method."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bregnn.lifted import L1, LiftedNetwork, available_solvers, fit, make_solver, one_hot, run_epoch
from bregnn.lifted.layers import AvgPool, Conv, Dense, Flatten
from bregnn.lifted.network import Params, forward_objective
from bregnn.lifted.penalties import PENALTIES, get_penalty
from bregnn.lifted.solvers._step import initial_vectors, x_step_sizes
from bregnn.lifted.solvers.residual import ResidualLiftedNetwork, ResidualMLP

D = torch.float64

# (in_shape, Conv keyword arguments, pre, post): strides, paddings, dilations, no bias, pooling
# before and after, flattening
CONV_CASES = {
    "plain": ((2, 7, 7), {"out_channels": 3, "kernel_size": 3}, (), ()),
    "stride-pad": ((2, 7, 6), {"out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}, (), ()),
    "dilation-nobias": (
        (2, 8, 8), {"out_channels": 2, "kernel_size": (3, 2), "dilation": 2, "bias": False}, (), (),
    ),
    "rect-stride": ((1, 9, 7), {"out_channels": 2, "kernel_size": (2, 3), "stride": (2, 1)}, (), ()),
    "same": ((2, 6, 6), {"out_channels": 2, "kernel_size": 3, "padding": "same"}, (), ()),
    "pool-before": ((2, 8, 8), {"out_channels": 3, "kernel_size": 3}, (AvgPool(2),), ()),
    "pool-after-flatten": (
        (2, 9, 9), {"out_channels": 2, "kernel_size": 2, "padding": 1},
        (), (AvgPool(3, 2, 1, ceil_mode=True, count_include_pad=False), Flatten()),
    ),
    "pool-both-nobias": (
        (1, 10, 10), {"out_channels": 2, "kernel_size": 3, "bias": False},
        (AvgPool(2, divisor_override=3),), (AvgPool(2, 1),),
    ),
}  # fmt: skip


def _conv(name: str) -> Conv:
    in_shape, kwargs, pre, post = CONV_CASES[name]
    return Conv(in_shape, pre=pre, post=post, **kwargs)


LAYERS = {f"conv-{k}": (lambda k=k: _conv(k)) for k in CONV_CASES} | {
    "dense": lambda: Dense(5, 3),
    "dense-pool-flatten": lambda: Dense((2, 4, 4), 3, pre=(AvgPool(2), Flatten())),
    "dense-flatten": lambda: Dense((2, 3, 3), 4, pre=(Flatten(),)),
}


def _params(layer, gen):
    w, b = layer.init_params(gen, D)
    return w, torch.randn(b.shape, generator=gen, dtype=D)


def _inner(a, b):
    return float((a * b).sum())


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_adjoint_identities(name):
    """<K x, g> = <x, K^T g> in the input, and <A(x; W, b), g> = <W, gW> + <b, gb> in the
    parameters, for every supported layer configuration."""
    layer = LAYERS[name]()
    gen = torch.Generator().manual_seed(1)
    w, b = _params(layer, gen)
    x = torch.randn(3, *layer.in_shape, generator=gen, dtype=D)
    g = torch.randn(3, *layer.out_shape, generator=gen, dtype=D)
    zero = torch.zeros_like(b)
    kx = layer.forward(w, zero, x)
    assert kx.shape == g.shape
    assert _inner(kx, g) == pytest.approx(_inner(x, layer.input_grad(g, w)), rel=1e-12)
    gw, gb = layer.param_grads(g, x)
    assert gw.shape == w.shape and gb.shape == b.shape
    z = layer.forward(w, b, x)
    assert _inner(z, g) == pytest.approx(_inner(w, gw) + _inner(b, gb), rel=1e-12)
    # rows are accepted for the input, and input_grad adds its ``add``
    torch.testing.assert_close(layer.forward(w, b, x.flatten(1)), z)
    extra = torch.randn(x.shape, generator=gen, dtype=D)
    torch.testing.assert_close(layer.input_grad(g, w, add=extra), extra + layer.input_grad(g, w))


def test_pooled_input_is_remembered_only_for_the_same_unmodified_tensor():
    import pickle

    layer = Conv((2, 6, 6), 3, 3, pre=(AvgPool(2),))
    x = torch.randn(4, 2, 6, 6, dtype=D)
    first = layer.prepare(x)
    assert layer.prepare(x) is first
    x.add_(1.0)  # modified in place: pooled again
    again = layer.prepare(x)
    assert again is not first
    torch.testing.assert_close(again, nn.functional.avg_pool2d(x, 2))
    assert layer.prepare(x.clone()) is not again  # another tensor
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        layer.prepare(leaf).sum().backward()  # not remembered: it carries a graph
    assert layer._last_input[0]() is not leaf
    clone = pickle.loads(
        pickle.dumps(LiftedNetwork(layers=[layer, Dense((3, 1, 1), 2, pre=(Flatten(),))]))
    )
    assert clone.layers[0]._last_input is None


def test_conv_forward_is_remembered_only_for_the_same_unmodified_tensors():
    """The first layer's convolution is computed once for unchanged (weight, bias, input),
    and again whenever any of them is another tensor, was modified in place, carries a graph,
    or the remembered result was modified."""
    import pickle

    layer = Conv((1, 8, 8), 3, 3)
    gen = torch.Generator().manual_seed(0)
    w, b = _params(layer, gen)
    x = torch.randn(4, 1, 8, 8, generator=gen, dtype=D)
    first = layer.forward(w, b, x)
    assert layer.forward(w, b, x) is first
    for args in ((w.clone(), b, x), (w, b.clone(), x), (w, b, x.clone())):
        assert layer.forward(*args) is not first
        torch.testing.assert_close(layer.forward(*args), first, rtol=0, atol=0)
    again = layer.forward(w, b, x)
    w.add_(0.5)  # modified in place: computed again
    moved = layer.forward(w, b, x)
    assert moved is not again
    torch.testing.assert_close(moved, nn.functional.conv2d(x, w, b), rtol=0, atol=0)
    moved.mul_(2.0)  # the remembered result itself modified: computed again
    torch.testing.assert_close(layer.forward(w, b, x), nn.functional.conv2d(x, w, b))
    with torch.enable_grad():
        leaf = w.clone().requires_grad_(True)
        layer.forward(leaf, b, x).sum().backward()  # not remembered: it carries a graph
        assert leaf.grad is not None
    assert layer._last_forward[0][0][0]() is not leaf
    with torch.inference_mode():
        layer.forward(w.clone(), b.clone(), x.clone())  # no version counters: not remembered
    clone = pickle.loads(pickle.dumps(layer))
    assert clone._last_forward is None


# tiling (kernel = stride, no padding) and floor-mode leftovers: the strided fast path
TILING_POOLS = {
    "2": (AvgPool(2), (3, 8, 8)),
    "2-odd": (AvgPool(2), (3, 9, 7)),
    "3": (AvgPool(3), (2, 9, 12)),
    "2x3": (AvgPool((2, 3)), (2, 8, 9)),
    "ceil-exact": (AvgPool(2, ceil_mode=True, count_include_pad=False), (2, 8, 6)),
    "divisor": (AvgPool(2, divisor_override=3), (2, 6, 6)),
    "1": (AvgPool(1), (2, 3, 3)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(TILING_POOLS))
def test_tiling_average_pooling_is_avg_pool2d_bitwise(name, dtype):
    """Non-overlapping pooling by strided slices and its adjoint give exactly the numbers of
    torch's avg_pool2d and avg_pool2d_backward (same sums, same order, same division)."""
    op, shape = TILING_POOLS[name]
    assert op._tiles(*shape[1:])
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, *shape, generator=gen, dtype=dtype)
    want = nn.functional.avg_pool2d(x, *op._args())
    assert torch.equal(op.apply(x), want)
    g = torch.randn(want.shape, generator=gen, dtype=dtype)
    back = torch.ops.aten.avg_pool2d_backward(
        g, x, list(op.kernel_size), list(op.stride), list(op.padding), op.ceil_mode,
        op.count_include_pad, op.divisor_override,
    )  # fmt: skip
    assert torch.equal(op.adjoint(g, shape), back)
    # under autograd the kernel runs (its backward is the adjoint)
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        op.apply(leaf).backward(g)
    assert torch.equal(leaf.grad, back)


def test_overlapping_or_padded_pooling_keeps_the_kernel():
    for op in (AvgPool(3, 2, 1, True, False), AvgPool(2, 1), AvgPool(2, ceil_mode=True)):
        assert not op._tiles(7, 7)


def test_smooth_grads_parts():
    net = _cnn()
    params, x0, aux, y = _problem(net)
    pen = get_penalty("bregman")
    grad, grad_aux, zs = net.smooth_grads(params, x0, aux, y, pen)
    only_w, none_aux, _ = net.smooth_grads(params, x0, aux, y, pen, parts="params")
    none_w, only_aux, _ = net.smooth_grads(params, x0, aux, y, pen, parts="aux")
    assert none_aux is None and none_w is None
    for a, b in zip(
        (*grad.weights, *grad.biases, *grad_aux),
        (*only_w.weights, *only_w.biases, *only_aux),
        strict=True,
    ):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="parts must be"):
        net.smooth_grads(params, x0, aux, y, pen, parts="x")


@pytest.mark.parametrize(
    "op", [Flatten(), AvgPool(2), AvgPool(3, 2, 1, True, False), AvgPool((2, 3), 1, (1, 0))]
)
def test_fixed_operator_adjoints(op):
    gen = torch.Generator().manual_seed(2)
    shape = (2, 7, 6)
    x = torch.randn(4, *shape, generator=gen, dtype=D)
    g = torch.randn(4, *op.out_shape(shape), generator=gen, dtype=D)
    assert _inner(op.apply(x), g) == pytest.approx(_inner(x, op.adjoint(g, shape)), rel=1e-12)
    torch.testing.assert_close(op.module()(x), op.apply(x))


def _matrix(fn, n_in: int) -> torch.Tensor:
    """The matrix of a linear map of a flat vector, column by column (basis vectors)."""
    eye = torch.eye(n_in, dtype=D)
    return torch.stack([fn(e).flatten() for e in eye], dim=1)


def _converged(step, operand, v, iters=3000):
    for _ in range(iters):
        est, v = step(operand, v)
    return float(est)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_power_iterations_give_the_exact_spectral_norms(name):
    """|K|^2 of the input map and |Theta -> A(X; Theta)|^2 over a batch, from the power
    iterations, against the largest singular value of the operator's matrix (built by
    applying the operator to basis vectors on a tiny input)."""
    layer = LAYERS[name]()
    gen = torch.Generator().manual_seed(3)
    w, b = _params(layer, gen)
    x = torch.randn(2, *layer.in_shape, generator=gen, dtype=D)
    zero = torch.zeros_like(b)
    k = _matrix(lambda e: layer.forward(w, zero, e.reshape(1, *layer.in_shape)), layer.n_in)
    exact = float(torch.linalg.matrix_norm(k, 2)) ** 2
    est = _converged(layer.input_power_step, w, layer.input_vector(D))
    # a lower bound, converged (slowly where the top singular values are close)
    assert exact * (1 - 1e-4) <= est <= exact * (1 + 1e-12)
    # the parameter map of ALL weights and biases (not only the one filter the power
    # vector holds: the map is block diagonal with identical blocks)
    n_w, n_b = w.numel(), b.numel()

    def theta_map(e):
        return layer.forward(e[:n_w].reshape(w.shape), e[n_w:].reshape(b.shape), x)

    a = _matrix(theta_map, n_w + n_b)
    exact = float(torch.linalg.matrix_norm(a, 2)) ** 2
    est = _converged(layer.theta_power_step, x, layer.theta_vector(D))
    assert exact * (1 - 1e-4) <= est <= exact * (1 + 1e-12)


# -- the lifted energy of a CNN ------------------------------------------------------------------
def _cnn(bias: bool = True, **net_kwargs) -> LiftedNetwork:
    layers = [
        Conv((1, 8, 8), 3, 3, padding=1, bias=bias),
        Conv((3, 8, 8), 4, 3, stride=2, dilation=1, pre=(AvgPool(2, 1),), bias=bias),
        Conv((4, 3, 3), 2, 2, padding=1, post=(AvgPool(2, ceil_mode=True),)),
        Dense((2, 2, 2), 3, pre=(Flatten(),)),
    ]
    return LiftedNetwork(layers=layers, **net_kwargs)


def _problem(net, m=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = net.init_params(gen, D)
    params = params._replace(
        biases=tuple(torch.randn(b.shape, generator=gen, dtype=D) * 0.3 for b in params.biases)
    )
    x0 = torch.randn(m, net.sizes[0], generator=gen, dtype=D)
    hidden, _ = net.forward(params, x0)
    zs = net.pre_activations(params, x0, hidden)
    aux = tuple(
        act.rho(z + 0.3 * torch.randn(z.shape, generator=gen, dtype=D))
        for z, act in zip(zs, net.activations, strict=False)
    )
    labels = torch.randint(0, net.sizes[-1], (m,), generator=gen)
    return params, x0, aux, one_hot(labels, net.sizes[-1], D)


def _autograd_h(net, params, x0, aux, y, pen):
    leaves = [t.clone().requires_grad_(True) for t in (*params.weights, *params.biases, *aux)]
    n = len(params.weights)
    p = params._replace(weights=tuple(leaves[:n]), biases=tuple(leaves[n : 2 * n]))
    a = leaves[2 * n :]
    zs = net.pre_activations(p, x0, a)
    h = sum(
        lam * pen.value(x, z, act).sum()
        for lam, x, z, act in zip(net.lambdas, a, zs, net.activations, strict=False)
    )
    h = h + net.energy_from(zs, a, y, pen).loss
    return torch.autograd.grad(h, leaves, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("pen", sorted(PENALTIES))
@pytest.mark.parametrize(
    ("bias", "acts", "output"),
    [(True, "relu", "identity"), (False, ["tanh", "relu", "soft_threshold"], "softmax")],
)
def test_conv_energy_gradients_match_autograd(pen, bias, acts, output):
    net = _cnn(bias, activation=acts, output=output, lambdas=[0.7, 1.3, 0.9, 1.1])
    params, x0, aux, y = _problem(net)
    pen = get_penalty(pen)
    grad, grad_aux, _ = net.smooth_grads(params, x0, aux, y, pen)
    auto = _autograd_h(net, params, x0, aux, y, pen)
    for got, want in zip((*grad.weights, *grad.biases, *grad_aux), auto, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv_energy_gradients_for_every_layer_configuration(name):
    """A conv layer of every configuration between two others: gradients against autograd."""
    conv = _conv(name)
    first = Conv((1, *conv.in_shape[1:]), conv.in_shape[0], 3, padding=1)
    last = Dense(conv.out_shape, 2, pre=(Flatten(),) if len(conv.out_shape) > 1 else ())
    net = LiftedNetwork(layers=[first, conv, last], activation=["relu", "tanh"])
    params, x0, aux, y = _problem(net, m=3)
    pen = get_penalty("bregman")
    grad, grad_aux, _ = net.smooth_grads(params, x0, aux, y, pen)
    auto = _autograd_h(net, params, x0, aux, y, pen)
    for got, want in zip((*grad.weights, *grad.biases, *grad_aux), auto, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_feature_map_energy_diagnostics_and_regulariser():
    """Energy parts, consistency (per-sample norms of whole feature maps) and an L1
    regulariser on a feature-map layer, against direct sums."""
    net = _cnn(activation="relu", regularisers={2: L1(0.1)})
    params, x0, aux, y = _problem(net)
    pen = get_penalty("bregman")
    zs = net.pre_activations(params, x0, aux)
    parts = net.energy_from(zs, aux, y, pen)
    from bregnn.lifted.losses import bregman_loss

    for c, x, z, act in zip(parts.coupling, aux, zs, net.activations, strict=False):
        torch.testing.assert_close(c, bregman_loss(x.flatten(1), z.flatten(1), act).sum())
    torch.testing.assert_close(parts.regulariser, 0.1 * aux[1].abs().sum())
    cons = net.consistency(zs, aux)
    torch.testing.assert_close(cons[0], (aux[0] - zs[0].relu()).flatten(1).norm(dim=1).mean())
    hidden, _ = net.forward(params, x0)
    obj = forward_objective(net, params, x0, y)
    assert obj.shape == (x0.shape[0],)
    torch.testing.assert_close(obj.sum(), net.energy(params, x0, hidden, y, pen).total)


# -- from_module / to_module -----------------------------------------------------------------------
def _fashion_like(bias=True):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 5, bias=bias), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 3),
    )  # fmt: skip


@pytest.mark.parametrize("bias", [True, False])
def test_from_module_to_module_round_trip(bias):
    seq = _fashion_like(bias)
    net = LiftedNetwork.from_module(seq, input_shape=(1, 16, 16))
    assert net.shapes == ((1, 16, 16), (4, 12, 12), (6, 4, 4), (3,))
    assert net.sizes == (256, 576, 96, 3)
    assert [a.name for a in net.activations] == ["relu", "relu"] and net.flatten
    assert [type(layer) for layer in net.layers] == [Conv, Conv, Dense]
    params = net.params_from_module()
    assert params.biases[0].shape == ((4,) if bias else (0,))
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        want = seq(x)
        for inp in (x, x.flatten(1)):
            _, z = net.forward(params, inp)
            torch.testing.assert_close(z, want)
    # trained weights go back into a copy of the same layer classes
    moved = params._replace(weights=tuple(w + 0.1 for w in params.weights))
    back = net.to_module(moved)
    assert [type(m) for m in back] == [type(m) for m in seq]
    assert (back[0].bias is None) == (not bias)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net.forward(moved, x)[1])
    # without a template: built from the layers, same forward
    plain = LiftedNetwork(layers=net.layers, activation="relu")
    rebuilt = plain.to_module(moved)
    assert [type(m) for m in rebuilt] == [
        nn.Conv2d, type(rebuilt[1]), nn.AvgPool2d, nn.Conv2d, type(rebuilt[4]), nn.AvgPool2d,
        nn.Flatten, nn.Linear,
    ]  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), back(x))


def test_from_module_places_operators_and_identity_layers():
    """Pooling between a convolution and its activation goes after that convolution; two
    affine layers in a row get an identity activation; a conv output is flattened."""
    seq = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.AvgPool2d(2), nn.Tanh(), nn.Conv2d(3, 2, 1), nn.Flatten(),
        nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2),
    )  # fmt: skip
    net = LiftedNetwork.from_module(seq, input_shape=(2, 6, 6))
    assert [a.name for a in net.activations] == ["tanh", "identity", "relu"]
    assert isinstance(net.layers[0].post[0], AvgPool) and isinstance(net.layers[1].post[0], Flatten)
    x = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(net.forward(net.params_from_module(), x)[1], seq(x))
    fully = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3))
    net = LiftedNetwork.from_module(fully, input_shape=(1, 7, 7))
    assert net.sizes[-1] == 9
    with torch.no_grad():
        out = net.forward(net.params_from_module(), torch.ones(2, 49))[1]
        torch.testing.assert_close(out, fully(torch.ones(2, 1, 7, 7)).flatten(1))


def test_flatten_inside_a_dense_network():
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2))
    net = LiftedNetwork.from_module(seq)
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(net.forward(net.params_from_module(), x)[1], seq(x))
    assert [type(m) for m in net.to_module(net.params_from_module())] == [type(m) for m in seq]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2)],
         r"layer 1 \(MaxPool2d\) is not supported.*max pooling is not linear.*supported: nn.Linear"),
        ([nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()],
         r"layer 1 \(BatchNorm2d\).*batch normalisation.*supported: .*nn.Conv2d.*nn.AvgPool2d"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Dropout(), nn.Conv2d(2, 1, 1)],
         r"layer 2 \(Dropout\).*dropout is random"),
        ([nn.Conv2d(1, 2, 3, padding_mode="reflect")], "padding_mode='zeros'"),
        ([nn.Conv2d(1, 2, 3, groups=1), nn.Conv2d(2, 2, 3, groups=2)], "groups=1"),
        ([nn.Conv2d(1, 2, 4, padding="same")], "pads asymmetrically"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(7, 2)],
         r"layer 3 \(Linear\).*takes 7 inputs but receives 32 features"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2, 2)], "needs vector inputs"),
        ([nn.Conv2d(1, 2, 9)], "leaves no output on input shape"),
        ([nn.Conv2d(1, 2, 3), nn.Softmax(dim=1)], "softmax output over feature maps"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2)], "AvgPool after the output activation"),
        ([nn.Conv2d(1, 2, 3), nn.ReLU(), nn.ReLU()], "follows another activation"),
        ([nn.Conv2d(1, 2, 3), nn.Flatten(start_dim=2)], "start_dim=1"),
        ([nn.AvgPool2d(2), nn.Flatten()], "no nn.Linear or nn.Conv2d layer"),
        ([nn.AvgPool2d(8), nn.Flatten(), nn.Linear(1, 2)],
         r"layer 0 \(AvgPool2d\): AvgPool\(\(8, 8\).*does not fit feature maps of shape \(1, 6, 6\)"),
    ],
)  # fmt: skip
def test_from_module_refuses_with_the_reason(layers, message):
    with pytest.raises(ValueError, match=message):
        LiftedNetwork.from_module(nn.Sequential(*layers), input_shape=(1, 6, 6))


def test_from_module_needs_the_input_shape_and_checks_data():
    with pytest.raises(ValueError, match=r"needs its per-sample input_shape \(C, H, W\)"):
        LiftedNetwork.from_module(_fashion_like())
    net = LiftedNetwork.from_module(_fashion_like(), input_shape=(1, 16, 16))
    y = torch.zeros(2, 3)
    net.check_data(torch.zeros(2, 256), y)
    net.check_data(torch.zeros(2, 1, 16, 16), y)
    with pytest.raises(ValueError, match="first layer size is 256"):
        net.check_data(torch.zeros(2, 1, 15, 15), y)
    with pytest.raises(ValueError, match="layer 1 gives outputs of shape"):
        LiftedNetwork(layers=[Conv((1, 6, 6), 2, 3), Conv((2, 5, 5), 2, 3)])
    with pytest.raises(ValueError, match="post=\\(Flatten\\(\\),\\)"):
        LiftedNetwork(layers=[Conv((1, 6, 6), 2, 3)])


# -- memory ------------------------------------------------------------------------------------------
class _LargestTensor(TorchDispatchMode):
    """Records the largest floating-point tensor any operation creates."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("method", ["lbn-s", "lifted-quadratic", "linbreg", "sgd-bp", "lbn-d"])
def test_memory_does_not_grow_with_the_number_of_samples(method):
    """An epoch on twice the samples creates no larger tensor: the auxiliary feature maps
    live for one mini-batch. The largest tensor is one batch's largest feature map. (The
    full-batch LBN-D keeps X for every sample: there the probe sees it double.)"""
    seq = _fashion_like()
    net = LiftedNetwork.from_module(seq, input_shape=(1, 16, 16))
    params = net.params_from_module()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=gen)
    y = one_hot(torch.randint(0, 3, (64,), generator=gen), 3)
    settings = {} if method == "lbn-d" else {"batch_size": 8}
    settings |= {"inner_iters": 2} if method != "sgd-bp" else {}
    peaks = []
    for n in (32, 64):
        solver = make_solver(method, net, **settings)
        xs, ys = x[:n], y[:n]
        state = solver.init_state(params, xs, ys)
        with _LargestTensor() as probe:
            run_epoch(solver, state, xs, ys, torch.Generator().manual_seed(0))
        peaks.append(probe.numel)
    if method == "lbn-d":
        assert peaks[1] == 2 * peaks[0] == 64 * max(net.sizes)
        return
    assert peaks[0] == peaks[1]
    assert peaks[0] <= 8 * max(net.sizes)


# -- every method through fit -------------------------------------------------------------------------
CNN_METHODS: dict[str, dict] = {
    "lbn-s": {"batch_size": 16, "inner_iters": 5, "tau": 1.0, "step_rule": "alternating"},
    "lbn-d": {"inner_iters": 5},
    "lifted-quadratic": {"batch_size": 16, "inner_iters": 5, "tau": 1.0},
    "mac-qp": {"batch_size": 16, "inner_iters": 5, "tau": 1.0},
    "sgd-bp": {"batch_size": 16, "lr": 0.1},
    "gd-bp": {"inner_iters": 5, "lr": 0.2},
    "isgd-bp": {"batch_size": 16, "inner_iters": 3, "tau": 1.0, "lr": 0.1},
    "bcd": {"inner_iters": 2, "theta_iters": 3, "x_iters": 3, "tau": 1.0},
    "constrained": {"inner_iters": 3, "primal_iters": 2},
    "linbreg": {"batch_size": 16, "inner_iters": 5, "mu": 0.0001},
}  # fmt: skip
REFUSED = {"admm": "admm does not support convolutional layers; use lbn-s, lbn-d"}


def test_conv_method_tables_cover_the_registry():
    assert sorted([*CNN_METHODS, *REFUSED]) == sorted(available_solvers())


def _images(n=64, seed=0):
    """8x8 images whose class is the brightest of three regions."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    rows = [slice(0, 3), slice(3, 5), slice(5, 8)]
    for i, c in enumerate(labels.tolist()):
        x[i, 0, rows[c]] += 1.0
    return x, labels


def _tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


def _objective(net, params, x, labels):
    y = one_hot(labels, 3)
    with torch.no_grad():
        return float(forward_objective(net, params, x.flatten(1), y).mean())


@pytest.mark.parametrize("method", sorted(CNN_METHODS))
def test_every_supported_method_trains_a_cnn(method):
    x, labels = _images()
    model = _tiny_cnn()
    net = LiftedNetwork.from_module(model, input_shape=(1, 8, 8))
    before = _objective(net, net.params_from_module(), x, labels)
    result = fit(model, x, labels, method=method, epochs=3, progress=False, **CNN_METHODS[method])
    after = _objective(result.network, result.params, x, labels)
    assert after < before, (before, after)
    assert [type(m) for m in result.module] == [type(m) for m in model]
    assert result.module[3].bias is None and result.params.biases[1].numel() == 0
    with torch.no_grad():
        torch.testing.assert_close(
            result.module(x), result.network.forward(result.params, x.flatten(1))[1]
        )


@pytest.mark.parametrize("method", sorted(REFUSED))
def test_unsupported_methods_refuse_conv_networks(method):
    x, labels = _images(16)
    with pytest.raises(ValueError, match=REFUSED[method]):
        fit(_tiny_cnn(), x, labels, method=method, epochs=1, progress=False)
    # dense networks still train
    dense = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 3))
    fit(dense, x, labels, method=method, epochs=1, progress=False, inner_iters=1, admm_iters=2)


def test_step_sizes_of_a_conv_network_use_the_operator_norms():
    net = LiftedNetwork.from_module(_tiny_cnn(), input_shape=(1, 8, 8))
    params = net.init_params(torch.Generator().manual_seed(0), D)
    w_vecs, _ = initial_vectors(net, D, params)
    steps, _ = x_step_sizes(net, get_penalty("bregman"), params.weights, w_vecs, 1.0)
    for l, t in enumerate(steps, start=1):
        layer, w = net.layers[l], params.weights[l]
        zero = torch.zeros(layer.bias_shape, dtype=D)
        k = _matrix(lambda e, layer=layer, w=w, zero=zero: layer.forward(
            w, zero, e.reshape(1, *layer.in_shape)), layer.n_in)  # fmt: skip
        exact = 1.0 / (1.0 + float(torch.linalg.matrix_norm(k, 2)) ** 2)
        assert t == pytest.approx(exact, rel=1e-3)


# -- residual conv networks ----------------------------------------------------------------------------
def _residual_cnn(**kwargs):
    layers = [
        Conv((1, 6, 6), 3, 3, padding=1),
        Conv((3, 6, 6), 3, 3, padding=1),
        Conv((3, 6, 6), 3, 3, padding=1, bias=False),
        Dense((3, 6, 6), 3, pre=(AvgPool(2), Flatten())),
    ]
    return ResidualLiftedNetwork(layers=layers, **kwargs)


def test_residual_conv_network_gradients_and_forward():
    net = _residual_cnn(activation="tanh", lambdas=[0.8, 1.2, 1.0, 0.9])
    assert net.skips == (False, True, True)
    params, x0, aux, y = _problem(net, m=3)
    pen = get_penalty("bregman")
    grad, grad_aux, _ = net.smooth_grads(params, x0, aux, y, pen)
    auto = _autograd_h(net, params, x0, aux, y, pen)
    for got, want in zip((*grad.weights, *grad.biases, *grad_aux), auto, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
    module = net.to_module(params)
    assert isinstance(module, ResidualMLP)
    with torch.no_grad():
        torch.testing.assert_close(module(x0.reshape(3, 1, 6, 6)), net.forward(params, x0)[1])


def test_residual_conv_network_trains_with_lbn_s():
    x, labels = _images(48)
    x = x[:, :, 1:7, 1:7]
    net = _residual_cnn(activation="relu")
    params = net.init_params(torch.Generator().manual_seed(0))
    before = _objective(net, params, x, labels)
    result = fit(net, x, labels, method="lbn-s", epochs=3, progress=False, batch_size=16,
                 inner_iters=5, tau=1.0, step_scale=0.5)  # fmt: skip
    assert _objective(net, result.params, x, labels) < before
    assert math.isfinite(result.history[-1]["batch_energy"])


# -- regression: the iterates of the lifted methods on a small CNN ----------------------------
# Per parameter tensor (weights, then biases) its sum and its inner product with a fixed
# random tensor (seed 1), after one epoch (3 batches of 8, N = 3, tau_k = 1) in float64 from
# the weights of _fashion_like(); recorded with the code before the conv fast paths
# (remembered first-layer convolution, strided pooling and adjoint, in-place sums), which
# compute the same numbers.
# fmt: off
REGRESSION = {
    "lbn-s-alternating": [
        -0.46341629230222, 0.5263966794217286, -2.0606447009454714,
        0.35457335092857917, 2.526611266392945, -0.8654172790204753,
        0.1852222358067272, -0.19165780791281858, 0.19556650695557748,
        0.047692303477079756, 0.8196890525730771, 0.4692418185651113,
    ],
    "lbn-s-simultaneous": [
        -0.4635494942222647, 0.5263647561165103, -2.072667000127852,
        0.35623395183231243, 2.51900285508956, -0.8675331313758654,
        0.1851172219027322, -0.19164648576942772, 0.19424379452850396,
        0.047040528709043336, 0.8227348542391402, 0.47050692332832134,
    ],
    "lbn-s-blockwise": [
        -0.46345657421439285, 0.5259346954783035, -1.8601102558363514,
        0.3521940737460575, 2.6805891542898634, -1.0022966096085781,
        0.18449703626934957, -0.19163802476322753, 0.21664360111453565,
        0.05352514005167868, 0.8955046699818083, 0.5126397885802874,
    ],
    "lbn-s-literal": [
        -0.463674027554344, 0.5264789678457172, -2.063754060779974,
        0.35497646857630843, 2.5194924972315587, -0.8673923759260522,
        0.18501867259485905, -0.19156247308580146, 0.1947617069520895,
        0.04721034289481095, 0.822479816865699, 0.47035307188064507,
    ],
    "lifted-quadratic-alternating": [
        -0.34526757392251467, 0.056462161084125495, 0.14620179893837118,
        0.30535918395812084, 2.7947605777441606, -0.8520961540496423,
        1.2913274536627242, -0.5416007476226218, 0.42674344313476115,
        0.05695388354863545, 0.6903458426945522, 0.4125490279341415,
    ],
}
# fmt: on

REGRESSION_CASES = {
    "lbn-s-alternating": ("lbn-s", {"step_rule": "alternating"}),
    "lbn-s-simultaneous": ("lbn-s", {"step_rule": "simultaneous"}),
    "lbn-s-blockwise": ("lbn-s", {"step_rule": "blockwise", "step_scale": 1.99}),
    "lbn-s-literal": ("lbn-s", {"step_rule": "literal"}),
    "lifted-quadratic-alternating": ("lifted-quadratic", {"step_rule": "alternating"}),
}


@pytest.mark.parametrize("name", sorted(REGRESSION_CASES))
def test_lifted_cnn_iterates_match_the_recorded_values(name):
    method, extra = REGRESSION_CASES[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 1, 16, 16, generator=gen, dtype=D)
    y = one_hot(torch.randint(0, 3, (24,), generator=gen), 3, D)
    net = LiftedNetwork.from_module(_fashion_like(), input_shape=(1, 16, 16))
    params = net.params_from_module()
    params = Params(tuple(w.to(D) for w in params.weights), tuple(b.to(D) for b in params.biases))
    solver = make_solver(method, net, batch_size=8, inner_iters=3, tau=1.0, **extra)
    state = solver.init_state(params, x, y)
    state, _ = solver.epoch(state, x, y, torch.Generator().manual_seed(0))
    p = solver.params(state)
    probe_gen = torch.Generator().manual_seed(1)
    values = []
    for t in (*p.weights, *p.biases):
        probe = torch.randn(t.shape, generator=probe_gen, dtype=D)
        values += [float(t.sum()), float((t * probe).sum())]
    assert values == pytest.approx(REGRESSION[name], rel=1e-9, abs=1e-12)
