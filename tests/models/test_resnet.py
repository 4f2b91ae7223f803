"""ResNets: parameter counts (torchvision's for the ImageNet family), stems, initialisation,
default activations, the Bregman blocks' identity and domain invariants."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
from torch import nn

from bregnn.activations import Softplus, activation
from bregnn.models import (
    BREGMANET_SOFTPLUS_BETA,
    IMAGENET_RESNETS,
    RESNETS,
    BregmanBasicBlock,
    BregmanBottleneck,
    ResNet,
    resnet18,
    resnet20,
    resnet50,
)
from bregnn.models import resnet as resnet_module
from bregnn.models.resnet import BasicBlock, Bottleneck, PadShortcut, SimplexConvShortcut

INVERTIBLE = [
    ("softplus", {}),
    ("softplus", {"beta": 10.0}),
    ("sigmoid", {}),
    ("tanh", {}),
    ("atan", {}),
    ("isru", {}),
    ("asinh", {}),
    ("scaled_tanh", {}),
]


def _docstring_counts() -> dict[str, int]:
    rows = re.findall(r"^(resnet\d+)\s+\d+\s+([\d,]+)\s", resnet_module.__doc__, flags=re.M)
    return {name: int(count.replace(",", "")) for name, count in rows}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _in_range(act, shape, generator, dtype=torch.float64):
    """Points of the range of ``rho``: ``rho`` of standard normal pre-activations."""
    return act.rho(2 * torch.randn(shape, generator=generator, dtype=dtype))


def _zero_residual_(block: BasicBlock) -> None:
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.weight.zero_()
        for bn in (block.bn1, block.bn2):
            bn.weight.zero_()
            bn.bias.zero_()


def test_docstring_table_lists_every_factory():
    assert set(_docstring_counts()) == set(RESNETS)


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_parameter_counts_match_docstring_table(name):
    expected = _docstring_counts()[name]
    with torch.device("meta"):  # counts only: no memory, no initialisation cost
        standard = RESNETS[name](variant="standard", activation="relu")
        bregman = RESNETS[name](variant="bregman")
    assert _n_params(standard) == expected
    # the CIFAR family's option-A shortcuts have no parameters; the ImageNet family's
    # Bregman variant pads where the standard one has a 1x1 convolution + BN
    missing = sum(_n_params(m.shortcut) for m in standard.modules() if isinstance(m, BasicBlock))
    assert (missing > 0) == (name in IMAGENET_RESNETS)
    assert _n_params(bregman) == expected - missing


def test_imagenet_family_matches_torchvision_counts():
    # torchvision's documented num_params (ResNet18_Weights / ResNet50_Weights.IMAGENET1K_V1)
    with torch.device("meta"):
        assert _n_params(resnet18(variant="standard")) == 11_689_512
        assert _n_params(resnet50(variant="standard")) == 25_557_032
        # the CIFAR-stem ResNet18 with option-B shortcuts (the former CIFAR ResNet18)
        cifar18 = resnet18(variant="standard", stem="cifar", num_classes=10)
        assert _n_params(cifar18) == 11_173_962


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet18", "resnet50"])
@pytest.mark.parametrize("variant", ["standard", "bregman"])
def test_forward_shapes(name, variant):
    model = RESNETS[name](variant=variant, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_cifar100_head_and_grayscale_stem():
    model = resnet20(num_classes=100, in_channels=1, activation="atan")
    assert model.fc.out_features == 100
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 100)
    assert _n_params(model) == _docstring_counts()["resnet20"] + 90 * 65 - 2 * 16 * 9


@pytest.mark.parametrize(("name", "params"), INVERTIBLE)
def test_bregman_block_with_zero_residual_is_identity(name, params):
    act = activation(name, **params)
    block = BregmanBasicBlock(8, 8, 1, act).double()
    _zero_residual_(block)
    z = _in_range(act, (3, 8, 5, 5), torch.Generator().manual_seed(0))
    for mode in (block.train, block.eval):
        mode()
        torch.testing.assert_close(block(z), z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "params"), INVERTIBLE[:4])
def test_downsampling_block_pads_with_rho_of_zero(name, params):
    act = activation(name, **params)
    block = BregmanBasicBlock(4, 8, 2, act).double()
    _zero_residual_(block)
    z = _in_range(act, (2, 4, 6, 6), torch.Generator().manual_seed(1))
    out = block(z)
    rho0 = act.rho(torch.zeros((), dtype=torch.float64))
    assert out.shape == (2, 8, 3, 3)
    # channels 0,1 and 6,7 are new: exactly rho(0), i.e. rho_inv = 0 in the dual space
    torch.testing.assert_close(out[:, [0, 1, 6, 7]], rho0.expand(2, 4, 3, 3))
    torch.testing.assert_close(
        act.rho_inv(out[:, [0, 1, 6, 7]]),
        torch.zeros(2, 4, 3, 3, dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    torch.testing.assert_close(out[:, 2:6], z[:, :, ::2, ::2])


def test_standard_block_pads_with_zero():
    shortcut = BasicBlock(4, 8, 2, activation("relu")).shortcut
    assert isinstance(shortcut, PadShortcut) and shortcut.fill == 0.0
    out = shortcut(torch.ones(1, 4, 4, 4))
    assert out[:, [0, 1, 6, 7]].abs().sum() == 0 and (out[:, 2:6] == 1).all()


def test_zero_init_residual_model_blocks_are_their_shortcuts():
    act = activation("softplus", beta=5.0)
    model = resnet20(
        variant="bregman", activation=act, zero_init_residual=True, reuse_preactivation=False
    ).double()
    seen = []

    def check(block, inputs, output):
        seen.append(block)
        torch.testing.assert_close(output, block.shortcut(inputs[0]), rtol=1e-9, atol=1e-12)

    handles = [m.register_forward_hook(check) for m in model.modules() if isinstance(m, BasicBlock)]
    model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    for h in handles:
        h.remove()
    assert len(seen) == 9


def test_identity_activation_makes_bregman_and_standard_blocks_agree():
    """With rho = rho_inv = id both blocks compute S(z) + residual(z)."""
    torch.manual_seed(0)
    standard = BasicBlock(4, 8, 2, activation("identity"))
    bregman = BregmanBasicBlock(4, 8, 2, activation("identity"))
    bregman.load_state_dict(standard.state_dict())
    z = torch.randn(3, 4, 8, 8)
    torch.testing.assert_close(bregman(z), standard(z))


class RecordingSoftplus(Softplus):
    """Softplus that records every tensor reaching ``rho_inv`` (before any clamping)."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__(beta)
        self.seen: list[torch.Tensor] = []

    def rho_inv(self, y: torch.Tensor) -> torch.Tensor:
        self.seen.append(y.detach())
        return super().rho_inv(y)


@pytest.mark.parametrize(
    ("factory", "kwargs", "reuse", "calls"),
    [
        (resnet20, {}, False, 9),
        (resnet20, {}, True, 0),
        (resnet18, {}, False, 8),
        (resnet18, {}, True, 0),
        (resnet18, {"shortcut": "conv"}, False, 8),
        (resnet18, {"shortcut": "conv"}, True, 3),
        (resnet18, {"shortcut": "conv", "stem": "cifar"}, True, 3),
    ],
)
def test_every_rho_inv_input_is_inside_the_domain(factory, kwargs, reuse, calls):
    act = RecordingSoftplus(beta=2.0)
    model = factory(variant="bregman", activation=act, reuse_preactivation=reuse, **kwargs)
    with torch.no_grad():
        model(5 * torch.randn(2, 3, 32, 32))
    # reusing the pre-activation leaves rho_inv only behind ResNet18's 3 simplex shortcuts
    assert len(act.seen) == calls
    for y in act.seen:
        assert (y > act.lo).all() and (y < act.hi).all()
        assert torch.equal(act.clamp_to_domain(y), y)  # nothing was clamped


@pytest.mark.parametrize("factory", [resnet20, resnet18, resnet50])
@pytest.mark.parametrize("variant", ["standard", "bregman"])
def test_reusing_preactivations_computes_the_same_network(factory, variant):
    # resnet18 / resnet50: the ImageNet stem max-pools the pre-activation on one path and
    # rho of it on the other; bottleneck blocks for resnet50
    torch.manual_seed(0)
    act = activation("softplus", beta=4.0)
    model = factory(variant=variant, activation=act).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    out = model(x)
    model.reuse_preactivation = False
    # 16 bottleneck blocks amplify the round-off of rho_inv(rho(a)) a little more
    tol = 1e-7 if factory is resnet50 else 1e-9
    torch.testing.assert_close(model(x), out, rtol=tol, atol=tol / 10)


def test_block_forward_dual_agrees_with_forward():
    act = activation("atan")
    block = BregmanBasicBlock(4, 8, 2, act).double()
    u = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    z_next, pre = block.forward_dual(act.rho(u), u)
    torch.testing.assert_close(z_next, block(act.rho(u)))
    torch.testing.assert_close(act.rho(pre), z_next)


def test_simplex_shortcut_is_a_convex_combination():
    shortcut = SimplexConvShortcut(6, 12, 2)
    m = shortcut.mixing
    torch.testing.assert_close(m.sum(1), torch.ones(12))
    z = torch.rand(2, 6, 8, 8)
    out = shortcut(z)
    expected = torch.einsum("oc,nchw->nohw", m, z[:, :, ::2, ::2])
    torch.testing.assert_close(out, expected)
    lo, hi = z[:, :, ::2, ::2].amin(1, keepdim=True), z[:, :, ::2, ::2].amax(1, keepdim=True)
    assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()


def test_bregman_block_gradcheck():
    torch.manual_seed(0)
    block = BregmanBasicBlock(2, 4, 2, activation("tanh")).double().eval()
    z = torch.tanh(torch.randn(1, 2, 4, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(block, (z,))


def test_coupling_runs_in_float32_under_autocast():
    model = resnet20(variant="bregman", activation="sigmoid")
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert torch.isfinite(out).all()
    block = model.stages[0][0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(torch.sigmoid(torch.randn(1, 16, 8, 8))).dtype == torch.float32


@pytest.mark.parametrize("variant", ["standard", "bregman"])
def test_few_steps_reduce_training_loss(variant):
    torch.manual_seed(0)
    model = ResNet(None, (1, 1, 1), widths=(8, 16, 32), variant=variant, activation="softplus")
    # a learnable synthetic task: each image is its class's fixed template plus noise
    y = torch.randint(0, 10, (64,))
    x = torch.randn(10, 3, 16, 16)[y] + torch.randn(64, 3, 16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("variant", ["standard", "bregman"])
def test_torch_save_round_trip(variant, tmp_path):
    model = resnet18(variant=variant, activation=activation("softplus", beta=3.0)).eval()
    x = torch.randn(2, 3, 32, 32)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = resnet18(variant=variant, activation=activation("softplus", beta=3.0)).eval()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        torch.testing.assert_close(fresh(x), model(x))
    assert loaded.act.beta == 3.0


def test_activation_params_reach_the_registry():
    model = resnet20(activation="softplus", activation_params={"beta": 7.0})
    assert model.act.beta == 7.0
    fill = model.stages[1][0].shortcut.fill
    assert math.isclose(fill, math.log(2) / 7.0, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "euclid"}, "unknown variant 'euclid'"),
        ({"shortcut": "proj"}, "unknown shortcut 'proj'"),
        ({"variant": "bregman", "activation": "relu"}, "needs an invertible activation"),
        ({"layers": (1, 1)}, "one per stage width"),
        ({"layers": (1, 0, 1)}, "must be positive"),
        ({"num_classes": 0}, "must be positive"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"stem": "tiny"}, r"unknown stem 'tiny'; valid stems: \['cifar', 'imagenet'\]"),
        ({"init": "xavier"}, r"unknown init 'xavier'; valid inits: \['fan_in', 'fan_out'\]"),
        ({"block": "wide"}, r"unknown block 'wide'; valid blocks: \['basic', 'bottleneck'\]"),
        (
            {"activation": activation("tanh"), "activation_params": {"beta": 2}},
            "activation_params apply to an activation name",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = {"block": None, "layers": (1, 1, 1), **kwargs}
    with pytest.raises(ValueError, match=message):
        ResNet(**args)


def test_pad_shortcut_cannot_shrink():
    with pytest.raises(ValueError, match="cannot shrink"):
        PadShortcut(8, 4, 1)


def test_standard_variant_accepts_relu():
    model = resnet20(variant="standard", activation="relu")
    assert model.act.name == "relu"
    assert isinstance(model.stages[0][0], BasicBlock)
    assert not isinstance(model.stages[0][0], BregmanBasicBlock)


def test_reusing_preactivations_clips_for_sin_like_rho_inv_of_rho():
    # sin clips its input at +-pi/2: rho_inv(rho(a)) = clip(a), not a
    torch.manual_seed(0)
    model = resnet20(variant="bregman", activation="sin").double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        model.reuse_preactivation = False
        torch.testing.assert_close(model(x), out, rtol=1e-7, atol=1e-7)


def test_the_per_block_path_differs_only_where_rho_saturates():
    # float64 softplus, beta = 1000: rho(a) < finfo.tiny for a < -0.702, where rho_inv clamps
    act = activation("softplus", beta=1000.0)
    block = BregmanBasicBlock(2, 2, 1, act).double()
    u = torch.tensor([-2.0, -0.75, -0.5, 0.0, 0.3], dtype=torch.float64).reshape(1, 1, 1, 5)
    u = u.expand(1, 2, 5, 5)
    z = act.rho(u)
    reused = block.dual_shortcut(z, u)
    per_block = block.dual_shortcut(z)
    assert torch.equal(reused, u)
    saturated = u < -0.702
    torch.testing.assert_close(per_block[~saturated], u[~saturated])
    assert torch.allclose(
        per_block[saturated], torch.tensor(-0.7015, dtype=torch.float64), atol=1e-4
    )


# -- defaults that follow the paper and the authors' code -----------------------------------------
@pytest.mark.parametrize("factory", [resnet20, resnet18])
def test_default_activation_depends_on_the_variant(factory):
    # eq. 17: the standard baseline is the ReLU ResNet, whatever the Bregman default is
    with torch.device("meta"):
        standard = factory(variant="standard")
        bregman = factory(variant="bregman")
        sharper = factory(variant="bregman", activation_params={"beta": 7.0})
    assert standard.act.name == "relu"
    assert bregman.act.name == "softplus" and bregman.act.beta == BREGMANET_SOFTPLUS_BETA == 1000
    assert sharper.act.name == "softplus" and sharper.act.beta == 7.0
    with pytest.raises(ValueError, match="needs an invertible activation"):
        factory(variant="bregman", activation="relu")


def _std_ratio(weight: torch.Tensor, fan: int) -> float:
    """Empirical std of ``weight`` over the Kaiming std ``sqrt(2 / fan)``."""
    return weight.std().item() / math.sqrt(2.0 / fan)


def test_cifar_resnets_use_kaiming_fan_in_on_convolutions_and_the_classifier():
    torch.manual_seed(0)
    model = resnet20(variant="standard", num_classes=1000)  # 64000 classifier weights
    assert model.init == "fan_in"
    conv = model.stages[2][1].conv1  # 64 -> 64, 3x3: fan_in = fan_out = 576
    stem = model.conv1  # 3 -> 16: fan_in 27, fan_out 144
    assert abs(_std_ratio(conv.weight, 64 * 9) - 1) < 0.03
    assert abs(_std_ratio(stem.weight, 3 * 9) - 1) < 0.15
    assert _std_ratio(stem.weight, 16 * 9) > 1.8  # clearly not fan_out
    fc = model.fc  # fan_in 64 (the default nn.Linear would have std 1 / sqrt(3 * 64))
    assert abs(_std_ratio(fc.weight, 64) - 1) < 0.03
    assert fc.bias.abs().max() <= 1 / math.sqrt(64)  # nn.Linear's own bias draw is kept
    down = model.stages[1][0].conv1  # 16 -> 32, 3x3: fan_in 144, fan_out 288
    assert abs(_std_ratio(down.weight, 16 * 9) - 1) < 0.05


def test_imagenet_family_keeps_torchvision_fan_out_initialisation():
    torch.manual_seed(0)
    model = resnet18(variant="standard", num_classes=10)
    assert model.init == "fan_out"
    conv = model.stages[1][0].conv1  # 64 -> 128, 3x3: fan_out 1152, fan_in 576
    assert abs(_std_ratio(conv.weight, 128 * 9) - 1) < 0.03
    bound = 1 / math.sqrt(512)  # nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert model.fc.weight.abs().max() <= bound


def test_stems():
    imagenet, cifar = resnet18(num_classes=10), resnet18(num_classes=10, stem="cifar")
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, nn.Identity)
    x = torch.rand(2, 3, 32, 32)
    shapes = []
    for model in (imagenet, cifar):
        model.reuse_preactivation = False  # blocks are called (and hooked) one by one
        hook = model.stages[-1].register_forward_hook(lambda m, i, o: shapes.append(o.shape))
        model.eval()(x)
        hook.remove()
    assert shapes == [(2, 512, 1, 1), (2, 512, 4, 4)]
    assert resnet20().stem == "cifar" and "stem='imagenet'" in imagenet.extra_repr()


def test_bottleneck_blocks():
    model = resnet50(variant="bregman", num_classes=10)
    assert model.block is BregmanBottleneck and model.fc.in_features == 2048
    assert isinstance(resnet50(variant="standard").stages[0][0], Bottleneck)
    assert ResNet("bottleneck", (1, 1), widths=(4, 8), variant="standard").fc.in_features == 32
    # zero residual: a non-downsampling Bregman bottleneck is the identity on the range of rho
    act = activation("softplus", beta=1000.0)
    block = BregmanBottleneck(16, 4, 1, act).double()
    with torch.no_grad():
        block.bn3.weight.zero_()
        block.bn3.bias.zero_()
    z = act.rho(torch.randn(2, 16, 5, 5, dtype=torch.float64))
    torch.testing.assert_close(block.eval()(z), z, rtol=1e-9, atol=1e-12)
    # a downsampling one pads with rho(0): rho_inv of the new channels is 0
    down = BregmanBottleneck(16, 8, 2, act).double().eval()
    with torch.no_grad():
        down.bn3.weight.zero_()
        down.bn3.bias.zero_()
    out = down(z)
    assert out.shape == (2, 32, 3, 3)
    torch.testing.assert_close(out[:, 8:24], z[:, :, ::2, ::2])
    torch.testing.assert_close(
        act.rho_inv(out[:, :8]), torch.zeros(2, 8, 3, 3, dtype=torch.float64)
    )


def test_zero_init_residual_zeroes_the_last_bn_of_bottlenecks():
    model = resnet50(variant="bregman", num_classes=10, zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(b.bn3.weight.abs().sum() == 0 and b.bn2.weight.min() == 1 for b in blocks)
