"""The callbacks of a fit: the loggers argument, the defaults Lightning also adds, the
declarations collected from every callback, and the per-step and per-chunk hooks."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from jno_flax.callbacks._callback import Callback, ChunkMetrics, StateUpdate, StepMetrics
from jno_flax.callbacks._logger import Logger

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

_ACCEPTED_LOGGERS = ("True (a TensorBoardLogger under `default_root_dir`), False/None, a "
                     "jno_flax.callbacks.Logger or a list of them")


def resolve_loggers(logger: Any) -> list[Logger]:
    """``Trainer(logger=...)`` as a list of loggers."""
    from jno_flax.callbacks import TensorBoardLogger
    if logger is True:
        return [TensorBoardLogger()]
    if logger is False or logger is None:
        return []
    if isinstance(logger, Logger):
        return [logger]
    if isinstance(logger, (list, tuple)):
        for i, lg in enumerate(logger):
            if not isinstance(lg, Logger):
                raise TypeError(f"`logger[{i}]` must be a jno_flax.callbacks.Logger, got "
                                f"{type(lg).__name__}: {lg!r}; accepted: {_ACCEPTED_LOGGERS}.")
        return list(logger)
    raise TypeError(f"`logger` must be {_ACCEPTED_LOGGERS}; got {type(logger).__name__}: "
                    f"{logger!r}.")


def check_callbacks(callbacks: Any) -> list[Callback]:
    """``Trainer(callbacks=...)`` checked: a list of callbacks that are not loggers."""
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"`callbacks` must be a list of Callback instances, got "
                        f"{type(callbacks).__name__}.")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"`callbacks[{i}]` must be a jno_flax.callbacks.Callback "
                            f"instance, got {type(cb).__name__}: {cb!r}.")
        if isinstance(cb, Logger):
            raise TypeError(f"`callbacks[{i}]` is a logger ({type(cb).__name__}); pass "
                            "loggers with `Trainer(logger=...)`, as in Lightning.")
    return list(callbacks)


def assemble(trainer: "Trainer", problem: "Problem") -> list[Callback]:
    """The callbacks of a fit, in hook order: trackers and adaptive weights of the problem,
    the model summary, the loggers, the timer, the user's callbacks, a checkpoint and the
    progress bar (the defaults only where the user gave none of that kind)."""
    from jno_flax.callbacks import (AdaptiveWeightsCallback, ModelCheckpoint, ModelSummary,
                                    ProgressBar, TrackerCallback)
    user = trainer.user_callbacks
    cbs: list[Callback] = []
    if problem.trackers:
        cbs.append(TrackerCallback(list(problem.trackers.items())))
    if problem.registry.balancers:
        cbs.append(AdaptiveWeightsCallback())
    if trainer.enable_model_summary and not any(isinstance(c, ModelSummary) for c in user):
        cbs.append(ModelSummary())
    cbs += trainer.loggers
    if trainer.timer is not None:
        cbs.append(trainer.timer)
    cbs += user
    if trainer.enable_checkpointing and not any(isinstance(c, ModelCheckpoint) for c in cbs):
        cbs.append(trainer.default_checkpoint())
    if trainer.enable_progress_bar and not any(isinstance(c, ProgressBar) for c in cbs):
        cbs.append(ProgressBar())
    keys = [c.state_key for c in cbs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"callbacks share the state key(s) {dupes}; give each callback "
                         "instance a distinct `state_key` (e.g. through its `name`).")
    return cbs


def collect_updates(callbacks: Sequence[Callback], trainer: "Trainer", problem: "Problem"
                    ) -> list[StateUpdate]:
    """The periodic refreshes of the problem's balancers, then every callback's state
    entries (one owner per ``TrainState.extras`` entry)."""
    registry = problem.registry
    balancer_keys = {registry.balancer_key(b) for b in registry.balancers}
    owners: dict[str, str] = {}
    updates: list[StateUpdate] = []
    # one StateUpdate per balancer of the problem, kept across fits: a compiled chunk keys on it
    owner, refreshes = trainer.refreshes
    if owner() is not registry:
        refreshes = {}
        trainer.refreshes = (weakref.ref(registry), refreshes)
    for b in registry.balancers:
        key = registry.balancer_key(b)
        if b.refresh_period is not None:
            if key not in refreshes:
                refreshes[key] = StateUpdate(
                    key, b.refresh_period, init=b.initial_slot,
                    update=lambda st, pts, b=b: b.refreshed_slot(registry, st,
                                                                 trainer.minibatch(st, pts)),
                    from_step_zero=True)
            updates.append(refreshes[key])
    for cb in callbacks:
        for u in cb.state_updates(trainer, problem):
            if not isinstance(u, StateUpdate):
                raise TypeError(f"{type(cb).__name__}.state_updates must return StateUpdate "
                                f"items, got {u!r}.")
            if u.name in owners or u.name in balancer_keys:
                raise ValueError(f"{type(cb).__name__} updates the state entry {u.name!r}, "
                                 f"which {owners.get(u.name, 'an adaptive weight')} owns "
                                 "already; one callback may change each entry (e.g. one "
                                 "ResamplePoints per point set).")
            owners[u.name] = type(cb).__name__
            updates.append(u)
    return updates


def overrides(cb: Callback, hook: str) -> bool:
    """``cb`` overrides the base class's ``hook``."""
    return getattr(type(cb), hook) is not getattr(Callback, hook)


def dispatch(trainer: "Trainer", chunk: ChunkMetrics, per_step: list[Callback],
             per_chunk: list[Callback]) -> None:
    """A chunk's hooks: ``on_train_batch_end`` for every step, in step order, then
    ``on_train_chunk_end``."""
    if per_step:
        by_step: dict[int, dict[str, Any]] = {}
        for name, (at, v) in chunk.trackers.items():
            for j, s in enumerate(at):
                val = v[j]
                by_step.setdefault(int(s), {})[name] = (float(val) if np.ndim(val) == 0
                                                       else val)
        n = len(chunk.steps)
        for j, s in enumerate(chunk.steps):
            m = StepMetrics(step=int(s), loss=float(chunk.loss[j]),
                            losses={k: float(v[j]) for k, v in chunk.losses.items()},
                            trackers=by_step.get(int(s), {}), last_in_chunk=(j == n - 1))
            for cb in per_step:
                cb.on_train_batch_end(trainer, trainer.problem, m)
    for cb in per_chunk:
        cb.on_train_chunk_end(trainer, trainer.problem, chunk)
