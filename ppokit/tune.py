"""``ppokit tune``: hyperparameter search for PPO with Optuna (``pip install 'ppokit[tune]'``).

Each trial is an ordinary training run (its own run folder under ``OUT/trials``) of the env's
preset with the sampled fields (:data:`SPACE`, documented in docs/tune.md), for a fixed budget
of env steps. Its score is the mean of its evaluations during training (:mod:`ppokit.evaluations`),
which rewards learning fast and ending well; each evaluation is reported to Optuna, and a trial
whose curve falls below the median of earlier trials at the same step is pruned through the
run's callback (returning False stops it cleanly). The study lives in ``OUT/study.db`` (SQLite),
so running the same command again continues it; the best trial's config is written to
``OUT/best.yaml``, which ``ppokit train ENV --config OUT/best.yaml`` takes.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from ppokit.config import Config, to_dict, validate
from ppokit.envs import ensure_registered
from ppokit.errors import ConfigError, quote
from ppokit.extras import require

log = logging.getLogger("ppokit")

STUDY = "ppokit-tune"
EVALUATIONS_PER_TRIAL = 8  # evaluation during training every budget / 8 steps: the pruning points


# name -> (kind, arguments): the sampled fields and their ranges (docs/tune.md lists them).
SPACE: dict[str, tuple[str, tuple]] = {
    "ppo.learning_rate": ("log", (1e-4, 1e-2)),
    "rollout.num_envs": ("choice", (4, 8, 16)),
    "rollout.num_steps": ("choice", (16, 32, 64, 128, 256)),
    "minibatches": ("choice", (1, 2, 4, 8)),  # minibatch_size = num_envs * num_steps / minibatches
    "ppo.update_epochs": ("int", (2, 10)),
    "ppo.clip_coef": ("float", (0.1, 0.3)),
    "ppo.ent_coef": ("log", (1e-6, 1e-2)),
    "ppo.max_grad_norm": ("float", (0.3, 2.0)),
    "rollout.gamma": ("choice", (0.95, 0.98, 0.99, 0.995)),
    "rollout.gae_lambda": ("float", (0.8, 0.99)),
}


@dataclass
class TuneSettings:
    env_id: str
    trials: int  # trials in the study in all (a resumed study runs only the missing ones)
    out: Path
    steps: int  # env steps per trial
    jobs: int = 1  # worker processes sharing the study
    seed: int = 0  # the sampler's seed and every trial's training seed


def require_optuna() -> Any:
    """The optuna module; ConfigError with the pip command when the ``tune`` extra is missing."""
    return require("optuna", "tune", "ppokit tune")


def sample(trial: Any) -> dict[str, Any]:
    """One draw of :data:`SPACE` from an Optuna trial, as dotted config fields."""
    values: dict[str, Any] = {}
    for name, (kind, args) in SPACE.items():
        if kind == "log":
            values[name] = trial.suggest_float(name, *args, log=True)
        elif kind == "float":
            values[name] = trial.suggest_float(name, *args)
        elif kind == "int":
            values[name] = trial.suggest_int(name, *args)
        else:
            values[name] = trial.suggest_categorical(name, list(args))
    batch = values["rollout.num_envs"] * values["rollout.num_steps"]
    values["ppo.minibatch_size"] = batch // values.pop("minibatches")
    return values


def trial_config(settings: TuneSettings, fields: dict[str, Any]) -> Config:
    """The env's preset (for ppo) with ``fields``, the trial budget and evaluation schedule."""
    from ppokit.presets import build_config

    overrides = {"total_steps": settings.steps, "seed": settings.seed, "eval_episodes": 0, "device": "cpu",
                 "eval.every_steps": max(1, settings.steps // EVALUATIONS_PER_TRIAL), "eval.episodes": 5, **fields}
    return build_config(settings.env_id, algo="ppo", overrides=overrides)


def pruning_callback(trial: Any) -> Any:
    """A run callback: reports each evaluation to ``trial``; False (stop) when Optuna prunes it."""

    def report(row: dict[str, Any], agent: Any) -> bool:
        value = row.get("eval_return_mean")
        if value is None or not math.isfinite(value):
            return True
        trial.report(float(value), int(row["global_step"]))
        return not trial.should_prune()

    return report


def objective(settings: TuneSettings, trial: Any) -> float:
    """Train one trial; its score is the mean of its evaluations (pruned: raises TrialPruned)."""
    import optuna

    from ppokit.evaluations import read_evaluations
    from ppokit.run import train

    fields = sample(trial)
    cfg = trial_config(settings, fields)
    run_dir = settings.out / "trials" / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    result = train(cfg, run_dir=run_dir, quiet=True, callbacks=[pruning_callback(trial)])
    scores = [row["eval_return_mean"] for row in read_evaluations(result.run_dir)]
    if result.summary.get("stop_reason"):
        raise optuna.TrialPruned()
    if not scores:
        raise ConfigError(f"trial {trial.number}: no evaluation ran (steps per trial {settings.steps} too few?)")
    return float(sum(scores) / len(scores))


def _study(settings: TuneSettings) -> Any:
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per trial: the summary says it
    return optuna.create_study(
        study_name=STUDY, storage=f"sqlite:///{settings.out / 'study.db'}", load_if_exists=True,
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=settings.steps // 4))


def _finished(study: Any) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _work(settings: TuneSettings, trials: int) -> None:
    """A worker: runs up to ``trials`` trials of the shared study (one process each)."""
    study = _study(settings)
    from ppokit.run import TrainingFailed

    study.optimize(lambda trial: objective(settings, trial), n_trials=trials, catch=(ConfigError, TrainingFailed))


def tune(settings: TuneSettings) -> dict[str, Any]:
    """Run the study until it holds ``settings.trials`` finished trials; write ``best.yaml``.

    Returns ``{"trials", "new_trials", "best_value", "best_trial", "best_config", "params"}``."""
    require_optuna()
    if settings.out.exists() and not settings.out.is_dir():
        raise ConfigError(f"--out {quote(settings.out)} is a file, not a folder")
    settings.out.mkdir(parents=True, exist_ok=True)
    ensure_registered(settings.env_id)  # a bad env id or budget: one error line before any work
    validate(trial_config(settings, {}))
    study = _study(settings)
    before = _finished(study)
    missing = max(0, settings.trials - before)
    if missing:
        jobs = min(settings.jobs, missing)
        if jobs == 1:
            _work(settings, missing)
        else:
            shares = [missing // jobs + (i < missing % jobs) for i in range(jobs)]
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                for done in [pool.submit(_work, settings, share) for share in shares]:
                    done.result()
        study = _study(settings)
    try:
        best = study.best_trial
    except ValueError:
        raise ConfigError(f"no trial of the study in {quote(settings.out)} completed (all pruned or failed); "
                          "give each trial more --steps") from None
    params = dict(best.params)
    fields = {**params, "ppo.minibatch_size": params["rollout.num_envs"] * params["rollout.num_steps"]
              // params["minibatches"]}
    fields.pop("minibatches")
    cfg = trial_config(settings, fields)
    path = settings.out / "best.yaml"
    data = to_dict(cfg)
    for key in ("seed", "device", "eval_episodes", "eval"):  # the trials' settings, not the tuned ones
        data.pop(key)
    header = (f"# ppokit tune {settings.env_id}: the best of {_finished(study)} trials of {settings.steps:,} steps "
              f"(trial {best.number}, mean evaluation {best.value:.1f}).\n"
              f"# Train with it: ppokit train {settings.env_id} --config {path}\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return {"trials": _finished(study), "new_trials": _finished(study) - before, "best_value": best.value,
            "best_trial": best.number, "best_config": path, "params": params}
