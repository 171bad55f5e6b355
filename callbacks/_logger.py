"""Loggers as in Lightning: ``Trainer(logger=...)``, runs in ``<save_dir>/<name>/version_<n>``.

A :class:`Logger` is a callback the trainer adds for you from ``Trainer(logger=...)`` (``True``:
one :class:`~jno_flax.callbacks.TensorBoardLogger` under ``default_root_dir``). The base class
decides *what* is logged and *when*; subclasses only write:

* ``loss`` and ``losses/<constraint>`` every ``log_every_n_steps`` steps (after each step ``s``
  with ``(s + 1) % n == 0``): by default the step's own value (``aggregation="last"``, clu's
  ``LastValue``), so a logged curve equals the History at the logged steps, as Lightning's
  ``self.log(..., on_step=True)``; ``aggregation="mean"`` averages the window since the last
  write (clu's ``Average``);
* every tracker and in-graph quantity (adaptive weights, learning rates, diagnostics) at the
  steps it was recorded: scalars through :meth:`Logger.log_metrics`, arrays through
  :meth:`Logger.log_array`;
* the run's hyper-parameters once, as ``hparams.yaml`` in the version directory.

Versions: a logger takes the next free ``version_<n>`` when it is first used and keeps it (a
run continued by ``fit`` on the same trainer, or by ``solve``, logs on in it); a run resumed
from a checkpoint (``fit(..., ckpt_path=...)``) writes on in the version it had (the version
is part of the logger's checkpointed ``state_dict``). Either way, what was logged from the
start step on is dropped first, so no step appears twice.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import yaml
from clu import metrics as clu_metrics

from jno_flax._checks import name as check_name
from jno_flax._checks import positive_int
from jno_flax.callbacks._callback import Callback, ChunkMetrics
from jno_flax.callbacks._periodic import EveryNSteps

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

AGGREGATIONS = {"mean": clu_metrics.Average, "last": clu_metrics.LastValue}
HPARAMS_FILE = "hparams.yaml"
_VERSION_DIR = re.compile(r"^version_(\d+)$")


def check_version(arg: str, version: Any) -> int | str | None:
    """``version`` if it is ``None``, a non-negative int or a plain directory name (no path
    separator, not ``.`` or ``..``): a version never leads outside ``<save_dir>/<name>``."""
    if version is None or (isinstance(version, int) and not isinstance(version, bool)
                           and version >= 0):
        return version
    if not isinstance(version, str):
        raise TypeError(f"`{arg}` must be None, a non-negative int or a directory name, got "
                        f"{version!r}.")
    if version not in ("", ".", "..") and not any(sep in version
                                                  for sep in ("/", "\\", os.sep, "\0")):
        return version
    raise ValueError(f"`{arg}` must be None, a non-negative int or a plain directory name "
                     f"(no path separators, not '.' or '..'), got {version!r}.")


def next_version_numbers(root_dir: str) -> list[int]:
    """The ``n`` of every ``<root_dir>/version_<n>`` directory."""
    if not os.path.isdir(root_dir):
        return []
    return [int(m.group(1)) for d in os.listdir(root_dir)
            if (m := _VERSION_DIR.match(d)) and os.path.isdir(os.path.join(root_dir, d))]


def next_version(root_dir: str) -> int:
    """The smallest ``n`` above every existing ``<root_dir>/version_<n>`` (0 if none)."""
    taken = next_version_numbers(root_dir)
    return max(taken) + 1 if taken else 0


def run_hparams(trainer: "Trainer", problem: "Problem") -> dict[str, Any]:
    """The hyper-parameters every logger records: the trainer's settings and, per trainable,
    its parameter count and whether it is frozen."""
    hp: dict[str, Any] = {"max_steps": trainer.max_steps, "seed": trainer.seed,
                          "chunk_size": trainer.chunk_size,
                          "log_every_n_steps": trainer.log_every_n_steps}
    for t in problem.trainables:
        name = problem.registry.name(t)
        hp[f"{name}/num_params"] = t.num_params
        hp[f"{name}/frozen"] = bool(t.frozen)
    return hp


class Logger(Callback):
    """Base class of loggers; subclasses implement :meth:`open`, :meth:`log_metrics` and
    :meth:`close` (and may implement :meth:`log_array`, :meth:`log_figure`).

    Args:
        save_dir: parent directory of the runs (default: the trainer's ``default_root_dir``).
        name: experiment name, the directory below ``save_dir``.
        version: ``None`` (the next free ``version_<n>``), an int ``n`` (``version_<n>``) or a
            directory name.
        log_every_n_steps: window of ``loss`` / ``losses/*`` (default: the trainer's).
        aggregation: ``"last"`` (the logged step's value, the default) or ``"mean"`` over
            the window since the last write.
        hparams: extra hyper-parameters to record (``{name: number, str or bool}``).

    With several ``jax.distributed`` processes, only process 0 logs (``global_zero_only``).
    """

    global_zero_only = True

    def __init__(self, save_dir: str | os.PathLike | None = None, name: str = "default",
                 version: int | str | None = None, log_every_n_steps: int | None = None,
                 aggregation: str = "last", hparams: dict[str, Any] | None = None):
        if save_dir is not None and not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f"`save_dir` must be a path or None, got {save_dir!r}.")
        version = check_version("version", version)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"`aggregation` must be one of {list(AGGREGATIONS)}, got "
                             f"{aggregation!r}.")
        for key, value in (hparams or {}).items():
            if not isinstance(value, (int, float, str, bool)):
                raise TypeError(f"`hparams[{key!r}]` must be a number, string or bool, got "
                                f"{type(value).__name__}.")
        self.save_dir = None if save_dir is None else os.fspath(save_dir)
        self._name = check_name("name", name)
        self._given_version = version
        self._version: int | str | None = version
        self.log_every_n_steps = positive_int("log_every_n_steps", log_every_n_steps,
                                              steps=True, allow_none=True)
        self.aggregation = aggregation
        self.hparams = dict(hparams or {})
        self._every: EveryNSteps | None = None
        self._window: dict[str, list[np.ndarray]] = {}
        #: the latest value written of every logged name (Lightning's ``logged_metrics``)
        self.logged_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ where
    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str | None:
        """The run's version (resolved when ``fit`` starts)."""
        return self._version

    @property
    def root_dir(self) -> str:
        """``<save_dir>/<name>``: the parent of the version directories."""
        if self.save_dir is None:
            raise RuntimeError(f"{type(self).__name__}: `save_dir` is known once `fit` starts "
                               "(it defaults to the trainer's `default_root_dir`).")
        return os.path.join(self.save_dir, self.name)

    @property
    def log_dir(self) -> str:
        """``<save_dir>/<name>/version_<n>``: where this run's files go."""
        if self._version is None:
            raise RuntimeError(f"{type(self).__name__}: the version is chosen when `fit` "
                               "starts.")
        version = (f"version_{self._version}" if isinstance(self._version, int)
                   else self._version)
        return os.path.join(self.root_dir, version)

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.name}]"

    # ------------------------------------------------------------------ writing (subclasses)
    def open(self, trainer: "Trainer", start_step: int) -> None:
        """Start writing in :attr:`log_dir` (created); ``start_step > 0`` on a resumed run,
        whose records from ``start_step`` on must be dropped."""
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Write scalar ``metrics`` ``{tag: value}`` at ``step``."""
        raise NotImplementedError

    def log_array(self, tag: str, value: np.ndarray, step: int) -> None:
        """Write an array-valued quantity (default: not written; it stays in the History)."""

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """Write a matplotlib figure (default: not written)."""

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Record the run's hyper-parameters; the base writes ``hparams.yaml``."""
        with open(os.path.join(self.log_dir, HPARAMS_FILE), "w") as f:
            yaml.safe_dump(params, f, sort_keys=False)

    def flush(self) -> None:
        """Make everything written so far visible on disk."""

    def close(self) -> None:
        """Release files; called once when ``fit`` ends."""

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        if self.save_dir is None:
            self.save_dir = trainer.default_root_dir
        if self._version is None:  # once per logger: a continued run keeps its version
            self._version = next_version(self.root_dir)

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        start = trainer.global_step
        self._every = EveryNSteps("log_every_n_steps",
                                  self.log_every_n_steps or trainer.log_every_n_steps)
        self._window = {}
        self.open(trainer, start)
        if start == 0:
            self.log_hyperparams({**run_hparams(trainer, problem), **self.hparams})
        else:   # a continued run (``solve`` again, a resume): the yaml tells its new target
            Logger.log_hyperparams(self, {**run_hparams(trainer, problem), **self.hparams})

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        rows: dict[int, dict[str, float]] = {}
        series = {"loss": chunk.loss, **{f"losses/{k}": v for k, v in chunk.losses.items()}}
        start = 0
        for end in self._every.ends(chunk.steps):
            for tag, values in series.items():
                self._window.setdefault(tag, []).append(values[start:end + 1])
            rows.setdefault(int(chunk.steps[end]), {}).update(self._aggregate())
            start = end + 1
        if start < len(chunk.steps):
            for tag, values in series.items():
                self._window.setdefault(tag, []).append(values[start:])
        for name, (at, values) in chunk.trackers.items():
            for step, value in zip(at, values):
                if np.ndim(value) == 0:
                    rows.setdefault(int(step), {})[name] = float(value)
                else:
                    self.log_array(name, np.asarray(value), int(step))
        for step in sorted(rows):
            self.log_metrics(rows[step], step)
            self.logged_metrics.update(rows[step])

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        if self._window:
            row = self._aggregate()
            self.log_metrics(row, trainer.global_step - 1)
            self.logged_metrics.update(row)
        self.flush()

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        return {"version": self._version}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._given_version is None and state_dict.get("version") is not None:
            self._version = check_version("the checkpoint's logger version",
                                          state_dict["version"])

    # ------------------------------------------------------------------ internals
    def _aggregate(self) -> dict[str, float]:
        """The window's ``loss`` / ``losses/*`` aggregated with clu metrics; empties it."""
        metric_cls = AGGREGATIONS[self.aggregation]
        out = {}
        # clu metrics are jax arrays: aggregate on the host CPU, never on an accelerator
        with jax.default_device(jax.devices("cpu")[0]):
            for tag, parts in self._window.items():
                data = np.concatenate(parts).astype(np.float32)
                if data.size == 0:
                    continue
                metric = (metric_cls.from_model_output(data) if self.aggregation == "mean"
                          else metric_cls.from_model_output(data[-1]))
                out[tag] = float(metric.compute())
        self._window = {}
        return out
