"""Ctrl-C and SIGTERM during a run: finish the iteration, save, then stop (see :class:`StopRequest`)."""

from __future__ import annotations

import signal
import sys
from typing import Any


class StopRequest:
    """A signal handler for SIGINT and SIGTERM, installed for the duration of a run.

    The first signal asks the loop to stop after the current iteration (so the checkpoint is
    exact); a second one abandons the iteration at once (``KeyboardInterrupt``). While the run is
    being saved, signals only set the flag; during the final evaluation they stop it at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self.mode = "loop"  # loop | saving | eval
        self.previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.mode == "eval" or (self.mode == "loop" and self.requested):
            raise KeyboardInterrupt(name)
        if self.mode == "loop":
            print(f"ppokit: {name}: stopping after this iteration and saving (send it again to stop at once)",
                  file=sys.stderr, flush=True)
        self.requested = True

    def __enter__(self) -> StopRequest:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
