"""Training over 2 processes (gloo on loopback): the same update as one process, identical ranks,
one reporter, bounded failure when a process dies or hangs, two "nodes" joined by c10d rendezvous.

The processes are started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), by
torchrun itself where its behaviour is what is tested."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ppokit.algos import ALGOS
from tests.distributed_cases import CASES, run_cases

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(args: list[str], cwd: Path, world_size: int = 2) -> list[subprocess.Popen]:
    """``python ARGS`` in ``world_size`` processes joined as torchrun joins them (no torchrun agent,
    so a test can kill or stop one process and watch the others alone)."""
    port = str(free_port())
    return [subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank),
                                             "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                                             "MASTER_PORT": port})
            for rank in range(world_size)]


def torchrun(args: list[str], cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run",
               *(launcher or ["--standalone", "--nproc-per-node", "2"]), *args]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------- the update


@pytest.fixture(scope="module")
def updates(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict]:
    """Every case of tests/distributed_cases.py in one process, and on each of 2 processes."""
    out = tmp_path_factory.mktemp("updates")
    processes = launch(["-m", "tests.distributed_cases", str(out)], cwd=REPO)
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    return run_cases(0, 1), ranks[0], ranks[1]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_with_half_the_envs_update_as_one_process_with_all(updates, case: str) -> None:
    """K=2 processes with N/2 envs each take the update K=1 with N envs takes on the same data (the
    processes hold different numbers of valid samples; observations are normalized): parameters,
    the target-KL stop, beta, TRPO's line search; and both processes hold identical parameters."""
    one, rank0, rank1 = (result[case] for result in updates)
    for name, expected in one["params"].items():
        torch.testing.assert_close(rank0["params"][name], expected, rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(rank0["params"][name], rank1["params"][name]), name
    for key in ("epochs", "early_stop", "line_search_steps", "line_search_accepted", "kl"):
        if key in one["stats"]:
            assert rank0["stats"][key] == pytest.approx(one["stats"][key], rel=1e-5), key
    assert rank0["beta"] == pytest.approx(one["beta"], nan_ok=True)


def test_the_cases_change_the_parameters_and_stop_early(updates) -> None:
    """The equality above is not vacuous: every update moves the parameters, PPO's target KL stops
    it before its last epoch, and PPO-KL's beta moves."""
    one, _, _ = updates
    initial = run_cases.__globals__["make_agent"]().state_dict()
    for case in CASES:
        moved = max(float((one[case]["params"][k] - initial[k]).abs().max()) for k in initial)
        assert moved > 1e-3, case
    assert one["ppo"]["stats"]["early_stop"] == 1.0 and one["ppo"]["stats"]["epochs"] < 6
    assert one["ppo-kl"]["beta"] != 1.0


def test_normalizer_merges_every_process_exactly(updates) -> None:
    """Observation statistics merged from 2 processes whose data differ in mean are those of one
    process that saw it all (the variance includes the spread between the processes' means)."""
    one, rank0, rank1 = (result["normalizer"] for result in updates)
    for name in ("mean", "var", "count"):
        torch.testing.assert_close(rank0[name], one[name], rtol=1e-12, atol=1e-12)
        assert torch.equal(rank0[name], rank1[name])


# ---------------------------------------------------------------------------- training under torchrun


@pytest.mark.parametrize("algo", ["ppo", "ppo-kl"])
def test_minibatch_size_is_global_over_processes(tmp_path: Path, algo: str) -> None:
    """ppo.minibatch_size / ppo_kl.minibatch_size count samples over all processes: two processes
    with 2 envs each take as many (half as large) steps per epoch as one process with 4 envs. One
    summary line is printed (rank 0's)."""
    section = ALGOS[algo].section
    epochs, minibatch, batch = 2, 16, 4 * 16
    run = tmp_path / "run"
    result = torchrun(["-m", "ppokit", "train", "CartPole-v1", "--algo", algo, "--num-envs", "4",
                       "--total-steps", str(2 * batch), "--run-dir", str(run), "--quiet",
                       "--set", "rollout.num_steps=16", "--set", f"{section}.minibatch_size={minibatch}",
                       "--set", f"{section}.update_epochs={epochs}", "--set", "eval_episodes=0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert [float(row["grad_steps"]) for row in rows] == [epochs * batch / minibatch] * 2
    assert [line for line in result.stdout.splitlines() if line.startswith("CartPole-v1 ")] == \
        [line for line in result.stdout.splitlines() if "steps/s" in line]
    assert sum("steps/s" in line for line in result.stdout.splitlines()) == 1
    assert sum(line.startswith("run folder:") for line in result.stdout.splitlines()) == 1


TRAIN_AND_SAVE = """
import atexit, os, sys, weakref, torch
import torch.distributed as dist
from ppokit import Config, distributed
from ppokit.run import train

# Registered before train() joins the group, so it runs after ppokit's own exit handler (last in, first out).
EXIT_FILE = f"{sys.argv[1]}/in-group-at-exit{os.environ['RANK']}"
atexit.register(lambda: open(EXIT_FILE, "w").write(f"{dist.is_initialized()} {GROUP() is not None}"))

cfg = Config(env_id="Pendulum-v1", algo=sys.argv[2], device="cpu", total_steps=3 * 64, eval_episodes=0, seed=3)
cfg.rollout.num_envs, cfg.rollout.num_steps = 4, 16
cfg.env.normalize_obs = cfg.env.normalize_reward = True
cfg.model.hidden_sizes = [16]
for section in (cfg.ppo, cfg.ppo_kl):
    section.minibatch_size = 32
cfg.trpo.value_minibatch_size = cfg.vpg.value_minibatch_size = 32
result = train(cfg, run_dir=sys.argv[1] + "/run", quiet=True)
torch.save(result.agent.state_dict(), f"{sys.argv[1]}/rank{distributed.rank()}.pt")
GROUP = weakref.ref(dist.group.WORLD)  # still joined: ppokit leaves at exit
"""


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_every_rank_holds_identical_parameters_and_statistics_after_training(tmp_path: Path, algo: str) -> None:
    """After training with observation and reward normalization, every process holds the same
    parameters and normalizer statistics, bit for bit, and the statistics count every process's
    steps (the reward scaling of every process learned from the returns of all). Each process has
    left the process group, and the group is freed, by the time the interpreter exits (a group
    alive at the interpreter's teardown can abort it: see the next test)."""
    script = tmp_path / "train_and_save.py"
    script.write_text(TRAIN_AND_SAVE)
    result = torchrun([str(script), str(tmp_path), algo], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    assert float(ranks[0]["return_normalizer.count"]) == 3 * 64  # both processes' steps
    assert float(ranks[0]["obs_normalizer.count"]) == 3 * 64
    # The Python API's caller did not leave the process group; ppokit did, before the interpreter's
    # teardown, and nothing kept the group alive.
    assert [(tmp_path / f"in-group-at-exit{rank}").read_text() for rank in (0, 1)] == ["False False"] * 2


LEAVE_AFTER_A_LAZY_IMPORT = """
import weakref, torch
import torch.distributed as dist
from ppokit import distributed

distributed.init(60)
group = weakref.ref(dist.group.WORLD)
import torch._dynamo  # what the meta device and torch.compile import lazily, after the group is joined
distributed.weighted_mean_([torch.ones(3)], 1.0)
distributed.shutdown()
print("group freed:", group() is None)
"""


def test_leaving_the_process_group_frees_it_also_after_torch_imports_more() -> None:
    """After :func:`ppokit.distributed.shutdown` the process group is gone, with its gloo threads,
    also when torch imported torch.distributed.nn (whose default arguments read the live group)
    after the group was joined: a group kept alive past the interpreter's teardown aborted rank 1
    with SIGABRT in CI runs (a gloo thread releasing a collective's tensors after the GIL was gone)."""
    processes = launch(["-c", LEAVE_AFTER_A_LAZY_IMPORT], cwd=REPO)
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        assert stdout.strip() == "group freed: True", stderr[-3000:]


# ---------------------------------------------------------------------------- faults


def start_training(tmp_path: Path, timeout_s: float) -> tuple[list[subprocess.Popen], Path]:
    """Two processes training a long CartPole run that checkpoints every iteration."""
    run = tmp_path / "run"
    processes = launch(["-m", "ppokit", "train", "CartPole-v1", "--num-envs", "4", "--total-steps", "10000000",
                        "--run-dir", str(run), "--quiet", "--set", "rollout.num_steps=16",
                        "--set", "ppo.minibatch_size=32", "--set", "eval_episodes=0",
                        "--set", "checkpoint_interval_s=0", "--set", f"dist_timeout_s={timeout_s}"], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "latest").exists():
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
            "no checkpoint: " + "".join(p.communicate()[1][-2000:] for p in processes if p.poll() is not None)
        time.sleep(0.2)
    time.sleep(1.0)  # a few more iterations
    return processes, run


def assert_fails_with_one_line(process: subprocess.Popen, within_s: float) -> str:
    start = time.monotonic()
    _, stderr = process.communicate(timeout=within_s)
    elapsed = time.monotonic() - start
    assert process.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "lost contact with the others" in lines[-1] and "checkpoints/latest" in lines[-1], stderr[-3000:]
    assert elapsed < within_s
    return lines[-1]


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_dead_or_hung_rank_ends_the_others_with_one_line_and_resume_continues(tmp_path: Path, fault: str) -> None:
    """Rank 1 is killed (SIGKILL) or hangs (SIGSTOP): rank 0 exits with one error line within the
    process group's timeout (5 s here), keeping its last checkpoint; ``--resume`` then continues
    the run in one process (a different number of processes)."""
    timeout_s = 5.0
    processes, run = start_training(tmp_path, timeout_s)
    os.kill(processes[1].pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
    try:
        assert_fails_with_one_line(processes[0], within_s=timeout_s + 25)
    finally:
        processes[1].kill()
        processes[1].communicate()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["checkpoint_step"] > 0
    total = summary["checkpoint_step"] + 2 * 64
    resumed = subprocess.run([sys.executable, "-m", "ppokit", "train", "--resume", str(run), "--total-steps",
                              str(total), "--quiet"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["total_steps"] == total


# ---------------------------------------------------------------------------- two nodes


def test_two_nodes_joined_by_c10d_rendezvous_on_loopback(tmp_path: Path) -> None:
    """``torchrun --nnodes 2 --rdzv-backend c10d`` as two launches (the "nodes") of one process each,
    on 127.0.0.1: they train together, and only the node holding rank 0 reports and writes."""
    port = free_port()
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "loopback",
               "-m", "ppokit", "train", "CartPole-v1", "--num-envs", "4", "--total-steps", "128",
               "--run-dir", str(run), "--quiet", "--set", "rollout.num_steps=16", "--set", "ppo.minibatch_size=32",
               "--set", "eval_episodes=0", "--set", "dist_timeout_s=60"]
    nodes = [subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    assert sum("steps/s" in stdout for stdout, _ in outputs) == 1
    with open(run / "metrics.csv", newline="") as handle:
        assert [int(row["global_step"]) for row in csv.DictReader(handle)] == [64, 128]
