""""Every n train steps", counted once for every periodic callback (clu's ``PeriodicAction``
idea): loggers, checkpoints, plots, histograms and the trainer's chunk boundaries."""

from __future__ import annotations

import numpy as np

from jno_flax._checks import positive_int


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
