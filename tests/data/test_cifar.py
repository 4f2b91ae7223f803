"""CIFAR readers on small batches written here in the official format, the restricted
unpickler, and the error paths."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bregnn.data import load_dataset, read_cifar_batch
from bregnn.data.cifar import CIFAR_FILES, load_cifar_split


def official_style_pickle(batch: dict, protocol: int = 2, py2_names: bool = True) -> bytes:
    """A pickle like the official Python 2 files: bytes keys, protocol 2, and (optionally)
    the pre-NumPy-2 module name ``numpy.core.multiarray`` that those files refer to."""
    raw = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=protocol)
    if py2_names:
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return raw


def make_batch(n: int, num_classes: int, seed: int, label_key: str) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": "synthetic batch",
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, num_classes, size=n).tolist(),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_cifar(root: Path, dataset: str, protocol: int = 2, n: int = 4) -> dict[str, list]:
    folder = root / ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    num_classes, key = (10, "labels") if dataset == "cifar10" else (100, "fine_labels")
    written: dict[str, list] = {}
    for split, names in CIFAR_FILES[dataset].items():
        for i, name in enumerate(names):
            batch = make_batch(n, num_classes, seed=hash((split, i)) % 1000, label_key=key)
            (folder / name).write_bytes(official_style_pickle(batch, protocol))
            written.setdefault(split, []).append(batch)
    return written


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_round_trip_and_pixel_layout(tmp_path, protocol):
    written = write_cifar(tmp_path, "cifar10", protocol)
    x, y = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    rows = np.concatenate([b["data"] for b in written["train"]])
    labels = np.concatenate([b["labels"] for b in written["train"]])
    # row layout: 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    n, c, h, w = 13, 2, 5, 30
    assert x[n, c, h, w].item() == rows[n, c * 1024 + h * 32 + w]
    assert torch.equal(x.reshape(20, -1), torch.from_numpy(rows))
    assert torch.equal(y, torch.from_numpy(labels))
    xt, yt = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert xt.shape == (4, 3, 32, 32) and len(yt) == 4


def test_cifar100_fine_labels(tmp_path):
    written = write_cifar(tmp_path, "cifar100", protocol=5, n=6)
    x, y = load_dataset("cifar100", "test", data_dir=tmp_path)
    assert x.shape == (6, 3, 32, 32)
    assert y.tolist() == written["test"][0]["fine_labels"]
    assert int(y.max()) < 100


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    flag = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Exploit(flag), "labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"not allowed") as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)
    assert not flag.exists()


def test_corrupt_batches(tmp_path):
    path = tmp_path / "b"
    batch = make_batch(3, 10, 0, "labels")
    path.write_bytes(official_style_pickle(batch)[:-40])
    with pytest.raises(ValueError, match="truncated") as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match=str(path)):
        read_cifar_batch(path)
    path.write_bytes(official_style_pickle(batch))
    with pytest.raises(ValueError, match="no 'fine_labels' entry"):
        read_cifar_batch(path, "fine_labels")
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="expected a pickled dict"):
        read_cifar_batch(path)
    short = dict(batch, data=batch["data"][:, :3000])
    path.write_bytes(official_style_pickle(short))
    with pytest.raises(ValueError, match="3000 values, expected 3072"):
        read_cifar_batch(path)
    path.write_bytes(official_style_pickle(dict(batch, labels=[1, 2])))
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        read_cifar_batch(path)


def test_missing_files_and_bad_labels(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_1") as info:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert "download=True" in str(info.value)
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3") as info:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert "data_batch_2" not in str(info.value)
    folder = tmp_path / "cifar-10-batches-py"
    batch = make_batch(3, 10, 0, "labels")
    batch["labels"][1] = 10
    (folder / "test_batch").write_bytes(official_style_pickle(batch))
    with pytest.raises(ValueError, match=r"labels span \d+\.\.10, expected 0\.\.9"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown CIFAR dataset"):
        load_cifar_split(folder, "cifar1000", "test", num_classes=10)
    with pytest.raises(ValueError, match="unknown split"):
        load_cifar_split(folder, "cifar100", "valid", num_classes=100)
