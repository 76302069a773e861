"""``ppokit reproduce ppo-table1``: plan, run, score and report the PPO paper's Table 1.

Every (env, setting, seed) is an ordinary run folder trained by ``ppokit train`` with the
``ppo-paper`` preset (:mod:`.runs`); the scores follow the paper (:mod:`.scores`); the report has
rliable's bootstrap intervals, the raw returns and learning curves (:mod:`.report`). Calling it
again on the same folder finishes what is missing and writes the report again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ppokit.errors import ConfigError, quote
from ppokit.reproduce import report, runs, scores
from ppokit.reproduce.table1 import DEFAULT_RANDOM_EPISODES, NAME, PRESET, Setting


def reproduce_table1(
    out: Path,
    envs: list[str],
    settings: list[Setting],
    seeds: int,
    steps: int,
    jobs: int,
    sets: list[str] = (),  # type: ignore[assignment]
    random_episodes: int = DEFAULT_RANDOM_EPISODES,
    command_line: str = "ppokit reproduce ppo-table1",
    say: Callable[[str], None] = print,
) -> tuple[report.Results, list[runs.Outcome]]:
    """Run what is missing of ``envs x settings x seeds`` in ``out``, then write ``table.md``,
    ``results.json`` and ``curves.png`` there. Bad input (an unknown env, a bad ``--set``, a folder
    holding a reproduction with other options) is a ConfigError before any run starts."""
    report.require_rliable()
    sets = list(sets)
    _check_configs(envs, settings, sets, seeds, steps)
    _prepare_out(out, steps, sets)
    random = scores.random_returns(envs, random_episodes, out / "random_policy.json")  # also checks each env
    planned = runs.plan(out, envs, settings, seeds)
    waiting = sum(runs.state(run) in ("fresh", "resume") for run in planned)
    say(f"{len(planned)} runs ({len(envs)} envs x {len(settings)} settings x {seeds} seeds, {steps:,} steps each): "
        f"{len(planned) - waiting} finished or failed before, {waiting} to run, {jobs} at a time")
    outcomes = runs.execute(planned, steps, sets, jobs, say)
    results, curves = collect(planned, envs, settings, seeds, steps, random)
    estimates = report.intervals(results)
    (out / "table.md").write_text(report.markdown(results, estimates, command_line))
    report.write_json(results, estimates, out / "results.json")
    report.plot_curves(curves, envs, settings, out / "curves.png")
    return results, outcomes


def collect(planned: list[runs.Run], envs: list[str], settings: list[Setting], seeds: int, steps: int,
            random: dict[str, float]) -> tuple[report.Results, dict]:
    """Scores, times and curves of the finished runs; a setting enters the table once all its
    runs (every env and seed) are finished."""
    from ppokit.plot import read_curve

    raw: dict[tuple[str, str], list[float]] = {}
    curves: dict[tuple[str, str], list] = {}
    missing: dict[str, int] = {}
    env_times: dict[str, dict[str, float]] = {}
    for run in planned:
        key = (run.env_id, run.setting.name)
        if runs.state(run) != "done":
            missing[run.setting.name] = missing.get(run.setting.name, 0) + 1
            continue
        raw.setdefault(key, []).append(scores.run_score(run.folder))
        curves.setdefault(key, []).append(read_curve(run.folder))
        summary = json.loads((run.folder / "summary.json").read_text())
        report.add_run_time(env_times.setdefault(run.env_id, {}), summary)
    complete = [s for s in settings if s.name not in missing]
    raw = {(env, s.name): raw[env, s.name] for env in envs for s in complete}
    normalized = scores.normalize(raw, random) if raw else {}
    env_times = {env: env_times[env] for env in envs if env_times.get(env)}
    results = report.Results(envs, complete, seeds, steps, random, raw, normalized, missing,
                             report.summed_time(list(env_times.values())), env_times)
    return results, curves


def _check_configs(envs: list[str], settings: list[Setting], sets: list[str], seeds: int, steps: int) -> None:
    """Each setting's config (preset + its fields + ``sets``) must be valid: checked before any run."""
    from ppokit.config import validate
    from ppokit.envs import ensure_registered
    from ppokit.presets import build_config

    for env_id in envs:
        ensure_registered(env_id)
    for setting in settings:
        validate(build_config(envs[0], algo=setting.algo, preset=PRESET, sets=[*setting.sets, *sets],
                              overrides={"total_steps": steps, "seed": seeds - 1}))


def _prepare_out(out: Path, steps: int, sets: list[str]) -> None:
    """Create ``out``; ``out/reproduce.json`` records the options every run shares, and a folder
    made with other options (or holding something else) is refused."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {quote(out)} is a file; expected a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out {quote(out)} cannot be created ({error.strerror or error})") from None
    path = out / "reproduce.json"
    wanted = {"experiment": NAME, "preset": PRESET, "steps": steps, "sets": sets}
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ConfigError(f"--out {quote(out)}: {quote(path)} cannot be read; use another --out") from None
        if found != wanted:
            raise ConfigError(f"--out {quote(out)} holds a reproduction made with --steps {found.get('steps')} and "
                              f"--set {found.get('sets')}; continue it with the same options or use another --out")
    elif any(out.iterdir()):
        raise ConfigError(f"--out {quote(out)} is not empty and holds no reproduction; use an empty or new folder")
    else:
        path.write_text(json.dumps(wanted, indent=2) + "\n")

