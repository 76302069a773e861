"""The progress display: a tqdm bar on a terminal, plain lines otherwise, within 80 columns."""

from __future__ import annotations

import io
import math
import re

import pytest

from ppokit.cli import main
from ppokit.progress import WIDTH, ProgressDisplay, fit, plain_line, si, state_parts

ROW = {"global_step": 45_056, "sps": 6_568.2, "episodic_return_mean": 187.25, "policy_loss": -0.01234,
       "value_loss": 12.345, "approx_kl": 0.004012, "entropy": 0.6121, "iteration": 176}
EXTREME = [
    ROW,
    {**ROW, "global_step": 999_999_999_999, "sps": 1.234e9, "episodic_return_mean": -123_456_789.123,
     "policy_loss": -1.23456e-30, "value_loss": 9.87e33, "approx_kl": -0.0, "entropy": -123456.7},
    {"global_step": 0, "sps": 0.0, "episodic_return_mean": None, "iteration": 0},
    {**ROW, "episodic_return_mean": math.nan, "value_loss": math.inf, "entropy": None, "eval_return_mean": 500.0},
]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_numbers_are_short():
    assert [si(x) for x in (0, 999, 1000, 45_056, 100_096, 1e6, 2.5e9, 999_999)] == \
        ["0", "999", "1k", "45.1k", "100k", "1M", "2.5G", "1M"]


def test_fit_leaves_out_the_least_important_parts():
    assert fit(["aaaa", "bb", "cc"], 7) == "aaaa bb"
    assert fit(["aaaa", "bb", "cc"], 10) == "aaaa bb cc"
    assert fit(["aaaa", "bb", "cc"], 3) == ""


def test_plain_line_has_the_state_in_80_columns():
    line = plain_line(ROW, 100_096)
    assert line == " 45% 45.1k/100k 6.57k/s ret 187.2 pi -0.0123 vf 12.3 kl 0.00401 ent 0.612"  # eta: no room
    for row in EXTREME:
        for total in (1, 100_096, 10**12):
            text = plain_line(row, total, last_eval=-99_999.5)
            assert len(text) <= WIDTH, text
            assert re.match(r"^ *\d+% \S+/\S+", text), text  # percent and steps always fit


def test_state_parts_order_and_missing_values():
    parts = state_parts({**ROW, "approx_kl": None}, 100_096, last_eval=500.0)
    assert [p.split()[0] for p in parts] == ["45.1k/100k", "6.57k/s", "ret", "eval", "pi", "vf", "ent", "eta"]
    assert state_parts({"global_step": 64, "episodic_return_mean": None}, 128) == ["64/128", "ret -"]


def test_bar_on_a_terminal_fits_80_columns():
    terminal = _Terminal()
    display = ProgressDisplay(ProgressDisplay.choose(quiet=False, log_every=10, stream=terminal), 10**12, 0,
                              stream=terminal)
    assert display.mode == "bar"
    for row in EXTREME:
        display.bar.mininterval = 0  # draw every update
        display.update(row)
        display.bar.refresh()
    display.close()
    drawn = [line for line in re.split(r"[\r\n]", terminal.getvalue()) if line.strip()]
    assert drawn and all(len(line) <= WIDTH for line in drawn), max(drawn, key=len)
    assert any("45.1k/" in line and "ret 187.2" in line for line in drawn)
    assert any("|" in line and "%" in line for line in drawn)  # tqdm's bar


@pytest.mark.parametrize("quiet, tty, log_every, mode", [
    (False, True, 10, "bar"), (True, True, 10, "lines"), (False, False, 10, "lines"), (True, False, 0, "off"),
])
def test_choose_the_display(quiet, tty, log_every, mode):
    stream = _Terminal() if tty else io.StringIO()
    assert ProgressDisplay.choose(quiet, log_every, stream) == mode


def test_quiet_cli_prints_a_line_every_n_iterations_and_the_last(tmp_path, capsys):
    args = ["train", "CartPole-v1", "--total-steps", "160", "--num-envs", "2", "--set", "rollout.num_steps=16",
            "--set", "ppo.minibatch_size=16", "--set", "eval_episodes=0", "--set", "eval.every_steps=0", "--quiet"]
    assert main([*args, "--run-dir", str(tmp_path / "a"), "--log-every", "2"]) == 0  # 5 iterations of 32 steps
    lines = [line for line in capsys.readouterr().out.splitlines() if "%" in line]
    assert [line.split()[1] for line in lines] == ["64/160", "128/160", "160/160"]
    assert all(len(line) <= WIDTH for line in lines)
    assert main([*args, "--run-dir", str(tmp_path / "b"), "--log-every", "0"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if "%" in line]
    assert main([*args, "--run-dir", str(tmp_path / "c"), "--log-every", "x"]) == 2
    assert "--log-every: expected a non-negative integer, got 'x'" in capsys.readouterr().err
