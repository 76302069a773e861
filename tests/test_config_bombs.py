"""A config cannot exhaust the machine or hang ppokit.

- YAML anchors and aliases (a "billion laughs" bomb) and absurd nesting are refused while parsing,
  before anything is expanded: in a config file and in ``--set``;
- ``--config`` must be a regular file of at most 1 MB: /dev/zero, a FIFO, a huge file are refused
  without reading them (and without blocking);
- the memory a config needs is estimated before anything is allocated and refused when it cannot
  fit (checked in subprocesses under a memory limit far below what the configs would take);
- numbers that overflow later (torch_threads, model.log_std_init) are refused up front.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from ppokit import memory
from ppokit.agent import shape_only
from ppokit.config import Config
from tests.errors_support import PYTHON, TINY, bad_input, subprocess_env

LAUGHS = "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                   + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)])


def limited(args: list[str], gigabytes: int = 3, **kwargs) -> subprocess.CompletedProcess:
    """``python -m ppokit ARGS`` with at most ``gigabytes`` of address space and a hang guard."""
    limit = gigabytes * 2**30

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([PYTHON, "-m", "ppokit", *map(str, args)], env=subprocess_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=set_limit, **kwargs)


def one_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_a_billion_laughs_config_file_is_refused_within_a_memory_limit(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(LAUGHS + "\nseed: *a9\n")
    assert config.stat().st_size < 1000
    one_line(limited(["train", "CartPole-v1", "--config", config, "--run-dir", tmp_path / "run"]),
             "anchors and aliases", "line 1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field", ["seed", "env.kwargs", "model.hidden_sizes"])
def test_aliases_in_set_values_are_refused(capsys, tmp_path: Path, field: str) -> None:
    value = "[&a [1,1,1,1,1,1,1,1], [*a,*a,*a,*a,*a,*a,*a,*a]]" if field != "env.kwargs" else "{a: &x [1], b: *x}"
    bad_input(capsys, ["train", "CartPole-v1", "--set", f"{field}={value}", "--run-dir", tmp_path / "run"],
              "anchors and aliases")


def test_deep_nesting_is_refused(capsys, tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text("env:\n  kwargs:\n    x: " + "[" * 100 + "]" * 100 + "\n")
    bad_input(capsys, ["train", "CartPole-v1", "--config", config], "nested more than")


def test_dev_zero_as_config_is_refused(capsys) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--config", "/dev/zero"],
              "'/dev/zero' cannot be read: it is a device, not a regular file")


def test_a_fifo_as_config_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    one_line(limited(["train", "CartPole-v1", "--config", fifo]), "named pipe (FIFO), not a regular file")


def test_a_huge_config_file_is_refused_unread(capsys, tmp_path: Path) -> None:
    config = tmp_path / "huge.yaml"
    with open(config, "wb") as handle:
        handle.truncate(10 * 2**30)  # sparse: 10 GB that take no disk
    bad_input(capsys, ["train", "CartPole-v1", "--config", config], "is too large")


def test_a_metrics_csv_linked_to_dev_zero_is_refused_on_resume(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    from tests.errors_support import train_tiny

    assert train_tiny(run) == 0
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to("/dev/zero")
    bad_input(capsys, ["train", "--resume", run, "--quiet"], "metrics.csv", "is a symbolic link")


@pytest.mark.parametrize(("args", "part"), [
    (["--num-envs", "1000000000"], "lower rollout.num_envs"),
    (["--set", "rollout.num_steps=1000000000"], "rollout.num_steps"),
    (["--set", "model.hidden_sizes=[100000,100000]"], "networks"),
])
def test_configs_that_cannot_fit_are_refused_before_allocating(tmp_path: Path, args: list[str], part: str) -> None:
    run = tmp_path / "run"
    one_line(limited(["train", "CartPole-v1", "--run-dir", run, *args, "--quiet"]), "needs about", part)
    assert not run.exists(), "nothing is created for a refused config"


def test_the_estimate_of_an_ordinary_config_is_small_and_grows_with_it() -> None:
    import gymnasium as gym

    cfg = Config()
    spaces = gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)
    agent = shape_only(*spaces, cfg.model, cfg.env)
    small = sum(memory.estimate(cfg, agent, 8).values())
    assert small < 100 * 2**20
    cfg.rollout.num_steps *= 10
    assert sum(memory.estimate(cfg, agent, 8).values()) > 5 * small
    assert memory.available_bytes() > 2**28


@pytest.mark.parametrize("separate_critic", [False, True])
def test_the_meta_agent_has_the_real_agents_shapes_without_a_forward(monkeypatch, separate_critic: bool) -> None:
    """shape_only builds the agent the config builds (every tensor's name, shape and dtype) without
    running a network: a forward on the meta device can import torch._dynamo (1-2 s of start-up)."""
    import gymnasium as gym

    from ppokit.agent import Agent
    from ppokit.networks import MLP

    cfg = Config()
    cfg.model.hidden_sizes = [24, 12]
    spaces = gym.spaces.Box(-1, 1, (5,)), gym.spaces.Box(-1, 1, (3,))
    real = Agent(*spaces, cfg.model, cfg.env, separate_critic=separate_critic)

    def no_forward(*args, **kwargs):
        raise AssertionError("shape_only ran a network")

    monkeypatch.setattr(MLP, "forward", no_forward)
    meta = shape_only(*spaces, cfg.model, cfg.env, separate_critic=separate_critic)
    assert {name: (t.shape, t.dtype) for name, t in meta.state_dict().items()} == \
        {name: (t.shape, t.dtype) for name, t in real.state_dict().items()}
    assert all(t.is_meta for t in meta.state_dict().values())


def test_overflowing_thread_counts_and_log_std_are_refused(capsys) -> None:
    bad_input(capsys, ["train", "CartPole-v1", "--set", "torch_threads=100000000000", *TINY], "torch_threads",
              "up to 1024")
    bad_input(capsys, ["train", "Pendulum-v1", "--set", "model.log_std_init=1e300", *TINY], "model.log_std_init")
    bad_input(capsys, ["train", "Pendulum-v1", "--set", "model.log_std_init=-100", *TINY], "model.log_std_init")
