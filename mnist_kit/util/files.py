"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one.

Temporary files and folders are named ``.NAME.PID-RANDOM.partial`` beside their target, so that the
leftovers of a killed process can be told from everything else (``remove_stale_partials``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mnist_kit.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks of this kind
    fcntl = None  # type: ignore[assignment]

PARTIAL = re.compile(r"^\..+\.(\d+)-[^.]+\.partial$")


@contextlib.contextmanager
def atomic_path(target: Path):
    """Yield a temporary path beside ``target``; on success fsync it and rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".partial", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a write's ENOSPC names no file: name the target
            e.filename = str(target)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def overwrite_in_place(target: Path, data: bytes) -> None:
    """Rewrite an existing file in the blocks it already has: for a full disk, which has no room for the new
    file an atomic write makes. Not atomic; use it only where the alternative is not writing at all."""
    with open(target, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def check_new_folder(folder: Path, option: str) -> None:
    """UserError unless ``folder`` is new or an empty folder: mnist-kit writes its files there and never over
    the user's (``option``: how the user named it, e.g. ``--save-photos``)."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise UserError(f"{option} {folder} is a symbolic link to nothing (a loop, or its target is gone); name a "
                        "new folder")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{option} {folder} exists and is not an empty folder; name a new folder (mnist-kit never "
                        "writes over your files)")


def digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def partial_dir(target: Path) -> Path:
    """A new empty folder beside ``target`` (with the usual permissions, not mkdtemp's 0700) to build
    ``target`` in before ``replace_dir`` puts it in place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".partial", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (for telling a killed process's leftovers from a running one's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder: Path, keep=lambda path: False) -> list[Path]:
    """Delete the temporary files and folders in ``folder`` that a process now gone left behind (unless
    ``keep(path)``); return them. Anything not named as this module names them is left alone."""
    removed = []
    for path in Path(folder).iterdir() if Path(folder).is_dir() else []:
        match = PARTIAL.match(path.name)
        if not match or process_alive(int(match.group(1))) or keep(path):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(new: Path, target: Path) -> Path | None:
    """Put folder ``new`` at ``target``. An existing ``target`` is swapped out in one step where the system
    allows it (else renamed aside just before) and returned, now at a temporary name, for the caller to
    take what it wants from and delete; a reader sees the old folder or the new one, never a mix."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        _fsync_dir(target.parent)
        return None
    if _exchange(new, target):
        old = new
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".partial", dir=target.parent))
        os.rename(target, old)  # onto the empty folder just made: POSIX rename replaces an empty directory
        os.rename(new, target)
    _fsync_dir(target.parent)
    return old


def _locks_available() -> None:
    if fcntl is None:
        raise UserError(f"training and sweeps lock their run folders with fcntl, which this platform "
                        f"({sys.platform}) does not have: they run on Linux (tested) or macOS; predict and serve "
                        "run here")


def try_lock(path: Path):
    """The file ``path`` (made if missing), open and exclusively locked by this process, or None if another
    process holds it. The lock ends when the file is closed or the process dies, ``kill -9`` included."""
    _locks_available()
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def locked_by_another(path: Path) -> bool:
    """Whether another process holds the lock of ``try_lock`` on the existing file ``path`` right now."""
    _locks_available()
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
