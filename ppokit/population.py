"""Populations: many agents (seeds, and the settings of a sweep) trained in one process.

``ppokit train ENV --seeds 0-7 --sweep ppo.clip_coef=0.1,0.2,0.3`` trains every combination of
a seed and a swept value (here 24 agents). Each agent is an ordinary run folder inside the
population folder (``seed-0/`` or ``ppo.clip_coef=0.1,seed-0/``): its config.yaml holds its own
seed and values, and ``ppokit.load``, ``eval``, ``record`` and ``--resume`` take it as a single
run. ``population.json`` lists the agents and, when they end, the summary table: per agent its
final return, evaluation and steps to the threshold, and per setting the mean, the median and a
95% bootstrap confidence interval over its seeds.

The agents take their iterations in turn in one process (:func:`ppokit.run.train_members`), each
with its own envs, random streams, normalizer, optimizer and schedule: agent k follows the
trajectory of the single run with seed k.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from ppokit.config import Config, ConfigError, field_annotation, from_dict, merge, parse_override, to_dict
from ppokit.errors import CheckpointError, quote
from ppokit.files import read_regular, write_atomic
from ppokit.run_folder import new_folder_name
from ppokit.stats import bootstrap_mean_ci

FILE = "population.json"
MAX_AGENTS = 256  # one process; each agent has its own envs and storage
SEEDS_TEXT = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")
SWEPT_FIELDS_HELP = "float fields such as ppo.learning_rate, ppo.clip_coef, ppo.ent_coef, rollout.gamma"


def parse_seeds(text: str) -> list[int]:
    """``"0-7"`` -> ``[0, ..., 7]``; ``"0,3,5"``, ``"0-2,9"``; ConfigError for anything else."""
    bad = ConfigError(f"--seeds {quote(text)}: expected seeds like 0-7 or 0,3,5 (non-negative integers, "
                      f"ranges first-last, each seed once, at most {MAX_AGENTS})")
    if not isinstance(text, str) or len(text) > 1000 or not SEEDS_TEXT.match(text):
        raise bad
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low or high - low >= MAX_AGENTS or high >= 2**32:
            raise bad
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds) or len(seeds) > MAX_AGENTS:
        raise bad
    return seeds


def parse_sweep(items: list[str]) -> list[tuple[str, list[float]]]:
    """``["ppo.clip_coef=0.1,0.2"]`` -> ``[("ppo.clip_coef", [0.1, 0.2])]``: float fields only."""
    sweep: list[tuple[str, list[float]]] = []
    for text in items:
        key, equals, raw = text.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ConfigError(f"--sweep {quote(text)}: expected KEY=V1,V2,..., e.g. ppo.clip_coef=0.1,0.2,0.3")
        annotation = field_annotation(key)
        if annotation is None:
            raise ConfigError(f"--sweep {quote(key)}: no such config field (a sweep takes {SWEPT_FIELDS_HELP})")
        if annotation not in (float, float | None):
            raise ConfigError(f"--sweep {quote(key)}: only float fields can differ between the agents of a "
                              f"population (e.g. {SWEPT_FIELDS_HELP}); train one population per value of it")
        values = []
        for value in raw.split(","):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ConfigError(f"--sweep {quote(key)}: {quote(value.strip())} is not a finite number "
                                  "(expected KEY=V1,V2,...)")
            values.append(number)
        if len(set(values)) != len(values) or any(key == k for k, _ in sweep):
            raise ConfigError(f"--sweep {quote(key)}: each field once, each value once")
        sweep.append((key, values))
    return sweep


@dataclass
class AgentSpec:
    """One agent of a population: its folder name, the swept values it takes, its config."""

    name: str
    settings: dict[str, float]
    cfg: Config | None  # None until read from the agent's checkpoint (a resumed population)
    seed: int


def agents(cfg: Config, seeds: list[int], sweep: list[tuple[str, list[float]]]) -> list[AgentSpec]:
    """Every combination of a swept value and a seed, as configs (checked by ``ppokit.run``)."""
    combos: list[dict[str, float]] = [{}]
    for key, values in sweep:
        combos = [{**combo, key: value} for combo in combos for value in values]
    if len(combos) * len(seeds) > MAX_AGENTS:
        raise ConfigError(f"--seeds and --sweep: {len(combos) * len(seeds)} agents; a population holds at most "
                          f"{MAX_AGENTS} (train several populations)")
    out = []
    for combo in combos:
        for seed in seeds:
            data = to_dict(cfg)
            for key, value in combo.items():
                data = merge(data, parse_override(f"{key}={value!r}"))
            data["seed"] = seed
            name = ",".join([f"{key}={number_text(value)}" for key, value in combo.items()] + [f"seed-{seed}"])
            out.append(AgentSpec(name, combo, from_dict(data), seed))
    return out


def number_text(value: float) -> str:
    """``0.1`` -> ``"0.1"``, ``3e-4`` -> ``"0.0003"`` (as ``:g``), but exact: values that ``:g``
    would round alike (``0.1000001``, ``0.1000002``) keep distinct names (and agent folders)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def default_folder(cfg: Config, count: int) -> Path:
    """``runs/{env}__{algo}__pop{K}__{timestamp}`` (with ``-2``, ... if taken)."""
    return new_folder_name(f"{cfg.env_id.replace('/', '-')}__{cfg.algo}__pop{count}")


def summary_table(members: list[AgentSpec], summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """population.json's table: one row per agent, then per setting (its seeds) the mean, median
    and 95% bootstrap confidence interval of the final training return and the evaluation, and
    how many seeds reached the threshold (with the median steps to it)."""
    rows = []
    for member, summary in zip(members, summaries):
        rows.append({"name": member.name, "seed": member.seed, "settings": member.settings,
                     **{key: summary.get(key) for key in ROW_FIELDS}})
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(json.dumps(row["settings"], sort_keys=True), []).append(row)
    settings = []
    for group in groups.values():
        solved = [row["solved_at_step"] for row in group if row["solved_at_step"] is not None]
        settings.append({
            "settings": group[0]["settings"], "agents": len(group),
            "completed": sum(row["status"] == "completed" for row in group),
            # over the completed agents: a failed one's partial return is no final result
            "train_return_last20": _spread([row["train_return_last20"] for row in group
                                            if row["status"] == "completed"]),
            "eval_return_mean": _spread([row["eval_return_mean"] for row in group if row["status"] == "completed"]),
            "solved": len(solved), "solved_at_step_median": median(solved) if solved else None,
        })
    return {"agents": rows, "settings": settings}


ROW_FIELDS = ("status", "total_steps", "train_return_last20", "eval_return_mean", "solved_at_step", "wall_time_s")


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, median and 95% bootstrap CI of the mean over the agents that have a value."""
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not present:
        return {"n": 0, "mean": None, "median": None, "ci95": None}
    interval = bootstrap_mean_ci(present)
    return {"n": len(present), "mean": sum(present) / len(present), "median": median(present),
            "ci95": None if interval is None else [float(interval[0]), float(interval[1])]}


def write(folder: Path, members: list[AgentSpec], table: dict[str, Any] | None, status: str) -> None:
    """population.json: the agents (name, seed, settings, folder) and the summary table once known."""
    data = {"format_version": 1, "status": status,
            "agents": [{"name": m.name, "seed": m.seed, "settings": m.settings, "run_dir": m.name}
                       for m in members]}
    if table is not None:
        data["summary"] = table
    write_atomic(folder / FILE, json.dumps(data, indent=2))


def format_table(table: dict[str, Any]) -> list[str]:
    """The summary as lines of text: one per setting."""
    lines = []
    for group in table["settings"]:
        label = ", ".join(f"{k}={number_text(v)}" for k, v in group["settings"].items()) or "all seeds"
        train, evaluation = group["train_return_last20"], group["eval_return_mean"]
        lines.append(f"{label}: {group['agents']} agents ({group['completed']} completed); "
                     f"train return {_show(train)}; eval {_show(evaluation)}; "
                     f"solved {group['solved']}/{group['agents']}"
                     + (f" (median step {group['solved_at_step_median']:,.0f})" if group["solved"] else ""))
    return lines


def _show(spread: dict[str, Any]) -> str:
    if spread["mean"] is None:
        return "n/a"
    ci = spread["ci95"]
    return f"mean {spread['mean']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "") + \
        f", median {spread['median']:.1f}"


# ---------------------------------------------------------------------------- training


@dataclass
class PopulationResult:
    folder: Path
    results: list[Any]  # ppokit.run.RunResult, one per agent
    table: dict[str, Any]
    status: str  # completed | interrupted | failed (the worst of the agents')


def train(cfg: Config, seeds: list[int], sweep: list[tuple[str, list[float]]], folder: str | Path | None = None,
          **options: Any) -> PopulationResult:
    """Train the population of ``cfg`` x ``seeds`` x ``sweep`` into ``folder`` (a new folder);
    ``options`` as for :func:`ppokit.run.train_members` (quiet, callbacks, source, networks, ...)."""
    from ppokit.config import validate
    from ppokit.run import MemberRun

    members = agents(cfg, seeds, sweep)
    for member in members:  # a swept value out of range: refused before anything is created
        validate(member.cfg)
    folder = Path(folder) if folder is not None else default_folder(cfg, len(members))
    _check_new_folder(folder)
    runs = [MemberRun(member.cfg, folder / member.name) for member in members]
    return _train(folder, members, runs, options, new=True)


def resume(folder: str | Path, sets: list[str] | None = None, **options: Any) -> PopulationResult:
    """Continue every agent of the population in ``folder`` that has not completed, each from its
    ``checkpoints/latest`` (with ``sets``, ``--set KEY=VALUE`` texts, applied to each config)."""
    from ppokit.checkpoint import config_of, read
    from ppokit.config import validate
    from ppokit.run import MemberRun
    from ppokit.training_state import check_resume

    folder = Path(folder)
    members = read_members(folder)
    runs, kept = [], {}
    for member in members:
        try:
            _, meta, checkpoint_folder = read(folder / member.name)
        except CheckpointError:
            summary = _failed_summary(folder / member.name)
            if summary is None:
                raise
            kept[member.name] = summary  # failed before its first checkpoint: nothing to continue
            continue
        saved = config_of(meta, checkpoint_folder)
        data = to_dict(saved)
        for text in sets or []:
            data = merge(data, parse_override(text))
        member.cfg = from_dict(data)
        # Checked here, before population.json is rewritten (the run checks them again).
        check_resume(saved, member.cfg, meta, folder / member.name)
        validate(member.cfg)
        runs.append(MemberRun(member.cfg, resume=folder / member.name))
    if not runs:
        raise ConfigError(f"population {quote(folder)}: no agent can continue (each failed before its first "
                          "checkpoint)")
    return _train(folder, members, runs, options, new=False, kept=kept)


def _failed_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary.json of an agent that failed (None if it has none, or did not fail)."""
    try:
        summary = json.loads(read_regular(run_dir / "summary.json", MAX_FILE, "summary file", follow_links=False))
    except (ConfigError, ValueError, RecursionError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "failed" else None


def _train(folder: Path, members: list[AgentSpec], runs: list[Any], options: dict[str, Any],
           new: bool, kept: dict[str, dict[str, Any]] | None = None) -> PopulationResult:
    """Train ``runs`` (the agents of ``members`` not in ``kept``, in order); ``kept`` are the
    summaries of the agents that are not trained again."""
    from ppokit import distributed
    from ppokit.run import train_members

    if distributed.init()[1] > 1:
        raise ConfigError("--seeds / --sweep: a population trains in one process; under torchrun train one agent "
                          "(its envs are split over the processes), or run the population without torchrun")
    created = None  # the first folder of the path this creates (e.g. runs/ for the default folder)
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        created = candidate
    previous = None if new else (folder / FILE).read_bytes()
    before = _summary_stamps(folder, members)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder, members, None, "running")
    try:
        results = train_members(runs, **options)
    except ConfigError:
        # An agent was refused before any training (its config, env or folder): leave no trace
        # (a new population's folder goes; a resumed one keeps its population.json).
        if _summary_stamps(folder, members) == before:
            if previous is not None:
                write_atomic(folder / FILE, previous)
            elif created is not None:
                shutil.rmtree(created, ignore_errors=True)
            else:  # an empty folder the caller gave: empty again
                for child in folder.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise
    trained = iter(results)
    summaries = [(kept or {}).get(m.name) or next(trained).summary for m in members]
    table = summary_table(members, summaries)
    statuses = {summary["status"] for summary in summaries}
    status = next(s for s in ("failed", "interrupted", "completed") if s in statuses)
    write(folder, members, table, status)
    return PopulationResult(folder, results, table, status)


def _summary_stamps(folder: Path, members: list[AgentSpec]) -> list[tuple[int, int] | None]:
    """Each agent's summary.json as (mtime, size), None where it has none: unchanged when no agent ran."""
    stamps: list[tuple[int, int] | None] = []
    for member in members:
        try:
            stat = (folder / member.name / "summary.json").stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append(None)
    return stamps


def _check_new_folder(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"population folder {quote(folder)} exists and is not empty (choose a new --run-dir, or "
                          f"continue that population with --resume {folder})")


MAX_FILE = 1 << 20  # population.json of MAX_AGENTS agents is far smaller


def is_population(folder: str | Path) -> bool:
    return (Path(folder) / FILE).is_file()


def expand_populations(folders: list[Path]) -> list[Path]:
    """``folders`` with each population folder replaced by its agents' run folders."""
    out: list[Path] = []
    for folder in folders:
        if is_population(folder):
            out.extend(folder / member.name for member in read_members(folder))
        else:
            out.append(folder)
    return out


def read_members(folder: Path) -> list[AgentSpec]:
    """The agents listed in ``folder``'s population.json (names checked: plain folder names inside
    it); their configs are read from their checkpoints by the caller."""
    where = f"population file {quote(folder / FILE)}"
    raw = read_regular(folder / FILE, MAX_FILE, "population file", follow_links=False)
    try:
        data = json.loads(raw)
        entries = data["agents"]
        members = [AgentSpec(str(e["name"]), {str(k): float(v) for k, v in e["settings"].items()}, None,
                             _seed(e["seed"]))
                   for e in entries]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ConfigError(f"{where} is unreadable or not a ppokit population ({type(error).__name__})") from None
    names = [m.name for m in members]
    if not 1 <= len(members) <= MAX_AGENTS or any(not _plain_name(name) for name in names) \
            or len(set(names)) != len(names):
        raise ConfigError(f"{where}: expected 1 to {MAX_AGENTS} agents whose names are folders inside it, "
                          "each once")
    for name in names:  # a real folder, not a link that leads out of the population
        if (folder / name).is_symlink() or not (folder / name).is_dir():
            raise ConfigError(f"{where}: agent {quote(name)} is not a folder inside it")
    return members


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValueError("seed")
    return value


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name \
        and len(name) <= 255
