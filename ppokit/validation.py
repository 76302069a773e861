"""Range checks for config values: each raises :class:`ConfigError` naming the field and what is accepted.

Used by :func:`ppokit.config.validate` and by every algorithm's own section check (see
:mod:`ppokit.algos.registry`), so every message reads the same way.
"""

from __future__ import annotations

from ppokit.errors import ConfigError, did_you_mean, quote


def check(ok: bool, message: str) -> None:
    """ConfigError(message) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def positive_int(value: int, name: str) -> None:
    check(value >= 1, f"{name}: expected a positive integer, got {value}")


def in_unit_interval(value: float, name: str, *, open_low: bool = False, open_high: bool = False) -> None:
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
    check(low_ok and high_ok, f"{name}: expected a number in {interval}, got {value}")


def positive(value: float | None, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    accepted = "a positive number or null" if optional else "a positive number"
    check(value is not None and value > 0, f"{name}: expected {accepted}, got {value}")


def non_negative(value: float, name: str) -> None:
    check(value >= 0, f"{name}: expected a number >= 0, got {value}")


def one_of(value: str, choices: tuple[str, ...], name: str) -> None:
    check(
        value in choices,
        f"{name}: expected one of {', '.join(choices)}, got {quote(value)}{did_you_mean(value, choices)}",
    )


def fits_batch(value: int, batch: int, name: str) -> None:
    check(
        value <= batch,
        f"{name}: {value} is larger than the batch of {batch} steps "
        "(rollout.num_steps * rollout.num_envs); lower it or collect more steps",
    )
