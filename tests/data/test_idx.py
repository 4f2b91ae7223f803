"""IDX readers: round trips of files written here (gzip and plain), every error path, and
the real Fashion-MNIST / MNIST files when they are present."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bregnn.data import dataset_spec, load_dataset, read_idx
from bregnn.data.idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    idx_split_files,
    load_idx_split,
    read_idx_bytes,
)

# the real files, when present: $BREGNN_DATA (set by the Makefile), else ../shared/data
SHARED = Path(os.environ.get("BREGNN_DATA", Path(__file__).parents[3] / "shared" / "data"))

_CODES = {("u", 1): 0x08, ("i", 4): 0x0C, ("f", 8): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as an IDX file (header written with struct, data big-endian)."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    header = bytes([0, 0, _CODES[kind, size], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(f">{kind}{size}").tobytes()


def write_split(
    folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in zip(idx_split_files(split), (images, labels)):
        raw = idx_bytes(array)
        path = folder / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(raw) if gz else raw)
        paths.append(path)
    return paths


def make_data(n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n, dtype=np.uint8),
    )


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST")])
@pytest.mark.parametrize("split", ["train", "test"])
def test_round_trip_through_load_dataset(tmp_path, gz, name, folder, split):
    images, labels = make_data()
    write_split(tmp_path / folder / "raw", split, images, labels, gz)
    x, y = load_dataset(name, split, data_dir=tmp_path)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (7, 1, 28, 28)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float64])
def test_read_idx_generic_types(tmp_path, dtype):
    offset = 0 if dtype == np.uint8 else -7.5 if dtype == np.float64 else -7
    array = (np.arange(24).reshape(2, 3, 4) * 3 + offset).astype(dtype)
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(array))
    out = read_idx(path)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_plain_file_is_preferred_over_gz(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_split(folder, "test", *make_data(seed=1), gz=True)
    images, labels = make_data(n=3, seed=2)
    write_split(folder, "test", images, labels, gz=False)
    x, _ = load_dataset("mnist", "test", data_dir=tmp_path)
    assert torch.equal(x[:, 0], torch.from_numpy(images))


def test_missing_files_message_names_paths_and_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "train-labels-idx1-ubyte" in message
    assert "download=True" in message


def test_one_missing_file_is_named(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    paths = write_split(folder, "train", *make_data(), gz=True)
    paths[1].unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte") as info:
        load_dataset("mnist", "train", data_dir=tmp_path)
    assert "train-images" not in str(info.value).split("Put")[0]
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_idx_split(folder, "train")


def test_corrupt_magic(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    paths = write_split(folder, "train", *make_data(), gz=False)
    raw = bytearray(paths[0].read_bytes())
    raw[2:4] = bytes([0x08, 0x01])  # label magic in the image file
    paths[0].write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad magic number 2049.*expected 2051") as info:
        load_dataset("mnist", "train", data_dir=tmp_path)
    assert str(paths[0]) in str(info.value)
    with pytest.raises(ValueError, match="type code"):
        read_idx_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 0))


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_data(tmp_path, gz):
    images, labels = make_data()
    folder = tmp_path / "FashionMNIST" / "raw"
    write_split(folder, "test", images, labels, gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    raw = path.read_bytes()[:-5]
    if gz:
        path.unlink()
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"truncated.*5488 data bytes but only 5483") as info:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(idx_bytes(make_data()[0]))[:-20])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as info:
        read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_trailing_bytes_and_short_header():
    raw = idx_bytes(make_data()[1])
    with pytest.raises(ValueError, match="3 unexpected trailing bytes"):
        read_idx_bytes(raw + b"abc", "f", IDX_LABELS_MAGIC)
    with pytest.raises(ValueError, match="too short"):
        read_idx_bytes(b"\x00\x00", "f")
    with pytest.raises(ValueError, match="declares 3 dimensions"):
        read_idx_bytes(raw[:4].replace(b"\x01", b"\x03") + b"\x00" * 4, "f")


def test_inconsistent_files(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    images, labels = make_data(n=7)
    write_split(folder, "train", images, labels[:6], gz=True)
    with pytest.raises(ValueError, match=r"6 labels but .* 7 images"):
        load_dataset("mnist", "train", data_dir=tmp_path)
    write_split(folder, "train", images[:, :20, :20].copy(), labels, gz=True)
    with pytest.raises(ValueError, match="images are 20x20, expected 28x28"):
        load_dataset("mnist", "train", data_dir=tmp_path)
    bad = labels.copy()
    bad[0] = 10
    write_split(folder, "train", images, bad, gz=True)
    with pytest.raises(ValueError, match=r"label 10 out of range 0\.\.9"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_bad_name_and_split(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'kmnist'.*cifar10.*fashion-mnist"):
        load_dataset("kmnist", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown split 'val'.*'train', 'test'"):
        load_dataset("mnist", "val", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        idx_split_files("validation")
    assert dataset_spec("Fashion_MNIST").name == "fashion-mnist"
    assert dataset_spec("FashionMNIST").name == "fashion-mnist"
    assert dataset_spec("CIFAR-100").name == "cifar100"
    with pytest.raises(ValueError, match="must be a string"):
        dataset_spec(10)


def _shared(folder: str) -> Path:
    path = SHARED / folder / "raw"
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{path} not present")
    return path


def test_real_fashion_mnist():
    _shared("FashionMNIST")
    spec = dataset_spec("fashion-mnist")
    x, y = load_dataset("fashion-mnist", "train", data_dir=SHARED)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 9
    assert torch.equal(y.bincount(), torch.full((10,), 6000))  # balanced, all present
    unit = x.double() / 255
    assert unit.mean().item() == pytest.approx(spec.mean[0], abs=5e-4)
    assert unit.std().item() == pytest.approx(spec.std[0], abs=5e-4)
    xt, yt = load_dataset("fashion-mnist", "test", data_dir=SHARED)
    assert xt.shape == (10000, 1, 28, 28) and set(yt.unique().tolist()) == set(range(10))


def test_real_mnist_subset():
    _shared("MNIST")
    x, y = load_dataset("mnist", "test", data_dir=SHARED)
    # the shared MNIST is an 8k/2k subset, not the official 60k/10k split
    assert x.shape[1:] == (1, 28, 28) and len(x) == len(y) > 0
    assert set(y.unique().tolist()) == set(range(10))
