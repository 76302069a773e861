"""Command line: ``ppokit train | eval | record | plot | presets`` (see CONTRACTS.md / docs/cli.md).

Bad input -> one line on stderr and exit code 2; a failure during training -> exit code 1
after saving what can be saved; Ctrl-C / SIGTERM -> checkpoint, summary "interrupted", 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Raised by the argument parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ppokit", description="PPO-family reinforcement learning on Gymnasium environments.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train an agent; writes a run folder")
    train.add_argument("env_id", metavar="ENV_ID", help="a registered Gymnasium id, e.g. CartPole-v1")
    train.add_argument("--algo", choices=["ppo", "ppo-kl", "trpo", "vpg"], default=None)
    train.add_argument("--preset", default=None, help="a shipped preset (see: ppokit presets)")
    train.add_argument("--config", default=None, metavar="FILE.yaml", help="a config file (e.g. a run's config.yaml)")
    train.add_argument("--total-steps", type=_positive_int, default=None)
    train.add_argument("--seed", type=_non_negative_int, default=None)
    train.add_argument("--num-envs", type=_positive_int, default=None)
    train.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    train.add_argument("--run-dir", default=None, metavar="DIR")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set ppo.clip_coef=0.1 (repeatable)")
    train.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its checkpoints/latest")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="evaluate a run's or a checkpoint's agent")
    ev.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    ev.add_argument("--episodes", type=_positive_int, default=10)
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    ev.add_argument("--seed", type=_non_negative_int, default=0)
    ev.add_argument("--json", action="store_true", help="print the result as JSON")

    rec = sub.add_parser("record", help="record episodes of the agent to a GIF or MP4")
    rec.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    rec.add_argument("--out", required=True, metavar="FILE.gif|FILE.mp4")
    rec.add_argument("--episodes", type=_positive_int, default=1)
    rec.add_argument("--seed", type=_non_negative_int, default=0)

    plot = sub.add_parser("plot", help="plot learning curves of one or more runs")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", required=True, metavar="FILE.png")

    sub.add_parser("presets", help="list the shipped presets")
    return parser


def _train(args: argparse.Namespace) -> int:
    from ppokit.checkpoint import config_of, read
    from ppokit.presets import build_config
    from ppokit.train import Interrupted, TrainingFailed, train

    shorthands = {"total_steps": args.total_steps, "seed": args.seed, "rollout.num_envs": args.num_envs,
                  "device": args.device}
    if args.resume is not None:
        _, meta, folder = read(args.resume)
        saved = config_of(meta, folder)
        if args.env_id != saved.env_id:
            from ppokit.config import ConfigError

            raise ConfigError(f"--resume {args.resume}: that run trains {saved.env_id}, not {args.env_id}")
        from ppokit.config import from_dict, merge, parse_override, to_dict, validate

        # Resume continues the saved config; --set and the shorthands may change it (e.g. total steps).

        data = to_dict(saved)
        for text in args.set:
            data = merge(data, parse_override(text))
        for key, value in shorthands.items():
            if value is not None:
                data = merge(data, parse_override(f"{key}={value}"))
        cfg = validate(from_dict(data))
    else:
        cfg = build_config(args.env_id, algo=args.algo, preset=args.preset, config_file=args.config,
                           sets=args.set, overrides=shorthands)
    try:
        result = train(cfg, run_dir=args.run_dir, resume=args.resume, quiet=args.quiet)
    except Interrupted as stop:
        print(f"ppokit: interrupted; saved {stop.result.run_dir}/checkpoints/latest (continue with --resume)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingFailed as failure:
        print(f"ppokit: training failed: {failure}; last good checkpoint kept in {failure.result.run_dir}",
              file=sys.stderr)
        return EXIT_FAILED
    s = result.summary
    solved = (f"solved at step {s['solved_at_step']:,} ({s['solved_at_time_s']:.1f} s)"
              if s.get("solved_at_step") is not None
              else "threshold not reached" if s.get("solved_threshold") is not None
              else "")
    print(f"{cfg.env_id} {cfg.algo}: {s['total_steps']:,} steps in {s['wall_time_s']:.1f} s ({s['sps']:,.0f} steps/s); "
          f"eval {_fmt(s['eval_return_mean'])} +/- {_fmt(s['eval_return_std'])} over {s['eval_episodes']} episodes"
          f"{'; ' + solved if solved else ''}")
    print(f"run folder: {result.run_dir}")
    return 0


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _eval(args: argparse.Namespace) -> int:
    from ppokit.checkpoint import config_of, load_agent
    from ppokit.evaluate import evaluate

    agent, _, meta = load_agent(args.path)
    cfg = config_of(meta, Path(args.path))
    result = evaluate(agent, meta["env_id"], args.episodes, seed=args.seed,
                      deterministic=not args.stochastic, env_kwargs=cfg.env.kwargs)
    if args.json:
        print(json.dumps({"env_id": meta["env_id"], "global_step": meta.get("global_step"),
                          "deterministic": not args.stochastic, **result}))
    else:
        mode = "stochastic" if args.stochastic else "deterministic"
        print(f"{meta['env_id']}: return {result['mean']:.1f} +/- {result['std']:.1f} over {args.episodes} "
              f"episodes ({mode}, checkpoint at step {meta.get('global_step', 0):,})")
    return 0


def _record(args: argparse.Namespace) -> int:
    from ppokit.record import record

    frames = record(args.path, args.out, episodes=args.episodes, seed=args.seed)
    print(f"wrote {args.out} ({frames} frames)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ppokit.plot import plot_runs

    plot_runs([Path(p) for p in args.run_dirs], Path(args.out))
    print(f"wrote {args.out}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from ppokit.presets import available

    for name, data in available().items():
        env = name.split("__")[0]
        print(f"{name:32s} env {env:24s} algo {data.get('algo', 'ppo'):7s} "
              f"solved at {data.get('solved_threshold')}")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "record": _record, "plot": _plot, "presets": _presets}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    from ppokit.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="ppokit: %(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(str(error), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConfigError as error:
        print(f"ppokit: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ppokit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
