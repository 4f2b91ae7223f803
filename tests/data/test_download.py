"""Downloads without a network: the URL opener is replaced by local bytes, so the checksum,
mirror, atomic-rename and extraction paths run for real."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch

from bregnn.data import dataset_spec, download_dataset, load_dataset
from bregnn.data import download as download_module
from bregnn.data import registry as registry_module
from bregnn.data.download import download_file, extract_tar, md5sum


class FakeNet:
    """Serves ``payloads[url]``; URLs not in it are unreachable. Records every request."""

    def __init__(self, payloads: dict[str, bytes]) -> None:
        self.payloads, self.requests = payloads, []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.requests.append(url)
        if url not in self.payloads:
            raise urllib.error.URLError(f"no route to {url}")
        return io.BytesIO(self.payloads[url])


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".")]


def test_download_file_verifies_md5(tmp_path, monkeypatch):
    payload = b"official bytes" * 1000
    net = FakeNet({"http://b/f": payload})
    monkeypatch.setattr(download_module, "_open_url", net)
    dest = tmp_path / "sub" / "f.gz"
    out = download_file(["http://a/f", "http://b/f"], dest, hashlib.md5(payload).hexdigest())
    assert out == dest and dest.read_bytes() == payload
    assert md5sum(dest) == hashlib.md5(payload).hexdigest()
    assert net.requests == ["http://a/f", "http://b/f"]  # first mirror unreachable
    assert no_leftovers(tmp_path)


def test_download_file_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "_open_url", FakeNet({"http://a/f": b"tampered"}))
    dest = tmp_path / "f.gz"
    with pytest.raises(ValueError, match=r"checksum mismatch for http://a/f.*expected 0{32}"):
        download_file("http://a/f", dest, "0" * 32)
    assert not dest.exists() and no_leftovers(tmp_path)


def test_download_file_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "_open_url", FakeNet({}))
    with pytest.raises(OSError, match=r"could not download f.gz; tried http://a/f: .*http://b/f"):
        download_file(("http://a/f", "http://b/f"), tmp_path / "f.gz", None)
    assert list(tmp_path.iterdir()) == []


def test_mnist_download_checksum_mismatch(tmp_path, monkeypatch, make_mnist_gz_files):
    """The official MD5s are checked: local (non-official) bytes are refused, nothing kept."""
    files = make_mnist_gz_files(n=5)
    spec = dataset_spec("mnist")
    net = FakeNet({url: files[r.filename] for r in spec.remote for url in r.urls})
    monkeypatch.setattr(download_module, "_open_url", net)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_dataset("mnist", "train", data_dir=tmp_path, download=True)
    assert not list((tmp_path / "MNIST" / "raw").glob("*ubyte*"))
    assert no_leftovers(tmp_path)


def _with_md5s(monkeypatch, name: str, payloads: dict[str, bytes]) -> registry_module.DatasetSpec:
    """Register ``name`` with MD5s of the local payloads (stand-ins for the official files)."""
    spec = dataset_spec(name)
    remote = tuple(
        dataclasses.replace(r, md5=hashlib.md5(payloads[r.filename]).hexdigest())
        for r in spec.remote
    )
    patched = dataclasses.replace(spec, remote=remote)
    datasets = registry_module.Registry("dataset", normalize=registry_module.dataset_key)
    for key, entry in registry_module.DATASETS.items():
        datasets.register(key, patched if key == spec.name else entry)
    monkeypatch.setattr(registry_module, "DATASETS", datasets)
    return patched


def test_mnist_download_then_load(tmp_path, monkeypatch, make_mnist_gz_files):
    files = make_mnist_gz_files(n=5)
    spec = _with_md5s(monkeypatch, "fashion-mnist", files)
    net = FakeNet({r.urls[0]: files[r.filename] for r in spec.remote})
    monkeypatch.setattr(download_module, "_open_url", net)
    x, y = load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=True)
    assert x.shape == (5, 1, 28, 28) and len(y) == 5
    expected = torch.frombuffer(
        bytearray(gzip.decompress(files["t10k-images-idx3-ubyte.gz"])[16:]), dtype=torch.uint8
    )
    assert torch.equal(x.flatten(), expected)
    assert len(net.requests) == 4
    load_dataset("fashion-mnist", "train", data_dir=tmp_path, download=True)
    assert len(net.requests) == 4  # already present: not fetched again


def test_cifar_download_extract_load(tmp_path, monkeypatch, make_cifar_tar):
    archive, batches = make_cifar_tar()
    spec = _with_md5s(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive})
    monkeypatch.setattr(download_module, "_open_url", FakeNet({spec.remote[0].urls[0]: archive}))
    x, y = load_dataset("cifar10", "train", data_dir=tmp_path, download=True)
    assert x.shape == (5 * 2, 3, 32, 32)
    assert torch.equal(y, torch.tensor([label for b in batches[:5] for label in b["labels"]]))
    assert (tmp_path / "cifar-10-python.tar.gz").is_file()
    assert no_leftovers(tmp_path)
    assert download_dataset("cifar10", tmp_path) == tmp_path / "cifar-10-batches-py"


def test_cifar_download_checksum_mismatch(tmp_path, monkeypatch, make_cifar_tar):
    archive, _ = make_cifar_tar()
    url = dataset_spec("cifar10").remote[0].urls[0]
    monkeypatch.setattr(download_module, "_open_url", FakeNet({url: archive}))
    with pytest.raises(ValueError, match=r"checksum mismatch.*c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_extract_tar_refuses_escaping_members(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(buffer.getvalue())
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="corrupt tar archive"):
        extract_tar(archive, dest)
    assert not (tmp_path / "escaped.txt").exists() and list(dest.iterdir()) == []
    archive.write_bytes(b"not a tar file")
    with pytest.raises(ValueError, match=str(archive)):
        extract_tar(archive, dest)
