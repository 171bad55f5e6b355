"""A CSV logger: ``metrics.csv`` with one row per logged step, readable by ``csv`` and pandas."""

from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING

from jno_flax.callbacks._callback import ChunkMetrics
from jno_flax.callbacks._logger import Logger

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

METRICS_FILE = "metrics.csv"


class CSVLogger(Logger):
    """Writes ``<save_dir>/<name>/version_<n>/metrics.csv`` and ``hparams.yaml``.

    Columns: ``step``, then every scalar tag as it first appears (``loss``,
    ``losses/<constraint>``, trackers, adaptive weights, learning rates); one row per step at
    which anything was logged, empty cells where a tag has no value at that step. Array-valued
    quantities are not written (they are in the History). A resumed run keeps the rows before
    its start step. Arguments as :class:`~jno_flax.callbacks.Logger`.

    >>> trainer = Trainer(max_steps=5000, logger=[TensorBoardLogger("runs"), CSVLogger("runs")])
    """

    _rows: list[dict[str, float]] | None = None  # set by `open`

    def open(self, trainer: "Trainer", start_step: int) -> None:
        self._rows: list[dict[str, float]] = []
        self._columns: list[str] = ["step"]
        self._written = 0
        path = self.metrics_path
        if start_step > 0 and os.path.isfile(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self._columns = list(reader.fieldnames or ["step"])
                self._rows = [{k: v for k, v in row.items() if v != ""}
                              for row in reader if int(row["step"]) < start_step]
        self._rewrite()

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.log_dir, METRICS_FILE)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **metrics}
        new = [k for k in row if k not in self._columns]
        self._columns += new
        self._rows.append(row)
        if new:
            self._rewrite()

    def flush(self) -> None:
        if self._written < len(self._rows):
            with open(self.metrics_path, "a", newline="") as f:
                csv.DictWriter(f, self._columns).writerows(self._rows[self._written:])
            self._written = len(self._rows)

    def close(self) -> None:
        if self._rows is not None:
            self.flush()

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        super().on_train_chunk_end(trainer, problem, chunk)
        self.flush()

    def _rewrite(self) -> None:
        with open(self.metrics_path, "w", newline="") as f:
            writer = csv.DictWriter(f, self._columns)
            writer.writeheader()
            writer.writerows(self._rows)
        self._written = len(self._rows)
