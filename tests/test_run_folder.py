"""A training touches no file outside its run folder.

Links planted inside a run folder are never followed when writing; an empty --run-dir, a user's
own non-empty folder and a folder in use by another training are refused with one line.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ppokit import run_folder
from tests.errors_support import BATCH, PYTHON, TINY, bad_input, run_cli, subprocess_env, summary, train_tiny


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A user's file outside the run folder, which links inside the run point to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data\n")
    return victim


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not p.is_symlink()}


def resume(capsys, run: Path) -> int:
    return run_cli(capsys, ["train", "--resume", run, "--total-steps", str(6 * BATCH), "--quiet"])[0]


@pytest.mark.parametrize("name", ["config.yaml", "metrics.csv", "summary.json"])
def test_a_run_file_that_is_a_link_is_refused(capsys, run: Path, outside: Path, name: str) -> None:
    (run / name).unlink()
    (run / name).symlink_to(outside)
    bad_input(capsys, ["train", "--resume", run, "--quiet"], name, "is a symbolic link, not a regular file")
    assert outside.read_text() == "the user's data\n"


def test_a_checkpoints_folder_that_is_a_link_is_refused(capsys, run: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "checkpoints", elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    bad_input(capsys, ["train", "--resume", run, "--quiet"], "checkpoints", "is a symbolic link, not a folder")
    assert snapshot(elsewhere) == before


@pytest.mark.parametrize("name", ["metrics.csv", "config.yaml"])
def test_a_run_file_that_is_a_folder_or_a_device_is_refused(capsys, run: Path, name: str) -> None:
    (run / name).unlink()
    (run / name).mkdir()
    bad_input(capsys, ["train", "--resume", run, "--quiet"], name, "is a folder, not a regular file")


@pytest.mark.parametrize("name", [".write-test", ".summary.json.tmp", ".metrics.csv.tmp", ".ppokit.lock",
                                  "checkpoints/.latest.old", "checkpoints/.latest.tmp-x"])
def test_links_at_temporary_names_are_never_written_through(capsys, run: Path, outside: Path, name: str) -> None:
    link = run / name
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    code = resume(capsys, run)
    assert outside.read_text() == "the user's data\n", "a file outside the run was written"
    if name == ".ppokit.lock":
        assert code == 2  # the lock file must be ppokit's own
    else:
        assert code == 0 and summary(run)["status"] == "completed"


def test_a_latest_checkpoint_that_is_a_link_is_replaced_not_written_through(capsys, run: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "a_users_checkpoint"
    shutil.copytree(run / "checkpoints" / "latest", elsewhere)
    shutil.rmtree(run / "checkpoints" / "latest")
    (run / "checkpoints" / "latest").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    assert resume(capsys, run) == 0
    assert snapshot(elsewhere) == before
    assert not (run / "checkpoints" / "latest").is_symlink()


def test_an_empty_run_dir_is_refused(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", "", *TINY], "--run-dir ''", "expected a folder path")
    assert list(tmp_path.iterdir()) == []


def test_a_users_non_empty_folder_is_refused(capsys, tmp_path: Path) -> None:
    folder = tmp_path / "my_project"
    folder.mkdir()
    (folder / "config.yaml").write_text("my: own config\n")
    (folder / "summary.json").write_text("{}")
    (folder / "notes.txt").write_text("notes")
    before = snapshot(folder)
    bad_input(capsys, ["train", "CartPole-v1", "--run-dir", folder, *TINY], "is not empty and holds no ppokit run",
              "'config.yaml'")
    assert snapshot(folder) == before, "nothing was written into the user's folder"


def test_an_empty_existing_folder_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    assert train_tiny(folder) == 0


def test_a_folder_in_use_is_refused(capsys, run: Path, tmp_path: Path) -> None:
    """While one training holds the folder's lock, a second one (resumed or new) is refused."""
    lock = run_folder.prepare(run, resuming=True)
    try:
        before = snapshot(run)
        line = bad_input(capsys, ["train", "--resume", run, "--quiet"], "is in use by another ppokit training")
        assert f"process '{os.getpid()}'" in line
        bad_input(capsys, ["train", "CartPole-v1", "--run-dir", run, *TINY], "already holds a run")
        fresh = run.parent / "fresh"
        fresh.mkdir()
        other = run_folder.prepare(fresh, resuming=False)
        try:
            bad_input(capsys, ["train", "CartPole-v1", "--run-dir", fresh, *TINY], "is in use by another ppokit")
        finally:
            other.release()
        assert snapshot(run) == before
    finally:
        lock.release()
    assert resume(capsys, run) == 0  # released: usable again


def test_two_trainings_started_at_once_on_one_folder(tmp_path: Path) -> None:
    """Exactly one of two simultaneous trainings gets the folder; metrics.csv has one header."""
    run = tmp_path / "run"
    command = [PYTHON, "-m", "ppokit", "train", "CartPole-v1", "--run-dir", str(run), "--total-steps",
               str(20 * BATCH), *TINY]
    processes = [subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(refused) == 1 and ("in use by another ppokit training" in refused[0]
                                  or "already holds a run" in refused[0]), refused
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows].count("global_step") == 1
    assert len(rows) == 21
