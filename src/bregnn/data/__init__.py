"""Datasets, input scaling and batched augmentation.

Image datasets (MNIST, Fashion-MNIST, CIFAR-10/100) load through one entry point,
:func:`load_dataset`, as ``uint8 (N, C, H, W)`` images and ``int64`` labels; models take
pixel space ``[0, 1]`` (:func:`to_unit`) and scale it themselves (:class:`InputScaling`),
so that augmentation (:mod:`bregnn.data.augment`) and attacks (:mod:`bregnn.attacks`) work
in pixel space. A CIFAR-style run::

    x, y = load_dataset("cifar10", "train", data_dir)          # uint8 (50000, 3, 32, 32)
    spec = dataset_spec("cifar10")
    model = nn.Sequential(InputScaling.normalize(spec.mean, spec.std), net)
    fit(model, (to_unit(x), y), config, train_transform=random_crop_flip)

and for a Bregman network ``InputScaling.for_activation(act)`` maps ``[0, 1]`` into the
activation's range instead.
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
    load_vectors,
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
    "load_vectors",
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
