"""Checked downloads with :mod:`urllib` (no torchvision): stream to a temporary file, verify
the MD5 of the official archive, then rename; extract tar archives through a temporary
folder so a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["download_file", "extract_tar", "md5sum"]

_CHUNK = 1 << 20


def md5sum(path: str | Path) -> str:
    """Hex MD5 digest of a file (read in 1 MiB chunks)."""
    digest = hashlib.md5()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open_url(url: str, timeout: float) -> BinaryIO:
    """Open ``url`` for reading (the single network access; tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "bregnn"})
    return urllib.request.urlopen(request, timeout=timeout)


def download_file(
    urls: str | Sequence[str], dest: str | Path, md5: str | None, timeout: float = 60.0
) -> Path:
    """Download the first reachable of ``urls`` to ``dest`` and verify its MD5.

    The bytes go to a temporary file beside ``dest`` which is renamed only after the checksum
    matches, so ``dest`` is either absent or complete and verified. Mirrors are tried in order
    when one cannot be reached; a checksum mismatch is an error at once (and the partial file
    is removed).

    Raises:
        ValueError: the MD5 of the downloaded bytes is not ``md5``.
        OSError: no URL could be reached (the message lists each URL and its error).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    errors = []
    for url in url_list:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out, _open_url(url, timeout) as response:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if md5 is not None and digest.hexdigest() != md5:
                raise ValueError(
                    f"checksum mismatch for {url}: MD5 {digest.hexdigest()}, expected {md5}; "
                    f"the download is damaged or not the official file (nothing was written "
                    f"to {dest})"
                )
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            errors.append(f"{url}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise OSError(f"could not download {dest.name}; tried " + "; ".join(errors))


def extract_tar(archive: str | Path, dest_dir: str | Path) -> list[Path]:
    """Extract a (gzip) tar archive into ``dest_dir``; return the paths of the regular files.

    Members are extracted into a temporary folder inside ``dest_dir`` (with tarfile's
    ``data`` filter: no absolute paths, no ``..``, no links out of the folder), then each file
    is moved into place with an atomic rename; existing files of the same name are replaced.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=dest_dir, prefix=f".{archive.name}.", suffix=".extract"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_dir, filter="data")
        moved = []
        for src in sorted(p for p in tmp_dir.rglob("*") if p.is_file()):
            target = dest_dir / src.relative_to(tmp_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
            moved.append(target)
        return moved
    except tarfile.TarError as err:
        raise ValueError(f"{archive}: corrupt tar archive: {err}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
