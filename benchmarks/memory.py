"""Watch ppokit's resident memory over a long training run, to catch leaks.

Starts ``ppokit train ENV --total-steps N --run-dir DIR --quiet`` in a subprocess and samples its
RSS with psutil every ``--interval`` seconds (the process alone, and with its child processes,
e.g. async vector-env workers). The baseline is the RSS when the first row of ``metrics.csv``
appears (polled every 0.05 s until then), i.e. after the first iteration, when models, buffers
and envs exist. Reports the max,
the final RSS, growth in percent from the baseline, and the slope of RSS against steps over the
second half of the run (MB per million steps: near 0 for a run without a leak).

Writes ``benchmarks/results/memory_<env>.json`` and rewrites the section
``<!-- bench:memory:start -->`` ... ``<!-- bench:memory:end -->`` of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    add_ppokit_options,
    command_line,
    fmt,
    machine_info,
    now_iso,
    update_docs_section,
    versions,
)

MB = 1024 * 1024
MAX_SAVED_SAMPLES = 500


def last_global_step(metrics: Path) -> int | None:
    """global_step of the last complete row of metrics.csv (None before the first row)."""
    try:
        with metrics.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    rows = [line for line in lines if line and line[0].isdigit()]
    if not rows:
        return None
    try:
        return int(float(rows[-1].split(",", 1)[0]))
    except ValueError:
        return None


def peak_rss_mb(pid: int) -> float | None:
    """Kernel-tracked peak RSS (VmHWM) of a process in MB, on Linux; None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def sample(proc: psutil.Process) -> tuple[float, float] | None:
    """(RSS of the process, RSS of it plus its descendants), in MB; None once it is gone."""
    try:
        own = proc.memory_info().rss
        total = own
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
    except psutil.Error:
        return None
    return own / MB, total / MB


def slope_mb_per_million(samples: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of ``key`` (MB) against global_step, over the second half of steps."""
    pts = [(s["step"], s[key]) for s in samples if s["step"] is not None]
    if len(pts) < 4:
        return None
    last = pts[-1][0]
    half = [(x, y) for x, y in pts if x >= last / 2]
    if len(half) < 3 or len({x for x, _ in half}) < 2:
        return None
    fit = statistics.linear_regression([x for x, _ in half], [y for _, y in half])
    return fit.slope * 1_000_000


def watch(
    cmd: list[str], run_dir: Path, interval: float, timeout: float, threads: int
) -> dict[str, Any]:
    """Run ppokit, sample its memory until it exits, and return the measurements."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    metrics = run_dir / "metrics.csv"
    samples: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    hwm: float | None = None
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(
            cmd, cwd=run_dir.parent, env=env, stdout=out, stderr=out
        )
        proc = psutil.Process(child.pid)
        while child.poll() is None:
            if time.perf_counter() - start > timeout:
                child.kill()
                break
            hwm = peak_rss_mb(child.pid) or hwm
            rss = sample(proc)
            if rss is not None:
                step = last_global_step(metrics)
                point = {
                    "t": time.perf_counter() - start,
                    "step": step,
                    "rss_mb": rss[0],
                    "rss_tree_mb": rss[1],
                }
                samples.append(point)
                if first is None and step is not None:
                    first = point
            time.sleep(interval if first is not None else min(interval, 0.05))
        returncode = child.wait()
    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
    return {
        "returncode": returncode,
        "elapsed_s": time.perf_counter() - start,
        "log_tail": tail,
        "first": first,
        "samples": samples,
        "peak_rss_hwm_mb": hwm,
    }


def analyse(watched: dict[str, Any]) -> dict[str, Any]:
    """Baseline / max / final RSS, growth percentages and late-run slope."""
    samples, first = watched["samples"], watched["first"]
    if not samples or first is None:
        return {"error": "no metrics.csv row appeared while the process ran"}
    out: dict[str, Any] = {
        "samples_taken": len(samples),
        "first_iteration_step": first["step"],
    }
    for key in ("rss_mb", "rss_tree_mb"):
        base, final = first[key], samples[-1][key]
        top = max(s[key] for s in samples)
        out[key] = {
            "first_iteration": base,
            "max": top,
            "final": final,
            "growth_final_pct": 100 * (final - base) / base,
            "growth_max_pct": 100 * (top - base) / base,
            "slope_mb_per_million_steps": slope_mb_per_million(samples, key),
        }
    out["peak_rss_hwm_mb"] = watched["peak_rss_hwm_mb"]
    out["last_step_seen"] = max((s["step"] or 0) for s in samples)
    return out


def markdown(report: dict[str, Any]) -> str:
    """Render the docs section."""
    mach, ver, res = report["machine"], report["versions"], report["result"]
    lines = [
        f"### Memory: {report['env_id']}, {fmt(report['total_steps'])} steps",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}; machine: {mach['nproc']} CPUs, {mach['cpu_model']}",
        f"- Versions: python {ver['python']}, torch {ver['torch']}, gymnasium {ver['gymnasium']}, "
        + f"ppokit {ver['ppokit']}",
        f"- ppokit exit status {report['returncode']}; RSS sampled every {report['interval_s']} s "
        + "with psutil; baseline = RSS when the first metrics.csv row appeared.",
        "",
    ]
    if "error" in res:
        return "\n".join([*lines, f"No result: {res['error']}.", ""])
    lines += [
        "| RSS (MB) | after 1st iteration | max | final | growth (final) | growth (max) "
        + "| slope, 2nd half (MB / 1M steps) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, label in (
        ("rss_mb", "main process"),
        ("rss_tree_mb", "with child processes"),
    ):
        r = res[key]
        lines.append(
            f"| {label} | {fmt(r['first_iteration'])} | {fmt(r['max'])} | {fmt(r['final'])} "
            + f"| {r['growth_final_pct']:+.1f}% | {r['growth_max_pct']:+.1f}% "
            + f"| {fmt(r['slope_mb_per_million_steps'], 2)} |"
        )
    lines += [
        "",
        f"Kernel peak RSS (VmHWM) of the main process: {fmt(res['peak_rss_hwm_mb'])} MB; "
        + f"last step seen in metrics.csv: {fmt(res['last_step_seen'])}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--total-steps", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--config", type=Path, help="ppokit config YAML (default: its preset)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between samples"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP/MKL threads for the child"
    )
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds")
    parser.add_argument(
        "--max-growth-pct", type=float, help="exit 1 if final growth exceeds it"
    )
    add_ppokit_options(parser)
    args = parser.parse_args(argv)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = args.runs_dir.resolve() / f"memory_{args.env.replace('/', '_')}_{stamp}"
    cmd = [*shlex.split(args.ppokit_cmd), "train", args.env]
    if args.config:
        cmd += ["--config", str(args.config.resolve())]
    cmd += [
        "--total-steps",
        str(args.total_steps),
        "--seed",
        str(args.seed),
        "--device",
        "cpu",
    ]
    cmd += ["--run-dir", str(run_dir), "--quiet"]
    for item in args.set:
        cmd += ["--set", item]
    print(f"running: {shlex.join(cmd)}", flush=True)

    watched = watch(cmd, run_dir, args.interval, args.timeout, args.threads)
    result = analyse(watched)
    ver = versions()
    summary = run_dir / "summary.json"
    if summary.exists():
        ver["ppokit"] = (
            json.loads(summary.read_text())
            .get("versions", {})
            .get("ppokit", ver["ppokit"])
        )
    samples = watched["samples"]
    stride = max(1, len(samples) // MAX_SAVED_SAMPLES)
    report = {
        "env_id": args.env,
        "total_steps": args.total_steps,
        "seed": args.seed,
        "interval_s": args.interval,
        "command": command_line(
            sys.argv if argv is None else ["benchmarks/memory.py", *argv]
        ),
        "ppokit_command": shlex.join(cmd),
        "date": now_iso(),
        "machine": machine_info(),
        "versions": ver,
        "returncode": watched["returncode"],
        "elapsed_s": watched["elapsed_s"],
        "log_tail": watched["log_tail"],
        "result": result,
        "samples": samples[::stride],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS_DIR / f"memory_{args.env.replace('/', '_')}.json"
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out_json}")
    if not args.no_docs:
        update_docs_section("memory", markdown(report))
        print("updated docs/benchmarks.md")
    if watched["returncode"] != 0 or "error" in result:
        print(
            f"ppokit failed (exit {watched['returncode']}): {result.get('error', '')}"
        )
        print("\n".join(watched["log_tail"]))
        return 1
    rss = result["rss_mb"]
    print(
        f"RSS after first iteration {rss['first_iteration']:.1f} MB, max {rss['max']:.1f} MB, "
        f"final {rss['final']:.1f} MB ({rss['growth_final_pct']:+.1f}%)"
    )
    if (
        args.max_growth_pct is not None
        and rss["growth_final_pct"] > args.max_growth_pct
    ):
        print(f"growth exceeds --max-growth-pct {args.max_growth_pct}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
