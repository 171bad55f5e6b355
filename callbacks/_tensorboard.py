"""TensorBoard logging with tensorboardX; step metrics aggregated over windows with clu."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np
from clu import metrics as clu_metrics
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summary

from jno_flax._checks import positive_int
from jno_flax._masks import param_paths
from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

AGGREGATIONS = {"mean": clu_metrics.Average, "last": clu_metrics.LastValue}


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files (tensorboardX).

    Tags: ``loss`` (total) and ``losses/<constraint>`` every ``log_every_n_steps`` steps,
    aggregated over the window since the last write (``aggregation="mean"``: clu ``Average``;
    ``"last"``: clu ``LastValue``); every tracker and in-graph quantity (learning rates,
    adaptive weights, diagnostics) at the steps it was recorded, scalars as scalars and arrays
    as histograms; ``hparams`` once at the start. Optionally parameter histograms
    (``params/<trainable>/<path>``) and figures (``figure_fn(trainer, problem)`` returning a
    matplotlib figure) every ``histogram_every_n_steps`` / ``figure_every_n_steps`` steps.

    Args:
        log_dir: directory of the event files (created); default:
            ``<trainer.default_root_dir>/tensorboard``.
        log_every_n_steps: window length (default: the trainer's ``log_every_n_steps``).
        aggregation: ``"mean"`` or ``"last"``.
        hparams: extra hyper-parameters to record (``{name: number or str}``).
        histogram_every_n_steps: period of parameter histograms, or ``None``.
        figure_fn: callable making a figure, with ``figure_every_n_steps``.
    """

    def __init__(self, log_dir: str | None = None, log_every_n_steps: int | None = None,
                 aggregation: str = "mean", hparams: dict[str, Any] | None = None,
                 histogram_every_n_steps: int | None = None,
                 figure_fn: Callable[..., Any] | None = None,
                 figure_every_n_steps: int | None = None):
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a path or None, got {log_dir!r}.")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"`aggregation` must be one of {list(AGGREGATIONS)}, got "
                             f"{aggregation!r}.")
        if (figure_fn is None) != (figure_every_n_steps is None):
            raise ValueError("`figure_fn` and `figure_every_n_steps` go together; give both.")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.log_every_n_steps = positive_int("log_every_n_steps", log_every_n_steps,
                                              steps=True, allow_none=True)
        self.aggregation = aggregation
        self.hparams = dict(hparams or {})
        self.histogram_every = positive_int("histogram_every_n_steps", histogram_every_n_steps,
                                            steps=True, allow_none=True)
        self.figure_fn = figure_fn
        self.figure_every = positive_int("figure_every_n_steps", figure_every_n_steps,
                                         steps=True, allow_none=True)
        self.writer: SummaryWriter | None = None
        self._window: dict[str, list[np.ndarray]] = {}
        self._every = 1

    @property
    def state_key(self) -> str:
        return f"TensorBoardLogger[{self.log_dir}]"

    def sync_every(self, trainer: "Trainer") -> int | None:
        periods = [p for p in (self.histogram_every, self.figure_every) if p is not None]
        return min(periods) if periods else None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        if self.log_dir is None:
            self.log_dir = os.path.join(trainer.default_root_dir, "tensorboard")

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        start = trainer.global_step
        # A unique suffix: a writer reopened within the same second must not overwrite.
        suffix = f".{os.getpid()}.{time.time_ns()}"
        self.writer = SummaryWriter(self.log_dir, purge_step=start if start > 0 else None,
                                    filename_suffix=suffix)
        self._every = self.log_every_n_steps or trainer.log_every_n_steps
        self._window = {}
        if start == 0:
            self._write_hparams(trainer, problem)

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        w = self.writer
        if w is None:
            return
        series = {"loss": chunk.loss, **{f"losses/{k}": v for k, v in chunk.losses.items()}}
        steps = chunk.steps
        start = 0
        for end in np.nonzero((steps + 1) % self._every == 0)[0]:
            for tag, values in series.items():
                self._window.setdefault(tag, []).append(values[start:end + 1])
            self._flush_window(int(steps[end]))
            start = end + 1
        if start < len(steps):
            for tag, values in series.items():
                self._window.setdefault(tag, []).append(values[start:])
        for name, (at, values) in chunk.values.items():
            for step, value in zip(at, values):
                if np.ndim(value) == 0:
                    w.add_scalar(name, float(value), int(step))
                else:
                    w.add_histogram(name, np.asarray(value), int(step))
        done = chunk.last_step + 1
        if self.histogram_every and done % self.histogram_every == 0:
            self._write_histograms(trainer, problem, chunk.last_step)
        if self.figure_every and done % self.figure_every == 0:
            w.add_figure("figure", self.figure_fn(trainer, problem), chunk.last_step)

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        if self.writer is not None and self._window:
            self._flush_window(trainer.global_step - 1)
        if self.writer is not None:
            self.writer.flush()

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ writing
    def _flush_window(self, step: int) -> None:
        metric_cls = AGGREGATIONS[self.aggregation]
        # clu metrics are jax arrays: aggregate on the host CPU, never on an accelerator
        with jax.default_device(jax.devices("cpu")[0]):
            for tag, parts in self._window.items():
                data = np.concatenate(parts).astype(np.float32)
                if data.size == 0:
                    continue
                metric = (metric_cls.from_model_output(data) if self.aggregation == "mean"
                          else metric_cls.from_model_output(data[-1]))
                self.writer.add_scalar(tag, float(metric.compute()), step)
        self._window = {}

    def _write_histograms(self, trainer: "Trainer", problem: "Problem", step: int) -> None:
        for name, state in trainer.state.params.items():
            for path, variable in param_paths(state):
                tag = "/".join(str(p) for p in path)
                self.writer.add_histogram(f"params/{name}/{tag}", np.asarray(variable[...]), step)

    def _write_hparams(self, trainer: "Trainer", problem: "Problem") -> None:
        hp: dict[str, Any] = {"max_steps": trainer.max_steps, "seed": trainer.seed,
                              "chunk_size": trainer.chunk_size}
        for t in problem.trainables:
            name = problem.registry.name(t)
            hp[f"{name}/num_params"] = t.num_params
            hp[f"{name}/frozen"] = str(t.frozen)
        hp.update(self.hparams)
        for key, value in hp.items():
            if not isinstance(value, (int, float, str, bool)):
                raise TypeError(f"`hparams[{key!r}]` must be a number, string or bool, got "
                                f"{type(value).__name__}.")
        exp, ssi, sei = hparams_summary(hp, {"loss": 0.0})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)
