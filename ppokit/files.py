"""Reading and writing files on a user's behalf without following links or reading without bound.

* :func:`write_atomic` / :func:`write_atomic_with`: a new file is created beside the target with
  ``O_EXCL`` (so never through a planted link) and renamed over it: a symbolic link at the target
  is replaced, never followed, and a failure (a full disk) leaves the old file as it was.
* :func:`open_append`, :func:`open_regular`: open a regular file only (``O_NOFOLLOW``; a link, a
  folder or a FIFO is refused).
* :func:`read_regular`: reads a regular file of at most ``limit`` bytes (``/dev/zero``, a FIFO or a
  huge file is refused before it is read; opening never blocks).
* :func:`check_entry`: an entry of a run folder is absent, or a real file / folder (not a link).

Every refusal is a :class:`~ppokit.errors.ConfigError` naming the file and what is accepted.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ppokit.errors import ConfigError, quote

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file"


def check_entry(path: Path, folder: bool = False) -> None:
    """ConfigError unless ``path`` is absent or a real regular file (``folder``: a real folder).

    Decided by ``lstat``: a symbolic link is refused whatever it points to."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    wanted = stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)
    if not wanted:
        expected = "a folder" if folder else "a regular file"
        raise ConfigError(f"{quote(path)} is {_kind(mode)}, not {expected}; ppokit never follows links or reads "
                          "special files inside a run folder (remove or replace it)")


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A new empty file in ``path``'s folder (created with O_EXCL), removed again unless renamed."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a new file beside ``path`` (same suffix, so format detection by name works),
    then rename it over ``path``. A link at ``path`` is replaced, not followed; if ``write`` fails
    (a full disk) nothing is left behind and ``path`` keeps its old content."""
    path = Path(path)
    try:
        with _temporary_beside(path) as tmp:
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except OSError as error:  # e.g. a full disk: name the file the user asked for, not the temporary one
        raise OSError(error.errno, f"cannot write {quote(path)} ({error.strerror or error})") from None


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic_with`)."""
    content = data.encode() if isinstance(data, str) else data
    write_atomic_with(path, lambda tmp: tmp.write_bytes(content))


def open_append(path: str | Path) -> IO[str]:
    """``path`` opened for appending text; created if absent. A link or anything but a regular file
    is refused (ConfigError)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW | NONBLOCK | CLOEXEC, 0o644)
    except OSError:
        check_entry(path)  # says what it is (a link, a folder, ...)
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        check_entry(path)
    return os.fdopen(fd, "a", newline="")


def open_regular(path: str | Path, mode: str = "rb") -> IO:
    """``open(path, mode)`` for an existing regular file only: a link (not followed), a folder, a FIFO
    or a device is refused with a ConfigError (opening never blocks)."""
    path = Path(path)
    try:
        handle = open(path, mode, opener=lambda name, flags: os.open(name, flags | NOFOLLOW | NONBLOCK | CLOEXEC))
    except OSError:
        check_entry(path)
        raise
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        check_entry(path)
    return handle


def read_regular(path: str | Path, limit: int, what: str, follow_links: bool = True) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); ConfigError naming ``what`` if it is
    missing, unreadable, not a regular file (a device, a FIFO, a folder; with ``follow_links=False``
    a link) or larger than ``limit``. Opening never blocks and nothing beyond ``limit`` is read."""
    path = Path(path)
    flags = os.O_RDONLY | NONBLOCK | CLOEXEC | (0 if follow_links else NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConfigError(f"{what} {quote(path)} does not exist") from None
    except OSError as error:
        if not follow_links and os.path.islink(path):
            raise ConfigError(f"{what} {quote(path)} is a symbolic link; expected a regular file") from None
        raise ConfigError(f"{what} {quote(path)} cannot be read ({error.strerror or error})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"{what} {quote(path)} cannot be read: it is {_kind(info.st_mode)}, not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise ConfigError(f"{what} {quote(path)} is too large ({info.st_size:,} bytes; at most {limit:,} "
                              "are accepted)")
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise ConfigError(f"{what} {quote(path)} cannot be read ({error.strerror or error})") from None
    if len(data) > limit:  # grew while being read
        raise ConfigError(f"{what} {quote(path)} is too large (more than {limit:,} bytes)")
    return data
