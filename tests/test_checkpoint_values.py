"""A checkpoint's shapes and values are checked as carefully as its format.

- shapes are checked from the safetensors header (against the agent built on the meta device)
  before the agent or any tensor is allocated: a 13 KB meta.json claiming huge layers is refused
  within a memory limit far below what it claims;
- values must be ones training can produce: finite in the agent's own dtype (float64 1e300 is not
  copied into float32), normalizer variances >= 0, a training state of the right types and ranges;
- a reader never pairs one checkpoint's meta.json with another's model file.
"""

from __future__ import annotations

import json
import resource
import subprocess
import threading
from pathlib import Path

import pytest
import safetensors.torch
import torch

import ppokit
import ppokit.checkpoint as checkpoint
from ppokit.errors import CheckpointError
from tests.errors_support import PYTHON, bad_input, run_cli, subprocess_env, train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("values") / "run"
    assert train_tiny(run, "--set", "env.normalize_obs=true") == 0
    return run


def latest(run: Path) -> Path:
    return run / "checkpoints" / "latest"


def edit_meta(run: Path, change) -> None:
    """Apply ``change(meta)`` to the latest checkpoint's meta.json (and drop its checksum)."""
    meta_file = latest(run) / "meta.json"
    meta = json.loads(meta_file.read_text())
    change(meta)
    meta.pop("model_sha256", None)
    meta_file.write_text(json.dumps(meta))


def edit_tensors(run: Path, change) -> None:
    """Apply ``change(tensors)`` to the latest checkpoint's model.safetensors (and drop the checksum)."""
    model = latest(run) / "model.safetensors"
    tensors = safetensors.torch.load_file(str(model))
    change(tensors)
    safetensors.torch.save_file(tensors, str(model))
    edit_meta(run, lambda meta: None)


def limited_eval(path: Path, gigabytes: int = 3) -> subprocess.CompletedProcess:
    """``python -m ppokit eval PATH`` with at most ``gigabytes`` of address space."""
    limit = gigabytes * 2**30

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([PYTHON, "-m", "ppokit", "eval", str(path), "--episodes", "1"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=set_limit)


# ---------------------------------------------------------------------------- memory bombs


def test_huge_layers_claimed_by_meta_json_are_refused_before_allocating(trained: Path, run: Path) -> None:
    def huge(meta):
        meta["config"]["model"]["hidden_sizes"] = [100_000, 100_000]  # 10**10 parameters, 40 GB

    edit_meta(run, huge)
    assert (latest(run) / "meta.json").stat().st_size < 20_000
    result = limited_eval(run)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "weights do not match its config" in lines[0], lines
    clean = limited_eval(trained)
    assert clean.returncode == 0, ("a normal checkpoint loads within the same limit", clean.stderr)


@pytest.mark.parametrize("space", [
    {"type": "Box", "shape": [2**30], "dtype": "float32", "low": "-inf", "high": "inf"},
    {"type": "Box", "shape": [4096, 4096, 3], "dtype": "float32", "low": "-inf", "high": "inf"},
    {"type": "Discrete", "n": 2**40, "start": 0},
])
def test_huge_spaces_claimed_by_meta_json_are_refused(capsys, run: Path, space: dict) -> None:
    edit_meta(run, lambda meta: meta.update(observation_space=space))
    bad_input(capsys, ["eval", run], "bad space description")


def test_a_model_file_claiming_more_than_the_memory_is_refused_unread(run: Path, tmp_path: Path) -> None:
    """A sparse model.safetensors whose header declares 8 GB of tensors (4 KB on disk)."""
    model = latest(run) / "model.safetensors"
    header = json.dumps({"agent.x": {"dtype": "F32", "shape": [2**31], "data_offsets": [0, 2**33]}}).encode()
    with open(model, "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        handle.truncate(8 + len(header) + 2**33)
    result = limited_eval(run)
    assert result.returncode == 2, result.stderr
    assert "more than the" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- values


def test_float64_weights_that_overflow_float32_are_refused(capsys, run: Path) -> None:
    def overflow(tensors):
        weight = tensors["agent.policy_head.weight"]
        tensors["agent.policy_head.weight"] = torch.full(weight.shape, 1e300, dtype=torch.float64)

    edit_tensors(run, overflow)
    bad_input(capsys, ["eval", run], "weights do not match its config", "agent.policy_head.weight", "F64", "F32")
    with pytest.raises(CheckpointError):
        ppokit.load(run)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("var", -1.0, "obs_normalizer has a negative variance or count"),
    ("count", -5.0, "obs_normalizer has a negative variance or count"),
    ("mean", float("inf"), "holds NaN or infinity"),
])
def test_implausible_normalizer_statistics_are_refused(capsys, run: Path, field: str, value: float,
                                                       expected: str) -> None:
    edit_tensors(run, lambda tensors: tensors[f"agent.obs_normalizer.{field}"].fill_(value))
    bad_input(capsys, ["eval", run], expected)
    bad_input(capsys, ["train", "--resume", run, "--quiet"], expected)


@pytest.mark.parametrize("value", [float("inf"), -1, 1.5, "12", True, 2**70])
def test_a_bad_global_step_is_refused(capsys, run: Path, value) -> None:
    edit_meta(run, lambda meta: meta.update(global_step=value))
    bad_input(capsys, ["eval", run], "global_step is")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("iteration", -1000, "bad 'iteration'"),
    ("iteration", 1e300, "bad 'iteration'"),
    ("iteration", 3, "does not match its iteration"),
    ("wall_time_s", float("inf"), "bad 'wall_time_s'"),
    ("wall_time_s", -1.0, "bad 'wall_time_s'"),
    ("recent_returns", ["a", 1.0], "bad 'recent_returns'"),
    ("recent_returns", [float("nan")], "bad 'recent_returns'"),
    ("recent_lengths", [-1], "bad 'recent_lengths'"),
    ("numpy_rng", [1, 2, 3], "bad 'numpy_rng'"),
    ("numpy_rng", [-1] * 624, "bad 'numpy_rng'"),
    ("numpy_rng_pos", 10**6, "bad 'numpy_rng_pos'"),
    ("numpy_rng_gauss", [2, 0.0], "bad 'numpy_rng_gauss'"),
    ("best_return", "high", "bad 'best_return'"),
    ("solved_at_step", -3, "bad 'solved_at_step'"),
    ("timings", {"env": -1}, "bad 'timings'"),
    ("timings", {"evil": 1}, "bad 'timings'"),
    ("env_values", [1, 2], "bad 'env_values'"),
    ("recent_returns", None, "bad 'recent_returns'"),
])
def test_a_malformed_training_state_is_refused(capsys, run: Path, key: str, value, expected: str) -> None:
    edit_meta(run, lambda meta: meta["training"].update({key: value}))
    before = (run / "metrics.csv").read_bytes()
    bad_input(capsys, ["train", "--resume", run, "--quiet"], expected)
    assert (run / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize(("name", "change", "expected"), [
    ("algo.*exp_avg_sq", lambda t: t.fill_(-1.0), "is negative"),
    ("algo.*exp_avg", lambda t: t.fill_(float("nan")), "holds NaN or infinity"),
    ("algo.*exp_avg", lambda t: t.double(), "F64"),
    ("collector.obs", lambda t: t[:1], "collector.obs"),
    ("collector.episode_return", lambda t: t.fill_(float("inf")), "holds NaN or infinity"),
])
def test_implausible_training_tensors_are_refused(capsys, run: Path, name: str, change, expected: str) -> None:
    def edit(tensors):
        prefix, _, suffix = name.partition("*")
        key = next(k for k in tensors if k.startswith(prefix) and k.endswith(suffix))
        result = change(tensors[key])
        tensors[key] = result.contiguous() if result is not None else tensors[key]

    edit_tensors(run, edit)
    bad_input(capsys, ["train", "--resume", run, "--quiet"], expected)


def test_a_clean_run_still_resumes(capsys, run: Path) -> None:
    assert run_cli(capsys, ["train", "--resume", run, "--total-steps", "160", "--quiet"])[0] == 0


# ---------------------------------------------------------------------------- reader and writer


def write_consistent(folder: Path, value: float) -> None:
    """A checkpoint whose meta.json names the value every tensor holds."""
    checkpoint.write(folder, {"w": torch.full((256,), value)},
                     {"env_id": "CartPole-v1", "config": {}, "observation_space": {}, "action_space": {},
                      "value": value})


def test_a_reader_gets_one_consistent_checkpoint_while_the_writer_replaces_it(monkeypatch, tmp_path: Path) -> None:
    """The writer replaces the checkpoint right after the reader read meta.json (the worst moment):
    the reader still gets the model file that belongs to that meta.json."""
    folder = tmp_path / "checkpoints" / "latest"
    write_consistent(folder, 1.0)
    real_loads = json.loads
    state = {"writes": 0}

    def loads_then_write(text, *args, **kwargs):
        result = real_loads(text, *args, **kwargs)
        if isinstance(result, dict) and "value" in result and state["writes"] < 5:
            state["writes"] += 1
            write_consistent(folder, 100.0 + state["writes"])
        return result

    monkeypatch.setattr(json, "loads", loads_then_write)
    for _ in range(5):
        tensors, meta, _ = checkpoint.read(tmp_path)
        assert float(tensors["w"][0]) == meta["value"]
    assert state["writes"] == 5


def test_concurrent_readers_and_a_writer(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints" / "latest"
    write_consistent(folder, 0.0)
    stop, errors, reads = threading.Event(), [], [0]

    def writer() -> None:
        value = 0.0
        while not stop.is_set():
            value += 1
            write_consistent(folder, value)

    def reader() -> None:
        while not stop.is_set():
            try:
                tensors, meta, _ = checkpoint.read(tmp_path)
                assert float(tensors["w"][0]) == meta["value"]
                reads[0] += 1
            except Exception as error:  # noqa: BLE001
                errors.append(repr(error))
                stop.set()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    while reads[0] < 300 and not stop.is_set():
        stop.wait(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
