"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Every file the package writes goes through ``atomic_path`` (or ``writing``), so a write that
fails for a reason the user can fix (a full disk, a quota, a read-only folder) becomes one
``WriteError`` naming the file, and leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vqvae.errors import WriteError

# errno values of a write the user can fix: space, quota, permissions, a read-only filesystem.
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO}
)
# safetensors (Rust) reports an I/O error as text: "... I/O error: <message> (os error 28)".
_RUST_OS_ERROR = re.compile(r"(?:I/O error: )?([^:]*?) \(os error (\d+)\)")


def write_error(path: str | os.PathLike, exc: BaseException) -> WriteError | None:
    """``exc`` (an OSError, or safetensors' error) as a ``WriteError`` naming ``path``, or None
    when it is not a failed write the user can fix."""
    code, reason = None, None
    if isinstance(exc, OSError):
        code, reason = exc.errno, exc.strerror
    elif type(exc).__name__ == "SafetensorError" and (m := _RUST_OS_ERROR.search(str(exc))):
        code, reason = int(m.group(2)), m.group(1)
    if code not in WRITE_ERRNOS:
        return None
    reason = (reason or os.strerror(code)).strip()
    return WriteError(code, f"{path}: {reason[:1].lower()}{reason[1:]}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write inside the block into a ``WriteError`` naming ``path``."""
    try:
        yield
    except Exception as exc:
        error = write_error(path, exc)
        if error is None:
            raise
        raise error from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was; a write the
    disk refused (full, read-only…) is raised as a ``WriteError`` naming ``path``.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
            _fsync_dir(path.parent)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
