"""A checkpoint or run folder from a stranger never makes ppokit import or run code.

- an env id ``module:Env-v0`` read from meta.json is never imported (the user must name the env);
- a ``.py`` file planted next to a checkpoint is never imported by ``python -m ppokit``;
- the env state of a resumed run is written back only into attributes ppokit itself captures,
  checked by name and kind, never ``setattr`` of a name from the file.

Each planted module creates a marker file when imported; the marker must not appear.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppokit
from ppokit.errors import ConfigError
from tests.errors_support import PYTHON, bad_input, run_cli, subprocess_env

MODULE = "ppokit_planted_env_module"


def plant_module(folder: Path, name: str, marker: Path) -> None:
    """``folder/name.py`` that creates ``marker`` when imported."""
    (folder / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")


def edit_meta(run: Path, **changes) -> None:
    meta_file = run / "checkpoints" / "latest" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta.update(changes)
    if "env_id" in changes:
        meta["config"]["env_id"] = changes["env_id"]
    meta.pop("model_sha256", None)
    meta_file.write_text(json.dumps(meta))


@pytest.fixture()
def planted(run: Path, tmp_path: Path, monkeypatch) -> Path:
    """The run's checkpoint names ``MODULE:CartPole-v1``; MODULE.py lies in the run folder, which is
    the current folder and first on sys.path (as with ``cd run && python -m ppokit``)."""
    marker = tmp_path / "IMPORTED"
    plant_module(run, MODULE, marker)
    edit_meta(run, env_id=f"{MODULE}:CartPole-v1")
    monkeypatch.chdir(run)
    monkeypatch.syspath_prepend(str(run))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return marker


def test_an_env_module_named_by_a_checkpoint_is_never_imported(capsys, run: Path, planted: Path) -> None:
    expected = "names a Python module to import"
    bad_input(capsys, ["eval", run], expected, "--env")
    bad_input(capsys, ["record", run, "--out", run.parent / "x.gif"], expected)
    bad_input(capsys, ["train", "--resume", run, "--quiet"], expected)
    agent = ppokit.load(run)  # loading itself is fine: it names no code
    with pytest.raises(ConfigError, match=expected):
        ppokit.evaluate(agent)
    assert not planted.exists(), "the module named by the checkpoint was imported"
    assert MODULE not in sys.modules


def test_the_user_may_name_that_env_explicitly(capsys, run: Path, planted: Path) -> None:
    code, out, _ = run_cli(capsys, ["eval", run, "--env", f"{MODULE}:CartPole-v1", "--episodes", "1", "--json"])
    assert code == 0 and json.loads(out)["episodes"] == 1
    assert planted.exists(), "an env the user typed is imported, as gymnasium.make would"


def test_python_m_ppokit_does_not_import_files_of_the_current_folder(run: Path, tmp_path: Path) -> None:
    """``cd run && python -m ppokit eval .`` with ``yaml.py`` and ``tqdm.py`` planted in the run folder."""
    marker = tmp_path / "IMPORTED"
    for name in ("yaml", "tqdm", "safetensors", "matplotlib"):
        plant_module(run, name, marker)
    result = subprocess.run([PYTHON, "-m", "ppokit", "eval", ".", "--episodes", "1"], cwd=run,
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "a file planted in the current folder was imported"


# ---------------------------------------------------------------------------- env state


def edit_env_values(run: Path, change) -> None:
    meta_file = run / "checkpoints" / "latest" / "meta.json"
    meta = json.loads(meta_file.read_text())
    change(meta["training"]["env_values"])
    meta_file.write_text(json.dumps(meta))


@pytest.mark.parametrize(("name", "change"), [
    ("a new attribute", lambda values: values.update({"0.evil": 1})),
    ("a method", lambda values: values.update({"0.step": 1})),
    ("an object that does not exist", lambda values: values.update({"7.gravity": 1.0})),
    ("no object index", lambda values: values.update({"gravity": 1.0})),
    ("a string for a number", lambda values: values.update({"0.gravity": "x"})),
    ("a float for an integer", lambda values: values.update({"0.max_episode_steps": 1.5})),
    ("a list for a number", lambda values: values.update({"0.gravity": [1, 2]})),
    ("a broken generator state", lambda values: values.update({"0._np_random": {"generator": {"state": 1}}})),
    ("not a mapping", lambda values: (values.clear(), values.update({"0.gravity": {"a": 1}}))),
])
def test_env_state_entries_must_be_what_ppokit_captured(capsys, run: Path, name: str, change) -> None:
    edit_env_values(run, change)
    before = (run / "metrics.csv").read_text()
    bad_input(capsys, ["train", "--resume", run, "--quiet"], "env state does not fit this env")
    assert (run / "metrics.csv").read_text() == before


def test_env_state_arrays_must_keep_their_dtype_and_shape(capsys, run: Path) -> None:
    import safetensors.torch

    model = run / "checkpoints" / "latest" / "model.safetensors"
    tensors = safetensors.torch.load_file(str(model))
    tensors["env.0.state"] = torch.zeros(4, 1000, dtype=torch.float64)
    safetensors.torch.save_file(tensors, str(model))
    edit_meta(run)  # drops the checksum
    bad_input(capsys, ["train", "--resume", run, "--quiet"], "env state does not fit this env", "env.0.state"[4:])


def test_a_clean_env_state_still_resumes(capsys, run: Path) -> None:
    assert run_cli(capsys, ["train", "--resume", run, "--total-steps", "160", "--quiet"])[0] == 0
