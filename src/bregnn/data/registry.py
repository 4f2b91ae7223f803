"""The image-dataset registry and its one entry point, :func:`load_dataset`.

=================  ============================================  =========  ==============
name               files under ``data_dir``                      shape      official sizes
=================  ============================================  =========  ==============
``mnist``          ``MNIST/raw/{train,t10k}-*-ubyte[.gz]``       1 x 28x28  60000 / 10000
``fashion-mnist``  ``FashionMNIST/raw/{train,t10k}-*-ubyte[.gz]``  1 x 28x28  60000 / 10000
``cifar10``        ``cifar-10-batches-py/{data_batch_1..5,...}``  3 x 32x32  50000 / 10000
``cifar100``       ``cifar-100-python/{train,test}``             3 x 32x32  50000 / 10000
=================  ============================================  =========  ==============

The layout is torchvision's, so an existing torchvision data folder works as ``data_dir``.
The number of images is not checked against the official sizes (a subset in the same format
loads too). Checksums are those of the official archives and are verified on download only:
recompressed copies of the same data (e.g. a distribution's package) load fine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bregnn.data.cifar import CIFAR_FILES, load_cifar_split
from bregnn.data.download import download_file, extract_tar
from bregnn.data.idx import idx_split_files, load_idx_split, resolve_idx_file
from bregnn.registry import Registry
from bregnn.utils import default_data_dir

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetSpec",
    "RemoteFile",
    "available_datasets",
    "dataset_key",
    "dataset_spec",
    "download_dataset",
    "load_dataset",
]

SPLITS = ("train", "test")

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class RemoteFile:
    """An official file: its name, the URLs to try in order, and its MD5."""

    filename: str
    urls: tuple[str, ...]
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one dataset.

    Attributes:
        name: registry key.
        title: human-readable name.
        folder: where the readable files live, relative to ``data_dir``.
        remote: the official downloads (saved into ``folder`` for IDX, into ``data_dir`` and
            extracted for CIFAR archives).
        archive: whether ``remote`` holds a tar archive to extract into ``data_dir``.
        shape: ``(C, H, W)`` of one image.
        classes: class names, index = label.
        mean, std: per-channel statistics of the official training set in pixel space [0, 1].
        sizes: official number of images per split.
        reader: ``reader(spec, folder, split) -> (images uint8, labels int64)``.
    """

    name: str
    title: str
    folder: str
    remote: tuple[RemoteFile, ...]
    archive: bool
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: dict[str, int]
    reader: Callable[[DatasetSpec, Path, str], tuple[Tensor, Tensor]]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def missing_files(self, data_dir: Path, split: str) -> list[str]:
        """The files of ``split`` under ``data_dir`` that do not exist (IDX names end in
        ``[.gz]``: either the plain or the gzip file will do)."""
        folder = data_dir / self.folder
        if self.archive:
            names = CIFAR_FILES[self.name][split]
            return [str(folder / n) for n in names if not (folder / n).is_file()]
        return [
            str(folder / name) + "[.gz]"
            for name in idx_split_files(split)
            if resolve_idx_file(folder, name) is None
        ]


def _read_idx(spec: DatasetSpec, folder: Path, split: str) -> tuple[Tensor, Tensor]:
    return load_idx_split(folder, split, spec.shape, spec.num_classes)


def _read_cifar(spec: DatasetSpec, folder: Path, split: str) -> tuple[Tensor, Tensor]:
    return load_cifar_split(folder, spec.name, split, spec.num_classes)


def _idx_remote(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(f"{name}.gz", tuple(m + f"{name}.gz" for m in mirrors), md5)
        for name, md5 in md5s.items()
    )


_CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl
boy bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster
house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
woman worm""".split()


def dataset_key(name: str) -> str:
    """The look-up key of a dataset name: case, ``-``, ``_`` and spaces are ignored, so
    ``FashionMNIST``, ``fashion_mnist`` and ``CIFAR-10`` name registered datasets too."""
    return "".join(name.lower().replace("-", " ").replace("_", " ").split())


_SPECS = (
    DatasetSpec(
        name="mnist",
        title="MNIST",
        folder="MNIST/raw",
        remote=_idx_remote(
            _MNIST_MIRRORS,
            {
                "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
            },
        ),
        archive=False,
        shape=(1, 28, 28),
        classes=tuple(str(d) for d in range(10)),
        mean=(0.1307,),
        std=(0.3081,),
        sizes={"train": 60000, "test": 10000},
        reader=_read_idx,
    ),
    DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        folder="FashionMNIST/raw",
        remote=_idx_remote(
            _FASHION_MIRRORS,
            {
                "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
            },
        ),
        archive=False,
        shape=(1, 28, 28),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mean=(0.2860,),
        std=(0.3530,),
        sizes={"train": 60000, "test": 10000},
        reader=_read_idx,
    ),
    DatasetSpec(
        name="cifar10",
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        remote=(
            RemoteFile(
                "cifar-10-python.tar.gz",
                (_CIFAR_URL + "cifar-10-python.tar.gz",),
                "c58f30108f718f92721af3b95e74349a",
            ),
        ),
        archive=True,
        shape=(3, 32, 32),
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        sizes={"train": 50000, "test": 10000},
        reader=_read_cifar,
    ),
    DatasetSpec(
        name="cifar100",
        title="CIFAR-100",
        folder="cifar-100-python",
        remote=(
            RemoteFile(
                "cifar-100-python.tar.gz",
                (_CIFAR_URL + "cifar-100-python.tar.gz",),
                "eb9058c3a382ffc7106e4002c42a8d85",
            ),
        ),
        archive=True,
        shape=(3, 32, 32),
        classes=tuple(_CIFAR100_CLASSES),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        sizes={"train": 50000, "test": 10000},
        reader=_read_cifar,
    ),
)

#: The dataset specs by name, in alphabetical order (see :func:`dataset_key` for look-ups).
DATASETS: Registry[DatasetSpec] = Registry("dataset", normalize=dataset_key)
for _spec in sorted(_SPECS, key=lambda spec: spec.name):
    DATASETS.register(_spec.name, _spec)
del _spec


def available_datasets() -> list[str]:
    """Registered dataset names (sorted)."""
    return DATASETS.names()


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; case, ``-`` and ``_`` are ignored, so
    ``FashionMNIST``, ``fashion_mnist`` and ``CIFAR-10`` are accepted too (``ValueError``
    listing the valid names otherwise)."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string; got {name!r}")
    return DATASETS.get(name)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")


def download_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """Download (and for CIFAR extract) the official files of ``name`` into ``data_dir``,
    verifying each archive's MD5; files already in place are not fetched again.
    Returns the folder that :func:`load_dataset` reads."""
    spec = dataset_spec(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root / spec.folder
    for remote in spec.remote:
        if spec.archive:
            if not any(spec.missing_files(root, split) for split in SPLITS):
                continue
            archive = root / remote.filename
            if not archive.is_file():
                download_file(remote.urls, archive, remote.md5)
            extract_tar(archive, root)
        elif not (folder / remote.filename).is_file():
            download_file(remote.urls, folder / remote.filename, remote.md5)
    return folder


def load_dataset(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> tuple[Tensor, Tensor]:
    """Images ``uint8 (N, C, H, W)`` in ``[0, 255]`` and labels ``int64 (N,)`` of a dataset.

    Args:
        name: one of :func:`available_datasets` ('mnist', 'fashion-mnist', 'cifar10',
            'cifar100').
        split: 'train' or 'test'.
        data_dir: root folder (torchvision layout, see the module docstring); default
            ``$BREGNN_DATA``, else ``~/.cache/bregnn``.
        download: fetch missing files from the official URLs (needs internet).

    Raises:
        ValueError: unknown name or split, or damaged files.
        FileNotFoundError: files are missing and ``download`` is false; the message lists the
            exact paths to create and the download alternative.
    """
    spec = dataset_spec(name)
    _check_split(split)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    missing = spec.missing_files(root, split)
    if missing and download:
        download_dataset(spec.name, root)
        missing = spec.missing_files(root, split)
    if missing:
        sources = ", ".join(url for r in spec.remote for url in r.urls[:1])
        raise FileNotFoundError(
            f"{spec.title} ({split}) not found under {root}: missing "
            + ", ".join(missing)
            + f". Put the official files there ({'the extracted archive' if spec.archive else 'gzip or plain IDX'}; "
            f"data_dir is the argument, else $BREGNN_DATA, else ~/.cache/bregnn), or with internet "
            f"access call load_dataset({spec.name!r}, {split!r}, data_dir=..., download=True) "
            f"to fetch them from {sources}."
        )
    return spec.reader(spec, root / spec.folder, split)


def load_vectors(
    name: str, split: str, data_dir: str | Path | None = None, download: bool = False
) -> tuple[Tensor, Tensor]:
    """:func:`load_dataset` as flat ``float32`` rows in pixel space ``[0, 1]``, shape
    ``(N, C*H*W)``, and ``int64`` labels: the input format of MLPs and lifted networks."""
    images, labels = load_dataset(name, split, data_dir, download)
    return images.reshape(len(images), -1).to(torch.float32) / 255, labels
