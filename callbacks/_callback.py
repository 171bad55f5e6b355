"""The callback base class: explicit, typed no-op hooks.

The trainer calls the hooks in this order::

    setup -> on_fit_start -> (on_load_checkpoint when resuming) -> on_train_start
      -> after each fused chunk: on_train_batch_end for every step it ran (in step order),
         then on_train_chunk_end once with the whole chunk as arrays
      -> on_train_end -> on_fit_end -> teardown

``on_exception`` runs when training raises (then ``teardown``, then the exception propagates).
``on_save_checkpoint`` runs when a checkpoint is written. Callbacks are called in the order
given to the trainer, built-in trackers first. With several ``jax.distributed`` processes, the
hooks of callbacks with ``global_zero_only = True`` run on process 0 only.

A callback stops training by calling ``trainer.stop(reason)`` (which sets
``trainer.should_stop``); hooks never return decisions.

Three declarations shape the fused loop:

* :meth:`Callback.in_graph` returns quantities computed *inside* the compiled step at an
  interval, the trackers (their values arrive in ``StepMetrics.trackers`` at the steps they
  were recorded);
* :meth:`Callback.state_updates` returns entries of ``TrainState.extras`` that change inside
  the compiled loop every ``n`` steps (resampled collocation points);
* :meth:`Callback.sync_every` asks for a chunk boundary every ``n`` steps, where
  ``trainer.state`` is the state after that step.

Changes that cannot happen inside a compiled chunk (a new optimizer, a point set that grows)
happen at chunk boundaries, through the boundary protocol:

* :meth:`Callback.optimizer_phases` declares optimizer transforms from given steps on (the
  trainer starts a chunk there and gives the changed transforms a fresh state);
* :meth:`Callback.next_boundary` asks for a chunk to start at a step;
* :meth:`Callback.enter_chunk` returns the state a chunk starts with;
* :meth:`Callback.restore_target` gives the structure of the state a checkpoint of a step
  holds.

While callbacks run, the next chunk is already computing (``Trainer(overlap_callbacks=True)``);
``trainer.state`` is the state after the chunk being reported. A callback that stops training
or assigns a new ``trainer.state`` makes the trainer drop the chunk in flight and go on from
that state, so hooks behave exactly as without overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from jno_flax._checks import name as check_name
from jno_flax._checks import positive_int

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Expr, Problem
    from jno_flax.trainers import Trainer, TrainState


@dataclass(frozen=True, eq=False)
class StateUpdate:
    """An entry of ``TrainState.extras`` that changes inside the fused loop: before the steps
    ``s = interval, 2 * interval, ...`` (once every ``interval`` steps done; also ``s = 0``
    with ``from_step_zero``), the entry becomes ``update(state, batch)``, where ``batch``
    holds the current points.

    Attributes:
        name: the key in ``TrainState.extras`` (a point set's key ``points_<k>`` makes the
            entry that point set's points).
        interval: period in steps.
        init: ``() -> value`` before training.
        update: ``(state, batch) -> value``, traced inside the step; ``None`` for an entry
            that changes only at chunk boundaries (:meth:`Callback.enter_chunk`, e.g. a point
            set that grows), declared here for its ``init`` and its owner.
    """

    name: str
    interval: int
    init: Callable[[], Any]
    update: Callable[[Any, dict], Any] | None = None
    #: also before step 0 (a refresh that sets the first value, e.g. periodic loss weights)
    from_step_zero: bool = False

    @property
    def in_loop(self) -> bool:
        """The entry changes inside the compiled loop (it has an ``update``)."""
        return self.update is not None

    def __post_init__(self):
        check_name("name", self.name)
        positive_int("interval", self.interval, steps=True)


@dataclass(frozen=True, eq=False)
class InGraph:
    """A quantity computed inside the fused step at every step ``s`` with ``s % interval == 0``.

    Give either ``expr`` (evaluated with the parameters that step ``s`` used) or ``fn``, a
    function of the ``TrainState`` returning an array (seen before step ``s`` updates it, or
    after with ``after_step=True``: e.g. the learning rate that step ``s`` used).

    Attributes:
        name: unique name (also the ``History.trackers`` key and the TensorBoard tag).
        expr: the expression to evaluate.
        interval: recording period in steps.
        fn: alternative to ``expr``: ``fn(state) -> array``.
        after_step: evaluate ``fn`` on the state after step ``s``.
    """

    name: str
    expr: "Expr | None" = None
    interval: int = 1
    fn: "Callable[[Any], Any] | None" = None
    after_step: bool = False

    def __post_init__(self):
        check_name("name", self.name)
        if (self.expr is None) == (self.fn is None):
            raise ValueError(f"in-graph quantity {self.name!r}: give exactly one of `expr` "
                             "and `fn`.")
        if self.after_step and self.fn is None:
            raise ValueError(f"in-graph quantity {self.name!r}: `after_step` needs `fn`.")
        positive_int("interval", self.interval, steps=True)


@dataclass
class StepMetrics:
    """What one step produced, handed to ``on_train_batch_end``.

    Attributes:
        step: the step index (0-based; the step that used the parameters after ``step`` updates).
        loss: total loss of the step.
        losses: ``{constraint name: loss}``.
        trackers: the trackers (in-graph quantities) recorded at this step ``{name: value}``
            (scalars as floats, arrays as numpy arrays); only those whose interval divides
            ``step``.
        last_in_chunk: True for the last step of a fused chunk; then ``trainer.state`` is
            the state after this step.
    """

    step: int
    loss: float
    losses: dict[str, float]
    trackers: dict[str, Any] = field(default_factory=dict)
    last_in_chunk: bool = False

    @property
    def values(self) -> dict[str, Any]:
        """The earlier name of :attr:`trackers`."""
        return self.trackers

    def get(self, name: str) -> Any:
        """``"loss"``, a constraint name or a quantity name recorded at this step."""
        if name == "loss":
            return self.loss
        if name in self.losses:
            return self.losses[name]
        return self.trackers.get(name, np.nan)


@dataclass
class ChunkMetrics:
    """Everything one fused chunk produced, as arrays, handed to ``on_train_chunk_end``.

    Attributes:
        steps: ``(n,)`` the steps of the chunk.
        loss: ``(n,)`` total loss of each step.
        losses: ``{constraint name: (n,)}``.
        trackers: ``{name: (steps, values)}`` for the trackers (in-graph quantities)
            recorded in the chunk, with their own step indices.
        skipped: the steps whose loss or update was not finite (not applied).
    """

    steps: np.ndarray
    loss: np.ndarray
    losses: dict[str, np.ndarray]
    trackers: dict[str, tuple[np.ndarray, np.ndarray]]
    skipped: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    @property
    def values(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The earlier name of :attr:`trackers`."""
        return self.trackers

    @property
    def last_step(self) -> int:
        return int(self.steps[-1])

    def latest(self) -> dict[str, float]:
        """The last value of ``"loss"``, every constraint and every scalar quantity."""
        out = {"loss": float(self.loss[-1]), **{k: float(v[-1]) for k, v in self.losses.items()}}
        out.update({name: float(values[-1]) for name, (_, values) in self.trackers.items()
                    if len(values) and np.ndim(values[-1]) == 0})
        return out

    def until(self, end: int) -> "ChunkMetrics":
        """The chunk's records of the steps before ``end``."""
        keep = self.steps < end
        return ChunkMetrics(self.steps[keep], self.loss[keep],
                            {k: v[keep] for k, v in self.losses.items()},
                            {k: (at[at < end], v[at < end])
                             for k, (at, v) in self.trackers.items()},
                            self.skipped[self.skipped < end])

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(steps, values)`` of ``"loss"``, a constraint or a quantity in this chunk."""
        if name == "loss":
            return self.steps, self.loss
        if name in self.losses:
            return self.steps, self.losses[name]
        return self.trackers.get(name)


class Callback:
    """Base class of trainer callbacks; override the hooks you need."""

    #: with several ``jax.distributed`` processes, run the hooks on process 0 only (loggers,
    #: figures, the progress bar: what writes files or the terminal). The declarations
    #: (``in_graph``, ``state_updates``, ``sync_every``) and ``state_dict`` are used on every
    #: process.
    global_zero_only: bool = False

    @property
    def state_key(self) -> str:
        """Key of this callback's ``state_dict`` in checkpoints (unique per trainer)."""
        return type(self).__qualname__

    # ------------------------------------------------------------------ declarations
    def in_graph(self, trainer: "Trainer", problem: "Problem") -> Sequence[InGraph]:
        """Trackers to compute inside the fused step; called once at fit start."""
        return ()

    def state_updates(self, trainer: "Trainer", problem: "Problem") -> Sequence[StateUpdate]:
        """Entries of ``TrainState.extras`` this callback changes inside the fused loop
        (e.g. resampled points); called once at fit start, after ``setup``."""
        return ()

    def sync_every(self, trainer: "Trainer") -> int | None:
        """Ask for a chunk boundary after every ``n``-th step (``trainer.state`` is then the
        state after that step), or ``None``."""
        return None

    # ------------------------------------------------------------------ chunk boundaries
    def optimizer_phases(self, trainer: "Trainer", trained: list[str]
                         ) -> Sequence[tuple[int, dict[str, Any]]]:
        """Optimizer phases ``[(at_step, {trainable name: optax transform})]``: from step
        ``at_step`` on, those trainables train with those transforms (``trained``: the names
        of the trained trainables). The trainer starts a chunk at every ``at_step`` and gives
        a transform that changed there a fresh state at the weights reached."""
        return ()

    def next_boundary(self, trainer: "Trainer", step: int) -> int | None:
        """The first step after ``step`` at which a chunk must start (there
        :meth:`enter_chunk` may change the state), or ``None``. Default: the boundaries of
        :meth:`sync_every`."""
        n = self.sync_every(trainer)
        return None if n is None else (step // n + 1) * n

    def enter_chunk(self, trainer: "Trainer", state: "TrainState", step: int) -> "TrainState":
        """The state a chunk that starts at step ``step`` begins with (called at every chunk
        start, outside the compiled code; default: ``state`` unchanged). It must depend on
        ``state`` and ``step`` only: a chunk may be entered again after a stop or a restore."""
        return state

    def restore_target(self, trainer: "Trainer", target: "TrainState", step: int
                       ) -> "TrainState":
        """The structure (arrays or ``jax.ShapeDtypeStruct`` leaves) of the state a checkpoint
        of step ``step`` holds, given ``target``, the trainer's structure for it; default:
        ``target`` unchanged. A callback whose :meth:`enter_chunk` changes shapes says here
        which shapes the state had after step ``step - 1``."""
        return target

    def stopping_step(self, trainer: "Trainer", chunk: ChunkMetrics) -> int | None:
        """The step of ``chunk`` after which this callback's hooks will stop training, or
        ``None``: a decision computed without side effects (called before any hook sees the
        chunk, on every process). The trainer then ends the chunk there: the state, History,
        hooks and checkpoints are those of a run that stopped right after that step (the
        chunk is replayed up to it). The hooks must then call ``trainer.stop`` for it."""
        return None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        """Runs first in ``fit`` (``stage="fit"``), before anything is compiled."""

    def on_fit_start(self, trainer: "Trainer", problem: "Problem") -> None:
        """Runs when ``fit`` starts, after ``setup``; ``trainer.state`` exists."""

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        """Runs right before the first chunk; ``trainer.global_step`` is the start step."""

    def on_train_batch_end(self, trainer: "Trainer", problem: "Problem",
                           metrics: StepMetrics) -> None:
        """Runs once per step, in step order, after the chunk that ran the step."""

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        """Runs once per fused chunk, after its per-step hooks; ``trainer.state`` is the state
        after the chunk's last step.

        The vectorised alternative to ``on_train_batch_end`` (no per-step Python calls)."""

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        """Runs after the last chunk (also after a stop); ``trainer.state`` is final."""

    def on_fit_end(self, trainer: "Trainer", problem: "Problem") -> None:
        """Runs at the end of a successful ``fit``, after the models are updated."""

    def on_exception(self, trainer: "Trainer", problem: "Problem",
                     exception: BaseException) -> None:
        """Runs when training raises ``exception`` (before it propagates)."""

    def on_save_checkpoint(self, trainer: "Trainer", problem: "Problem",
                           checkpoint: dict[str, Any]) -> None:
        """Runs when a checkpoint is written; may add JSON-serialisable entries."""

    def on_load_checkpoint(self, trainer: "Trainer", problem: "Problem",
                           checkpoint: dict[str, Any]) -> None:
        """Runs when training resumes from ``checkpoint``."""

    def state_dict(self) -> dict[str, Any]:
        """This callback's state to checkpoint (JSON-serialisable)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        """Runs last in ``fit``, also after an exception."""
