"""The errors ppokit raises on purpose, and the helpers that keep their messages to one line.

* :class:`ConfigError` (and :class:`CheckpointError`): bad user input, exit code 2.
* :class:`EnvError`: an environment raised while stepping or resetting, exit code 1.
* :class:`TrainingError`: training cannot go on (non-finite numbers, a lost peer process:
  :class:`PeerLost`), exit code 1.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any


class ConfigError(ValueError):
    """Bad user input (config value, file, env id, ...): reported as one line, exit code 2."""


class CheckpointError(ConfigError):
    """A checkpoint or run folder that cannot be used (reported as bad input, exit code 2)."""


class EnvError(RuntimeError):
    """An environment raised while stepping or resetting (names the env and sub-env)."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite numbers, a failing env): exit code 1, summary "failed"."""


class PeerLost(TrainingError):
    """Another process of a torchrun job died or hung past ``dist_timeout_s``: exit code 1,
    summary "failed", the last good checkpoint kept (``--resume`` continues)."""


def quote(text: Any, limit: int = 200) -> str:
    """``text`` in single quotes for a one-line message: control characters escaped, long text cut."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"'{escaped}'"


def did_you_mean(word: str, choices: typing.Iterable[str], prefix: str = "") -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice (shown after ``prefix``), or ``""``."""
    choices = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if not close:  # case slips ("cpu" for "CPU") are the most common typo
        lowered = {c.lower(): c for c in choices}
        close = [lowered[str(word).lower()]] if str(word).lower() in lowered else []
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
