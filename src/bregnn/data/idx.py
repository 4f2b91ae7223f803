r"""Readers for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or plain).

An IDX file is a 4-byte magic number, one big-endian ``uint32`` per dimension, then the data
in C order:

.. code-block:: text

    magic = 0x00 0x00 <type code> <ndim>      e.g. 0x00000803 = 2051: ubyte, 3 dimensions
    dims  = ndim x uint32 (big-endian)
    data  = prod(dims) x itemsize bytes

MNIST-style image files are ``2051`` (``N x rows x cols`` unsigned bytes) and label files
``2049`` (``N`` unsigned bytes). The readers check the magic number, the number of
dimensions, and that the byte count after the header is exactly what the header promises;
a damaged file raises :class:`ValueError` naming the file and the defect.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "idx_split_files",
    "load_idx_split",
    "read_idx",
    "read_idx_bytes",
    "resolve_idx_file",
]

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_idx_bytes(raw: bytes, source: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Parse the uncompressed bytes of an IDX file into an array of shape ``dims``.

    Args:
        raw: the whole file content (after gunzip).
        source: the name used in error messages (normally the path).
        magic: the expected magic number (e.g. :data:`IDX_IMAGES_MAGIC`); ``None`` accepts any
            valid type code and dimension count.

    Raises:
        ValueError: bad magic number, unknown type code, or a byte count that does not match
            the header (truncated file or trailing bytes).
    """
    if len(raw) < 4:
        raise ValueError(f"{source}: only {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise ValueError(
            f"{source}: bad magic number {found} (0x{found:08x}); expected {magic} "
            f"(0x{magic:08x}); the file is corrupt or not an IDX "
            f"{'image' if magic == IDX_IMAGES_MAGIC else 'label'} file"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{source}: bad magic number 0x{found:08x}; an IDX file starts with two zero bytes "
            f"and a type code in {[hex(c) for c in _IDX_DTYPES]}"
        )
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0:
        raise ValueError(f"{source}: header declares 0 dimensions")
    if len(raw) < header:
        raise ValueError(
            f"{source}: header declares {ndim} dimensions but the file has only {len(raw)} bytes"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize
    actual = len(raw) - header
    if actual < expected:
        raise ValueError(
            f"{source}: truncated: header promises dims {dims} = {expected} data bytes but only "
            f"{actual} follow the header"
        )
    if actual > expected:
        raise ValueError(
            f"{source}: {actual - expected} unexpected trailing bytes after the {expected} data "
            f"bytes promised by dims {dims}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header)
    return data.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected from its first bytes) or plain.

    See :func:`read_idx_bytes` for ``magic`` and the checks; a damaged gzip stream also
    raises :class:`ValueError` naming the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip stream: {err}") from None
    return read_idx_bytes(raw, str(path), magic)


def idx_split_files(split: str) -> tuple[str, str]:
    """The (images, labels) file names of ``split`` ('train' or 'test'), without ``.gz``."""
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"unknown split {split!r}; valid splits: {sorted(_SPLIT_PREFIX)}")
    prefix = _SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def resolve_idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it exists, else ``folder/name.gz`` if that exists, else ``None``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_split(
    folder: str | Path,
    split: str,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
) -> tuple[Tensor, Tensor]:
    """Images ``uint8 (N, C, H, W)`` and labels ``int64 (N,)`` of one split from ``folder``.

    ``folder`` holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (the torchvision
    ``<root>/<Dataset>/raw`` folder). Checks that the images are ``N x H x W`` with the
    expected ``H, W``, that the label count equals the image count, and that labels lie in
    ``0..num_classes-1``.

    Raises:
        FileNotFoundError: a file is missing (the message names both accepted paths).
        ValueError: a file is damaged or inconsistent with the other.
    """
    folder = Path(folder)
    paths = []
    for name in idx_split_files(split):
        path = resolve_idx_file(folder, name)
        if path is None:
            raise FileNotFoundError(f"missing {folder / name} (or {folder / name}.gz)")
        paths.append(path)
    images = read_idx(paths[0], IDX_IMAGES_MAGIC)
    labels = read_idx(paths[1], IDX_LABELS_MAGIC)
    channels, height, width = image_shape
    if images.shape[1:] != (height, width):
        raise ValueError(
            f"{paths[0]}: images are {images.shape[1]}x{images.shape[2]}, expected {height}x{width}"
        )
    if len(labels) != len(images):
        raise ValueError(
            f"{paths[1]} has {len(labels)} labels but {paths[0]} has {len(images)} images"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise ValueError(f"{paths[1]}: label {int(labels.max())} out of range 0..{num_classes - 1}")
    x = torch.from_numpy(images).reshape(len(images), channels, height, width)
    return x, torch.from_numpy(labels.astype(np.int64))
