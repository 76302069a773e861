"""Checkpoints: a folder with ``model.safetensors`` (every tensor) and ``meta.json`` (the rest).

Loading reads only those two formats, so a checkpoint from a stranger cannot run code; a folder
that contains pickle files is refused before anything is opened. Writes are atomic: the new
folder is written aside and renamed into place, so ``latest`` is always a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import safetensors
import safetensors.torch
import torch

from ppokit.config import Config, from_dict, to_dict, validate
from ppokit.errors import CheckpointError, ConfigError, quote
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
MAX_HEADER = 100_000_000  # a safetensors JSON header larger than this is not one of ours


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
                _remove(old)
            os.replace(path, old)  # between this and the next rename, readers fall back to .old
        try:
            os.replace(tmp, path)
        except BaseException:
            if os.path.lexists(old) and not os.path.lexists(path):
                os.replace(old, path)  # put the previous checkpoint back
            raise
        _fsync_dir(path.parent)
        _remove(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def _check_safetensors_header(folder: Path, model_file: Path) -> None:
    """Refuse anything but a safetensors file (a pickle, a zip, a truncated file) from its first bytes.

    safetensors starts with an 8-byte little-endian header length, then that many bytes of JSON.
    """
    if model_file.is_symlink() or not model_file.is_file():
        raise CheckpointError(f"checkpoint {quote(folder)}: {MODEL_FILE} is not a regular file")
    size = model_file.stat().st_size
    with open(model_file, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise CheckpointError(f"checkpoint {quote(folder)}: {MODEL_FILE} is empty or truncated ({size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if not (2 <= header_len <= MAX_HEADER and 8 + header_len <= size and head[8:9] == b"{"):
        raise CheckpointError(
            f"checkpoint {quote(folder)}: {MODEL_FILE} is not a safetensors file (or is truncated)"
        )


REQUIRED_META = {"env_id": str, "config": dict, "observation_space": dict, "action_space": dict}


def read(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """``(tensors, meta, folder)`` of a checkpoint; :class:`CheckpointError` if unusable.

    Only ``meta.json`` (JSON) and ``model.safetensors`` are opened, and only after the folder was
    checked for pickle files by name; the model file's first bytes must be a safetensors header
    and, when meta.json records one, its SHA-256 must match (``verify``).
    """
    folder = resolve(path)
    _refuse_pickles(folder)
    meta_file, model_file = folder / META_FILE, folder / MODEL_FILE
    if not meta_file.exists() or not model_file.exists():
        missing = META_FILE if not meta_file.exists() else MODEL_FILE
        raise CheckpointError(f"checkpoint {quote(folder)} is incomplete: {missing} is missing")
    if meta_file.is_symlink() or not meta_file.is_file():
        raise CheckpointError(f"checkpoint {quote(folder)}: {META_FILE} is not a regular file")
    if meta_file.stat().st_size > MAX_HEADER:
        raise CheckpointError(f"checkpoint {quote(folder)}: {META_FILE} is too large to be a ppokit checkpoint")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
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
    _check_safetensors_header(folder, model_file)
    expected = meta.get("model_sha256")
    if verify and expected is not None and _sha256(model_file) != expected:
        raise CheckpointError(
            f"checkpoint {quote(folder)}: {MODEL_FILE} does not match the checksum in {META_FILE} "
            "(corrupted, or copied from another checkpoint)"
        )
    try:
        tensors = safetensors.torch.load_file(str(model_file))
    except Exception as error:  # noqa: BLE001  (safetensors raises several types for bad files)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {quote(folder)}: {MODEL_FILE} is corrupted or truncated ({first})") from None
    return tensors, meta, folder


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
