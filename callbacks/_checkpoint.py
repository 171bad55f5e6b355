"""Orbax checkpoints of the whole training state, retention like Lightning's, and resuming.

A checkpoint (one directory per step under ``dirpath``, written by an orbax
``CheckpointManager``) holds five items, none pickled:

* ``state``: the whole ``TrainState`` (every trainable's ``nnx.Param`` state, every optimizer
  state, step, PRNG key, adaptive-weight state), restored exactly into a target built from the
  live state;
* ``history``: the ``History`` so far, as arrays;
* ``callbacks``: every callback's ``state_dict`` by its ``state_key`` (JSON);
* ``extra``: what callbacks add in ``on_save_checkpoint`` (JSON);
* ``metadata``: step, latest losses, the monitored score, library versions and a fingerprint
  of the problem and its optimizers (JSON).

Retention: the newest checkpoint is always kept; besides it, the ``save_top_k`` best by
``monitor`` (or, without a monitor, the ``save_top_k`` newest); ``-1`` keeps all. Pruning
happens only once a newer checkpoint is complete, so a process killed while writing still
has its previous checkpoint. A checkpoint is never written from a non-finite state.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jno_flax._checks import integer
from jno_flax.callbacks._callback import Callback, ChunkMetrics
from jno_flax.callbacks._periodic import EveryNSteps
from jno_flax.callbacks._restore import READ_ERRORS, fingerprint, history_arrays, read_metadata

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

MODES = ("min", "max")


def _versions() -> dict[str, str]:
    import flax
    import optax

    import jno_flax
    return {"jno_flax": jno_flax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "orbax-checkpoint": getattr(ocp, "__version__", "?")}


class _Manager(ocp.CheckpointManager):
    """orbax's manager, leaving JAX's preemption sync point to the trainer. orbax asks
    ``reached_preemption_sync_point(step)`` at every save (for its logs), with the training
    step as the call id; the sync point is the call after the highest id that any process had
    reached when the notice came, so those ids would put it where the trainer never calls
    (see ``trainers/_processes.py``)."""

    def reached_preemption(self, step: int) -> bool:
        return False


class ModelCheckpoint(Callback):
    """Saves the whole training state with orbax; resume with ``fit(..., ckpt_path=...)``.

    Args:
        dirpath: directory of the checkpoints (default ``<default_root_dir>/checkpoints``).
        filename: prefix of the step directories (``<filename>_<step>``); default: the step.
        monitor: ``"loss"``, a constraint or a scalar tracker ranking the checkpoints.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        save_top_k: checkpoints kept besides the newest: the best ``k`` by ``monitor`` (without
            one, the ``k`` newest); ``-1`` keeps every checkpoint.
        every_n_train_steps: saving period (a chunk boundary falls there); ``None`` saves only
            when training ends and on a signal.
        save_last: save when training ends (so ``ckpt_path="last"`` is the end of the run).
        async_save: write in the background (finished before ``fit`` returns, and before the
            next save).

    Attributes:
        best_model_path: the checkpoint with the best ``monitor`` score (``""`` before one).
        best_model_score: its score.
        last_model_path: the newest checkpoint written.

    >>> ModelCheckpoint(monitor="val_error", save_top_k=2, every_n_train_steps=1000)
    """

    def __init__(self, dirpath: str | None = None, filename: str | None = None,
                 monitor: str | None = None, mode: str = "min", save_top_k: int = 1,
                 every_n_train_steps: int | None = None, save_last: bool = True,
                 async_save: bool = True):
        if dirpath is not None and not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"`dirpath` must be a path or None, got {dirpath!r}.")
        if filename is not None and (not isinstance(filename, str) or not filename
                                     or any(c in filename for c in "{}/")):
            raise ValueError(f"`filename` must be a plain prefix for the step directories "
                             f"(no '{{', '}}' or '/'), got {filename!r}.")
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a name (str) or None, got {monitor!r}.")
        self.save_top_k = integer("save_top_k", save_top_k)
        if self.save_top_k < -1:
            raise ValueError(f"`save_top_k` must be -1 (keep all) or >= 0, got {save_top_k!r}.")
        self._given_dirpath = None if dirpath is None else os.path.abspath(os.fspath(dirpath))
        self.dirpath = self._given_dirpath or ""
        self.filename = filename
        self.monitor, self.mode = monitor, mode
        self._every = EveryNSteps.optional("every_n_train_steps", every_n_train_steps)
        self.every_n_train_steps = None if self._every is None else self._every.n
        self.save_last = bool(save_last)
        self.async_save = bool(async_save)
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""
        self.last_saved_step: int | None = None
        self._scores: dict[int, float] = {}
        self._latest: dict[str, float] = {}
        self._manager: ocp.CheckpointManager | None = None

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint[{self._given_dirpath or '<default_root_dir>/checkpoints'}]"

    # ------------------------------------------------------------------ orbax
    def _resolve_dirpath(self, trainer: "Trainer") -> None:
        if not self._given_dirpath:
            self.dirpath = os.path.abspath(os.path.join(trainer.default_root_dir, "checkpoints"))

    @property
    def manager(self) -> ocp.CheckpointManager:
        if not self.dirpath:
            raise ValueError("ModelCheckpoint without `dirpath` learns its directory from the "
                             "trainer (`<default_root_dir>/checkpoints`) when `fit` starts.")
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=None, step_prefix=self.filename, create=True,
                enable_async_checkpointing=self.async_save)
            self._manager = _Manager(self.dirpath, options=options)
        return self._manager

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first. Read from the directory, not
        through the orbax manager, whose creation is a collective of every process."""
        if not self.dirpath or not os.path.isdir(self.dirpath):
            return []
        name_format = ocp.step.standard_name_format(step_prefix=self.filename)
        return sorted(m.step for m in name_format.find_all(self.dirpath))

    def step_path(self, step: int) -> str:
        name = str(step) if self.filename is None else f"{self.filename}_{step}"
        return os.path.join(self.dirpath, name)

    def best_path(self, paths: list[str]) -> str:
        """The best of ``paths`` by the monitored score stored in each checkpoint."""
        if self.monitor is None:
            raise ValueError("`ckpt_path='best'` needs a ModelCheckpoint with a `monitor`.")
        scored = []
        for path in paths:
            try:
                score = read_metadata(path).get("score")
            except READ_ERRORS:
                continue
            if score is not None and math.isfinite(score):
                scored.append((score if self.mode == "min" else -score, path))
        if not scored:
            raise FileNotFoundError(f"`ckpt_path='best'`: no checkpoint in {self.dirpath!r} "
                                    f"has a score for `monitor` {self.monitor!r}.")
        return min(scored)[1]

    def wait(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._prune()
            self._manager.close()
            self._manager = None

    # ------------------------------------------------------------------ hooks
    def sync_every(self, trainer: "Trainer") -> int | None:
        return self.every_n_train_steps

    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        self._resolve_dirpath(trainer)
        try:
            os.makedirs(self.dirpath, exist_ok=True)
        except OSError as err:
            raise PermissionError(f"ModelCheckpoint `dirpath` {self.dirpath!r} cannot be "
                                  f"created: {err}.") from None
        if not os.access(self.dirpath, os.W_OK | os.X_OK):
            raise PermissionError(f"ModelCheckpoint `dirpath` {self.dirpath!r} is not "
                                  "writable; choose a directory you can write to.")

    def on_fit_start(self, trainer: "Trainer", problem: "Problem") -> None:
        if self.monitor is not None:
            available = trainer.logged_names()
            if self.monitor not in available:
                raise ValueError(f"ModelCheckpoint `monitor` {self.monitor!r} is not a logged "
                                 f"quantity; available: {available}.")

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        self._latest["loss"] = float(chunk.loss[-1])
        self._latest.update({k: float(v[-1]) for k, v in chunk.losses.items()})
        for name, (_, values) in chunk.values.items():
            if len(values) and np.ndim(values[-1]) == 0:
                self._latest[name] = float(values[-1])
        if self._every is not None and self._every.due(chunk.last_step + 1):
            self.save(trainer, problem)

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        signum = trainer.received_signal
        if ((self.save_last or signum is not None) and trainer.global_step > 0
                and self.last_saved_step != trainer.global_step):
            self.save(trainer, problem)
        self.wait()
        self._prune()
        if signum is not None and self.last_saved_step is not None and trainer.is_global_zero:
            print(f"\n{signum.name} received: saved checkpoint {self.last_model_path} at step "
                  f"{self.last_saved_step}; resume with `trainer.fit(problem, "
                  "ckpt_path=\"last\")`.", file=sys.stderr)

    def on_exception(self, trainer: "Trainer", problem: "Problem",
                     exception: BaseException) -> None:
        self.wait()

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        return {"scores": [[s, v] for s, v in sorted(self._scores.items())],
                "latest": dict(self._latest), "best_model_path": self.best_model_path,
                "best_model_score": self.best_model_score,
                "last_model_path": self.last_model_path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._scores = {int(s): float(v) for s, v in state_dict.get("scores", [])}
        self._latest = {k: float(v) for k, v in state_dict.get("latest", {}).items()}
        self.best_model_path = state_dict.get("best_model_path", "")
        self.best_model_score = state_dict.get("best_model_score")
        self.last_model_path = state_dict.get("last_model_path", "")

    # ------------------------------------------------------------------ save and retention
    def _score(self, step: int) -> float | None:
        if self.monitor is None:
            return None
        if self.monitor not in self._latest:
            raise ValueError(f"ModelCheckpoint: `monitor` {self.monitor!r} has no value yet "
                             f"at step {step}; its first value comes at its interval.")
        return float(self._latest[self.monitor])

    def save(self, trainer: "Trainer", problem: "Problem") -> str | None:
        """Write a checkpoint of the live state at ``trainer.global_step`` (skipped, with a
        warning, if the state is not finite)."""
        from jno_flax.trainers._state import all_finite
        step = trainer.global_step
        if not bool(all_finite((trainer.state.params, trainer.state.opt_state))):
            warnings.warn(f"ModelCheckpoint: the state at step {step} is not finite; no "
                          "checkpoint written.", RuntimeWarning, stacklevel=2)
            return None
        score = self._score(step)
        self.wait()   # the previous save is complete: older ones may go now
        for old in [s for s in self.manager.all_steps() if s >= step]:
            self.manager.delete(old)   # superseded by a run resumed from an older step
            self._scores.pop(old, None)
        self._prune()   # against the newest complete checkpoint, never the one being written
        if score is not None:
            self._scores[step] = score
        metadata = {"step": step, "losses": dict(self._latest), "monitor": self.monitor,
                    "score": score, "versions": _versions(),
                    "fingerprint": fingerprint(problem, trainer.state),
                    "wall_time": trainer.history.wall_time,
                    "stop_reason": trainer.history.stop_reason}
        callbacks = {cb.state_key: cb.state_dict() for cb in trainer.callbacks}
        checkpoint: dict[str, Any] = {"metadata": metadata, "callbacks": callbacks}
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, problem, checkpoint)
        extra = {k: v for k, v in checkpoint.items() if k not in ("metadata", "callbacks")}
        # a copy: the live state's buffers are donated to the next chunk while orbax writes
        state = jax.tree.map(jnp.copy, trainer.state)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            history=ocp.args.StandardSave(history_arrays(trainer.history)),
            callbacks=ocp.args.JsonSave(callbacks), extra=ocp.args.JsonSave(extra),
            metadata=ocp.args.JsonSave(metadata)), force=True)
        self.last_saved_step = step
        self.last_model_path = self.step_path(step)
        self._update_best()
        return self.last_model_path

    def _kept(self, steps: list[int], newest: int) -> set[int]:
        if self.save_top_k == -1:
            return set(steps) | {newest}
        if self.monitor is None:
            ranked = sorted(set(steps) | {newest}, reverse=True)
        else:
            scored = [s for s in set(steps) | {newest} if s in self._scores
                      and math.isfinite(self._scores[s])]
            ranked = sorted(scored, key=lambda s: (self._scores[s] if self.mode == "min"
                                                   else -self._scores[s], -s))
        return set(ranked[:self.save_top_k]) | {newest}

    def _prune(self) -> None:
        """Delete complete checkpoints that are neither the newest nor among the top k."""
        if self._manager is None:
            return
        steps = sorted(self._manager.all_steps())
        if not steps:
            return
        for s in set(steps) - self._kept(steps, steps[-1]):
            self._manager.delete(s)
            self._scores.pop(s, None)
        self._update_best()

    def _update_best(self) -> None:
        if not self._scores:
            return
        sign = 1 if self.mode == "min" else -1
        best = min(self._scores, key=lambda s: (sign * self._scores[s], -s))
        self.best_model_path = self.step_path(best)
        self.best_model_score = self._scores[best]
