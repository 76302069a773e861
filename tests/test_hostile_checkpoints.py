"""Loading a checkpoint reads only safetensors and JSON: pickle payloads are refused unopened.

Each payload creates a marker file when unpickled; after every refused load the marker must not
exist, and no file of a pickle format may even have been opened.
"""

from __future__ import annotations

import builtins
import io
import os
import pathlib
import pickle
import re
from pathlib import Path

import pytest
import torch

import ppokit
from ppokit.errors import CheckpointError
from tests.errors_support import bad_input


class Payload:
    """Unpickling this calls ``Path(marker).touch()`` (it could as well be ``os.system``)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class ShellPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture()
def no_unpickling(monkeypatch):
    """Fail the test if anything unpickles, and record every file opened from Python."""
    opened: list[str] = []

    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(io, "open", recording_open)
    return opened


def test_the_payloads_really_run_code(tmp_path: Path) -> None:
    """Sanity check of the test itself: unpickling the payloads does create the marker."""
    for i, cls in enumerate((Payload, ShellPayload)):
        marker = tmp_path / f"m{i}"
        pickle.loads(pickle.dumps(cls(marker)))
        assert marker.exists()


def refused(capsys, path: Path, marker: Path, opened: list[str], expected: str) -> None:
    """eval, record, train --resume and ppokit.load all refuse ``path``; the payload never ran."""
    opened.clear()  # forget the test's own writes
    bad_input(capsys, ["eval", path], expected)
    bad_input(capsys, ["record", path, "--out", marker.parent / "x.gif"], expected)
    bad_input(capsys, ["train", "CartPole-v1", "--resume", path, "--quiet"], expected)
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        ppokit.load(path)
    assert not marker.exists(), "the pickle payload ran"
    pickles = [f for f in opened if f.endswith((".pkl", ".pt", ".bin", ".pth"))]
    assert not pickles, f"a pickle file was opened: {pickles}"


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_model_file_that_is_a_pickle(capsys, run: Path, marker: Path, no_unpickling, protocol: int) -> None:
    latest = run / "checkpoints" / "latest"
    (latest / "model.safetensors").write_bytes(pickle.dumps(Payload(marker), protocol=protocol))
    refused(capsys, run, marker, no_unpickling, "model.safetensors is not a safetensors file")
    refused(capsys, latest, marker, no_unpickling, "model.safetensors is not a safetensors file")


def test_model_file_that_is_a_torch_save(capsys, run: Path, marker: Path, no_unpickling) -> None:
    latest = run / "checkpoints" / "latest"
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(3), "payload": ShellPayload(marker)}, buffer)
    (latest / "model.safetensors").write_bytes(buffer.getvalue())
    refused(capsys, run, marker, no_unpickling, "model.safetensors is not a safetensors file")


@pytest.mark.parametrize("name", ["extra.pkl", "optimizer.pt", "pytorch_model.bin", "stats.npy", "state.PTH",
                                  "archive/data.pkl", "model.pkl.gz"])
def test_folder_that_also_holds_a_pickle(capsys, run: Path, marker: Path, no_unpickling, name: str) -> None:
    latest = run / "checkpoints" / "latest"
    (latest / name).parent.mkdir(parents=True, exist_ok=True)
    (latest / name).write_bytes(pickle.dumps(ShellPayload(marker)))
    refused(capsys, run, marker, no_unpickling, f"contains '{name}', a format that can run code when loaded")


def test_meta_file_that_is_a_pickle(capsys, run: Path, marker: Path, no_unpickling) -> None:
    (run / "checkpoints" / "latest" / "meta.json").write_bytes(pickle.dumps(Payload(marker)))
    refused(capsys, run, marker, no_unpickling, "meta.json is not valid JSON")


def test_model_file_that_is_a_device(capsys, run: Path, marker: Path, no_unpickling) -> None:
    model = run / "checkpoints" / "latest" / "model.safetensors"
    model.unlink()
    model.symlink_to("/dev/zero")
    refused(capsys, run, marker, no_unpickling, "model.safetensors is not a regular file")


def test_absurd_spaces_are_refused_before_allocating(capsys, run: Path, marker: Path, no_unpickling) -> None:
    import json

    meta_file = run / "checkpoints" / "latest" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["action_space"] = {"type": "Discrete", "n": 10**15}
    meta_file.write_text(json.dumps(meta))
    bad_input(capsys, ["eval", run], "bad space description")


def test_non_finite_weights_are_refused(capsys, tmp_path: Path, trained: Path) -> None:
    agent = ppokit.load(trained)
    with torch.no_grad():
        next(agent.parameters()).fill_(float("nan"))
    agent.save(str(tmp_path / "nan_agent"))
    bad_input(capsys, ["eval", tmp_path / "nan_agent"], "holds NaN or infinity")


def test_a_clean_checkpoint_still_loads(run: Path, no_unpickling) -> None:
    agent = ppokit.load(run)
    assert agent.env_id == "CartPole-v1"
    assert not [f for f in no_unpickling if f.endswith(".pkl")]
