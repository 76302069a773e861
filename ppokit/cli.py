"""Command line: ``ppokit train | eval | record | plot | export | info | watch | tune | presets |
reproduce`` (usage in README.md, errors in docs/errors.md).

Bad input -> one line on stderr and exit code 2; a failure during training -> exit code 1
after saving what can be saved; Ctrl-C / SIGTERM -> checkpoint, summary "interrupted", 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Raised by the argument parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, else one clear error naming ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


ENV_HELP = ("the env to run the agent in (default: the checkpoint's env); needed for a checkpoint whose env "
            "id names a module to import (module:Env-v0), which ppokit never imports on a checkpoint's word")


DEFAULT_STEP_CAP = 27_000  # = ppokit.evaluate.DEFAULT_STEP_CAP (not imported here: it would load torch)
CAP_HELP = ("stop an episode the env has not ended after N steps, and say so (default: %(default)s; an env's own "
            "shorter time limit ends it first)")


def build_parser() -> argparse.ArgumentParser:
    from ppokit.algos import ALGOS
    from ppokit.tracking import DEFAULT_PROJECT
    from ppokit.version import __version__

    parser = _Parser(prog="ppokit", description="PPO-family reinforcement learning on Gymnasium environments.")
    parser.add_argument("--version", action="version", version=f"ppokit {__version__}",
                        help="print ppokit's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                help="the command; ppokit COMMAND --help describes its options")

    train = sub.add_parser("train", help="train an agent; writes a run folder")
    train.add_argument("env_id", metavar="ENV_ID", nargs="?", default=None,
                       help="a registered Gymnasium id, e.g. CartPole-v1 (optional with --resume: the run's env)")
    train.add_argument("--algo", choices=list(ALGOS), default=None,
                       help="the algorithm: %(choices)s (default: the --config file's or the preset's, else ppo)")
    train.add_argument("--preset", default=None, help="a shipped preset (see: ppokit presets)")
    train.add_argument("--config", default=None, metavar="FILE.yaml", help="a config file (e.g. a run's config.yaml)")
    train.add_argument("--total-steps", type=_positive_int, default=None, metavar="N",
                       help="environment steps to train for (sets total_steps)")
    train.add_argument("--seed", type=_non_negative_int, default=None, metavar="S",
                       help="random seed, a non-negative integer (sets seed)")
    train.add_argument("--seeds", default=None, metavar="SEEDS",
                       help="train a population: one agent per seed in one process, e.g. 0-7 or 0,3,5 "
                            "(each agent writes a run folder inside --run-dir)")
    train.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="population: one agent per value (times --seeds) of a float field, e.g. "
                            "--sweep ppo.clip_coef=0.1,0.2,0.3 (repeatable: every combination)")
    train.add_argument("--num-envs", type=_positive_int, default=None, metavar="N",
                       help="parallel environments (sets rollout.num_envs)")
    train.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    train.add_argument("--run-dir", default=None, metavar="DIR",
                       help="the run folder to write (default: runs/{env}__{algo}__{seed}__{timestamp})")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set ppo.clip_coef=0.1 (repeatable)")
    train.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its checkpoints/latest")
    train.add_argument("--quiet", action="store_true",
                       help="no progress bar: a plain line every --log-every iterations instead (as when stdout "
                            "is not a terminal)")
    train.add_argument("--track", nargs="?", const=DEFAULT_PROJECT, default=None, metavar="PROJECT",
                       help="log the run to Weights & Biases (project default: %(const)s; pip install "
                            "'ppokit[wandb]'; WANDB_MODE=offline works without network)")
    train.add_argument("--log-every", type=_non_negative_int, default=10, metavar="N",
                       help="without a progress bar, print the run's state every N iterations; 0: never "
                            "(default: %(default)s)")

    ev = sub.add_parser("eval", help="evaluate a run's or a checkpoint's agent")
    ev.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT",
                    help="a run folder (its checkpoints/latest) or a checkpoint folder")
    ev.add_argument("--episodes", type=_positive_int, default=10, metavar="N",
                    help="episodes to run (default: %(default)s)")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    ev.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                    help="seed of the evaluation envs (default: %(default)s)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.add_argument("--env", default=None, metavar="ENV_ID", help=ENV_HELP)
    ev.add_argument("--max-episode-steps", type=_positive_int, default=DEFAULT_STEP_CAP, metavar="N", help=CAP_HELP)

    rec = sub.add_parser("record", help="record episodes of the agent to a GIF or MP4")
    rec.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT",
                     help="a run folder (its checkpoints/latest) or a checkpoint folder")
    rec.add_argument("--out", required=True, metavar="FILE.gif|FILE.mp4",
                     help="the video to write (.mp4 needs ppokit[video])")
    rec.add_argument("--episodes", type=_positive_int, default=1, metavar="N",
                     help="episodes to record (default: %(default)s)")
    rec.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                     help="seed of the recorded env (default: %(default)s)")
    rec.add_argument("--env", default=None, metavar="ENV_ID", help=ENV_HELP)
    rec.add_argument("--max-episode-steps", type=_positive_int, default=DEFAULT_STEP_CAP, metavar="N", help=CAP_HELP)

    plot = sub.add_parser("plot", help="plot learning curves of one or more runs; runs of one setting (equal "
                                       "configs but for the seed) as their mean with a 95%% band")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one or more run folders (with metrics.csv)")
    plot.add_argument("--out", required=True, metavar="FILE.png", help="the figure to write (.png, .pdf or .svg)")
    plot.add_argument("--x", choices=("steps", "time"), default="steps",
                      help="the x axis: environment steps or wall-clock seconds (default: %(default)s)")

    exp = sub.add_parser("export", help="write the agent's deterministic policy, normalization included, as ONNX "
                                        "or a torch.export program (raw observations in, env actions out)")
    exp.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT",
                     help="a run folder (its checkpoints/best) or a checkpoint folder")
    exp.add_argument("--format", choices=("onnx", "pt2"), default="onnx",
                     help="onnx (needs ppokit[export]) or pt2 (torch.export; torch.export.load) (default: %(default)s)")
    exp.add_argument("--out", default=None, metavar="FILE",
                     help="the file to write (default: RUN_DIR/policy.onnx, or CHECKPOINT.onnx beside a checkpoint)")

    info = sub.add_parser("info", help="what a run's or a checkpoint's agent is: env, spaces, layers, statistics")
    info.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT",
                      help="a run folder (its checkpoints/latest) or a checkpoint folder")
    info.add_argument("--json", action="store_true", help="print it as JSON")

    watch = sub.add_parser("watch", help="watch the agent play in a window (needs a display; else see record)")
    watch.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT",
                       help="a run folder (its checkpoints/latest) or a checkpoint folder")
    watch.add_argument("--episodes", type=_positive_int, default=1, metavar="N",
                       help="episodes to play (default: %(default)s)")
    watch.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                       help="seed of the env (default: %(default)s)")

    tune = sub.add_parser("tune", help="search PPO hyperparameters with Optuna (ppokit[tune]); writes OUT/best.yaml")
    tune.add_argument("env_id", metavar="ENV_ID", help="a registered Gymnasium id, e.g. CartPole-v1")
    tune.add_argument("--trials", type=_positive_int, required=True, metavar="N",
                      help="trials in the study in all; running again with the same --out continues it")
    tune.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                      help="env steps per trial (default: the preset's total_steps)")
    tune.add_argument("--jobs", type=_positive_int, default=1, metavar="K",
                      help="worker processes sharing the study (default: %(default)s)")
    tune.add_argument("--out", default=None, metavar="DIR",
                      help="the study folder: study.db, trials/, best.yaml (default: runs/tune__ENV_ID)")
    tune.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                      help="seed of the sampler and of every trial (default: %(default)s)")

    sub.add_parser("presets", help="list the shipped presets")

    from ppokit.reproduce import EXPERIMENTS, table1

    repro = sub.add_parser("reproduce", help="reproduce a paper's results (runs, table, plots); resumable")
    repro.add_argument("experiment", choices=list(EXPERIMENTS), help="what to reproduce: %(choices)s")
    repro.add_argument("--envs", default=None, metavar="ENV,...",
                       help=f"comma-separated env ids (default: the paper's: {', '.join(table1.ENVS)})")
    repro.add_argument("--settings", default=None, metavar="NAME,...",
                       help=f"comma-separated settings (default: all: {', '.join(table1.SETTINGS)})")
    repro.add_argument("--seeds", type=_positive_int, default=table1.DEFAULT_SEEDS, metavar="N",
                       help="seeds 0..N-1 per env and setting (default: %(default)s)")
    repro.add_argument("--steps", type=_positive_int, default=table1.DEFAULT_STEPS, metavar="N",
                       help="environment steps per run (default: %(default)s)")
    repro.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                       help="runs at the same time, one core each (default: the cores, %(default)s)")
    repro.add_argument("--out", default=None, metavar="DIR",
                       help="the reproduction folder: run folders, table.md, results.json, curves.png "
                            "(default: reproductions/EXPERIMENT)")
    repro.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field of every run, e.g. --set update_path=eager (repeatable)")
    repro.add_argument("--random-episodes", type=_positive_int, default=table1.DEFAULT_RANDOM_EPISODES, metavar="N",
                       help="episodes of the random policy that scores 0 (default: %(default)s)")
    return parser


def _train(args: argparse.Namespace) -> int:
    from ppokit.population import is_population
    from ppokit.presets import build_config
    from ppokit.run import Interrupted, TrainingFailed, train

    if args.env_id is None and args.resume is None:
        raise UsageError("ppokit train: the following arguments are required: ENV_ID (a registered Gymnasium id, "
                         "e.g. CartPole-v1; it may be left out only with --resume RUN_DIR, which continues "
                         "that run's env) (see ppokit train --help)")
    if args.env_id is not None:
        _import_env_module(args.env_id)
    shorthands = {"total_steps": args.total_steps, "seed": args.seed, "rollout.num_envs": args.num_envs,
                  "device": args.device}
    if args.seeds is not None or args.sweep or (args.resume is not None and is_population(args.resume)):
        return _train_population(args, shorthands)
    if args.resume is not None:
        _refuse_beside_resume(args, "run")
        cfg = _resume_config(args, shorthands)
    else:
        cfg = build_config(args.env_id, algo=args.algo, preset=args.preset, config_file=args.config,
                           sets=args.set, overrides=shorthands)
    try:
        result = train(cfg, run_dir=args.run_dir, resume=args.resume, quiet=args.quiet, log_every=args.log_every,
                       track=args.track)
    except Interrupted as stop:
        if not stop.result.main_process:  # under torchrun, rank 0 reports for all
            return EXIT_INTERRUPTED
        saved = stop.result.summary.get("checkpoint_step")
        run_dir = stop.result.run_dir
        where = (f"checkpoints/latest at step {saved:,} is in {run_dir} (continue with --resume {run_dir})"
                 if saved is not None else f"no checkpoint was saved in {run_dir}")
        print(f"ppokit: interrupted; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingFailed as failure:
        saved = failure.result.summary.get("checkpoint_step")
        kept = (f"the last good checkpoint (step {saved:,}) is kept in {failure.result.run_dir}/checkpoints/latest"
                if saved is not None else f"no checkpoint was saved before the failure ({failure.result.run_dir})")
        print(f"ppokit: training failed: {failure}; {kept}", file=sys.stderr)
        return EXIT_FAILED
    if not result.main_process:  # under torchrun: one summary line, rank 0's
        return 0
    s = result.summary
    solved = (f"solved at step {s['solved_at_step']:,} ({s['solved_at_time_s']:.1f} s)"
              if s.get("solved_at_step") is not None
              else "threshold not reached" if s.get("solved_threshold") is not None else "")
    print(f"{cfg.env_id} {cfg.algo}: {s['total_steps']:,} steps in {s['wall_time_s']:.1f} s ({s['sps']:,.0f} steps/s); "
          f"eval {_fmt(s['eval_return_mean'])} +/- {_fmt(s['eval_return_std'])} over {s['eval_episodes']} episodes"
          f"{'; ' + solved if solved else ''}")
    print(f"run folder: {result.run_dir}")
    return 0


def _refuse_beside_resume(args: argparse.Namespace, what: str) -> None:
    """ConfigError for the flags that a resumed ``what`` (run or population) cannot take."""
    from ppokit.errors import ConfigError

    for flag, value in (("--preset", args.preset), ("--config", args.config), ("--run-dir", args.run_dir)):
        if value is not None:
            raise ConfigError(f"{flag} cannot be combined with --resume (a resumed {what} keeps its config and "
                              "folder; change fields with --set)")


def _train_population(args: argparse.Namespace, shorthands: dict) -> int:
    """``ppokit train ENV --seeds ... [--sweep ...]``, or ``--resume`` of a population folder."""
    from ppokit import population
    from ppokit.errors import ConfigError
    from ppokit.presets import build_config

    if args.seed is not None and args.seeds is not None:
        raise ConfigError("--seed and --seeds: give one (--seeds 0-7 trains one agent per seed)")
    options = dict(quiet=args.quiet, log_every=args.log_every, track=args.track)
    if args.resume is not None:
        if args.seeds is not None or args.sweep:
            raise ConfigError("--seeds and --sweep cannot be combined with --resume (a resumed population keeps its "
                              "agents; change fields with --set)")
        _refuse_beside_resume(args, "population")
        sets = args.set + [f"{key}={value}" for key, value in shorthands.items() if value is not None]
        result = population.resume(args.resume, sets, **options)
    else:
        seeds = population.parse_seeds(args.seeds) if args.seeds is not None else None
        sweep = population.parse_sweep(args.sweep)
        cfg = build_config(args.env_id, algo=args.algo, preset=args.preset, config_file=args.config,
                           sets=args.set, overrides=shorthands)
        result = population.train(cfg, seeds if seeds is not None else [cfg.seed], sweep, args.run_dir, **options)
    for line in population.format_table(result.table):
        print(line)
    print(f"population folder: {result.folder}")
    failed = [r for r in result.results if r.summary["status"] == "failed"]
    for run in failed:
        print(f"ppokit: agent {run.run_dir.name} failed: {run.summary.get('error')}", file=sys.stderr)
    if any(r.summary["status"] == "interrupted" for r in result.results):
        print(f"ppokit: interrupted; continue with --resume {result.folder}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.status == "failed" else 0


def _import_env_module(env_id: str) -> None:
    """Register an env id the user typed: ``module:Env-v0`` imports ``module``, looking in the
    current folder first as ``python -m`` does (the console script's sys.path starts at its own bin
    folder, and ``python -m ppokit`` drops the current folder: see ``ppokit/__main__.py``).

    Only for an env id typed on the command line: the env id of a checkpoint never gets this."""
    from ppokit.envs import ensure_registered

    if ":" in env_id and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    ensure_registered(env_id, import_module=True)


def _resume_config(args: argparse.Namespace, shorthands: dict) -> Any:
    """The saved run's config with --set and the shorthands applied (train() checks what may change).

    Without ENV_ID the run's own env id is kept; with one that differs, train() refuses it."""
    from ppokit.checkpoint import config_of, read
    from ppokit.config import from_dict, merge, parse_override, to_dict

    _, meta, folder = read(args.resume)
    data = to_dict(config_of(meta, folder))
    for text in args.set:
        data = merge(data, parse_override(text))
    for key, value in shorthands.items():
        if value is not None:
            data = merge(data, parse_override(f"{key}={value}"))
    if args.env_id is not None:
        data["env_id"] = args.env_id
    if args.algo is not None:
        data["algo"] = args.algo
    return from_dict(data)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _eval(args: argparse.Namespace) -> int:
    from ppokit.agent import load_agent
    from ppokit.evaluate import evaluate

    agent, _, meta = load_agent(args.path)
    env_id = _chosen_env(args.env, meta["env_id"])
    own_env = env_id == meta["env_id"]
    result = evaluate(agent, env_id, args.episodes, seed=args.seed, deterministic=not args.stochastic,
                      env_kwargs=agent.config.env.kwargs if own_env else None, step_cap=args.max_episode_steps)
    if args.json:
        print(json.dumps({"env_id": env_id, "global_step": meta.get("global_step"),
                          "deterministic": not args.stochastic, **result}))
    else:
        mode = "stochastic" if args.stochastic else "deterministic"
        print(f"{env_id}: return {result['mean']:.1f} +/- {result['std']:.1f} over {args.episodes} "
              f"episodes ({mode}, checkpoint at step {agent.global_step:,})")
    return 0


def _chosen_env(typed: str | None, saved: str) -> str:
    """The env for eval/record: the one typed with --env (its module may be imported), else the
    checkpoint's (never imported: see :func:`ppokit.envs.ensure_registered`)."""
    if typed is None:
        return saved
    _import_env_module(typed)
    return typed


def _record(args: argparse.Namespace) -> int:
    from ppokit.record import record

    frames = record(args.path, args.out, episodes=args.episodes, seed=args.seed, env_id=args.env,
                    step_cap=args.max_episode_steps)
    print(f"wrote {args.out} ({frames} frames)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ppokit.plot import plot_runs
    from ppokit.population import expand_populations

    runs = expand_populations([Path(p) for p in args.run_dirs])  # a population folder: all its agents
    drawn = plot_runs(runs, Path(args.out), x=args.x)
    settings = len({line["label"] for line in drawn["lines"]})
    print(f"wrote {args.out} ({len(runs)} runs, {settings} setting{'s' if settings > 1 else ''})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ppokit.agent import load_agent
    from ppokit.export import default_out, export

    path = Path(args.path)
    best = path / "checkpoints" / "best"
    agent, _, meta = load_agent(best if best.is_dir() else path)
    out = export(agent, args.out or default_out(path, args.format), args.format)
    print(f"wrote {out} ({meta['env_id']}, step {agent.global_step:,}): input 'observation' "
          f"{list(agent.observation_space.shape or ())} per row, output 'action'")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ppokit.info import describe, format_info

    info = describe(args.path)
    print(json.dumps(info) if args.json else format_info(info))
    return 0


def _watch(args: argparse.Namespace) -> int:
    from ppokit.info import watch

    for episode, total in enumerate(watch(args.path, args.episodes, args.seed)):
        print(f"episode {episode + 1}: return {total:.1f}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from ppokit.presets import build_config
    from ppokit.tune import TuneSettings, require_optuna, tune

    require_optuna()
    _import_env_module(args.env_id)
    steps = args.steps or build_config(args.env_id, algo="ppo").total_steps
    out = Path(args.out) if args.out else Path("runs") / f"tune__{args.env_id.replace('/', '-')}"
    result = tune(TuneSettings(args.env_id, args.trials, out, steps, args.jobs, args.seed))
    print(f"{result['trials']} trials ({result['new_trials']} new) of {steps:,} steps; best: trial "
          f"{result['best_trial']}, mean evaluation {result['best_value']:.1f}")
    print(f"best config: {result['best_config']} (ppokit train {args.env_id} --config {result['best_config']})")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from ppokit.presets import available, is_generic, preset_env

    for name, data in available().items():
        env = "any" if is_generic(name, data) else data.get("env_id", preset_env(name, data))
        print(f"{name:32s} env {env:24s} algo {data.get('algo', 'ppo'):7s} "
              f"solved at {data.get('solved_threshold')}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from ppokit.reproduce import table1
    from ppokit.reproduce.experiment import reproduce_table1

    out = Path(args.out) if args.out is not None else Path("reproductions") / args.experiment
    command = "ppokit reproduce " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["reproduce"] else [args.experiment])
    try:
        results, outcomes = reproduce_table1(
            out, table1.parse_envs(args.envs), table1.parse_settings(args.settings), args.seeds, args.steps,
            args.jobs, args.set, args.random_episodes, command_line=command)
    except KeyboardInterrupt:
        print(f"ppokit: interrupted; the runs saved checkpoints: run the same command again to resume ({out})",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print((out / "table.md").read_text(), end="")
    print(f"wrote {out / 'table.md'}, {out / 'results.json'} and {out / 'curves.png'}")
    failed = [o.run.name for o in outcomes if o.status != "done"]
    if failed:
        print(f"ppokit: {len(failed)} runs did not finish ({', '.join(failed)}); see their .log files in "
              f"{out / 'runs'}; a failed run is not retried until its folder is removed", file=sys.stderr)
        return EXIT_FAILED
    return 0


COMMANDS = {"train": _train, "eval": _eval, "record": _record, "plot": _plot, "presets": _presets,
            "export": _export, "info": _info, "watch": _watch, "tune": _tune, "reproduce": _reproduce}


def _one_line(text: str) -> str:
    """An error message on one line, whatever it quotes."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at construction: tests and callers swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _log_to_stderr():
    """Print the ``ppokit`` logger's records as ``ppokit: message`` on stderr, and only those:
    other libraries' records keep their own handling (the root logger is left alone).

    Returns a function that puts the ``ppokit`` logger back as it was (main() may run in a process
    that uses ppokit as a library too, e.g. the tests)."""
    logger = logging.getLogger("ppokit")
    before = (list(logger.handlers), logger.propagate, logger.level)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("ppokit: %(message)s"))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)

    def restore() -> None:
        logger.handlers, logger.propagate = before[0], before[1]
        logger.setLevel(before[2])

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    from ppokit.errors import ConfigError, EnvError, TrainingError

    restore_logging = _log_to_stderr()
    received = _load_libraries()
    if received is not None:
        restore_logging()
        print(f"ppokit: interrupted ({received} while starting)", file=sys.stderr)
        return EXIT_INTERRUPTED
    restore_sigterm = _sigterm_interrupts()
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help, --version: printed, nothing else to do
            return done.code if isinstance(done.code, int) else 0
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a full disk or a closed pipe under stdout shows here, not at exit
        return code
    except UsageError as error:
        print(_one_line(str(error)), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConfigError as error:
        print(f"ppokit: error: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (EnvError, TrainingError) as error:  # an env failing outside training (e.g. in eval)
        print(f"ppokit: failed: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # also SIGTERM, and either during start-up (imports take seconds)
        print("ppokit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # an output (--out, --json on stdout) could not be written: a full disk, a closed pipe
        _drop_stdout()
        print(f"ppokit: failed: {_one_line(error.strerror or str(error))}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        restore_sigterm()
        _leave_process_group()
        restore_logging()


def _leave_process_group() -> None:
    """Leave the torchrun process group (a no-op in one process; nothing is imported for it: an
    interrupted start-up may have left a library half imported)."""
    distributed = sys.modules.get("ppokit.distributed")
    if distributed is not None and hasattr(distributed, "shutdown"):
        distributed.shutdown()


def _load_libraries() -> str | None:
    """Import torch, numpy, gymnasium and ppokit's modules (seconds) with Ctrl-C and SIGTERM only
    noted meanwhile; returns the name of a signal received, or None.

    A KeyboardInterrupt raised in the middle of an import can be swallowed by a library's own
    ``except:`` and leave another half loaded (seen: numpy without ``logical_or``, and a run that
    then failed on it), so start-up is not interrupted mid-import: it ends right after."""
    import signal

    received: list[str] = []

    def note(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, note)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
    try:
        import ppokit.agent  # noqa: F401
        import ppokit.run  # noqa: F401
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return received[0] if received else None


def _sigterm_interrupts():
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does, until the returned function restores
    it: a run stopped while it starts exits 130 with one line, like one stopped later (a training
    installs its own handler, :class:`ppokit.signals.StopRequest`, while it runs)."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def _drop_stdout() -> None:
    """Send what is left in stdout's buffer nowhere, so that exiting does not fail on it again."""
    try:
        if sys.stdout is sys.__stdout__ and sys.stdout is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    except (OSError, ValueError):
        pass


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
