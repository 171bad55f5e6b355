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

Ownership (``callbacks/_checkpoint_dir.py``): a directory belongs to the run that wrote it.
A fit never deletes or replaces another run's checkpoints, nor the newer checkpoints of its
own run when it resumed from an older one; it refuses to start instead, with the list of
what is there and the ways out. Retention only ever considers the run's own checkpoints.
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Any

import orbax.checkpoint as ocp

from jno_flax._checks import integer
from jno_flax._trees import all_finite
from jno_flax._warnings import warn
from jno_flax.callbacks._callback import ChunkMetrics
from jno_flax.callbacks._checkpoint_dir import DirectoryLock
from jno_flax.callbacks._logger import next_version, next_version_numbers
from jno_flax.callbacks._periodic import PeriodicCallback
from jno_flax._checkpoint_format import (Entry, checkpoint_items, foreign, list_entries,
                                         step_dir)

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

MODES = ("min", "max")


def _numbers(values: Any) -> dict[str, float]:
    """The numeric entries of a dict read from JSON (anything else is dropped)."""
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _identity(path: str) -> tuple[int, int] | None:
    """The device and inode of ``path`` (``None`` when it does not exist): a directory
    removed and made again has another."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class _Manager(ocp.CheckpointManager):
    """orbax's manager, leaving JAX's preemption sync point to the trainer. orbax asks
    ``reached_preemption_sync_point(step)`` at every save (for its logs), with the training
    step as the call id; the sync point is the call after the highest id that any process had
    reached when the notice came, so those ids would put it where the trainer never calls
    (see ``trainers/_processes.py``)."""

    def reached_preemption(self, step: int) -> bool:
        return False


class ModelCheckpoint(PeriodicCallback):
    """Saves the whole training state with orbax; resume with ``fit(..., ckpt_path=...)``.

    Args:
        dirpath: directory of the checkpoints; default, as in Lightning, the run's version
            folder ``<log_dir>/checkpoints`` (``runs/default/version_<n>/checkpoints``), or
            ``<default_root_dir>/checkpoints/version_<n>`` without a logger. It belongs to one
            run: a fit that did not resume from it refuses to write where
            another run's checkpoints are (see the module docstring).
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
        last_model_path: the newest complete checkpoint written by this run.

    >>> ckpt = ModelCheckpoint(monitor="val_error", save_top_k=2, every_n_train_steps=1000)
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
        self._every = self.every("every_n_train_steps", every_n_train_steps)
        self.every_n_train_steps = None if self._every is None else self._every.n
        self.save_last = bool(save_last)
        self.async_save = bool(async_save)
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""
        #: the step of the newest complete checkpoint of this fit (or the one resumed from)
        self.last_saved_step: int | None = None
        self._issued: int | None = None   # the step of the save in flight, if any
        self._issued_in: tuple[int, int] | None = None   # the identity of its directory
        self._latest: dict[str, float] = {}
        self._manager: ocp.CheckpointManager | None = None
        self._lock = DirectoryLock()
        self._run_id: str | None = None
        self._replaceable: set[str] = set()   # damaged checkpoints a "last" resume skipped
        self._family: tuple[str, str] | None = None   # (root, tail) of a default dirpath

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint[{self._given_dirpath or '<default_root_dir>/checkpoints'}]"

    # ------------------------------------------------------------------ the directory
    def _resolve_dirpath(self, trainer: "Trainer") -> None:
        """Without a given ``dirpath``, as in Lightning: ``<log_dir>/checkpoints`` of the
        first logger (``runs/<name>/version_<n>/checkpoints``), else
        ``<default_root_dir>/checkpoints/version_<n>``: a directory of its own for every run.
        Chosen once, so a continued run (``solve``, ``fit`` again) keeps it."""
        if self._given_dirpath or self.dirpath:
            return
        if trainer.loggers:
            logger = trainer.loggers[0]
            self._family = (os.path.abspath(logger.root_dir), "checkpoints")
            self.dirpath = os.path.abspath(os.path.join(logger.log_dir, "checkpoints"))
        else:
            root = os.path.abspath(os.path.join(trainer.default_root_dir, "checkpoints"))
            self._family = (root, "")
            self.dirpath = self._version_dir(next_version(root))

    def search_dirs(self) -> list[str]:
        """Where ``ckpt_path="last"``/``"best"`` look, preferred first: the given
        ``dirpath``; without one, the checkpoint directories of every version of the run
        family (``version_<n>``, newest first), so a requeued script that starts a new
        Trainer finds the run it continues."""
        if self._family is None:
            return [self.dirpath]
        versions = sorted(next_version_numbers(self._family[0]), reverse=True)
        dirs = [self._version_dir(n) for n in versions]
        return dirs + [self.dirpath] if self.dirpath not in dirs else dirs

    def _version_dir(self, n: int) -> str:
        root, tail = self._family
        return os.path.join(root, f"version_{n}", tail).rstrip(os.sep)

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

    def entries(self) -> list[Entry]:
        """The complete checkpoints in ``dirpath`` with their metadata, oldest first."""
        return list_entries(self.dirpath, self.filename)

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint in ``dirpath``, oldest first (any run's)."""
        return [e.step for e in self.entries()]

    def step_path(self, step: int) -> str:
        return step_dir(self.dirpath, step, self.filename)

    def best_path(self, paths: list[str]) -> str:
        """The best of ``paths`` by the monitored score stored in each checkpoint."""
        if self.monitor is None:
            raise ValueError("`ckpt_path='best'` needs a ModelCheckpoint with a `monitor`.")
        entries = list_entries(os.path.dirname(paths[0]), self.filename) if paths else []
        scored = [(e.score if self.mode == "min" else -e.score, e.path)
                  for e in entries if e.path in paths and e.monitor == self.monitor
                  and e.score is not None and math.isfinite(e.score)]
        if not scored:
            raise FileNotFoundError(f"`ckpt_path='best'`: no checkpoint in "
                                    f"{os.path.dirname(paths[0]) if paths else self.dirpath!r} "
                                    f"has a score for `monitor` {self.monitor!r}.")
        return min(scored)[1]

    def _runs(self, entries: list[Entry]) -> list[Entry]:
        """Of ``entries``, this run's readable checkpoints."""
        return [e for e in entries if e.readable and e.run_id == self._run_id]

    def wait(self) -> None:
        """Block until the save in flight is complete; then it counts as the newest."""
        if self._manager is None:
            return
        try:
            self._manager.wait_until_finished()
        # orbax reports a directory removed under a save as a ValueError (NOT_FOUND)
        except (OSError, ValueError) as err:
            raise self._incomplete(f"{type(err).__name__}: {err}") from err
        if self._issued is not None:
            if not os.path.isdir(self.step_path(self._issued)):
                raise self._incomplete("its directory is gone")
            if _identity(self.dirpath) != self._issued_in:
                # orbax recreates missing directories: what it wrote after is a part only
                raise self._incomplete(f"{self.dirpath!r} was removed or replaced while the "
                                       "checkpoint was written")
            self.last_saved_step, self._issued = self._issued, None
            self.last_model_path = self.step_path(self.last_saved_step)

    def _incomplete(self, why: str) -> OSError:
        """The error of a save in flight that did not complete (it never counts as
        ``last_model_path``)."""
        step, self._issued = self._issued, None
        what = "a checkpoint" if step is None else f"the checkpoint of step {step}"
        return OSError(f"ModelCheckpoint could not complete {what} in {self.dirpath!r} "
                       f"({why}); {self._newest_text()}.")

    def _newest_text(self) -> str:
        if self.last_model_path and os.path.isdir(self.last_model_path):
            return f"the newest complete checkpoint is {self.last_model_path}"
        return "no complete checkpoint of this run remains"

    def close(self) -> None:
        try:
            if self._manager is not None:
                self.wait()
                self._prune()
                self._manager.close()
        finally:
            self._manager = None
            self._lock.release()

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        self._resolve_dirpath(trainer)
        self._replaceable = set()
        self._issued = None
        self.last_saved_step = None
        if self._given_dirpath:   # a default one is created when training starts (a resume
            self._prepare()       # may choose the directory of the run it continues)

    def _prepare(self) -> None:
        if os.path.exists(self.dirpath) and not os.path.isdir(self.dirpath):
            raise NotADirectoryError(f"ModelCheckpoint `dirpath` {self.dirpath!r} is a file, "
                                     "not a directory; give a directory path.")
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

    def on_load_checkpoint(self, trainer: "Trainer", problem: "Problem",
                           checkpoint: dict[str, Any]) -> None:
        if self._family is not None:   # a default directory: go on in the resumed run's
            self.dirpath = os.path.dirname(checkpoint["path"])
        self._replaceable = {p for p in checkpoint.get("skipped", [])
                             if os.path.dirname(p) == self.dirpath}
        # the monitored values when it was written: from the metadata, which moves with the
        # directory (this callback's state entry is keyed by the path it was given)
        self._latest = _numbers(checkpoint["metadata"]["losses"])

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        """Claim the directory for this run (or refuse), and rebuild the scores."""
        self._run_id = trainer.history.run_id
        start = trainer.global_step
        entries = self.entries()
        if self._family is not None and trainer.max_steps > start and foreign(
                entries, self._run_id, start, self._replaceable):
            # a default directory of another run (a trainer fitted again after another run
            # of the problem): this run takes a fresh version, as a new run would
            self.dirpath = self._version_dir(next_version(self._family[0]))
            entries = self.entries()
        if not self._given_dirpath:
            self._prepare()
        if trainer.is_global_zero:  # the processes of one run share the directory
            self._lock.acquire(self.dirpath)
        if trainer.max_steps > start:
            self._refuse_foreign(foreign(entries, self._run_id, start, self._replaceable),
                                 start)
        if any(e.step == start and e.run_id == self._run_id for e in entries):
            self.last_saved_step = start   # resumed from it: saving it again adds nothing
            self.last_model_path = self.step_path(start)
        self._update_best(entries)

    def _refuse_foreign(self, others: list[Entry], start: int) -> None:
        if not others:
            return
        steps = [e.step for e in others]
        if any(e.run_id != self._run_id for e in others):
            what = "checkpoints of another run"
            fix = ("resume that run with `fit(..., ckpt_path=\"last\")`, give this run its "
                   "own `dirpath`, or delete those checkpoints")
        else:
            what = f"newer checkpoints of this run (it resumed from step {start})"
            fix = ("continuing here would replace them: give the continued run its own "
                   "`dirpath` (resume with `ckpt_path=<the checkpoint's path>`), or resume "
                   "`\"last\"`")
        raise ValueError(f"ModelCheckpoint `dirpath` {self.dirpath!r} holds {what} "
                         f"(steps {steps}); nothing was deleted or written. To go on: {fix}.")

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        self._latest.update(chunk.latest())
        if self.is_due(self._every, chunk):
            self.save(trainer, problem)

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        signum = trainer.received_signal
        done = self._issued if self._issued is not None else self.last_saved_step
        if ((self.save_last or signum is not None) and trainer.global_step > 0
                and done != trainer.global_step):
            self.save(trainer, problem)
        self.wait()
        self._prune()
        if signum is not None and self.last_saved_step is not None and trainer.is_global_zero:
            print(f"\n{signum.name} received: saved checkpoint {self.last_model_path} at step "
                  f"{self.last_saved_step}; resume with `trainer.fit(problem, "
                  "ckpt_path=\"last\")`.", file=sys.stderr)

    def on_exception(self, trainer: "Trainer", problem: "Problem",
                     exception: BaseException) -> None:
        try:
            self.wait()
        except OSError as err:  # the exception in flight is the one to report
            warn(str(err), RuntimeWarning)

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        return {"latest": dict(self._latest)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest = _numbers(state_dict.get("latest", {}))

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
        warning, if the state is not finite). Returns the path it is written to; it counts
        as ``last_model_path`` once complete."""
        step = trainer.global_step
        if not bool(all_finite((trainer.state.params, trainer.state.opt_state))):
            warn(f"ModelCheckpoint: the state at step {step} is not finite; no checkpoint "
                 "written.", RuntimeWarning)
            return None
        score = self._score(step)
        self.wait()   # the previous save is complete: older ones may go now
        if not (os.path.isdir(self.dirpath) and os.access(self.dirpath, os.W_OK | os.X_OK)):
            what = "is no longer a directory" if not os.path.isdir(self.dirpath) else \
                "is no longer writable"
            raise OSError(f"ModelCheckpoint `dirpath` {self.dirpath!r} {what}: the checkpoint "
                          f"of step {step} cannot be written; {self._newest_text()}.")
        path = self.step_path(step)
        if path in self._replaceable:   # a damaged checkpoint this run skipped
            self.manager.delete(step)
            self._replaceable.discard(path)
        self._prune()   # against the newest complete checkpoint, never the one being written
        args = checkpoint_items(trainer, problem, {"monitor": self.monitor, "score": score,
                                                  "losses": dict(self._latest)})
        try:
            self.manager.save(step, args=args, force=True)
        except OSError as err:
            raise OSError(f"ModelCheckpoint could not write the checkpoint of step {step} to "
                          f"{self.dirpath!r} ({type(err).__name__}: {err}); "
                          f"{self._newest_text()}.") from err
        self._issued, self._issued_in = step, _identity(self.dirpath)
        if not self.async_save:
            self.wait()
        return path

    def _kept(self, own: list[Entry], newest: int) -> set[int]:
        steps = {e.step for e in own} | {newest}
        if self.save_top_k == -1:
            return steps
        if self.monitor is None:
            ranked = sorted(steps, reverse=True)
        else:
            scores = self._scores(own)
            ranked = sorted(scores, key=lambda s: (scores[s] if self.mode == "min"
                                                   else -scores[s], -s))
        return set(ranked[:self.save_top_k]) | {newest}

    def _scores(self, entries: list[Entry]) -> dict[int, float]:
        return {e.step: e.score for e in entries if e.monitor == self.monitor
                and e.score is not None and math.isfinite(e.score)}

    def _prune(self) -> None:
        """Delete this run's complete checkpoints that are neither its newest nor among the
        top k (never another run's, never newer ones)."""
        if self._manager is None or self.last_saved_step is None:
            return
        entries = self.entries()
        # this run's, never newer than the newest complete checkpoint it wrote
        own = [e for e in self._runs(entries) if e.step <= self.last_saved_step]
        deleted = {e.step for e in own} - self._kept(own, self.last_saved_step)
        for s in deleted:
            self._manager.delete(s)
        self._update_best([e for e in entries if e.step not in deleted])

    def _update_best(self, entries: list[Entry]) -> None:
        """``best_model_path`` and ``best_model_score`` from this run's ``entries``."""
        if self.monitor is None:
            return
        scores = self._scores(self._runs(entries))
        if not scores:
            return
        sign = 1 if self.mode == "min" else -1
        best = min(scores, key=lambda s: (sign * scores[s], -s))
        self.best_model_path = self.step_path(best)
        self.best_model_score = scores[best]
