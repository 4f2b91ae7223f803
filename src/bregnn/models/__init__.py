"""Network architectures built from :mod:`bregnn.nn` layers."""

from bregnn.models.cnn import ConvNet
from bregnn.models.mlp import MLP, LayerDiagnostics
from bregnn.models.resnet import (
    BLOCKS,
    RESNETS,
    BasicBlock,
    BregmanBasicBlock,
    ResNet,
    resnet18,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
    resnet1202,
)

__all__ = [
    "BLOCKS",
    "MLP",
    "RESNETS",
    "BasicBlock",
    "BregmanBasicBlock",
    "ConvNet",
    "LayerDiagnostics",
    "ResNet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
]
