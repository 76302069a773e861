"""ppokit tune: the sampled fields, pruning through the run callback, the resumable study, best.yaml."""

from __future__ import annotations

import csv
import sys

import pytest

from ppokit.cli import main
from ppokit.config import validate
from ppokit.presets import build_config
from ppokit.tune import SPACE, TuneSettings, objective, pruning_callback, sample, tune

optuna = pytest.importorskip("optuna")

PARAMS = {"ppo.learning_rate": 3e-3, "rollout.num_envs": 4, "rollout.num_steps": 32, "minibatches": 2,
          "ppo.update_epochs": 3, "ppo.clip_coef": 0.2, "ppo.ent_coef": 1e-4, "ppo.max_grad_norm": 0.5,
          "rollout.gamma": 0.98, "rollout.gae_lambda": 0.9}


def test_sample_covers_the_space_and_derives_the_minibatch_size():
    assert set(PARAMS) == set(SPACE)
    fields = sample(optuna.trial.FixedTrial(PARAMS))
    assert fields["ppo.minibatch_size"] == 4 * 32 // 2 and "minibatches" not in fields
    assert fields["ppo.learning_rate"] == 3e-3 and fields["rollout.num_envs"] == 4


class _Trial:
    def __init__(self, prune_after: int):
        self.reports, self.prune_after = [], prune_after

    def report(self, value, step):
        self.reports.append((value, step))

    def should_prune(self):
        return len(self.reports) >= self.prune_after


def test_pruning_callback_reports_evaluations_and_stops_when_pruned():
    trial = _Trial(prune_after=2)
    callback = pruning_callback(trial)
    assert callback({"global_step": 64, "eval_return_mean": None}, None) is True  # no evaluation: nothing to say
    assert callback({"global_step": 128, "eval_return_mean": 20.0}, None) is True
    assert callback({"global_step": 256, "eval_return_mean": 10.0}, None) is False  # pruned: the run stops
    assert trial.reports == [(20.0, 128), (10.0, 256)]


class _PruneAtOnce(optuna.trial.FixedTrial):
    number = 0

    def should_prune(self):
        return True


def test_a_pruned_trial_stops_its_run_after_the_first_evaluation(tmp_path):
    settings = TuneSettings("CartPole-v1", trials=1, out=tmp_path, steps=8 * 128)
    with pytest.raises(optuna.TrialPruned):
        objective(settings, _PruneAtOnce(PARAMS))
    with open(tmp_path / "trials" / "trial-0000" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert int(rows[-1]["global_step"]) == 128  # the first evaluation (every 128 steps), not 1,024


def test_the_study_resumes_and_writes_a_config_train_takes(tmp_path, capsys):
    out = tmp_path / "study"
    first = tune(TuneSettings("CartPole-v1", trials=2, out=out, steps=256))
    assert (first["trials"], first["new_trials"]) == (2, 2)
    assert (out / "study.db").is_file() and len(list((out / "trials").iterdir())) == 2
    assert main(["tune", "CartPole-v1", "--trials", "3", "--steps", "256", "--out", str(out)]) == 0
    assert "3 trials (1 new)" in capsys.readouterr().out
    study = optuna.load_study(study_name="ppokit-tune", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3
    assert main(["tune", "CartPole-v1", "--trials", "3", "--steps", "256", "--out", str(out)]) == 0
    assert "3 trials (0 new)" in capsys.readouterr().out

    cfg = validate(build_config("CartPole-v1", config_file=out / "best.yaml"))
    best = study.best_trial.params
    assert cfg.ppo.learning_rate == best["ppo.learning_rate"] and cfg.rollout.num_steps == best["rollout.num_steps"]
    assert main(["train", "CartPole-v1", "--config", str(out / "best.yaml"), "--total-steps", "64", "--quiet",
                 "--log-every", "0", "--set", "eval_episodes=0", "--run-dir", str(tmp_path / "run")]) == 0


def test_tune_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["tune", "CartPol-v1", "--trials", "1", "--out", str(tmp_path / "x")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["tune", "CartPole-v1", "--trials", "0"]) == 2
    assert "--trials: expected a positive integer" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    assert main(["tune", "CartPole-v1", "--trials", "1", "--out", str(tmp_path / "y")]) == 2
    assert capsys.readouterr().err.strip() == ("ppokit: error: ppokit tune needs the optuna package: "
                                               "pip install 'ppokit[tune]'")
