"""Termination signals during ``fit``: deferred to the end of the running chunk.

While a trainer runs, SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) do not
interrupt it: the first one is recorded in ``trainer.received_signal`` and asks the trainer to
stop after the running chunk, so checkpoint callbacks save and every end hook runs; ``fit``
then exits with ``SystemExit(trainer.sigterm_exit_code)`` for SIGTERM or raises
``KeyboardInterrupt`` for SIGINT. A second signal raises ``KeyboardInterrupt`` at once. One
handler per ``fit``, installed on entry and restored on exit (main thread only).
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import Trainer

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DeferredSignals:
    """Context manager installing the trainer's handler for ``signals`` (default
    :data:`SIGNALS`)."""

    def __init__(self, trainer: "Trainer", enabled: bool = True,
                 signals: tuple[signal.Signals, ...] = SIGNALS):
        self.trainer = trainer
        self.signals = signals
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.trainer.received_signal is not None:  # a second signal: stop waiting
            self.restore()
            raise KeyboardInterrupt
        sig = signal.Signals(signum)
        self.trainer.received_signal = sig
        self.trainer.stop(f"received {sig.name}: stopped after the running chunk")

    def __enter__(self) -> "DeferredSignals":
        if self.enabled:
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self.restore()
