"""Checkpoints: a folder with ``model.safetensors`` (every tensor) and ``meta.json`` (the rest).

Loading reads only those two formats, so a checkpoint from a stranger cannot run code; a folder
that contains pickle files is refused before anything is opened. Writes are atomic: the new
folder is written aside and renamed into place, so ``latest`` is always a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gymnasium as gym
import safetensors
import safetensors.torch
import torch

from ppokit.config import Config, from_dict, to_dict, validate
from ppokit.errors import CheckpointError, ConfigError, first_line, quote
from ppokit.files import CLOEXEC, NOFOLLOW, NONBLOCK
from ppokit.memory import check_fits
from ppokit.spaces import space_to_json
from ppokit.version import __version__

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
# Formats that can run code when loaded (pickle and the formats built on it: torch.save, joblib,
# numpy with allow_pickle, ...). A checkpoint folder holding any of them is refused by name: the
# file is never opened.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".npy", ".npz", ".p",
                   ".dill", ".cloudpickle", ".sav", ".mar", ".tar", ".zip")
MAX_HEADER = 16 * 2**20  # a safetensors JSON header larger than this is not one of ours
MAX_META = 16 * 2**20  # nor a meta.json


# ---------------------------------------------------------------------------- writing


def versions() -> dict[str, str]:
    return {"ppokit": __version__, "torch": torch.__version__, "gymnasium": gym.__version__,
            "python": sys.version.split()[0]}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write a checkpoint folder at ``path`` (replacing any previous one).

    The new checkpoint is written and fsynced in a temporary folder beside ``path``, then renamed
    into place. A process killed at any moment leaves either the old or the new checkpoint at
    ``path``, or (between the two renames) the old one at ``.NAME.old``, which :func:`resolve`
    falls back to. The old copy is deleted only while a complete checkpoint sits at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer
        _remove(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)
    try:
        # copy to the CPU: safetensors refuses tensors that share storage (views of one buffer)
        contiguous = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        safetensors.torch.save_file(contiguous, str(tmp / MODEL_FILE))
        with open(tmp / MODEL_FILE, "rb") as handle:
            os.fsync(handle.fileno())
        full_meta = {"format_version": FORMAT_VERSION, **meta, "model_sha256": _sha256(tmp / MODEL_FILE)}
        with open(tmp / META_FILE, "w") as handle:
            handle.write(json.dumps(full_meta, indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        # lexists: a link at path or old is itself renamed or removed, never followed
        old = path.with_name(f".{path.name}.old")
        if os.path.lexists(old) and not os.path.lexists(path):
            os.replace(old, path)  # an earlier crash left only the old copy: it is the checkpoint
        if os.path.lexists(path):
            if os.path.lexists(old):  # a complete checkpoint is at path: the old copy is not needed
                _discard(old, ignore_errors=False)
            os.replace(path, old)  # between this and the next rename, readers fall back to .old
        try:
            os.replace(tmp, path)
        except BaseException:
            if os.path.lexists(old) and not os.path.lexists(path):
                os.replace(old, path)  # put the previous checkpoint back
            raise
        _fsync_dir(path.parent)
        _discard(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(path: Path, ignore_errors: bool = True) -> None:
    """Remove a checkpoint folder that readers may still be opening: renamed away first (to a name
    the next :func:`write` cleans up if this one is killed), so a reader that resolved ``path``
    sees it replaced, never half deleted."""
    if not os.path.lexists(path):
        return
    doomed = path.with_name(f".{path.name.lstrip('.').removesuffix('.old')}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.replace(path, doomed)
    except OSError:
        if not ignore_errors:
            raise
        return
    _remove(doomed, ignore_errors=ignore_errors)


def _remove(path: Path, ignore_errors: bool = False) -> None:
    """Remove a folder, a file or a link (not what it points to); nothing if absent."""
    try:
        if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    except OSError:
        if not ignore_errors:
            raise


# ---------------------------------------------------------------------------- reading


def _is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoints"))


def resolve(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint path or a run folder (its ``checkpoints/latest``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{quote(path)} does not exist (expected a run folder or a checkpoint folder)")
    if not path.is_dir():
        raise CheckpointError(f"{quote(path)} is not a folder (expected a run folder or a checkpoint folder)")
    if (path / META_FILE).exists() or (path / MODEL_FILE).exists():
        return path
    for candidate in (path / "checkpoints" / "latest", path / "checkpoints" / ".latest.old"):
        if (candidate / META_FILE).exists():
            return candidate
    if (path / "checkpoints" / "latest").is_dir():
        return path / "checkpoints" / "latest"  # incomplete: read() says what is missing
    if (path / "population.json").is_file():  # ppokit.population.FILE
        raise CheckpointError(f"{quote(path)} is a population folder: give one of its agents' run folders, e.g. "
                              f"{quote(path / 'seed-0')} (population.json lists them)")
    if _is_run_folder(path):
        raise CheckpointError(
            f"run folder {quote(path)} has no checkpoint yet (checkpoints/latest is missing: the run stopped "
            "before its first checkpoint, see checkpoint_interval_s and checkpoint_every)"
        )
    if path.name in ("latest", "best") and path.parent.name == "checkpoints":
        old = path.parent / f".{path.name}.old"
        if (old / META_FILE).exists():  # killed between the two renames of a write
            return old
    raise CheckpointError(
        f"{quote(path)} holds no checkpoint (expected {META_FILE} and {MODEL_FILE}, "
        "or a run folder with checkpoints/latest)"
    )


def _refuse_pickles(folder: Path) -> None:
    """CheckpointError if the folder (or a subfolder) holds a file of a code-running format.

    Decided by file names only: no file is opened here.
    """
    for root, folders, files in os.walk(folder, followlinks=False):
        for name in sorted(files) + sorted(folders):
            suffixes = [s.lower() for s in Path(name).suffixes]
            if any(suffix in PICKLE_SUFFIXES for suffix in suffixes):
                relative = Path(root, name).relative_to(folder)
                raise CheckpointError(
                    f"checkpoint {quote(folder)} contains {quote(relative)}, a format that can run code when "
                    f"loaded; ppokit loads only {MODEL_FILE} and {META_FILE} and refuses such folders "
                    "(remove the file if you trust it)"
                )


REQUIRED_META = {"env_id": str, "config": dict, "observation_space": dict, "action_space": dict}
# safetensors dtype names -> bytes per element (the dtypes torch writes)
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
TORCH_DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
                torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.int64: "I64",
                torch.float64: "F64"}
OPEN_ATTEMPTS = 20  # a reader racing a writer's rename retries this often (see open_checkpoint)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the safetensors header declares it (nothing is allocated to know this)."""

    dtype: str
    shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


def tensor_info(tensor: torch.Tensor) -> TensorInfo:
    """What the header of a file holding ``tensor`` would declare (works on ``meta`` tensors)."""
    return TensorInfo(TORCH_DTYPES.get(tensor.dtype, str(tensor.dtype)), tuple(tensor.shape))


@dataclass
class Checkpoint:
    """An opened checkpoint: ``meta.json`` and the safetensors header are read, the tensors not yet.

    Both files were opened from one folder at one moment (see :func:`open_checkpoint`), so
    :meth:`load` returns the tensors that belong to ``meta`` even while a training replaces the
    checkpoint. Check ``header`` against what you expect before calling :meth:`load`."""

    folder: Path
    meta: dict[str, Any]
    header: dict[str, TensorInfo]
    model: BinaryIO
    size: int

    def load(self, verify: bool = True) -> dict[str, torch.Tensor]:
        """The tensors; with ``verify`` the file's SHA-256 must match meta.json's ``model_sha256``."""
        try:
            data = os.pread(self.model.fileno(), self.size, 0)
        finally:
            self.model.close()
        expected = self.meta.get("model_sha256")
        if verify and expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(
                f"checkpoint {quote(self.folder)}: {MODEL_FILE} does not match the checksum in {META_FILE} "
                "(corrupted, or copied from another checkpoint)"
            )
        try:
            return safetensors.torch.load(data)
        except Exception as error:  # noqa: BLE001  (safetensors raises several types for bad files)
            raise CheckpointError(f"checkpoint {quote(self.folder)}: {MODEL_FILE} is corrupted or truncated "
                                  f"({first_line(error)})") from None


def _open_member(dir_fd: int, folder: Path, name: str) -> BinaryIO:
    """``folder/name`` opened through the folder's descriptor: a regular file, never a link."""
    try:
        fd = os.open(name, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError:
        raise CheckpointError(f"checkpoint {quote(folder)}: {name} is not a regular file") from None
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise CheckpointError(f"checkpoint {quote(folder)}: {name} is not a regular file")
    return handle


class _Replaced(Exception):
    """The checkpoint folder was replaced (renamed away, removed) while it was being opened."""


def _open_pair(folder: Path) -> tuple[bytes, BinaryIO]:
    """meta.json's bytes and the open model file, both from the folder as it is at this moment."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | CLOEXEC)
    except FileNotFoundError:
        raise _Replaced() from None
    try:
        with _open_member(dir_fd, folder, META_FILE) as meta_file:
            size = os.fstat(meta_file.fileno()).st_size
            if size > MAX_META:
                raise CheckpointError(f"checkpoint {quote(folder)}: {META_FILE} is too large to be a ppokit "
                                      f"checkpoint ({size:,} bytes; at most {MAX_META:,})")
            meta = meta_file.read(MAX_META + 1)
        return meta, _open_member(dir_fd, folder, MODEL_FILE)
    except FileNotFoundError as error:
        try:
            same = os.path.samestat(os.fstat(dir_fd), os.stat(folder))
        except FileNotFoundError:
            same = False
        if not same or os.fstat(dir_fd).st_nlink == 0:
            raise _Replaced() from None
        raise CheckpointError(f"checkpoint {quote(folder)} is incomplete: {error.filename} is missing") from None
    finally:
        os.close(dir_fd)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint (a checkpoint folder or a run folder's ``checkpoints/latest``) and check
    ``meta.json`` and the safetensors header; :class:`CheckpointError` if unusable. No tensor is
    allocated: :meth:`Checkpoint.load` does that.

    The folder is checked for pickle files by name first. Both files are opened through one
    descriptor of the folder, and the writer only ever renames whole folders (:func:`write`), so
    the two belong together; if the writer replaced the folder between the two opens, the reader
    starts again (a checkpoint being replaced is never read half old, half new).
    """
    for attempt in range(OPEN_ATTEMPTS):
        folder = resolve(path)
        _refuse_pickles(folder)
        try:
            meta_bytes, model = _open_pair(folder)
            break
        except _Replaced:
            time.sleep(0.002 * attempt)
    else:
        raise CheckpointError(f"checkpoint {quote(path)} is being replaced faster than it can be read")
    try:
        meta = _parse_meta(folder, meta_bytes)
        header = _read_header(folder, model, os.fstat(model.fileno()).st_size)
    except BaseException:
        model.close()
        raise
    return Checkpoint(folder, meta, header, model, os.fstat(model.fileno()).st_size)


def _parse_meta(folder: Path, data: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"checkpoint {quote(folder)}: {META_FILE} is not valid JSON (empty, truncated "
                              "or corrupted)") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"checkpoint {quote(folder)}: {META_FILE} is not a ppokit checkpoint of format {FORMAT_VERSION}"
            + (f" (it says format {found!r})" if found is not None else "")
        )
    for key, kind in REQUIRED_META.items():
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"checkpoint {quote(folder)}: {META_FILE} lacks a valid {quote(key)}")
    step = meta.get("global_step", 0)
    if not (isinstance(step, int) and not isinstance(step, bool) and 0 <= step < 2**63):
        raise CheckpointError(f"checkpoint {quote(folder)}: global_step is {_show(step)}, not an integer >= 0")
    return meta


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    return text[:40]


def _read_header(folder: Path, model: BinaryIO, size: int) -> dict[str, TensorInfo]:
    """The safetensors header (8-byte little-endian length, then JSON), checked to describe exactly
    the bytes of the file, before any tensor is read; refuses a pickle, a zip or a truncated file
    by these first bytes."""
    fd = model.fileno()
    head = os.pread(fd, 9, 0)
    if len(head) < 9:
        raise CheckpointError(f"checkpoint {quote(folder)}: {MODEL_FILE} is empty or truncated ({size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    not_ours = CheckpointError(f"checkpoint {quote(folder)}: {MODEL_FILE} is not a safetensors file (or is truncated)")
    if not (2 <= header_len <= MAX_HEADER and 8 + header_len <= size and head[8:9] == b"{"):
        raise not_ours
    try:
        header = json.loads(os.pread(fd, header_len, 8))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise not_ours from None
    if not isinstance(header, dict):
        raise not_ours
    infos: dict[str, TensorInfo] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (dtype in DTYPE_SIZES and isinstance(shape, list)
                  and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
                  and isinstance(start, int) and isinstance(stop, int)
                  and stop - start == math.prod(shape) * DTYPE_SIZES[dtype] and 0 <= start <= stop)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"checkpoint {quote(folder)}: {MODEL_FILE} has a malformed header entry "
                                  f"{quote(name, 80)}")
        infos[name] = TensorInfo(dtype, tuple(shape))
        end = max(end, stop)
    if 8 + header_len + end != size:
        raise CheckpointError(f"checkpoint {quote(folder)}: {MODEL_FILE} is corrupted or truncated (its header "
                              f"describes {end:,} bytes of tensors, the file holds {size - 8 - header_len:,})")
    check_fits(2 * end, f"checkpoint {quote(folder)}: {MODEL_FILE}")
    return infos


def check_header(folder: Path, header: dict[str, TensorInfo], expected: dict[str, TensorInfo], prefix: str) -> None:
    """CheckpointError unless the ``prefix`` entries of ``header`` are exactly ``expected`` (names,
    dtypes and shapes): called before the tensors are loaded or the model is built."""
    found = {name[len(prefix):]: info for name, info in header.items() if name.startswith(prefix)}
    for name in sorted(set(found) | set(expected)):
        if found.get(name) != expected.get(name):
            have = f"is {found[name]}" if name in found else "is missing"
            want = f"expected {expected[name]}" if name in expected else "not expected"
            raise CheckpointError(f"checkpoint {quote(folder)}: weights do not match its config (tensor "
                                  f"{quote(prefix + name)} {have}, {want})")


def read(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """``(tensors, meta, folder)`` of a checkpoint (:func:`open_checkpoint`, then load);
    :class:`CheckpointError` if unusable."""
    opened = open_checkpoint(path)
    return opened.load(verify), opened.meta, opened.folder


def config_of(meta: dict[str, Any], folder: Path) -> Config:
    """The validated training config stored in a checkpoint's meta.json."""
    try:
        cfg = from_dict(meta["config"])
        validate(cfg)
    except (KeyError, ConfigError) as error:
        raise CheckpointError(f"checkpoint {quote(folder)}: its config is unusable ({error})") from None
    if cfg.env_id != meta["env_id"]:
        raise CheckpointError(
            f"checkpoint {quote(folder)}: {META_FILE} names env {quote(meta['env_id'])} but its config "
            f"trains {quote(cfg.env_id)}"
        )
    return cfg


def save_agent(path: str | Path, agent: Any, cfg: Config, global_step: int,
               extra_tensors: dict[str, torch.Tensor] | None = None, training: dict[str, Any] | None = None) -> None:
    """Write ``agent`` (and, for resumable checkpoints, the training state) as a checkpoint folder."""
    tensors = {f"agent.{k}": v for k, v in agent.state_dict().items()}
    tensors.update(extra_tensors or {})
    meta: dict[str, Any] = {
        "config": to_dict(cfg), "env_id": cfg.env_id, "algo": cfg.algo,
        "observation_space": space_to_json(agent.observation_space),
        "action_space": space_to_json(agent.action_space),
        "global_step": int(global_step), "versions": versions(),
    }
    if agent.custom_networks:  # user modules: code, never saved; loading needs them passed again
        meta["networks"] = agent.custom_networks
    if training is not None:
        meta["training"] = training
    write(Path(path), tensors, meta)
