"""Where the IDX files come from: the datasets' mirrors, a local folder, or Debian's package.

Every file is checked against published checksums: the MD5 (and, for MNIST, TensorFlow's SHA-256) of
the official ``.gz`` archive, or the MD5 of the uncompressed IDX file, so that a re-compressed copy
(Debian's package is one) is recognised by its content.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from mnist_kit import datasets
from mnist_kit.data.idx import MAX_BYTES, decompress
from mnist_kit.datasets import DataSet, FileSpec
from mnist_kit.errors import UserError
from mnist_kit.util import readback
from mnist_kit.util.console import Progress, info
from mnist_kit.util.files import atomic_path


class SourceError(UserError):
    pass


def dataset_info(name: str) -> DataSet:
    """An IDX data set of the catalogue, or SourceError."""
    if name not in datasets.IDX:
        raise SourceError(f"unknown dataset '{name}'; allowed: {', '.join(datasets.IDX)}")
    return datasets.get(name)


def checksum_match(data: bytes, spec: FileSpec) -> str | None:
    """Which published checksum ``data`` matches (archive or uncompressed content), or None."""
    if hashlib.md5(data).hexdigest() == spec.md5_gz:
        if spec.sha256_gz and hashlib.sha256(data).hexdigest() != spec.sha256_gz:
            return None
        return "published archive checksum"
    try:  # a re-compressed copy: decompressed no further than the published file's size
        raw = decompress(data, spec.filename, spec.ndim, limit=spec.raw_bytes)
    except UserError:
        return None
    if hashlib.md5(raw).hexdigest() == spec.md5_raw:
        return "published checksum of the uncompressed file"
    return None


def _find(directory: Path, spec: FileSpec) -> Path | None:
    for candidate in (directory / spec.filename, directory / spec.raw_name):
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise SourceError(f"{candidate} is not a regular file (a folder, FIFO or device); it must be the "
                              f"{spec.raw_name} IDX file")
    return None


def read_local(info_: DataSet, directory: Path, verify: bool = True) -> dict[str, bytes]:
    """The four files from ``directory`` (``.gz`` or uncompressed), verified unless told not to."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SourceError(f"{directory} is not a directory")
    found = {role: _find(directory, spec) for role, spec in info_.files.items()}
    missing = [info_.files[r].raw_name + "[.gz]" for r, p in found.items() if p is None]
    if missing:
        raise SourceError(f"{directory} lacks {', '.join(missing)}; it must hold the four {info_.title} IDX files "
                          f"({', '.join(s.filename for s in info_.files.values())}, gzipped or not)")
    out = {}
    for role, path in found.items():
        assert path is not None  # none is missing (above)
        try:
            data = readback.read_bytes(path, MAX_BYTES)
        except readback.Unreadable as e:
            raise SourceError(str(e)) from None
        except OSError as e:
            raise SourceError(f"cannot read {path}: {e.strerror}") from None
        if verify and not checksum_match(data, info_.files[role]):
            raise SourceError(f"{path} does not match the published {info_.title} checksums "
                              f"(md5 {hashlib.md5(data).hexdigest()}); it is damaged or another data set. "
                              "To use your own IDX files on purpose, add --no-verify")
        out[role] = data
    return out


def debian_available(info_: DataSet) -> bool:
    try:
        return info_.debian_dir is not None and all(_find(info_.debian_dir, s) for s in info_.files.values())
    except SourceError:
        return False


class _Permanent(Exception):
    """A failure that retrying the same mirror will not fix."""


def _fetch(url: str, target: Path, timeout: float, desc: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0)
            progress = Progress(total, desc, bytes_unit=True)
            if total > MAX_BYTES:
                raise _Permanent(f"the server offers {total:,} bytes, more than an IDX archive may have here")
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    progress.update(len(chunk))
                    if progress.n > MAX_BYTES:
                        raise _Permanent(f"the server sent more than {MAX_BYTES:,} bytes; the download was stopped")
            progress.close()
            if total and progress.n != total:
                raise ConnectionError(f"connection closed after {progress.n} of {total} bytes")
    except urllib.error.HTTPError as e:
        if 400 <= e.code < 500 and e.code not in (408, 429):
            raise _Permanent(f"HTTP {e.code} {e.reason}") from None
        raise ConnectionError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror):
            raise _Permanent(f"cannot resolve host ({e.reason.strerror})") from None
        raise ConnectionError(str(e.reason)) from None


def _from_mirror(mirror: str, spec: FileSpec, target: Path, retries: int, timeout: float, verify: bool,
                 backoff: float, failures: list[str]) -> bytes | None:
    """One file from one mirror, with retries and back-off; its bytes, or None with why in ``failures``."""
    url = mirror.rstrip("/") + "/" + spec.filename
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, target, timeout, f"{spec.filename} from {mirror}")
        except _Permanent as e:
            failures.append(f"{url}: {e}")
            return None
        except (ConnectionError, OSError, http.client.HTTPException) as e:
            failures.append(f"{url}: {e} (attempt {attempt} of {retries})")
            if attempt < retries:
                time.sleep(backoff * 2 ** (attempt - 1))
            continue
        data = readback.read_bytes(target, MAX_BYTES)
        if verify and not checksum_match(data, spec):
            target.unlink()
            failures.append(f"{url}: checksum mismatch (md5 {hashlib.md5(data).hexdigest()}), file discarded")
            return None
        return data
    return None


def download(info_: DataSet, dest: Path, mirrors=None, retries: int = 3, timeout: float = 30.0,
             verify: bool = True, backoff: float = 1.0) -> dict[str, bytes]:
    """Download the four archives into ``dest``, trying each mirror in turn; return their bytes.

    Files already in ``dest`` that verify are reused. Each file is written to a temporary name and only
    renamed into place once complete and verified.
    """
    mirrors = list(mirrors or info_.mirrors)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}
    for role, spec in info_.files.items():
        target = dest / spec.filename
        if target.is_file():
            try:
                data = readback.read_bytes(target, MAX_BYTES)
            except readback.Unreadable as e:
                raise SourceError(f"{e}; delete it and prepare again") from None
            if not verify or checksum_match(data, spec):
                out[role] = data
                continue
            target.unlink()
        failures: list[str] = []
        for mirror in mirrors:
            got = _from_mirror(mirror, spec, target, retries, timeout, verify, backoff, failures)
            if got is not None:
                out[role] = got
                break
            info(f"  {mirror} failed for {spec.filename}: {failures[-1].split(': ', 1)[1]}")
        if role not in out:
            detail = "\n".join(f"  - {f}" for f in failures)
            hint = ""
            if info_.debian_package:
                hint = f", or install Debian's {info_.debian_package} and use --source debian"
            raise SourceError(f"could not download {spec.filename} of {info_.title} from any mirror:\n{detail}\n"
                              f"Offline? Put the four IDX files in a folder and run "
                              f"`mnist-kit prepare --dataset {info_.name} --from-dir FOLDER`{hint}.")
    return out
