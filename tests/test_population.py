"""Populations (ppokit train --seeds / --sweep, ppokit.train(seeds=, sweep=)): parsing, agent k
equal to the single run with seed k, sweeps and their summary, failure of one agent, resume,
hostile population.json, agent folders as single runs."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import yaml

import ppokit
from ppokit import population
from ppokit.cli import main
from ppokit.config import Config, ConfigError
from tests.errors_support import BATCH, TINY, TOY, ToyEnv, bad_input, run_cli

ITERATIONS = 4
STEPS = ITERATIONS * BATCH
# No schedules: a resumed run with a larger total_steps then equals one long run (tests/test_train.py).
NO_ANNEAL = ["--set", "ppo.anneal_lr=false", "--set", "ppo.anneal_clip=false"]
ALGO_SETTINGS = {
    "ppo": ["--set", "ppo.update_epochs=2", "--set", "ppo.minibatch_size=16"],
    "ppo-kl": ["--set", "ppo_kl.update_epochs=2", "--set", "ppo_kl.minibatch_size=16",
               "--set", "ppo_kl.kl_target=0.001"],
    "trpo": ["--set", "trpo.value_epochs=1", "--set", "trpo.value_minibatch_size=32", "--set", "trpo.max_kl=0.05"],
    "vpg": ["--set", "vpg.value_epochs=1", "--set", "vpg.value_minibatch_size=32"],
}
FAULT = ["--set", "env.kwargs={fault: nan_reward, sub_env: 0, at: 20}"]  # only in the envs of seed 0


def is_time_column(name: str) -> bool:
    return name.startswith("time_") or name.startswith("wall_time") or name == "sps"


def metrics(run: Path, skip_eval: bool = False) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not is_time_column(k) and not (skip_eval and k.startswith("eval_"))}
                for row in csv.DictReader(handle)]


def tensors(run: Path) -> dict:
    return safetensors.torch.load_file(str(run / "checkpoints" / "latest" / "model.safetensors"))


def assert_same_run(a: Path, b: Path, skip_eval: bool = False) -> None:
    """Bit for bit: the agents that update one by one (ppo-kl, trpo, vpg, or a PPO population
    once only one agent is left)."""
    rows_a, rows_b = metrics(a, skip_eval), metrics(b, skip_eval)
    assert rows_a and rows_a == rows_b
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    assert not [k for k in ta if not (ta[k].shape == tb[k].shape and (ta[k] == tb[k]).all())]


def assert_close_run(a: Path, b: Path, first: int = 2, rel: float = 1e-4) -> None:
    """Up to float rounding: a PPO population's batched update (ppokit.fast.stacked) rounds its
    matrix products differently from one agent's, so the runs agree to ~1e-5 in the first
    iterations (later on, an RL run amplifies any rounding difference)."""
    rows_a, rows_b = metrics(a), metrics(b)
    assert len(rows_a) == len(rows_b) >= first
    for row_a, row_b in zip(rows_a[:first], rows_b[:first]):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            if row_a[key] in ("", "nan") or row_b[key] in ("", "nan"):
                assert row_a[key] == row_b[key], key
            else:
                assert float(row_a[key]) == pytest.approx(float(row_b[key]), rel=rel, abs=1e-6), key


def pop_json(folder: Path) -> dict:
    return json.loads((folder / population.FILE).read_text())


def agent_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def train(capsys, *args: str, env: str = "CartPole-v1", steps: int = STEPS) -> tuple[int, str, list[str]]:
    return run_cli(capsys, ["train", env, "--total-steps", str(steps), *TINY, *args])


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mtime (links not followed)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, seeds", [
    ("0-7", list(range(8))), ("0,3,5", [0, 3, 5]), ("0-2,9", [0, 1, 2, 9]), ("7", [7]),
    (" 1 - 3 , 5 ", [1, 2, 3, 5]), ("0-255", list(range(256))), ("4294967295", [2**32 - 1]),
])
def test_parse_seeds_accepts(text, seeds):
    assert population.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", " ", "3-1", "0,0", "0-2,1", "-1", "0--2", "a", "1a", "0-7,", "0.5",
                                  "0-256", "0-200,300-400", "4294967296", "9" * 30, "1,2" * 600])
def test_parse_seeds_refuses(text):
    with pytest.raises(ConfigError, match="--seeds"):
        population.parse_seeds(text)


def test_parse_sweep_accepts():
    assert population.parse_sweep(["ppo.clip_coef=0.1,0.2,0.3", "ppo.learning_rate= 1e-4 ,3e-4"]) == [
        ("ppo.clip_coef", [0.1, 0.2, 0.3]), ("ppo.learning_rate", [1e-4, 3e-4])]
    assert population.parse_sweep(["ppo.target_kl=0.01"]) == [("ppo.target_kl", [0.01])]  # float | None
    assert population.parse_sweep([]) == []


@pytest.mark.parametrize("items, words", [
    (["ppo.clip_coef"], ["expected KEY=V1,V2"]), (["=0.1"], ["expected KEY=V1,V2"]),
    (["rollout.num_steps=16,32"], ["only float fields"]), (["seed=1,2"], ["only float fields"]),
    (["ppo=1,2"], ["only float fields"]), (["ppo.clip_coeff=0.1"], ["no such config field"]),
    (["nope=0.1"], ["no such config field"]), (["ppo.clip_coef=0.1,nan"], ["not a finite number"]),
    (["ppo.clip_coef=inf"], ["not a finite number"]), (["ppo.clip_coef=1e999"], ["not a finite number"]),
    (["ppo.clip_coef=0.1,abc"], ["'abc' is not a finite number"]), (["ppo.clip_coef="], ["not a finite number"]),
    (["ppo.clip_coef=0.1,0.1"], ["each value once"]), (["ppo.clip_coef=0.1,1e-1"], ["each value once"]),
    (["ppo.clip_coef=0.1", "ppo.clip_coef=0.2"], ["each field once"]),
])
def test_parse_sweep_refuses(items, words):
    with pytest.raises(ConfigError) as error:
        population.parse_sweep(items)
    assert "--sweep" in str(error.value) and all(word in str(error.value) for word in words)


def test_too_many_agents_is_refused():
    sweep = population.parse_sweep(["ppo.clip_coef=" + ",".join(str(0.01 * (i + 1)) for i in range(17))])
    with pytest.raises(ConfigError, match="272 agents"):
        population.agents(Config(env_id="CartPole-v1"), list(range(16)), sweep)
    assert len(population.agents(Config(env_id="CartPole-v1"), list(range(16)), sweep[:0])) == 16


def test_agent_names_are_distinct_for_distinct_values():
    """Values equal to 6 significant digits are distinct agents: their folders must differ."""
    sweep = population.parse_sweep(["ppo.clip_coef=0.1000001,0.1000002,0.1"])
    agents = population.agents(Config(env_id="CartPole-v1"), [0], sweep)
    assert [a.cfg.ppo.clip_coef for a in agents] == [0.1000001, 0.1000002, 0.1]
    assert len({a.name for a in agents}) == 3, [a.name for a in agents]
    assert agents[2].name == "ppo.clip_coef=0.1,seed-0"
    assert all(population._plain_name(a.name) for a in agents)


REFUSED = [
    (["--seeds", ""], ["--seeds"]), (["--seeds", "3-1"], ["--seeds", "3-1"]), (["--seeds", "0,0"], ["--seeds"]),
    (["--seeds", "-1"], ["--seeds"]), (["--seeds", "a"], ["--seeds", "'a'"]), (["--seeds", "0-300"], ["--seeds"]),
    (["--seeds", "0-15", "--sweep", "ppo.clip_coef=" + ",".join(str(0.01 * (i + 1)) for i in range(17))],
     ["272 agents"]),
    (["--seed", "0", "--seeds", "0-1"], ["--seed and --seeds"]),
    (["--sweep", "rollout.num_steps=16,32"], ["--sweep", "only float fields"]),
    (["--sweep", "ppo.nope=0.1"], ["--sweep", "no such config field"]),
    (["--sweep", "ppo.clip_coef=0.1,nan"], ["--sweep", "not a finite number"]),
    (["--sweep", "ppo.clip_coef=0.1,inf"], ["--sweep", "not a finite number"]),
    (["--sweep", "ppo.clip_coef=0.2,0.2"], ["--sweep", "each value once"]),
    (["--seeds", "0-1", "--set", "rollout.gamma=1.5"], ["rollout.gamma"]),
    # a value refused by the config's checks, in one agent only: no half-made population
    (["--seeds", "0-1", "--sweep", "rollout.gamma=0.9,1.5"], ["rollout.gamma"]),
    (["--seeds", "0-1", "--sweep", "ppo.learning_rate=0.001,-0.001"], ["ppo.learning_rate"]),
    # refused while the agents open (their envs, their memory): the population folder goes again
    (["--seeds", "0-1", "--set", "env.kwargs={nope: 1}"], ["env.kwargs", "nope"]),
    (["--seeds", "0-1", "--num-envs", "100000000"], ["memory"]),
]


@pytest.mark.parametrize("args, words", REFUSED)
def test_refused_input_is_one_line_exit_2_and_creates_nothing(args, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default population folder would be runs/... in here
    for with_run_dir in (False, True):
        extra = ["--run-dir", str(tmp_path / "pop")] if with_run_dir else []
        bad_input(capsys, ["train", "CartPole-v1", "--total-steps", str(STEPS), *TINY, *args, *extra], *words)
        assert list(tmp_path.iterdir()) == []


def test_a_non_empty_population_folder_is_refused(tmp_path, capsys):
    (tmp_path / "pop").mkdir()
    (tmp_path / "pop" / "mine.txt").write_text("keep")
    bad_input(capsys, ["train", "CartPole-v1", "--seeds", "0-1", *TINY, "--run-dir", str(tmp_path / "pop")],
              "exists and is not empty")
    assert [p.name for p in (tmp_path / "pop").iterdir()] == ["mine.txt"]


def test_python_api_refuses_bad_seeds_and_sweeps(tmp_path):
    for kwargs in ({"seeds": []}, {"seeds": [0, 0]}, {"seeds": ["a"]}, {"seeds": [0.5]},
                   {"sweep": {"ppo.clip_coef": [float("nan")]}}, {"sweep": {"rollout.num_steps": [16]}},
                   {"sweep": {"ppo.clip_coef": ["x"]}}, {"sweep": {"ppo.clip_coef": 0.1}}, {"seeds": [-1]}):
        with pytest.raises(ConfigError):
            ppokit.train("CartPole-v1", total_steps=STEPS, run_dir=tmp_path / "pop", **kwargs)
        assert not (tmp_path / "pop").exists(), kwargs


# ---------------------------------------------------------------------------- agent k == single run k


@pytest.mark.parametrize("algo, env", [(algo, env) for algo in ALGO_SETTINGS for env in ("CartPole-v1", "Pendulum-v1")])
def test_each_agent_equals_the_single_run_with_its_seed(algo, env, tmp_path, capsys):
    args = ["--algo", algo, *ALGO_SETTINGS[algo], "--set", "env.normalize_obs=true",
            "--set", "env.normalize_reward=true", "--set", "eval.every_steps=64", "--set", "eval.episodes=1"]
    code, out, _ = train(capsys, *args, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"), env=env)
    assert code == 0 and f"population folder: {tmp_path / 'pop'}" in out
    for seed in (0, 1):
        assert train(capsys, *args, "--seed", str(seed), "--run-dir", str(tmp_path / f"single-{seed}"),
                     env=env)[0] == 0
        # batched: up to rounding (which TRPO's conjugate gradient amplifies more)
        assert_close_run(tmp_path / "pop" / f"seed-{seed}", tmp_path / f"single-{seed}",
                         rel=1e-3 if algo == "trpo" else 1e-4)
        assert len(metrics(tmp_path / f"single-{seed}")) == ITERATIONS
        assert any(row["eval_return_mean"] for row in metrics(tmp_path / f"single-{seed}"))
    # the comparison can fail: the two seeds differ
    assert metrics(tmp_path / "pop" / "seed-0") != metrics(tmp_path / "pop" / "seed-1")


@pytest.mark.parametrize("options", [
    ["--set", "ppo.value_fit=separate", "--set", "ppo.value_epochs=2", "--set", "ppo.value_minibatch_size=16",
     "--set", "ppo.kl_stop=step", "--set", "ppo.target_kl=0.001", "--set", "ppo.norm_adv_scope=batch"],
    ["--set", "ppo.recompute_advantages=true", "--set", "ppo.value_loss=huber", "--set", "model.shared_trunk=true"],
], ids=["spinningup", "minimal"])
def test_population_with_the_tutorial_options_equals_single_runs(options, tmp_path, capsys):
    """The options the stacked update leaves to each agent (fast/stacked.py): bit for bit."""
    args = [*ALGO_SETTINGS["ppo"], *options, "--set", "env.normalize_reward=true"]
    assert train(capsys, *args, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"))[0] == 0
    for seed in (0, 1):
        assert train(capsys, *args, "--seed", str(seed), "--run-dir", str(tmp_path / f"single-{seed}"))[0] == 0
        assert_same_run(tmp_path / "pop" / f"seed-{seed}", tmp_path / f"single-{seed}")
    assert metrics(tmp_path / "pop" / "seed-0") != metrics(tmp_path / "pop" / "seed-1")


def test_python_api_population_equals_single_runs(tmp_path):
    options = dict(total_steps=STEPS, rollout__num_envs=2, rollout__num_steps=16, ppo__minibatch_size=16,
                   eval_episodes=0)
    agents = ppokit.train("CartPole-v1", seeds=[3, 5], run_dir=tmp_path / "pop", **options)
    assert [a.run_dir for a in agents] == [tmp_path / "pop" / "seed-3", tmp_path / "pop" / "seed-5"]
    assert [a.summary["status"] for a in agents] == ["completed", "completed"]
    single = ppokit.train("CartPole-v1", seed=5, run_dir=tmp_path / "single", **options)
    assert_close_run(tmp_path / "pop" / "seed-5", single.run_dir)


# ---------------------------------------------------------------------------- sweeps and the summary


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep") / "pop"
    assert main(["train", "CartPole-v1", "--total-steps", str(STEPS), *TINY, *ALGO_SETTINGS["ppo"],
                 "--seeds", "0-2", "--sweep", "ppo.learning_rate=0.001,0.01", "--sweep", "ppo.ent_coef=0,0.05",
                 "--run-dir", str(folder)]) == 0
    return folder


def test_sweep_agents_hold_their_values_and_seeds(swept):
    data = pop_json(swept)
    assert data["status"] == "completed" and data["format_version"] == 1
    combos = {(lr, ent, seed) for lr in (0.001, 0.01) for ent in (0.0, 0.05) for seed in (0, 1, 2)}
    listed = {(a["settings"]["ppo.learning_rate"], a["settings"]["ppo.ent_coef"], a["seed"]) for a in data["agents"]}
    assert listed == combos and len(data["agents"]) == 12
    assert sorted(p.name for p in swept.iterdir() if p.is_dir()) == sorted(a["name"] for a in data["agents"])
    for entry in data["agents"]:
        assert entry["run_dir"] == entry["name"]
        assert entry["name"].endswith(f"seed-{entry['seed']}") and "ppo.learning_rate=" in entry["name"]
        cfg = yaml.safe_load((swept / entry["name"] / "config.yaml").read_text())
        assert cfg["seed"] == entry["seed"]
        assert cfg["ppo"]["learning_rate"] == entry["settings"]["ppo.learning_rate"]
        assert cfg["ppo"]["ent_coef"] == entry["settings"]["ppo.ent_coef"]
        assert cfg["ppo"]["clip_coef"] == 0.2 and cfg["ppo"]["update_epochs"] == 2  # the rest as given
        assert agent_summary(swept / entry["name"])["seed"] == entry["seed"]


def test_sweep_agent_equals_the_single_run_with_its_value(swept, tmp_path, capsys):
    assert train(capsys, *ALGO_SETTINGS["ppo"], "--seed", "2", "--set", "ppo.learning_rate=0.01",
                 "--set", "ppo.ent_coef=0.05", "--run-dir", str(tmp_path / "single"))[0] == 0
    assert_close_run(swept / "ppo.learning_rate=0.01,ppo.ent_coef=0.05,seed-2", tmp_path / "single")
    assert metrics(swept / "ppo.learning_rate=0.01,ppo.ent_coef=0.05,seed-2") != \
        metrics(swept / "ppo.learning_rate=0.001,ppo.ent_coef=0.05,seed-2")  # the value mattered


def test_summary_per_agent_and_per_setting(swept):
    table = pop_json(swept)["summary"]
    assert len(table["agents"]) == 12 and len(table["settings"]) == 4
    for row in table["agents"]:
        summary = agent_summary(swept / row["name"])
        assert row["status"] == "completed" == summary["status"]
        assert row["total_steps"] == STEPS == summary["total_steps"]
        assert row["train_return_last20"] == summary["train_return_last20"]
    for group in table["settings"]:
        members = [row for row in table["agents"] if row["settings"] == group["settings"]]
        assert group["agents"] == group["completed"] == 3 == len(members)
        values = [row["train_return_last20"] for row in members]
        spread = group["train_return_last20"]
        assert spread["n"] == 3
        assert spread["mean"] == pytest.approx(sum(values) / 3)
        assert spread["median"] == pytest.approx(sorted(values)[1])
        low, high = spread["ci95"]
        assert min(values) <= low <= spread["mean"] <= high <= max(values)
        assert group["eval_return_mean"] == {"n": 0, "mean": None, "median": None, "ci95": None}  # eval_episodes=0
    assert {json.dumps(g["settings"], sort_keys=True) for g in table["settings"]} == {
        json.dumps({"ppo.learning_rate": lr, "ppo.ent_coef": ent}, sort_keys=True)
        for lr in (0.001, 0.01) for ent in (0.0, 0.05)}


def test_one_seed_has_no_interval_and_the_table_prints(tmp_path, capsys):
    code, out, _ = train(capsys, "--seeds", "4", "--sweep", "ppo.clip_coef=0.1,0.3", "--set", "eval_episodes=2",
                         "--run-dir", str(tmp_path / "pop"), steps=2 * BATCH)
    assert code == 0
    assert "ppo.clip_coef=0.1: 1 agents (1 completed)" in out and "ppo.clip_coef=0.3: 1 agents" in out
    table = pop_json(tmp_path / "pop")["summary"]
    for group in table["settings"]:
        assert group["agents"] == 1 and group["train_return_last20"]["ci95"] is None
        assert group["eval_return_mean"]["n"] == 1 and group["eval_return_mean"]["ci95"] is None
    assert [row["seed"] for row in table["agents"]] == [4, 4]


# ---------------------------------------------------------------------------- one agent fails


def test_a_failing_agent_stops_alone_cli(tmp_path, capsys):
    code, out, err = train(capsys, *FAULT, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"), env=TOY)
    assert code == 1
    assert len(err) == 1 and "agent seed-0 failed" in err[0] and "non-finite reward" in err[0], err
    data = pop_json(tmp_path / "pop")
    assert data["status"] == "failed"
    rows = {row["name"]: row for row in data["summary"]["agents"]}
    assert rows["seed-0"]["status"] == "failed" and rows["seed-0"]["total_steps"] < STEPS
    assert rows["seed-1"]["status"] == "completed" and rows["seed-1"]["total_steps"] == STEPS
    assert data["summary"]["settings"][0]["completed"] == 1
    assert agent_summary(tmp_path / "pop" / "seed-0")["status"] == "failed"
    # the other agent went on exactly as the single run with its seed
    assert train(capsys, *FAULT, "--seed", "1", "--run-dir", str(tmp_path / "single"), env=TOY)[0] == 0
    assert_close_run(tmp_path / "pop" / "seed-1", tmp_path / "single")


def test_an_env_that_raises_mid_rollout_ends_its_agent_only(tmp_path, capsys):
    """The agents act together (one batched forward per step): one agent's env raising in the
    middle of a rollout ends that agent; the other finishes as its single run does."""
    step_raise = ["--set", "env.kwargs={fault: step_raise, sub_env: 0, at: 21}"]
    code, _, err = train(capsys, *step_raise, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"), env=TOY)
    assert code == 1 and len(err) == 1 and "agent seed-0 failed" in err[0], err
    rows = {row["name"]: row for row in pop_json(tmp_path / "pop")["summary"]["agents"]}
    assert rows["seed-0"]["status"] == "failed" and rows["seed-1"]["status"] == "completed"
    assert train(capsys, *step_raise, "--seed", "1", "--run-dir", str(tmp_path / "single"), env=TOY)[0] == 0
    assert_close_run(tmp_path / "pop" / "seed-1", tmp_path / "single")


def test_resume_goes_on_without_an_agent_that_failed_before_its_first_checkpoint(tmp_path, capsys):
    assert train(capsys, *FAULT, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"), env=TOY)[0] == 1
    assert not (tmp_path / "pop" / "seed-0" / "checkpoints" / "latest").exists()  # failed in iteration 1
    failed_summary = (tmp_path / "pop" / "seed-0" / "summary.json").read_bytes()
    code, _, err = run_cli(capsys, ["train", "--resume", str(tmp_path / "pop"), "--total-steps", str(2 * STEPS)])
    assert code == 1, err  # the population still holds a failed agent
    assert (tmp_path / "pop" / "seed-0" / "summary.json").read_bytes() == failed_summary  # left as it was
    rows = {row["name"]: row for row in pop_json(tmp_path / "pop")["summary"]["agents"]}
    assert rows["seed-0"]["status"] == "failed"
    assert rows["seed-1"]["status"] == "completed" and rows["seed-1"]["total_steps"] == 2 * STEPS
    # per-setting statistics count the completed agent only
    assert pop_json(tmp_path / "pop")["summary"]["settings"][0]["train_return_last20"]["n"] == 1


def test_a_failing_agent_stops_alone_python_api(tmp_path):
    def make_env():  # the sub-env seeded with 2 (only in seed 1's envs) returns NaN rewards
        return ToyEnv(fault="nan_reward", sub_env=2, at=10)

    agents = ppokit.train(make_env, seeds=[0, 1], run_dir=tmp_path / "pop", total_steps=STEPS,
                          rollout__num_envs=2, rollout__num_steps=16, ppo__minibatch_size=16, eval_episodes=0)
    assert [a.summary["status"] for a in agents] == ["completed", "failed"]
    assert "non-finite reward" in agents[1].summary["error"]
    data = pop_json(tmp_path / "pop")
    assert data["status"] == "failed"
    assert [row["status"] for row in data["summary"]["agents"]] == ["completed", "failed"]


# ---------------------------------------------------------------------------- resume


def test_resume_with_more_steps_equals_one_longer_population(tmp_path, capsys):
    args = [*NO_ANNEAL, *ALGO_SETTINGS["ppo"], "--seeds", "0-1", "--sweep", "ppo.clip_coef=0.1,0.3"]
    split, whole = tmp_path / "split", tmp_path / "whole"
    assert train(capsys, *args, "--run-dir", str(split))[0] == 0
    first = tensors(split / "ppo.clip_coef=0.3,seed-1")
    code, out, err = run_cli(capsys, ["train", "--resume", str(split), "--set", f"total_steps={2 * STEPS}", "--quiet"])
    assert code == 0, err
    assert f"population folder: {split}" in out
    assert train(capsys, *args, "--run-dir", str(whole), steps=2 * STEPS)[0] == 0
    data = pop_json(split)
    assert data["status"] == "completed"
    names = [a["name"] for a in data["agents"]]
    assert names == [a["name"] for a in pop_json(whole)["agents"]] and len(names) == 4
    assert [row["total_steps"] for row in data["summary"]["agents"]] == [2 * STEPS] * 4
    for name in names:
        assert len(metrics(split / name)) == 2 * ITERATIONS
        # eval_*: the split agents also evaluated at the end of their first session
        assert_same_run(split / name, whole / name, skip_eval=True)
        assert yaml.safe_load((split / name / "config.yaml").read_text())["total_steps"] == 2 * STEPS
    assert not (first["agent.value_head.weight"] == tensors(split / names[-1])["agent.value_head.weight"]).all()


def test_resume_with_total_steps_shorthand_and_a_failed_agent(tmp_path, capsys):
    """The failed agent resumes from its last good checkpoint (iteration 2) and fails again, alone."""
    late_fault = ["--set", "env.kwargs={fault: nan_reward, sub_env: 0, at: 40}", "--set", "checkpoint_every=1"]
    assert train(capsys, *late_fault, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"), env=TOY)[0] == 1
    assert agent_summary(tmp_path / "pop" / "seed-0")["checkpoint_step"] == 2 * BATCH
    code, _, err = run_cli(capsys, ["train", "--resume", str(tmp_path / "pop"), "--total-steps", str(2 * STEPS),
                                    "--quiet"])
    assert code == 1 and any("agent seed-0 failed" in line for line in err)  # it fails again, alone
    rows = {row["name"]: row for row in pop_json(tmp_path / "pop")["summary"]["agents"]}
    assert rows["seed-1"]["status"] == "completed" and rows["seed-1"]["total_steps"] == 2 * STEPS


@pytest.fixture(scope="module")
def trained_population(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pop") / "pop"
    assert main(["train", "CartPole-v1", "--total-steps", str(STEPS), *TINY, "--seeds", "0-1",
                 "--run-dir", str(folder)]) == 0
    return folder


@pytest.fixture()
def pop(trained_population: Path, tmp_path: Path) -> Path:
    """A private copy of the population, free to damage; tmp_path/outside is a run beside it."""
    shutil.copytree(trained_population / "seed-0", tmp_path / "outside")
    return Path(shutil.copytree(trained_population, tmp_path / "pop"))


def test_resume_refuses_flags_that_change_the_agents(pop, capsys):
    before = snapshot(pop.parent)
    for args, words in ((["--seeds", "0-3"], ["--seeds and --sweep cannot be combined with --resume"]),
                        (["--sweep", "ppo.clip_coef=0.1"], ["cannot be combined with --resume"]),
                        (["--run-dir", str(pop.parent / "x")], ["--run-dir cannot be combined"]),
                        (["--seed", "3"], ["seed cannot change"]),
                        (["--set", "rollout.num_envs=4"], ["rollout.num_envs cannot change"]),
                        (["--set", "rollout.gamma=1.5"], ["rollout.gamma"])):
        bad_input(capsys, ["train", "--resume", str(pop), "--quiet", *args], *words)
        assert snapshot(pop.parent) == before, args


def hostile(pop: Path, names: list[str]) -> None:
    data = pop_json(pop)
    data["agents"] = [{"name": name, "seed": 0, "settings": {}, "run_dir": name} for name in names]
    (pop / population.FILE).write_text(json.dumps(data))


@pytest.mark.parametrize("damage, words", [
    (lambda pop: (pop / population.FILE).write_text("{not json"), ["unreadable or not a ppokit population"]),
    (lambda pop: (pop / population.FILE).write_text("[1, 2]"), ["unreadable or not a ppokit population"]),
    (lambda pop: (pop / population.FILE).write_text('{"agents": [{"name": "seed-0", "settings": 1}]}'),
     ["unreadable"]),
    (lambda pop: (pop / population.FILE).write_text("[" * 100_000), ["unreadable"]),
    (lambda pop: (pop / population.FILE).write_text('{"agents": [' + " " * (2 << 20) + "]}"), ["population file"]),
    (lambda pop: hostile(pop, []), ["expected 1 to 256 agents"]),
    (lambda pop: hostile(pop, ["../outside"]), ["names are folders inside it"]),
    (lambda pop: hostile(pop, [str(Path("..").resolve() / "outside")]), ["names are folders inside it"]),
    (lambda pop: hostile(pop, ["seed-0", "sub/../../outside"]), ["names are folders inside it"]),
    (lambda pop: hostile(pop, [".."]), ["names are folders inside it"]),
    (lambda pop: hostile(pop, [""]), ["names are folders inside it"]),
    (lambda pop: hostile(pop, ["x" * 300]), ["names are folders inside it"]),
    (lambda pop: hostile(pop, ["seed-0", "seed-0"]), ["each once"]),
    (lambda pop: hostile(pop, ["seed-0", "missing"]), ["missing"]),
    (lambda pop: (os.symlink(pop.parent / "outside", pop / "linked"), hostile(pop, ["seed-0", "linked"])),
     ["linked"]),
])
def test_hostile_population_file_on_resume(pop, damage, words, capsys):
    damage(pop)
    before = snapshot(pop.parent)
    bad_input(capsys, ["train", "--resume", str(pop), "--set", f"total_steps={2 * STEPS}", "--quiet"], *words)
    assert snapshot(pop.parent) == before  # the outside run, the agents and population.json untouched


def test_resume_refused_while_opening_keeps_population_json(pop, capsys):
    """An agent's folder in use by another training: refused when its run opens, after the checks;
    population.json keeps its summary (it is not left saying "running")."""
    fcntl = pytest.importorskip("fcntl")
    before = (pop / population.FILE).read_bytes()
    with open(pop / "seed-1" / ".ppokit.lock", "a") as held:  # seed-0 opens, then seed-1 is refused
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        bad_input(capsys, ["train", "--resume", str(pop), "--set", f"total_steps={2 * STEPS}", "--quiet"],
                  "seed-1", "in use")
    assert (pop / population.FILE).read_bytes() == before
    assert pop_json(pop)["status"] == "completed"


def test_population_file_as_a_link_is_refused(pop, capsys):
    real = pop.parent / "real.json"
    (pop / population.FILE).rename(real)
    os.symlink(real, pop / population.FILE)
    before = snapshot(pop.parent)
    bad_input(capsys, ["train", "--resume", str(pop), "--quiet"], "population file")
    assert snapshot(pop.parent) == before


# ---------------------------------------------------------------------------- agents as single runs


def test_agent_folders_load_and_evaluate_as_single_runs(pop, capsys):
    agent = ppokit.load(pop / "seed-0")
    assert agent.env_id == "CartPole-v1" and agent.global_step == STEPS
    obs = np.zeros((3, 4), np.float32)
    assert agent.act(obs).shape == (3,) and agent.act(obs[0]) in (0, 1)
    assert not np.array_equal(ppokit.load(pop / "seed-1").value(obs), agent.value(obs))
    result = ppokit.evaluate(agent, episodes=2)
    assert len(result["returns"]) == 2
    code, out, _ = run_cli(capsys, ["eval", str(pop / "seed-1"), "--episodes", "2", "--json"])
    assert code == 0 and json.loads(out)["episodes"] == 2


def test_one_agent_resumes_as_a_single_run(pop, capsys):
    code, out, err = run_cli(capsys, ["train", "--resume", str(pop / "seed-1"), "--total-steps", str(2 * STEPS),
                                      "--quiet"])
    assert code == 0, err
    assert agent_summary(pop / "seed-1")["total_steps"] == 2 * STEPS
    assert agent_summary(pop / "seed-0")["total_steps"] == STEPS


def test_eval_of_the_population_folder_itself_is_bad_input(pop, capsys):
    code, _, lines = run_cli(capsys, ["eval", str(pop), "--episodes", "1"])
    assert code == 2 and len(lines) == 1


def test_population_on_discrete_observations(tmp_path, capsys):
    """FrozenLake: one-hot observations in the batched acting forward, and an env whose state
    holds a text array (its map), which checkpoints leave out."""
    assert train(capsys, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"), env="FrozenLake-v1")[0] == 0
    assert train(capsys, "--seed", "1", "--run-dir", str(tmp_path / "single"), env="FrozenLake-v1")[0] == 0
    assert_close_run(tmp_path / "pop" / "seed-1", tmp_path / "single")
    assert run_cli(capsys, ["train", "--resume", str(tmp_path / "single"), "--total-steps", str(2 * STEPS)])[0] == 0


def test_ctrl_c_saves_every_agent_and_resume_finishes_them(tmp_path, capsys, monkeypatch):
    import signal

    import ppokit.loop

    real_judge, calls = ppokit.loop.judge, {"n": 0}

    def judge(*args, **kwargs):  # Ctrl-C while the agents judge iteration 3 (2 agents: the 5th call)
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real_judge(*args, **kwargs)

    monkeypatch.setattr(ppokit.loop, "judge", judge)
    code, _, err = train(capsys, "--seeds", "0-1", "--run-dir", str(tmp_path / "pop"), steps=8 * BATCH)
    assert code == 130 and any(f"--resume {tmp_path / 'pop'}" in line for line in err), err
    for name in ("seed-0", "seed-1"):
        summary = agent_summary(tmp_path / "pop" / name)
        assert summary["status"] == "interrupted" and summary["checkpoint_step"] == 3 * BATCH
    monkeypatch.undo()
    assert run_cli(capsys, ["train", "--resume", str(tmp_path / "pop")])[0] == 0
    assert [row["total_steps"] for row in pop_json(tmp_path / "pop")["summary"]["agents"]] == [8 * BATCH] * 2


def test_plot_takes_a_population_and_eval_names_its_agents(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    sweep = ["--sweep", "ppo.clip_coef=0.1,0.3"]
    assert train(capsys, "--seeds", "0-1", *sweep, "--run-dir", str(tmp_path / "pop"))[0] == 0
    code, out, _ = run_cli(capsys, ["plot", str(tmp_path / "pop"), "--out", str(tmp_path / "curves.png")])
    assert code == 0 and "(4 runs, 2 settings)" in out and (tmp_path / "curves.png").stat().st_size > 0
    bad_input(capsys, ["eval", tmp_path / "pop"], "is a population folder", "seed-0")


@pytest.mark.parametrize("algo, sweep", [("trpo", "trpo.max_kl=0.01,0.05"), ("vpg", "vpg.learning_rate=0.001,0.01"),
                                         ("ppo-kl", "ppo_kl.kl_target=0.003,0.03")])
def test_sweeps_of_every_algorithm(algo, sweep, tmp_path, capsys):
    """Each swept agent trains with its own value: it follows the single run given that value."""
    args = ["--algo", algo, *ALGO_SETTINGS[algo]]
    assert train(capsys, *args, "--seeds", "0", "--sweep", sweep, "--run-dir", str(tmp_path / "pop"))[0] == 0
    key, values = sweep.split("=")
    last = values.split(",")[-1]
    assert train(capsys, *args, "--set", f"{key}={last}", "--run-dir", str(tmp_path / "single"))[0] == 0
    agent = tmp_path / "pop" / f"{key}={last},seed-0"
    section, field = key.split(".")
    assert yaml.safe_load((agent / "config.yaml").read_text())[section][field] == float(last)
    assert_close_run(agent, tmp_path / "single", rel=1e-3)
