"""``ppokit reproduce ppo-table1``: the paper's data, the score normalization by hand, the random
policy, bad input, and the command end to end on a CI-sized subset (with resume)."""

from __future__ import annotations

import json
import math
import sys

import gymnasium as gym
import numpy as np
import pytest

from ppokit.cli import main
from ppokit.config import validate
from ppokit.presets import build_config
from ppokit.reproduce import runs, scores, table1
from ppokit.reproduce.table1 import SETTINGS
from tests.errors_support import one_error_line

CONSTANT_ID = "PpokitTest/ConstantBox-v0"


class ConstantBoxEnv(gym.Env):
    """Box actions, reward 2 per step whatever the action; 3 steps an episode: every policy returns 6."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 2.0, False, False, {}


if CONSTANT_ID not in gym.envs.registry:
    gym.register(CONSTANT_ID, entry_point=ConstantBoxEnv, max_episode_steps=3)


# ---------------------------------------------------------------------------- the paper's table as data


def test_the_papers_numbers():
    """Table 1 of arXiv:1707.06347, as the issue quotes it."""
    assert {name: s.paper_score for name, s in SETTINGS.items()} == {
        "no-clip": -0.39, "clip-0.1": 0.76, "clip-0.2": 0.82, "clip-0.3": 0.70,
        "kl-adaptive-0.003": 0.68, "kl-adaptive-0.01": 0.74, "kl-adaptive-0.03": 0.71,
        "kl-fixed-0.3": 0.62, "kl-fixed-1": 0.71, "kl-fixed-3": 0.72, "kl-fixed-10": 0.69,
    }
    assert len(table1.ENVS) == 7 and all(env.endswith("-v5") for env in table1.ENVS)


@pytest.mark.parametrize("name, algo, fields", [
    ("no-clip", "ppo", {"clip_coef": None}),
    ("clip-0.3", "ppo", {"clip_coef": 0.3}),
    ("kl-adaptive-0.003", "ppo-kl", {"adaptive": True, "kl_target": 0.003, "beta_init": 1.0}),
    ("kl-fixed-10", "ppo-kl", {"adaptive": False, "beta_init": 10.0}),
])
def test_each_setting_is_the_ppo_paper_preset_with_its_fields(name, algo, fields):
    setting = SETTINGS[name]
    cfg = validate(build_config("Pendulum-v1", algo=setting.algo, preset=table1.PRESET, sets=list(setting.sets)))
    section = cfg.algo_section()
    assert cfg.algo == algo and cfg.rollout.num_steps == 2048 and section.minibatch_size == 64
    assert {key: getattr(section, key) for key in fields} == fields


def test_settings_and_envs_lists():
    assert [s.name for s in table1.parse_settings("kl-fixed-1,clip-0.2,clip-0.2")] == ["clip-0.2", "kl-fixed-1"]
    assert len(table1.parse_settings(None)) == 11
    assert table1.parse_envs(" Hopper-v5, Swimmer-v5") == ["Hopper-v5", "Swimmer-v5"]
    assert table1.parse_envs(None) == list(table1.ENVS)


# ---------------------------------------------------------------------------- scores


def test_normalization_against_hand_computed_values():
    raw = {("A", "s1"): [10.0, 20.0], ("A", "s2"): [0.0, 4.0],
           ("B", "s1"): [-100.0, -50.0], ("B", "s2"): [-20.0, -40.0],
           ("C", "s1"): [-5.0, -5.0], ("C", "s2"): [-7.0, -6.0]}
    random = {"A": 0.0, "B": -200.0, "C": -5.0}
    got = scores.normalize(raw, random)
    # A: random 0, best setting s1 (mean 15): x / 15.  B: random -200, best s2 (mean -30): (x + 200) / 170.
    expected = {("A", "s1"): [10 / 15, 20 / 15], ("A", "s2"): [0.0, 4 / 15],
                ("B", "s1"): [100 / 170, 150 / 170], ("B", "s2"): [180 / 170, 160 / 170]}
    for key, values in expected.items():
        assert got[key] == pytest.approx(values), key
    # C: the best setting does no better than random: no scale, NaN rather than a division by zero.
    assert all(math.isnan(x) for x in got["C", "s1"] + got["C", "s2"])


def test_bootstrap_intervals_are_the_same_every_time_and_leave_numpys_generator_alone():
    pytest.importorskip("rliable")
    from ppokit.reproduce import report

    rng = np.random.default_rng(0)
    envs, names = ["A", "B", "C"], ["clip-0.2", "no-clip"]
    raw = {(env, name): rng.normal(10.0 * (name == "clip-0.2"), 3.0, 3).tolist() for env in envs for name in names}
    random = {env: -5.0 for env in envs}
    results = report.Results(envs, table1.parse_settings(",".join(names)), 3, 1000, random, raw,
                             scores.normalize(raw, random))
    np.random.seed(123)
    first = report.intervals(results)
    after = np.random.random()
    np.random.seed(123)
    assert after == np.random.random()  # numpy's global generator is where the caller left it
    np.random.seed(999)  # from another state of that generator: the same intervals
    assert report.intervals(results) == first
    for entry in first.values():
        assert entry["mean"][1] < entry["mean"][0] < entry["mean"][2]


def test_run_times_add_up_per_env_and_in_all():
    from ppokit.reproduce import report

    def run(wall, env):
        return {"wall_time_s": wall, "time_env_s": env, "time_inference_s": 1.0, "time_update_s": 2.0,
                "time_other_s": wall - env - 3.0, "status": "completed"}

    first, second = {}, {}
    report.add_run_time(first, run(10.0, 4.0))
    report.add_run_time(first, run(30.0, 20.0))
    report.add_run_time(first, {"time_env_s": 99.0})  # no wall time (not a finished run's summary): nothing
    assert first == {"wall_time_s": 40.0, "time_env_s": 24.0, "time_inference_s": 2.0, "time_update_s": 4.0,
                     "time_other_s": 10.0, "runs": 2, "wall_min_s": 10.0, "wall_max_s": 30.0}
    report.add_run_time(second, run(20.0, 5.0))
    merged = {}
    for totals in (first, second):  # totals of groups of runs merge like runs
        report.add_run_time(merged, totals)
    assert merged == {"wall_time_s": 60.0, "time_env_s": 29.0, "time_inference_s": 3.0, "time_update_s": 6.0,
                      "time_other_s": 22.0, "runs": 3, "wall_min_s": 10.0, "wall_max_s": 30.0}
    assert report.summed_time([first, second, {"wall_time_s": 1.0}]) == {
        "wall_time_s": 61.0, "time_env_s": 29.0, "time_inference_s": 3.0, "time_update_s": 6.0, "time_other_s": 22.0}


def test_random_policy_return_and_its_cache(tmp_path, monkeypatch):
    assert scores.random_return(CONSTANT_ID, episodes=4) == 6.0
    pendulum = scores.random_return("Pendulum-v1", episodes=2)
    assert pendulum == scores.random_return("Pendulum-v1", episodes=2) < 0  # seeded: the same every time
    cache = tmp_path / "random.json"
    assert scores.random_returns([CONSTANT_ID], 4, cache) == {CONSTANT_ID: 6.0}
    monkeypatch.setattr(scores, "random_return", lambda *args: pytest.fail("measured again"))
    assert scores.random_returns([CONSTANT_ID], 4, cache) == {CONSTANT_ID: 6.0}  # from the cache
    assert json.loads(cache.read_text())[CONSTANT_ID]["episodes"] == 4


def test_run_states_and_commands(tmp_path):
    """Finished runs are skipped, failed ones left alone, saved ones resumed, the rest started."""
    run = runs.plan(tmp_path, ["Pendulum-v1"], [SETTINGS["no-clip"]], 1)[0]
    assert run.folder == tmp_path / "runs" / "Pendulum-v1" / "no-clip" / "seed0"
    assert runs.state(run) == "fresh"
    start = runs.command(run, 5000, ["eval_episodes=0"])
    assert start[-11:] == ["--set", "ppo.clip_coef=null", "--set", "eval_episodes=0", "--seed", "0",
                           "--total-steps", "5000", "--run-dir", str(run.folder), "--quiet"]
    assert start[start.index("--preset") + 1] == "ppo-paper" and start[start.index("--algo") + 1] == "ppo"
    assert start[start.index("--set") + 1] == "eval.every_steps=0"  # the score is the training return
    (run.folder / "checkpoints" / "latest").mkdir(parents=True)
    (run.folder / "checkpoints" / "latest" / "meta.json").write_text("{}")
    (run.folder / "summary.json").write_text('{"status": "interrupted"}')
    assert runs.state(run) == "resume"
    assert runs.command(run, 5000, [])[-3:] == ["--resume", str(run.folder), "--quiet"]
    (run.folder / "summary.json").write_text('{"status": "failed"}')
    assert runs.state(run) == "failed"
    (run.folder / "summary.json").write_text('{"status": "completed"}')
    assert runs.state(run) == "done"
    assert runs.execute([run], 5000, [], jobs=1, say=pytest.fail) == []  # nothing to run


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, words", [
    (["--settings", "clip-0.2,noclip"], ["unknown setting 'noclip'", "did you mean 'no-clip'"]),
    (["--envs", "Hoper-v5"], ["unknown env 'Hoper-v5'"]),
    (["--envs", "CartPole-v1"], ["CartPole-v1", "Discrete actions", "Box"]),
    (["--envs", "Pendulum-v1,"], ["--envs", "comma-separated"]),
    (["--set", "ppo.clip_coef=-1"], ["ppo.clip_coef"]),
    (["--seeds", "0"], ["--seeds", "positive integer"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, words):
    assert main(["reproduce", "ppo-table1", "--out", str(tmp_path / "out"), "--envs", "Pendulum-v1", *args]) == 2
    one_error_line(capsys, *words)
    assert not list((tmp_path / "out").glob("runs"))  # nothing ran


def test_unknown_experiment_and_missing_extra(tmp_path, capsys, monkeypatch):
    assert main(["reproduce", "ppo-table2"]) == 2
    one_error_line(capsys, "invalid choice", "ppo-table1")
    for module in ("rliable", "rliable.library", "rliable.metrics"):  # as if not installed (also when
        monkeypatch.setitem(sys.modules, module, None)                # an earlier test imported it)
    # (an env without MuJoCo: the default MuJoCo envs would be refused first where it is not installed)
    assert main(["reproduce", "ppo-table1", "--envs", "Pendulum-v1", "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "pip install 'ppokit[repro]'")


def test_an_out_folder_with_other_options_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "reproduce.json").write_text(json.dumps({"experiment": "ppo-table1", "preset": "ppo-paper",
                                                    "steps": 5000, "sets": []}))
    assert main(["reproduce", "ppo-table1", "--out", str(out), "--envs", CONSTANT_ID, "--steps", "6000"]) == 2
    one_error_line(capsys, "--steps 5000", "same options")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["reproduce", "ppo-table1", "--out", str(tmp_path / "other"), "--envs", CONSTANT_ID]) == 2
    one_error_line(capsys, "not empty")


# ---------------------------------------------------------------------------- end to end


ENVS = ["Pendulum-v1", "MountainCarContinuous-v0"]
SUBSET = ["reproduce", "ppo-table1", "--envs", ",".join(ENVS), "--settings", "clip-0.2,kl-fixed-1",
          "--seeds", "2", "--steps", "1024", "--jobs", "2", "--random-episodes", "3",
          "--set", "rollout.num_steps=256", "--set", "eval_episodes=0"]


def check_parts_combine_into_the_whole(out, planned, whole, tmp_path):
    """benchmarks/table1_combine.py on the same runs reported in parts (by env, and by setting, as
    reproductions run on two machines or one row at a time) gives the whole's numbers."""
    from benchmarks.table1_combine import combine
    from ppokit.reproduce import experiment, report

    random = whole["random_policy"]
    for name, groups in {"envs": [[env] for env in ENVS], "settings": [["clip-0.2"], ["kl-fixed-1"]]}.items():
        paths = []
        for index, group in enumerate(groups):
            part = [run for run in planned if run.env_id in group or run.setting.name in group]
            envs = [env for env in ENVS if any(run.env_id == env for run in part)]
            settings = table1.parse_settings(",".join(dict.fromkeys(run.setting.name for run in part)))
            results, _ = experiment.collect(part, envs, settings, 2, 1024, {env: random[env] for env in envs})
            paths.append(tmp_path / f"{name}{index}.json")
            report.write_json(results, report.intervals(results), paths[-1])
        combined = combine(paths)
        report.write_json(combined, report.intervals(combined), tmp_path / "combined.json")
        got = json.loads((tmp_path / "combined.json").read_text())
        for key in ("random_policy", "settings"):
            assert got[key] == whole[key], (name, key)
        assert got["time_per_env_s"].keys() == whole["time_per_env_s"].keys()
        for env, times in whole["time_per_env_s"].items():
            assert got["time_per_env_s"][env] == pytest.approx(times), (name, env)
        assert got["time_s"] == pytest.approx(whole["time_s"]), name


def test_reproduce_a_subset_end_to_end_then_resume(tmp_path, capsys):
    out = tmp_path / "table1"
    assert main([*SUBSET, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 to run" in printed and "| clip-0.2 (Clipping, eps = 0.2) | 0.82 |" in printed
    results = json.loads((out / "results.json").read_text())
    random = json.loads((out / "random_policy.json").read_text())
    planned = runs.plan(out, ENVS, table1.parse_settings("clip-0.2,kl-fixed-1"), 2)
    assert all(runs.state(run) == "done" for run in planned)
    for run in planned:  # each an ordinary run folder, with the paper's hyperparameters and the setting's
        config = (run.folder / "config.yaml").read_text()
        assert "preset: ppo-paper" in config and f"algo: {run.setting.algo}" in config
        summary = json.loads((run.folder / "summary.json").read_text())
        entry = results["settings"][run.setting.name]
        assert entry["raw"][run.env_id][run.seed] == summary["train_return_last100"]
    for env in ENVS:  # normalization: random -> 0, the best setting's mean -> 1
        assert results["random_policy"][env] == random[env]["mean_return"]
        best = max(np.mean(entry["raw"][env]) for entry in results["settings"].values())
        for entry in results["settings"].values():
            expected = [(x - random[env]["mean_return"]) / (best - random[env]["mean_return"])
                        for x in entry["raw"][env]]
            assert entry["normalized"][env] == pytest.approx(expected)
    for entry in results["settings"].values():  # rliable's intervals bracket the point estimates
        all_normalized = [x for values in entry["normalized"].values() for x in values]
        assert entry["mean"]["point"] == pytest.approx(np.mean(all_normalized))
        for key in ("mean", "iqm"):
            assert entry[key]["low"] <= entry[key]["point"] <= entry[key]["high"]
    assert (out / "curves.png").stat().st_size > 0 and "## Raw returns" in (out / "table.md").read_text()
    walls = {env: [json.loads((run.folder / "summary.json").read_text())["wall_time_s"]
                   for run in planned if run.env_id == env] for env in ENVS}
    for env in ENVS:  # the time of each env's 4 runs, also in table.md
        times = results["time_per_env_s"][env]
        assert (times["runs"], times["wall_min_s"], times["wall_max_s"]) == (4, min(walls[env]), max(walls[env]))
        assert times["wall_time_s"] == pytest.approx(sum(walls[env]))
        assert f"| {env} | 4 | {min(walls[env]):,.0f}-{max(walls[env]):,.0f} s | " in (out / "table.md").read_text()
    assert results["time_s"]["wall_time_s"] == pytest.approx(sum(sum(w) for w in walls.values()))
    check_parts_combine_into_the_whole(out, planned, results, tmp_path)

    # Resume: one run lost its summary (killed while finishing: resumed from its checkpoint), one
    # was never started, one stopped before its first checkpoint (started again); the rest are kept.
    resumed, missing, stub = planned[0], planned[3], planned[5]
    score_before = results["settings"][resumed.setting.name]["raw"][resumed.env_id][resumed.seed]
    (resumed.folder / "summary.json").unlink()
    for run in (missing, stub):
        for path in sorted(run.folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    (stub.folder / "metrics.csv").write_text("global_step\n")
    kept = {run.folder: (run.folder / "summary.json").stat().st_mtime_ns for run in planned
            if run not in (resumed, missing, stub)}
    assert main([*SUBSET, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5 finished or failed before, 3 to run" in printed and f"resumed {resumed.name}" in printed
    assert {folder: (folder / "summary.json").stat().st_mtime_ns for folder in kept} == kept
    assert all(runs.state(run) == "done" for run in planned)
    again = json.loads((out / "results.json").read_text())
    assert again["settings"][resumed.setting.name]["raw"][resumed.env_id][resumed.seed] == score_before
