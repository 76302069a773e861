"""Compare ppokit and Stable-Baselines3 PPO on one env: speed, time to threshold, final return.

Runs alternate, ppokit then SB3 for each seed, every run in a fresh subprocess, so that the noise
of a shared machine falls on both sides alike. ppokit is driven only through its CLI contract
(``ppokit train ... --run-dir DIR`` then ``DIR/summary.json``); SB3 through ``sb3_runner.py``,
which measures the same quantities the same way.

Modes:

* ``identical``: ppokit with ``benchmarks/configs/<env>_zoo.yaml``, SB3 with the same zoo
  hyperparameters; both for ``--total-steps``.
* ``best``: ppokit with no ``--config`` (its shipped preset for the env) vs SB3 with the zoo
  hyperparameters; both for ``--total-steps``.

Writes ``benchmarks/results/<env>_<mode>.json`` and rewrites the section
``<!-- bench:<env>:<mode>:start -->`` ... ``:end -->`` of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    add_ppokit_options,
    command_line,
    fmt,
    machine_info,
    median_or_none,
    now_iso,
    update_docs_section,
    versions,
)
from sb3_runner import resolve_threshold, zoo_config

CONFIG_DIR = REPO_ROOT / "benchmarks" / "configs"
ZOO_YAML = {
    "CartPole-v1": "cartpole_zoo.yaml",
    "HalfCheetah-v5": "halfcheetah_zoo.yaml",
    "ALE/Pong-v5": "pong_zoo.yaml",
}
PPOKIT_SPLIT = ("time_env_s", "time_inference_s", "time_update_s", "time_other_s")
SB3_SPLIT = ("time_setup_s", "time_rollout_s", "time_update_s")


def check_identical(env_id: str, yaml_path: Path) -> list[str]:
    """List the hyperparameters where the ppokit YAML differs from the SB3 zoo config."""
    cfg = yaml.safe_load(yaml_path.read_text())
    zoo = zoo_config(env_id)
    pk = zoo.get("policy_kwargs", {})

    def sched(key: str) -> tuple[float, bool]:
        value = zoo[key]
        if isinstance(value, str):
            return float(value.removeprefix("lin_")), True
        return float(value), False

    lr, lr_lin = sched("learning_rate") if "learning_rate" in zoo else (3e-4, False)
    clip, clip_lin = sched("clip_range") if "clip_range" in zoo else (0.2, False)
    expected: dict[tuple[str, ...], Any] = {
        ("rollout", "num_envs"): zoo.get("n_envs", 1),
        ("rollout", "num_steps"): zoo.get("n_steps", 2048),
        ("rollout", "gamma"): zoo.get("gamma", 0.99),
        ("rollout", "gae_lambda"): zoo.get("gae_lambda", 0.95),
        ("env", "normalize_obs"): bool(zoo.get("normalize", False)),
        ("env", "normalize_reward"): bool(zoo.get("normalize", False)),
        **model_expectations(zoo),
        ("ppo", "learning_rate"): lr,
        ("ppo", "anneal_lr"): lr_lin,
        ("ppo", "clip_coef"): clip,
        ("ppo", "anneal_clip"): clip_lin,
        ("ppo", "update_epochs"): zoo.get("n_epochs", 10),
        ("ppo", "minibatch_size"): zoo.get("batch_size", 64),
        ("ppo", "ent_coef"): zoo.get("ent_coef", 0.0),
        ("ppo", "vf_coef"): zoo.get("vf_coef", 0.5),
        ("ppo", "max_grad_norm"): zoo.get("max_grad_norm", 0.5),
        ("ppo", "clip_vloss"): False,
        ("ppo", "target_kl"): None,
        ("ppo", "norm_adv"): True,
    }
    if "log_std_init" in pk:
        expected[("model", "log_std_init")] = float(pk["log_std_init"])
    problems = []
    for path, want in expected.items():
        node: Any = cfg
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node != want:
            problems.append(f"{'.'.join(path)}: yaml {node!r} vs zoo {want!r}")
    return problems


def model_expectations(zoo: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """The ppokit ``model`` (and, for the zoo's Atari entry, ``pixels``) fields matching the zoo's policy:
    MlpPolicy's separate actor and critic MLPs, or CnnPolicy's Nature CNN with the heads on its 512
    features, after AtariWrapper and VecFrameStack."""
    pk = zoo.get("policy_kwargs", {})
    if zoo.get("policy") == "CnnPolicy":
        atari = {("pixels", "preprocess"): "atari", ("pixels", "frame_stack"): zoo.get("frame_stack", 1),
                 ("pixels", "frame_skip"): 4, ("pixels", "noop_max"): 30, ("pixels", "size"): 84,
                 ("pixels", "episodic_life"): True, ("pixels", "clip_reward"): True}
        return {**atari, ("model", "encoder"): "nature", ("model", "hidden_sizes"): [],
                ("model", "shared_trunk"): True, ("model", "ortho_init"): pk.get("ortho_init", True)}
    net = pk.get("net_arch", {"pi": [64, 64], "vf": [64, 64]})
    return {("model", "hidden_sizes"): net["pi"], ("model", "activation"): pk.get("activation_fn", "tanh"),
            ("model", "ortho_init"): pk.get("ortho_init", True)}


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished (waited-for) children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(
    cmd: list[str], cwd: Path, result: Path, threads: int, timeout: float
) -> dict[str, Any]:
    """Run one benchmark subprocess and return its JSON result, or a failure record."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cpu_before = children_cpu_s()
    record: dict[str, Any] = {"command": shlex.join(cmd)}
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        record["returncode"] = proc.returncode
        stderr = proc.stderr
    except subprocess.TimeoutExpired as exc:
        record["returncode"] = None
        stderr = f"timed out after {timeout:.0f} s\n{exc.stderr or ''}"
    record["process_time_s"] = time.perf_counter() - start
    # CPU seconds of the run's process and every process it waited for (env workers), imports and
    # start-up included: on a machine shared with other jobs this moves much less than wall time.
    record["cpu_time_s"] = children_cpu_s() - cpu_before
    data: dict[str, Any] = {}
    if result.exists():
        try:
            data = json.loads(result.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            stderr += f"\nunreadable {result}: {exc}"
    ok = record["returncode"] == 0 and data.get("status") == "completed"
    if not ok:
        tail = [line for line in str(stderr).strip().splitlines() if line.strip()][-5:]
        record["error"] = "\n".join(tail) or f"no completed {result.name}"
    return {**data, **record, "ok": ok}


def ppokit_command(
    args: argparse.Namespace, seed: int, run_dir: Path, threshold: float | None
) -> list[str]:
    """The ppokit CLI call for one run (contract: ppokit train ... --run-dir DIR --quiet)."""
    cmd = [*shlex.split(args.ppokit_cmd), "train", args.env]
    if args.mode == "identical":
        cmd += ["--config", str(CONFIG_DIR / ZOO_YAML[args.env])]
    cmd += [
        "--seed",
        str(seed),
        "--total-steps",
        str(args.total_steps),
        "--device",
        "cpu",
    ]
    cmd += ["--run-dir", str(run_dir), "--quiet"]
    for setting in args.ppokit_set:
        cmd += ["--set", setting]
    if threshold is not None:
        cmd += ["--set", f"solved_threshold={threshold}"]
    if args.eval_episodes != 20:
        cmd += ["--set", f"eval_episodes={args.eval_episodes}"]
    if not args.keep_eval:
        # Like SB3 here, no evaluation during training (ppokit 0.2's default evaluates every 20k steps).
        cmd += ["--set", "eval.every_steps=0"]
    return cmd


def sb3_command(args: argparse.Namespace, seed: int, out: Path) -> list[str]:
    """The sb3_runner.py call for one run."""
    runner = REPO_ROOT / "benchmarks" / "sb3_runner.py"
    return [
        sys.executable, str(runner), "--env", args.env, "--config", "zoo", "--seed", str(seed),
        "--total-steps", str(args.total_steps), "--threshold", args.threshold,
        "--threads", str(args.threads), "--eval-episodes", str(args.eval_episodes), "--out", str(out),
    ]  # fmt: skip


def summarize(runs: Sequence[dict[str, Any]], split: Sequence[str]) -> dict[str, Any]:
    """Aggregate one library's runs (failed runs only count in n_runs)."""
    ok = [r for r in runs if r.get("ok")]
    sps = [float(r["sps"]) for r in ok]
    per_cpu_s = [r.get("steps_done", r["total_steps"]) / r["cpu_time_s"] for r in ok if r.get("cpu_time_s")]
    solved = [r for r in ok if r.get("solved_at_time_s") is not None]
    evals = [
        float(r["eval_return_mean"])
        for r in ok
        if r.get("eval_return_mean") is not None
    ]
    return {
        "n_runs": len(runs),
        "n_ok": len(ok),
        "sps_median": median_or_none(sps),
        "sps_min": min(sps, default=None),
        "sps_max": max(sps, default=None),
        "wall_time_s_median": median_or_none([r.get("wall_time_s") for r in ok]),
        "steps_per_cpu_s_median": median_or_none(per_cpu_s),
        "n_solved": len(solved),
        "solved_at_time_s_median": median_or_none(
            [r["solved_at_time_s"] for r in solved]
        ),
        "solved_at_step_median": median_or_none([r["solved_at_step"] for r in solved]),
        "eval_return_mean": statistics.fmean(evals) if evals else None,
        "eval_return_sd_over_seeds": statistics.stdev(evals)
        if len(evals) > 1
        else None,
        "time_split_median": {k: median_or_none([r.get(k) for r in ok]) for k in split},
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def markdown(report: dict[str, Any]) -> str:
    """Render the docs section for one comparison."""
    pk, sb = report["summary"]["ppokit"], report["summary"]["sb3"]
    rt = report["summary"]["ratios"]
    thr = "-" if report["threshold"] is None else f"{report['threshold']:g}"
    mach, ver = report["machine"], report["versions"]
    ppokit_side = (
        f"`--config benchmarks/configs/{ZOO_YAML[report['env_id']]}`"
        if report["mode"] == "identical"
        else "its shipped preset (no `--config`)"
    ) + "".join(f" `--set {setting}`" for setting in report.get("ppokit_set", []))

    def spread(s: dict[str, Any]) -> str:
        return (
            f"{fmt(s['sps_median'], 0)} ({fmt(s['sps_min'], 0)}-{fmt(s['sps_max'], 0)})"
        )

    def evals(s: dict[str, Any]) -> str:
        sd = s["eval_return_sd_over_seeds"]
        return fmt(s["eval_return_mean"]) + (f" ± {fmt(sd)}" if sd is not None else "")

    def times(s: dict[str, Any]) -> str:
        parts = s["time_split_median"].items()
        return ", ".join(
            f"{k.removeprefix('time_').removesuffix('_s')} {fmt(v)}" for k, v in parts
        )

    def x(value: float | None, word: str) -> str:
        return f"{value:.2f}x {word}" if value is not None else "-"

    label = f" ({report['label']})" if report.get("label") else ""
    title = f"{report['env_id']}: {report['mode']}{label} ({fmt(report['total_steps'])} steps, seeds "
    title += " ".join(map(str, report["seeds"])) + ")"
    setup = (
        f"- ppokit: {ppokit_side}; SB3: rl-baselines3-zoo hyperparameters; {report['threads']} "
        "torch thread(s) each; device cpu; runs alternate ppokit, SB3, ppokit, ..., each in a "
        "fresh process."
    )
    lines = [
        f"### {title}",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}; machine: {mach['nproc']} CPUs, {mach['cpu_model']}; "
        + f"load average at start {report['loadavg_start']}",
        f"- Versions: python {ver['python']}, torch {ver['torch']}, gymnasium {ver['gymnasium']}, "
        + f"stable-baselines3 {ver['stable_baselines3']}, ppokit {ver['ppokit']}",
        setup,
        f"- Threshold: {thr} (mean return of the last 20 finished training episodes); "
        + "times count from env creation (imports and final evaluation excluded).",
        "",
        "| metric | ppokit | SB3 | ppokit vs SB3 |",
        "| --- | --- | --- | --- |",
        f"| runs completed | {pk['n_ok']}/{pk['n_runs']} | {sb['n_ok']}/{sb['n_runs']} | |",
        f"| SPS, median (min-max) | {spread(pk)} | {spread(sb)} | {x(rt['sps'], 'SPS')} |",
        "| env steps per CPU second (process + env workers, start-up included), median "
        + f"| {fmt(pk.get('steps_per_cpu_s_median'), 1)} | {fmt(sb.get('steps_per_cpu_s_median'), 1)} "
        + f"| {x(rt.get('steps_per_cpu_s'), 'per CPU s')} |",
        f"| wall time, median (s) | {fmt(pk['wall_time_s_median'])} "
        + f"| {fmt(sb['wall_time_s_median'])} | |",
        f"| runs reaching {thr} | {pk['n_solved']}/{pk['n_ok']} | {sb['n_solved']}/{sb['n_ok']} | |",
        f"| time to {thr}, median (s) | {fmt(pk['solved_at_time_s_median'])} "
        + f"| {fmt(sb['solved_at_time_s_median'])} | {x(rt['time_to_threshold'], 'faster')} |",
        f"| steps to {thr}, median | {fmt(pk['solved_at_step_median'], 0)} "
        + f"| {fmt(sb['solved_at_step_median'], 0)} | {x(rt['steps_to_threshold'], 'fewer')} |",
        f"| eval return ({report.get('eval_episodes', 20)} det. episodes), mean ± sd over seeds "
        + f"| {evals(pk)} | {evals(sb)} | |",
        f"| time split, median (s) | {times(pk)} | {times(sb)} | |",
        "",
        "Ratios: SPS = ppokit / SB3; time and steps to threshold = SB3 / ppokit (medians over "
        + "the runs that reached it). SB3's split is measured by callbacks (rollout = env + "
        + "inference).",
        "",
        "<details><summary>Per run</summary>",
        "",
        "| seed | library | status | SPS | wall (s) | CPU (s) | solved at step | solved at (s) | eval return |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        status = "ok" if r.get("ok") else f"FAILED (rc {r.get('returncode')})"
        lines.append(
            f"| {r['seed']} | {r['library']} | {status} | {fmt(r.get('sps'), 0)} "
            f"| {fmt(r.get('wall_time_s'))} | {fmt(r.get('cpu_time_s'))} | {fmt(r.get('solved_at_step'))} "
            f"| {fmt(r.get('solved_at_time_s'))} | {fmt(r.get('eval_return_mean'))} |"
        )
    lines += ["", "</details>"]
    failures = [r for r in report["runs"] if not r.get("ok")]
    if failures:
        lines += ["", "Failures:", ""]
        for r in failures:
            error = " ".join(str(r.get("error", "")).split())[:300]
            lines.append(f"- {r['library']} seed {r['seed']}: {error}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(ZOO_YAML))
    parser.add_argument("--mode", default="identical", choices=["identical", "best"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--total-steps", type=int, default=100_000, help="for both libraries"
    )
    parser.add_argument(
        "--threshold",
        default="env",
        help="a number, 'none', or 'env' (reward_threshold)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--eval-episodes", type=int, default=20,
                        help="deterministic evaluation episodes after each run, both libraries (0: none; Atari "
                             "games are long)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--keep-eval", action="store_true",
                        help="keep ppokit's evaluation during training (off by default, as SB3 runs none here; "
                             "needed for --ppokit-cmd of ppokit 0.1, which has no such setting)")
    parser.add_argument("--ppokit-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for ppokit's runs (repeatable), e.g. env.vector=envpool")
    parser.add_argument("--label", default="", help="names this variant in the results file and the docs section "
                                                    "(e.g. envpool), so it does not replace the plain comparison")
    add_ppokit_options(parser)
    args = parser.parse_args(argv)
    variant = f"{args.mode}:{args.label}" if args.label else args.mode

    threshold = resolve_threshold(args.threshold, args.env)
    if args.mode == "identical":
        for problem in check_identical(args.env, CONFIG_DIR / ZOO_YAML[args.env]):
            print(f"warning: config differs from zoo: {problem}", file=sys.stderr)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = args.runs_dir.resolve() / f"{args.env.replace('/', '_')}_{variant.replace(':', '_')}_{stamp}"
    loadavg = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        pk_dir = base / f"ppokit_s{seed}"
        print(f"[{args.env} {variant}] ppokit seed {seed} ...", flush=True)
        rec = run_child(
            ppokit_command(args, seed, pk_dir, threshold),
            base, pk_dir / "summary.json", args.threads, args.timeout,
        )  # fmt: skip
        runs.append({**rec, "library": "ppokit", "seed": seed, "run_dir": str(pk_dir)})
        print(f"  {'ok' if rec['ok'] else 'FAILED: ' + rec['error']}", flush=True)

        sb_dir = base / f"sb3_s{seed}"
        print(f"[{args.env} {variant}] sb3 seed {seed} ...", flush=True)
        out = sb_dir / "result.json"
        rec = run_child(
            sb3_command(args, seed, out), sb_dir, out, args.threads, args.timeout
        )
        runs.append({**rec, "library": "sb3", "seed": seed, "run_dir": str(sb_dir)})
        print(f"  {'ok' if rec['ok'] else 'FAILED: ' + rec['error']}", flush=True)

    pk_runs = [r for r in runs if r["library"] == "ppokit"]
    sb_runs = [r for r in runs if r["library"] == "sb3"]
    pk, sb = summarize(pk_runs, PPOKIT_SPLIT), summarize(sb_runs, SB3_SPLIT)
    ver = versions()
    ver["ppokit"] = next(
        (
            r["versions"].get("ppokit")
            for r in pk_runs
            if isinstance(r.get("versions"), dict)
        ),
        ver["ppokit"],
    )
    report = {
        "env_id": args.env,
        "mode": args.mode,
        "label": args.label,
        "ppokit_set": args.ppokit_set,
        "seeds": args.seeds,
        "total_steps": args.total_steps,
        "threshold": threshold,
        "threads": args.threads,
        "eval_episodes": args.eval_episodes,
        "command": command_line(
            sys.argv if argv is None else ["benchmarks/compare.py", *argv]
        ),
        "date": now_iso(),
        "loadavg_start": loadavg,
        "machine": machine_info(),
        "versions": ver,
        "summary": {
            "ppokit": pk,
            "sb3": sb,
            "ratios": {
                "sps": ratio(pk["sps_median"], sb["sps_median"]),
                "steps_per_cpu_s": ratio(pk["steps_per_cpu_s_median"], sb["steps_per_cpu_s_median"]),
                "time_to_threshold": ratio(
                    sb["solved_at_time_s_median"], pk["solved_at_time_s_median"]
                ),
                "steps_to_threshold": ratio(
                    sb["solved_at_step_median"], pk["solved_at_step_median"]
                ),
            },
        },
        "runs": runs,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS_DIR / f"{args.env.replace('/', '_')}_{variant.replace(':', '_')}.json"
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_json}")
    if not args.no_docs:
        update_docs_section(f"{args.env}:{variant}", markdown(report))
        print("updated docs/benchmarks.md")
    rt = report["summary"]["ratios"]
    print(f"SPS ratio ppokit/SB3: {fmt(rt['sps'], 2)}; steps per CPU second: {fmt(rt['steps_per_cpu_s'], 2)}; "
          f"time-to-threshold SB3/ppokit: "
          f"{fmt(rt['time_to_threshold'], 2)}")  # fmt: skip
    return 0 if pk["n_ok"] and sb["n_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
