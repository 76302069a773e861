"""The last tracebacks: odd spaces, a full disk, a signal during start-up, an env that calls sys.exit.

Each ends with one line and the documented exit code (2 bad input, 1 failure, 130 interrupted).
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import ppokit
from ppokit.errors import EnvError
from tests.errors_support import PYTHON, TINY, SpaceEnv, bad_input, run_cli, subprocess_env, summary, train_tiny

ENVS = {
    "ppokit_test/EmptyObs-v0": dict(observation_space=gym.spaces.Box(-1, 1, (0,))),
    "ppokit_test/EmptyAction-v0": dict(observation_space=gym.spaces.Box(-1, 1, (3,)),
                                       action_space=gym.spaces.Box(-1, 1, (0,))),
    "ppokit_test/DiscreteStart-v0": dict(observation_space=gym.spaces.Discrete(5, start=10)),
    "ppokit_test/TinyImage-v0": dict(observation_space=gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)),
    "ppokit_test/Exit-v0": dict(observation_space=gym.spaces.Box(-1, 1, (3,)), exit_at=40),
}
for env_id, kwargs in ENVS.items():
    if env_id not in gym.envs.registry:
        gym.register(env_id, entry_point=SpaceEnv, kwargs=kwargs)


@pytest.mark.parametrize(("env_id", "what"), [("ppokit_test/EmptyObs-v0", "observation space"),
                                              ("ppokit_test/EmptyAction-v0", "action space")])
def test_spaces_without_elements_are_refused(capsys, tmp_path: Path, env_id: str, what: str) -> None:
    bad_input(capsys, ["train", env_id, "--run-dir", tmp_path / "run", *TINY], what, "has no elements")
    assert not (tmp_path / "run").exists()


def test_discrete_observations_with_a_start_train_and_evaluate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_tiny(run, env="ppokit_test/DiscreteStart-v0") == 0
    result = ppokit.evaluate(ppokit.load(run), "ppokit_test/DiscreteStart-v0", episodes=2)
    assert result["lengths"] == [10, 10]


def test_images_too_small_for_the_nature_cnn_are_refused(capsys, tmp_path: Path) -> None:
    bad_input(capsys, ["train", "ppokit_test/TinyImage-v0", "--run-dir", tmp_path / "run", *TINY,
                       "--set", "model.encoder=nature"],
              "8x8 pixels", "too small for model.encoder=nature", "model.encoder=small")


@pytest.mark.parametrize("vector", ["sync", "auto"])
def test_an_env_calling_sys_exit_fails_the_run_with_a_summary(capsys, tmp_path: Path, vector: str) -> None:
    run = tmp_path / "run"
    code, _, lines = run_cli(capsys, ["train", "ppokit_test/Exit-v0", "--run-dir", run, "--total-steps", "320",
                                      "--set", f"env.vector={vector}", *TINY])
    assert code == 1, lines
    assert summary(run)["status"] == "failed"
    assert "called sys.exit(0) in step" in summary(run)["error"]
    assert len(lines) == 1 and "training failed" in lines[0]


def test_evaluating_in_an_env_calling_sys_exit_fails(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_tiny(run) == 0
    agent = ppokit.load(run)
    with pytest.raises(EnvError, match=r"called sys.exit\(0\) in step"):
        ppokit.evaluate(agent, lambda: SpaceEnv(agent.observation_space, exit_at=3))


# ---------------------------------------------------------------------------- a full disk


def full_disk(*args, **kwargs):
    """Stands for a write on a full disk: some bytes land, then ENOSPC."""
    path = Path(args[1] if len(args) > 1 else kwargs.get("fname", args[0]))
    path.write_bytes(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("disk") / "run"
    assert train_tiny(run, total_steps=20 * 32) == 0
    return run


def test_a_full_disk_while_writing_a_plot(capsys, monkeypatch, trained: Path, tmp_path: Path) -> None:
    import matplotlib.figure

    out = tmp_path / "curve.png"
    out.write_bytes(b"the previous plot")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: full_disk(None, *a, **k))
    code, _, lines = run_cli(capsys, ["plot", trained, "--out", out])
    assert code == 1 and len(lines) == 1, lines
    assert f"cannot write '{out}'" in lines[0] and "No space left on device" in lines[0]
    assert out.read_bytes() == b"the previous plot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png"], "no partial file is left behind"


def test_a_full_disk_while_writing_a_recording(capsys, monkeypatch, trained: Path, tmp_path: Path) -> None:
    import imageio.v3

    out = tmp_path / "video.gif"
    monkeypatch.setattr(imageio.v3, "imwrite", lambda uri, *a, **k: full_disk(None, uri))
    code, _, lines = run_cli(capsys, ["record", trained, "--out", out])
    assert code == 1 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_eval_json(trained: Path) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run([PYTHON, "-m", "ppokit", "eval", str(trained), "--episodes", "1", "--json"],
                                env=subprocess_env(), stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and "No space left on device" in lines[0], lines


# ---------------------------------------------------------------------------- signals during start-up


def wait_until_handled(pid: int, signum: int, timeout: float = 60) -> None:
    """Wait until process ``pid`` catches ``signum`` (its SigCgt mask in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signum - 1)):
            return
        time.sleep(0.001)
    raise AssertionError("the process never installed its signal handler")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_exits_130_with_one_line(tmp_path: Path, signum: int) -> None:
    """Sent while ppokit imports torch and gymnasium (about 2 s here), before any training runs: the
    imports finish (a half-imported library could misbehave later), then ppokit stops."""
    process = subprocess.Popen([PYTHON, "-m", "ppokit", "train", "CartPole-v1", "--run-dir", str(tmp_path / "run"),
                                *TINY], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    wait_until_handled(process.pid, signal.SIGTERM)  # ppokit's main() has started (not Python's own start-up)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == [
        f"ppokit: interrupted ({signal.Signals(signum).name} while starting)"], err
    assert not (tmp_path / "run").exists()


def test_eval_json_still_prints(capsys, trained: Path) -> None:
    code, out, _ = run_cli(capsys, ["eval", trained, "--episodes", "1", "--json"])
    assert code == 0 and json.loads(out)["episodes"] == 1
