"""TensorBoard event files written with tensorboardX."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summary

from jno_flax._masks import param_paths
from jno_flax.callbacks._callback import ChunkMetrics
from jno_flax.callbacks._logger import Logger
from jno_flax.callbacks._periodic import PeriodicCallback

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


class TensorBoardLogger(Logger, PeriodicCallback):
    """Writes TensorBoard event files (tensorboardX) to ``<save_dir>/<name>/version_<n>``.

    Tags: ``loss`` and ``losses/<constraint>`` (see :class:`~jno_flax.callbacks.Logger` for
    the window), every tracker and in-graph quantity at its steps (arrays as histograms), the
    hyper-parameters (TensorBoard's HPARAMS tab and ``hparams.yaml``). Optionally parameter
    histograms (``params/<trainable>/<path>``) every ``histogram_every_n_steps`` and figures
    (``figure_fn(trainer, problem)`` returning a matplotlib figure) every
    ``figure_every_n_steps``. A resumed run purges the events after its start step, so curves
    never duplicate.

    Args:
        save_dir, name, version, log_every_n_steps, aggregation, hparams: see
            :class:`~jno_flax.callbacks.Logger`.
        histogram_every_n_steps: period of parameter histograms, or ``None``.
        figure_fn: callable making a figure, with ``figure_every_n_steps``.

    >>> trainer = Trainer(max_steps=5000, logger=TensorBoardLogger("runs", name="poisson"))
    """

    def __init__(self, save_dir: str | os.PathLike | None = None, name: str = "default",
                 version: int | str | None = None, log_every_n_steps: int | None = None,
                 aggregation: str = "last", hparams: dict[str, Any] | None = None,
                 histogram_every_n_steps: int | None = None,
                 figure_fn: Callable[..., Any] | None = None,
                 figure_every_n_steps: int | None = None):
        super().__init__(save_dir, name, version, log_every_n_steps, aggregation, hparams)
        if (figure_fn is None) != (figure_every_n_steps is None):
            raise ValueError("`figure_fn` and `figure_every_n_steps` go together; give both.")
        self.histogram_every = self.every("histogram_every_n_steps", histogram_every_n_steps)
        self.figure_fn = figure_fn
        self.figure_every = self.every("figure_every_n_steps", figure_every_n_steps)
        self.writer: SummaryWriter | None = None

    # ------------------------------------------------------------------ Logger
    def open(self, trainer: "Trainer", start_step: int) -> None:
        # A unique suffix: a writer reopened within the same second must not overwrite.
        suffix = f".{os.getpid()}.{time.time_ns()}"
        self.writer = SummaryWriter(self.log_dir, purge_step=start_step or None,
                                    filename_suffix=suffix)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def log_array(self, tag: str, value: np.ndarray, step: int) -> None:
        self.writer.add_histogram(tag, value, step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        self.writer.add_figure(tag, figure, step, close=False)

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        super().log_hyperparams(params)
        exp, ssi, sei = hparams_summary(params, {"loss": 0.0})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ extras
    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        super().on_train_chunk_end(trainer, problem, chunk)
        if self.is_due(self.histogram_every, chunk):
            for name, state in trainer.state.params.items():
                for path, variable in param_paths(state):
                    tag = "/".join(str(p) for p in path)
                    self.writer.add_histogram(f"params/{name}/{tag}",
                                              np.asarray(variable[...]), chunk.last_step)
        if self.is_due(self.figure_every, chunk):
            self.writer.add_figure("figure", self.figure_fn(trainer, problem), chunk.last_step)
