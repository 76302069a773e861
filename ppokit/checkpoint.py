"""Checkpoints: a folder with ``model.safetensors`` (every tensor) and ``meta.json`` (the rest).

Loading reads only those two formats, so a checkpoint from a stranger cannot run code; a folder
that contains pickle files is refused before anything is opened. Writes are atomic: the new
folder is written aside and renamed into place, so ``latest`` is always a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import safetensors
import safetensors.torch
import torch

from ppokit.config import Config, ConfigError, from_dict

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".npy", ".npz")


class CheckpointError(ConfigError):
    """A checkpoint or run folder that cannot be used (reported as bad input, exit code 2)."""


# ---------------------------------------------------------------------------- spaces <-> JSON


def _bounds(array: np.ndarray) -> Any:
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return _finite(flat[0].item())
    return [_finite(x) for x in flat.tolist()]


def _finite(x: float) -> Any:
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON description of a Box / Discrete / MultiDiscrete / MultiBinary space."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _bounds(space.low), "high": _bounds(space.high)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": space.n if isinstance(space.n, int) else list(space.n)}
    raise ValueError(f"unsupported space {space}")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """Inverse of :func:`space_to_json`."""
    kind = data["type"]
    if kind == "Box":
        shape = tuple(data["shape"])

        def bound(value: Any) -> np.ndarray:
            array = np.array(value, dtype=np.float64) if not isinstance(value, str) else np.array(float(value))
            return np.broadcast_to(array.astype(np.float64), shape).reshape(shape)

        dtype = np.dtype(data["dtype"])
        return gym.spaces.Box(bound(data["low"]).astype(dtype), bound(data["high"]).astype(dtype), shape, dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(data["n"], start=data.get("start", 0))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(data["nvec"], start=data.get("start"))
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    raise ValueError(f"unknown space type {kind!r}")


# ---------------------------------------------------------------------------- writing


def versions() -> dict[str, str]:
    from ppokit import __version__

    return {"ppokit": __version__, "torch": torch.__version__, "gymnasium": gym.__version__,
            "python": sys.version.split()[0]}


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write a checkpoint folder at ``path`` (replacing any previous one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)
    try:
        contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        safetensors.torch.save_file(contiguous, str(tmp / MODEL_FILE))
        (tmp / META_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=1))
        for file in (tmp / MODEL_FILE, tmp / META_FILE):
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            if path.exists():
                shutil.rmtree(old)
            else:  # an earlier crash left only the old copy: it stays the checkpoint until replaced
                os.replace(old, path)
        if path.exists():
            os.replace(path, old)  # between this and the next rename, readers fall back to .old
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.replace(old, path)  # put the previous checkpoint back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- reading


def resolve(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint path or a run folder (its ``checkpoints/latest``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"'{path}' does not exist (expected a run folder or a checkpoint folder)")
    if not path.is_dir():
        raise CheckpointError(f"'{path}' is not a folder (expected a run folder or a checkpoint folder)")
    if (path / META_FILE).exists() or (path / MODEL_FILE).exists():
        return path
    for candidate in (path / "checkpoints" / "latest", path / "checkpoints" / ".latest.old"):
        if (candidate / META_FILE).exists():
            return candidate
    raise CheckpointError(
        f"'{path}' holds no checkpoint (expected {META_FILE} and {MODEL_FILE}, or a run folder with checkpoints/latest)"
    )


def _refuse_pickles(folder: Path) -> None:
    for file in folder.iterdir():
        if file.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointError(
                f"checkpoint '{folder}' contains '{file.name}', a format that can run code when loaded; "
                "ppokit loads only model.safetensors and meta.json, remove the file if you trust it"
            )


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """``(tensors, meta, folder)`` of a checkpoint; :class:`CheckpointError` if unusable."""
    folder = resolve(path)
    _refuse_pickles(folder)
    meta_file, model_file = folder / META_FILE, folder / MODEL_FILE
    if not meta_file.exists() or not model_file.exists():
        missing = META_FILE if not meta_file.exists() else MODEL_FILE
        raise CheckpointError(f"checkpoint '{folder}' is incomplete: {missing} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint '{folder}': {META_FILE} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{folder}': {META_FILE} is not a ppokit checkpoint of format {FORMAT_VERSION}"
        )
    with open(model_file, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:2] == b"PK":
        raise CheckpointError(f"checkpoint '{folder}': {MODEL_FILE} is not a safetensors file")
    try:
        tensors = safetensors.torch.load_file(str(model_file))
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint '{folder}': {MODEL_FILE} is corrupted or truncated ({error})") from None
    return tensors, meta, folder


def config_of(meta: dict[str, Any], folder: Path) -> Config:
    try:
        return from_dict(meta["config"])
    except (KeyError, ConfigError) as error:
        raise CheckpointError(f"checkpoint '{folder}': its config is unusable ({error})") from None


def load_agent(path: str | Path, device: str | torch.device = "cpu"):
    """The :class:`~ppokit.agent.Agent` saved at ``path`` (run folder or checkpoint folder)."""
    from ppokit.agent import Agent

    tensors, meta, folder = read(path)
    cfg = config_of(meta, folder)
    try:
        observation_space = space_from_json(meta["observation_space"])
        action_space = space_from_json(meta["action_space"])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint '{folder}': bad space description ({error})") from None
    agent = Agent(observation_space, action_space, cfg.model, cfg.env)
    state = {k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")}
    try:
        agent.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint '{folder}': weights do not match its config ({str(error).splitlines()[0]})"
        ) from None
    agent.config = cfg
    agent.global_step = int(meta.get("global_step", 0))
    return agent.to(device), tensors, meta


def save_agent(path: str | Path, agent: Any, cfg: Config, global_step: int,
               extra_tensors: dict[str, torch.Tensor] | None = None, training: dict[str, Any] | None = None) -> None:
    """Write ``agent`` (and, for resumable checkpoints, the training state) as a checkpoint folder."""
    from ppokit.config import to_dict

    tensors = {f"agent.{k}": v for k, v in agent.state_dict().items()}
    tensors.update(extra_tensors or {})
    meta: dict[str, Any] = {
        "config": to_dict(cfg), "env_id": cfg.env_id, "algo": cfg.algo,
        "observation_space": space_to_json(agent.observation_space),
        "action_space": space_to_json(agent.action_space),
        "global_step": int(global_step), "versions": versions(),
    }
    if training is not None:
        meta["training"] = training
    write(Path(path), tensors, meta)
