"""A population of K seeds in one process vs K sequential ppokit runs vs K SB3 runs.

For each repetition (new seeds each time), in this order (so that drifting load hits every side): one ppokit
population (``ppokit train ENV --seeds 0-(K-1)``), then the K single runs one after another,
then (unless ``--no-sb3``) K SB3 runs with the rl-zoo hyperparameters (``sb3_runner.py``). All
for ``--total-steps`` each, no evaluation during training, final evaluation off for ppokit.

Reports per side: total env steps/s (all agents' steps over the wall time, process start-up
included for every side), wall time, and the time until every agent reached the threshold (the
population: the latest agent's ``solved_at_time_s``; sequential runs: the sum over runs of the
time each took to solve, i.e. what one would wait running them one after another and stopping
each when solved; SB3: the same sum, and the median time one SB3 run takes). Steps to the
threshold of the population's agents vs the single runs: a two-sided permutation test of the
difference of means (the same seeds on both sides; only float rounding separates them).

Writes ``benchmarks/results/population_<env>.json``; the numbers go to docs/populations.md by hand.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, RESULTS_DIR, command_line, machine_info, now_iso, versions
from compare import run_child

NO_EVAL = ["--set", "eval.every_steps=0", "--set", "eval_episodes=0"]


def ppokit_train(args: argparse.Namespace, extra: list[str], run_dir: Path) -> tuple[float, int]:
    cmd = [*shlex.split(args.ppokit_cmd), "train", args.env, "--total-steps", str(args.total_steps),
           "--run-dir", str(run_dir), "--quiet", "--log-every", "0", "--device", "cpu", *NO_EVAL, *extra]
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True).returncode
    return time.perf_counter() - start, code


def summaries(folders: list[Path]) -> list[dict[str, Any]]:
    return [json.loads((folder / "summary.json").read_text()) for folder in folders]


def side(wall: float, runs: list[dict[str, Any]], solved_times: list[float | None]) -> dict[str, Any]:
    steps = sum(run.get("total_steps") or 0 for run in runs)
    solved = [t for t in solved_times if t is not None]
    return {"wall_s": wall, "sps": steps / wall, "agents": len(runs),
            "solved": sum(run.get("solved_at_step") is not None for run in runs),
            "solved_at_steps": [run.get("solved_at_step") for run in runs],
            "time_until_all_solved_s": (None if len(solved) < len(runs) else solved_times[-1]),
            "time_split": {key: sum(run.get(key) or 0.0 for run in runs)
                           for key in ("time_env_s", "time_inference_s", "time_update_s", "time_other_s")}}


def permutation_test(a: list[float], b: list[float], resamples: int = 20_000) -> float:
    """Two-sided p-value of the difference of means of ``a`` and ``b`` (fixed generator)."""
    joined, observed = np.array(a + b, dtype=float), abs(np.mean(a) - np.mean(b))
    rng = np.random.default_rng(0)
    count = 0
    for _ in range(resamples):
        rng.shuffle(joined)
        count += abs(joined[:len(a)].mean() - joined[len(a):].mean()) >= observed - 1e-12
    return (count + 1) / (resamples + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to ppokit train")
    parser.add_argument("--preset", default=None, help="passed to ppokit train (default: the env's preset)")
    parser.add_argument("--no-sb3", action="store_true")
    parser.add_argument("--ppokit-cmd", default=f"{sys.executable} -m ppokit")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench" / "population"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    sets = [item for text in args.set for item in ("--set", text)] + (["--preset", args.preset] if args.preset else [])
    report: dict[str, Any] = {"command": command_line(sys.argv if argv is None else argv), "date": now_iso(),
                              "machine": machine_info(), "versions": versions(), "reps": []}
    for rep in range(args.reps):
        seeds = range(rep * args.agents, (rep + 1) * args.agents)  # new seeds each repetition
        pop_dir = out / f"rep{rep}" / "population"
        wall, code = ppokit_train(args, ["--seeds", f"{seeds[0]}-{seeds[-1]}", *sets], pop_dir)
        pop_runs = summaries([pop_dir / f"seed-{s}" for s in seeds])
        times = [run.get("solved_at_time_s") for run in pop_runs]
        population = side(wall, pop_runs, sorted(times, key=lambda t: (t is None, t or 0)))
        population["exit_code"] = code

        seq_runs, seq_wall = [], 0.0
        for seed in seeds:
            run_dir = out / f"rep{rep}" / f"single-{seed}"
            wall, _ = ppokit_train(args, ["--seed", str(seed), *sets], run_dir)
            seq_wall += wall
            seq_runs += summaries([run_dir])
        sequential = side(seq_wall, seq_runs, [])
        solve = [run.get("solved_at_time_s") for run in seq_runs]
        sequential["time_until_all_solved_s"] = None if None in solve else sum(solve)  # type: ignore[arg-type]
        entry = {"population": population, "sequential": sequential}

        if not args.no_sb3:
            sb3_runs, sb3_wall = [], 0.0
            runner = REPO_ROOT / "benchmarks" / "sb3_runner.py"
            for seed in seeds:
                result = out / f"rep{rep}" / f"sb3-{seed}.json"
                cmd = [sys.executable, str(runner), "--env", args.env, "--config", "zoo", "--seed", str(seed),
                       "--total-steps", str(args.total_steps), "--threshold", "env", "--threads", "1",
                       "--out", str(result)]
                record = run_child(cmd, out / f"rep{rep}", result, 1, 3600)
                sb3_wall += record["process_time_s"]
                sb3_runs.append(record)
            sb3 = side(sb3_wall, sb3_runs, [])
            solve = [run.get("solved_at_time_s") for run in sb3_runs]
            sb3["time_until_all_solved_s"] = None if None in solve else sum(solve)  # type: ignore[arg-type]
            sb3["median_time_to_solve_one_s"] = statistics.median([t for t in solve if t is not None] or [0])
            entry["sb3"] = sb3
        report["reps"].append(entry)
        print(json.dumps({k: {f: v[f] for f in ("wall_s", "sps", "solved", "time_until_all_solved_s")}
                          for k, v in entry.items()}), flush=True)

    pop_steps = [s for e in report["reps"] for s in e["population"]["solved_at_steps"] if s is not None]
    seq_steps = [s for e in report["reps"] for s in e["sequential"]["solved_at_steps"] if s is not None]
    if len(pop_steps) >= 2 and len(seq_steps) >= 2:
        report["steps_to_solve"] = {"population_median": statistics.median(pop_steps),
                                    "sequential_median": statistics.median(seq_steps),
                                    "permutation_p_value": permutation_test(pop_steps, seq_steps)}
    path = RESULTS_DIR / f"population_{args.env}.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report.get("steps_to_solve")), f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
