"""The run folder before a run writes to it: where it is, that it may be used, and its lock.

A training writes only inside its run folder, and only after :func:`prepare` has
- refused an empty ``--run-dir`` (which would be the current folder), a file, a folder that is not
  writable, a folder that already holds a run (unless resuming) and a non-empty folder that is not
  a ppokit run (a user's own files are never overwritten);
- refused links and special files where the run's own files go (``config.yaml``, ``metrics.csv``,
  ``summary.json``, ``checkpoints``): ppokit never writes through a link (see :mod:`ppokit.files`);
- taken the folder's lock (``fcntl.flock`` on ``.ppokit.lock``), held until the run has written its
  summary: a second training on the same folder is refused instead of interleaving with the first.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ppokit.errors import ConfigError, quote
from ppokit.files import CLOEXEC, NOFOLLOW, check_entry

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no advisory locks; runs are not locked there)
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ppokit.config import Config

LOCK_FILE = ".ppokit.lock"
# The entries a run writes, and whether each is a folder.
RUN_ENTRIES = {"config.yaml": False, "metrics.csv": False, "summary.json": False, "checkpoints": True}


def default_run_dir(cfg: Config) -> Path:
    """``runs/{env}__{algo}__{seed}__{timestamp}``, with ``-2``, ``-3``, ... if that exists already
    (two runs started in the same second, e.g. by one script)."""
    return new_folder_name(f"{cfg.env_id.replace('/', '-')}__{cfg.algo}__{cfg.seed}")


def new_folder_name(prefix: str) -> Path:
    """``runs/{prefix}__{timestamp}``, with ``-2``, ``-3``, ... if that exists already."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{prefix}__{stamp}"
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def check_run_dir_argument(run_dir: object) -> None:
    """ConfigError for an empty ``--run-dir`` (``Path('')`` is the current folder)."""
    if isinstance(run_dir, str) and not run_dir.strip():
        raise ConfigError(f"--run-dir {quote(run_dir)}: expected a folder path (an empty one would be the current "
                          "folder); leave it out for runs/{env}__{algo}__{seed}__{timestamp}")


@dataclass
class RunFolderLock:
    """The lock of a run folder, held by this process until :meth:`release`."""

    path: Path
    fd: int | None
    created: bool  # this process created the folder (a failed start removes it again)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def _lock(run_dir: Path, created: bool) -> RunFolderLock:
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o644)
    except OSError as error:
        if os.path.islink(path):
            check_entry(path)
        raise ConfigError(f"run folder {quote(run_dir)} is not writable ({error.strerror or error})") from None
    if fcntl is None:  # pragma: no cover
        return RunFolderLock(path, fd, created)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = f" (process {quote(holder)})" if holder else ""
            raise ConfigError(f"run folder {quote(run_dir)} is in use by another ppokit training{who}; wait for it "
                              "to finish or pick another --run-dir") from None
        raise ConfigError(f"run folder {quote(run_dir)} cannot be locked ({error.strerror or error})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return RunFolderLock(path, fd, created)


def prepare(run_dir: Path, resuming: bool) -> RunFolderLock:
    """Create and lock ``run_dir`` and check, before any work, that the run may write there
    (see the module docstring). The caller releases the lock when the run has ended."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {quote(run_dir)} is a file, not a folder")
    created = not run_dir.exists()
    if not created and not resuming:
        _check_unused(run_dir)  # before writing anything: a user's folder is left as it was
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"run folder {quote(run_dir)} is not writable ({error.strerror or error})") from None
    lock = _lock(run_dir, created)
    try:
        for name, folder in RUN_ENTRIES.items():
            check_entry(run_dir / name, folder=folder)
        if not resuming:
            _check_unused(run_dir)  # again, now that no other training can start here
    except BaseException:
        lock.release()
        raise
    return lock


def _check_unused(run_dir: Path) -> None:
    """ConfigError if ``run_dir`` holds a run or anything else (a user's own files)."""
    if (run_dir / "checkpoints").exists() or (run_dir / "metrics.csv").exists():
        raise ConfigError(
            f"run folder {quote(run_dir)} already holds a run; continue it with --resume {run_dir} "
            "or pick another --run-dir"
        )
    others = sorted(entry.name for entry in run_dir.iterdir() if entry.name != LOCK_FILE)
    if others:
        shown = ", ".join(quote(name, 60) for name in others[:3]) + (", ..." if len(others) > 3 else "")
        raise ConfigError(f"run folder {quote(run_dir)} is not empty and holds no ppokit run ({shown}); ppokit "
                          "writes runs only into new or empty folders: pick another --run-dir")
