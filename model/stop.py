"""Stopping cleanly: SIGTERM (a scheduler's pre-emption) or Ctrl-C ends the run with a checkpoint.

    with StopFlag() as stop:
        ... if stop.signal: save and leave ...
"""
from __future__ import annotations

import signal


class StopFlag:
    """While active, SIGTERM/SIGINT ask for a checkpoint and a clean exit; a second SIGINT interrupts at once."""

    def __init__(self):
        self.signal, self._previous = None, {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
