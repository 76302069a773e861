"""One Table 1 from the results of several ``ppokit reproduce ppo-table1`` folders.

A reproduction that ran in parts (some envs in one folder, the others in another, e.g. on two days)
leaves one ``results.json`` per folder. The normalization is per env (random policy 0, best setting
1), so the runs of different folders combine exactly as if they had been one reproduction, provided
they share the steps and the seeds; a setting run later in its own folder (one more row) joins
the same way. This script recomputes the normalized scores,
rliable's intervals and the Markdown table over the union of the envs, with ppokit's own functions::

    python benchmarks/table1_combine.py benchmarks/results/ppo-table1-partial.json OUT/results.json \\
        --out benchmarks/results/ppo-table1.json --markdown table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ppokit.reproduce import report, scores
from ppokit.reproduce.table1 import parse_settings


def combine(paths: list[Path]) -> report.Results:
    """The union of the envs and settings of every ``results.json``: each (env, setting) must come
    from one file only, every setting must cover every env, and the steps and seeds must agree (else
    SystemExit with the reason). An env's random policy is the first file's that has the env (the
    others' are printed when they differ: the same measurement on another CPU model). The time per
    env is given when every file has it."""
    parts = [json.loads(path.read_text()) for path in paths]
    first = parts[0]
    for path, part in zip(paths, parts):
        if (part["steps"], part["seeds"]) != (first["steps"], first["seeds"]):
            sys.exit(f"{path}: steps or seeds differ from {paths[0]}'s; only like runs combine")
    envs: list[str] = []
    random: dict[str, float] = {}
    raw: dict[tuple[str, str], list[float]] = {}
    env_times: dict[str, dict[str, float]] = {}
    with_env_times = all("time_per_env_s" in part for part in parts)  # files made before ppokit reported it lack it
    for path, part in zip(paths, parts):
        for env in part["envs"]:
            if env not in random:
                envs.append(env)
                random[env] = part["random_policy"][env]
            elif part["random_policy"][env] != random[env]:
                print(f"{path}: {env}'s random policy {part['random_policy'][env]:.1f} differs from the "
                      f"first file's {random[env]:.1f}; the first is used", file=sys.stderr)
            for name, setting in part["settings"].items():
                if (env, name) in raw:
                    sys.exit(f"{path}: {env} x {name} is in two of the files; give each once")
                raw[env, name] = setting["raw"][env]
        for env, totals in part["time_per_env_s"].items() if with_env_times else ():
            report.add_run_time(env_times.setdefault(env, {}), totals)
    names = sorted({name for _, name in raw})
    missing = [f"{env} x {name}" for name in names for env in envs if (env, name) not in raw]
    if missing:
        sys.exit(f"no runs for {', '.join(missing)}: every setting needs every env")
    settings = parse_settings(",".join(names))
    return report.Results(envs, settings, first["seeds"], first["steps"], random, raw,
                          scores.normalize(raw, random), {}, report.summed_time([part["time_s"] for part in parts]),
                          {env: env_times[env] for env in envs if env in env_times})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json of each reproduction folder")
    parser.add_argument("--out", type=Path, required=True, help="the combined results JSON")
    parser.add_argument("--markdown", type=Path, help="also write the combined table here")
    args = parser.parse_args()
    report.require_rliable()
    results = combine(args.results)
    estimates = report.intervals(results)
    report.write_json(results, estimates, args.out)
    text = report.markdown(results, estimates, "python benchmarks/table1_combine.py " +
                           " ".join(str(path) for path in args.results))
    if args.markdown:
        args.markdown.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
