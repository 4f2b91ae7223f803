"""Datasets, input scaling and batched augmentation.

Image datasets (MNIST, Fashion-MNIST, CIFAR-10/100) load through one entry point,
:func:`load_dataset`, as ``uint8 (N, C, H, W)`` images and ``int64`` labels; models take
pixel space ``[0, 1]`` (:func:`to_unit`) and scale it themselves (:class:`InputScaling`).
"""

from bregnn.data.augment import (
    CropFlip,
    RandomAffine,
    affine_transform,
    crop_flip,
    random_affine,
    random_crop_flip,
)
from bregnn.data.cifar import read_cifar_batch
from bregnn.data.idx import read_idx
from bregnn.data.input_scaling import InputScaling, to_activation_range, to_unit
from bregnn.data.registry import (
    DATASETS,
    DatasetSpec,
    available_datasets,
    dataset_spec,
    download_dataset,
    load_dataset,
)
from bregnn.data.scaling import RangeScaler, target_interval
from bregnn.data.spirals import split, two_spirals

__all__ = [
    "DATASETS",
    "CropFlip",
    "DatasetSpec",
    "InputScaling",
    "RandomAffine",
    "RangeScaler",
    "affine_transform",
    "available_datasets",
    "crop_flip",
    "dataset_spec",
    "download_dataset",
    "load_dataset",
    "random_affine",
    "random_crop_flip",
    "read_cifar_batch",
    "read_idx",
    "split",
    "target_interval",
    "to_activation_range",
    "to_unit",
    "two_spirals",
]
