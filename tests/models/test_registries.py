"""The activation, model and dataset registries: one Registry each, one error text."""

from __future__ import annotations

import pytest

from bregnn.activations import ACTIVATIONS, Softplus, activation, available_activations
from bregnn.data import DATASETS, available_datasets, dataset_spec
from bregnn.models import BLOCKS, RESNETS, BasicBlock, BregmanBasicBlock, ResNet, resnet20
from bregnn.registry import Registry


def test_every_concept_is_one_registry() -> None:
    for registry in (ACTIVATIONS, BLOCKS, RESNETS, DATASETS):
        assert isinstance(registry, Registry)


def test_activation_registry_normalises_names_and_lists_the_valid_ones() -> None:
    assert ACTIVATIONS.get("Scaled-Tanh") is ACTIVATIONS["scaled_tanh"]
    assert "soft-threshold" in ACTIVATIONS and len(ACTIVATIONS) == len(available_activations())
    assert isinstance(activation("SOFTPLUS", beta=2.0), Softplus)
    with pytest.raises(
        ValueError, match=r"unknown activation 'swish'; valid activations: .*'tanh'"
    ):
        activation("swish")


def test_model_registries() -> None:
    assert RESNETS.names()[:2] == ["resnet20", "resnet32"] and RESNETS["resnet20"] is resnet20
    assert BLOCKS.get("standard") is BasicBlock and BLOCKS.get("Bregman") is BregmanBasicBlock
    assert ResNet(None, (1, 1, 1), variant="Bregman").block is BregmanBasicBlock
    with pytest.raises(ValueError, match=r"unknown resnet 'resnet19'; valid resnets: .*'resnet18'"):
        RESNETS.get("resnet19")
    with pytest.raises(ValueError, match=r"unknown variant 'euclid'; valid variants: \['standard'"):
        ResNet(None, (1, 1, 1), variant="euclid")


def test_dataset_registry_ignores_case_and_separators() -> None:
    assert available_datasets() == ["cifar10", "cifar100", "fashion-mnist", "mnist"]
    for alias in ("FashionMNIST", "fashion_mnist", "Fashion-MNIST"):
        assert dataset_spec(alias) is DATASETS["fashion-mnist"]
    assert dataset_spec("CIFAR-10").name == "cifar10"
    with pytest.raises(ValueError, match=r"unknown dataset 'kmnist'; valid datasets: \['cifar10'"):
        dataset_spec("kmnist")
    with pytest.raises(ValueError, match="must be a string"):
        dataset_spec(10)
