"""Figures during training: PNG files, and every logger of the trainer that writes figures."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from jno_flax._checks import name as check_name
from jno_flax._checks import positive_int
from jno_flax.callbacks._callback import ChunkMetrics
from jno_flax.callbacks._periodic import PeriodicCallback

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


class PlotCallback(PeriodicCallback):
    """Calls ``fn(trainer, problem)`` every ``every_n_steps`` steps (and at the end of training)
    and saves the returned matplotlib figure.

    Files are ``<dirpath>/<name>_<step>.png`` (``dirpath`` defaults to
    ``<trainer.default_root_dir>/figures``); every logger in ``trainer.loggers`` also
    receives it (``Logger.log_figure``, under the tag ``name``; TensorBoard writes it). The
    callback asks for a chunk boundary at its period, so ``fn`` sees the live weights
    (``problem.eval(...)`` works inside it).

    >>> def plot(trainer, problem):
    ...     fig, ax = plt.subplots(); ax.plot(np.asarray(problem.eval(u))[0, :, 0]); return fig
    >>> figures = PlotCallback(plot, every_n_steps=1000)

    With several ``jax.distributed`` processes, only process 0 calls ``fn`` and writes (the
    modules hold a copy of the weights on each process, so ``problem.eval`` needs no other).
    """

    global_zero_only = True

    def __init__(self, fn: Callable[["Trainer", "Problem"], Any], every_n_steps: int = 1000,
                 dirpath: str | None = None, name: str = "figure", at_end: bool = True):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable as fn(trainer, problem) -> Figure, got "
                            f"{type(fn).__name__}.")
        self.fn = fn
        self._every = self.every("every_n_steps", positive_int("every_n_steps", every_n_steps,
                                                               steps=True))
        self.every_n_steps = self._every.n
        self.dirpath = None if dirpath is None else os.fspath(dirpath)
        self.name = check_name("name", name)
        self.at_end = bool(at_end)
        self.written: list[str] = []
        self._last_step: int | None = None

    @property
    def state_key(self) -> str:
        return f"PlotCallback[{self.name}]"

    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "figures")
        os.makedirs(self.dirpath, exist_ok=True)

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        if self.is_due(self._every, chunk):
            self.plot(trainer, problem)

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        if self.at_end and trainer.global_step > 0 and self._last_step != trainer.global_step:
            self.plot(trainer, problem)

    def plot(self, trainer: "Trainer", problem: "Problem") -> str:
        """Make, save and log the figure for the current step; returns the PNG path."""
        import matplotlib.pyplot as plt

        trainer.publish_weights(problem)
        fig = self.fn(trainer, problem)
        step = trainer.global_step
        path = os.path.join(self.dirpath, f"{self.name}_{step:08d}.png")
        fig.savefig(path, dpi=100)
        for logger in trainer.loggers:
            logger.log_figure(self.name, fig, step - 1)
        plt.close(fig)
        self.written.append(path)
        self._last_step = step
        return path
