""""Every n train steps", counted once for every periodic callback (clu's ``PeriodicAction``
idea): loggers, checkpoints, plots, histograms and the trainer's chunk boundaries.

:class:`PeriodicCallback` is the base of callbacks that act on the state every ``n`` steps:
it owns their periods, asks the trainer for a chunk boundary at each (so ``trainer.state`` is
the state after the step), and tells whether a chunk ended on one."""

from __future__ import annotations

import numpy as np

import math
from typing import TYPE_CHECKING

from jno_flax._checks import positive_int
from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import Trainer


class EveryNSteps:
    """A period of ``n`` steps, counted as Lightning's ``every_n_train_steps``: due once
    ``n``, ``2n``, ... steps are done, i.e. after each step ``s`` with ``(s + 1) % n == 0``.

    Args:
        arg: the argument name used in errors (e.g. ``"every_n_train_steps"``).
        n: the period, a positive integer.
    """

    def __init__(self, arg: str, n: int):
        self.n = positive_int(arg, n, steps=True)

    @classmethod
    def optional(cls, arg: str, n: int | None) -> "EveryNSteps | None":
        """A period of ``n`` steps, or ``None`` when ``n`` is ``None`` (the action is off)."""
        n = positive_int(arg, n, steps=True, allow_none=True)
        return None if n is None else cls(arg, n)

    def __repr__(self) -> str:
        return f"EveryNSteps({self.n})"

    def due(self, done: int) -> bool:
        """True when the action is due with ``done`` steps completed (``done > 0``)."""
        return done > 0 and done % self.n == 0

    def ends(self, steps: np.ndarray) -> np.ndarray:
        """Positions in ``steps`` (step indices, in order) after which the action is due."""
        return np.nonzero((np.asarray(steps) + 1) % self.n == 0)[0]

    def next_boundary(self, done: int) -> int:
        """The first step count after ``done`` at which the action is due."""
        return (done // self.n + 1) * self.n


class PeriodicCallback(Callback):
    """A callback that acts every ``n`` train steps at chunk boundaries (one or more periods).

    Subclasses declare each period with :meth:`every` in ``__init__`` and test it with
    :meth:`is_due` in ``on_train_chunk_end``; the trainer ends a chunk at every multiple of
    every period (:meth:`next_boundary`), so the state the hook sees is the state after it.
    """

    def every(self, arg: str, n: int | None) -> EveryNSteps | None:
        """Declare a period of ``n`` steps (``None``: off); ``arg`` names it in errors."""
        period = EveryNSteps.optional(arg, n)
        if period is not None:
            self.__dict__.setdefault("_periods", []).append(period)
        return period

    @property
    def periods(self) -> list[EveryNSteps]:
        """The declared periods."""
        return list(self.__dict__.get("_periods", []))

    def sync_every(self, trainer: "Trainer") -> int | None:
        """The greatest common divisor of the periods (a boundary at each of them)."""
        return math.gcd(*(p.n for p in self.periods)) if self.periods else None

    def next_boundary(self, trainer: "Trainer", step: int) -> int | None:
        return min((p.next_boundary(step) for p in self.periods), default=None)

    @staticmethod
    def is_due(period: EveryNSteps | None, chunk: ChunkMetrics) -> bool:
        """``period`` is declared and due after the chunk's last step."""
        return period is not None and period.due(chunk.last_step + 1)
