"""What a Lightning user reaches for on a Trainer: the callbacks it holds, the latest
metrics, ``save_checkpoint``, ``predict``, and a clear word for the arguments we do not take."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from jno_flax.callbacks._checkpoint import ModelCheckpoint
from jno_flax.callbacks._logger import Logger
from jno_flax.callbacks._stopping import EarlyStopping

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem

#: Lightning ``Trainer`` arguments this Trainer does not take, with what to use instead
ALTERNATIVES = {
    "gradient_clip_val": "clip in the optimizer: `net.optimizer(optax.chain("
                         "optax.clip_by_global_norm(v), optax.adam(1e-3)))`",
    "gradient_clip_algorithm": "clip in the optimizer (`optax.clip_by_global_norm`, "
                               "`optax.clip`)",
    "accumulate_grad_batches": "every step already sees every point (or a `batch_size` "
                               "mini-batch); to accumulate, wrap the transform in "
                               "`optax.MultiSteps`",
    "fast_dev_run": "`Trainer(max_steps=1, logger=False, enable_checkpointing=False)`",
    "max_epochs": "there are no epochs (every step sees all points): use `max_steps`",
    "min_epochs": "there are no epochs: use `max_steps`",
    "min_steps": "use `EarlyStopping(start_step=...)`",
    "accelerator": "JAX picks the platform: choose devices with `devices=` or the "
                   "JAX_PLATFORMS environment variable",
    "strategy": "several devices shard the points: `devices=\"auto\" | n | [devices]`",
    "num_nodes": "several hosts: `jax.distributed.initialize()` and `devices=\"auto\"`",
    "val_check_interval": "evaluate on other points with a tracker: "
                          "`jnn.tracker(expr, interval=k)`",
    "check_val_every_n_epoch": "use `jnn.tracker(expr, interval=k)`",
    "limit_train_batches": "use `max_steps`",
    "deterministic": "runs are deterministic on CPU; on GPUs set XLA flags yourself",
    "benchmark": "XLA tunes kernels itself",
}


def unsupported(kwargs: dict[str, Any], accepted: list[str]) -> TypeError:
    """The error for keyword arguments the Trainer does not take."""
    name = sorted(kwargs)[0]
    if name in ALTERNATIVES:
        return TypeError(f"Trainer does not take Lightning's `{name}` ({name}={kwargs[name]!r}):"
                         f" {ALTERNATIVES[name]}.")
    return TypeError(f"Trainer got an unexpected keyword argument `{name}`; accepted: "
                     f"{accepted}.")


class LightningAttributes:
    """Lightning's Trainer attributes, read from the callbacks and records of the last fit."""

    callbacks: list
    problem: "Problem | None"
    loggers: list
    processes: Any

    @property
    def logger(self) -> Logger | None:
        """The first logger (``None`` without loggers), as in Lightning."""
        return self.loggers[0] if self.loggers else None

    @property
    def global_rank(self) -> int:
        """This process's index among the ``jax.distributed`` processes (0 without them)."""
        return self.processes.index

    @property
    def world_size(self) -> int:
        """The number of processes of the run (``jax.process_count()``)."""
        return self.processes.count

    @property
    def is_global_zero(self) -> bool:
        """True on process 0, the one that writes logs, figures and the progress bar."""
        return self.processes.index == 0

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        """The first ``ModelCheckpoint`` (``None`` without one), as in Lightning."""
        found = self.checkpoint_callbacks
        return found[0] if found else None

    @property
    def early_stopping_callbacks(self) -> list[EarlyStopping]:
        return [cb for cb in self.callbacks if isinstance(cb, EarlyStopping)]

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        """The first ``EarlyStopping`` (``None`` without one), as in Lightning."""
        found = self.early_stopping_callbacks
        return found[0] if found else None

    @property
    def callback_metrics(self) -> dict[str, float]:
        """The latest value of ``"loss"``, every constraint and every scalar tracker."""
        return dict(self._callback_metrics)

    @property
    def logged_metrics(self) -> dict[str, float]:
        """The latest values the first logger wrote (empty without a logger)."""
        logger = self.loggers[0] if self.loggers else None
        return {} if logger is None else dict(logger.logged_metrics)

    def _update_metrics(self, chunk) -> None:
        if len(chunk.steps):
            self._callback_metrics.update(chunk.latest())

    def save_checkpoint(self, filepath: str | os.PathLike) -> str:
        """Write a checkpoint of the current state to ``filepath`` (a new directory) that
        ``fit(problem, ckpt_path=filepath)`` resumes from, as Lightning's does."""
        from jno_flax._checkpoint_format import write_checkpoint
        if self.state is None:
            raise RuntimeError("`save_checkpoint` needs a trained state: call `fit` first.")
        return write_checkpoint(self, self.problem, os.fspath(filepath))

    def predict(self, problem: "Problem | None" = None, exprs: Any = None,
                inputs: dict | None = None) -> Any:
        """Evaluate ``exprs`` (one expression or a list) with the trained weights, on the
        training points or on ``inputs`` (``{variable: (N, 1) array}``): Lightning's entry
        point for ``problem.eval``. ``problem`` defaults to the one last fitted."""
        problem = problem if problem is not None else self.problem
        if problem is None:
            raise ValueError("`predict` needs a problem: pass one, or call `fit` first.")
        if exprs is None:
            raise ValueError("`exprs` must be an expression or a list of them, e.g. "
                             "`trainer.predict(crux, u, inputs={x: xs, y: ys})`.")
        return problem.eval(exprs, inputs=inputs)
