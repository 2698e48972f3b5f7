"""Stopping on request: SIGTERM (what SLURM, Kubernetes and spot instances send before they take the machine) and a
first Ctrl-C ask the run to stop after the current optimizer step, with a checkpoint; a second Ctrl-C aborts at
once (the last complete checkpoint stays as it is)."""
from __future__ import annotations

import os
import signal
import threading


class StopRequests:
    """While active (a context manager, on the main thread), remembers the first stop request."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.requested:  # the second Ctrl-C: abort now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if not self.requested:
            self.signal_name = signal.Signals(signum).name
            again = "; Ctrl-C again aborts" if signum == signal.SIGINT else ""
            os.write(1, f"\n{self.signal_name}: stopping after this step with a checkpoint{again}\n".encode())
