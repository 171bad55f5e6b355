"""The trackers of a fit: which callback declared what, where each is computed, what their
records cost, and the chunk's records turned into :class:`ChunkMetrics`.

A tracker is any value recorded inside the compiled chunk at an interval, declared as an
:class:`~jno_flax.callbacks.InGraph` by a callback: the problem's ``jnn.tracker``
expressions, adaptive weights, learning rates, diagnostics. One noun throughout:
``trainer.trackers``, ``StepMetrics.trackers``, ``ChunkMetrics.trackers`` and
``History.trackers``. The *dense* ones come out of the
loss's own forward pass at every step (every-step expressions, and adaptive weights at any
interval, so a tracked weight is exactly the one used); the others are evaluated by the chunk
program at the steps they are due (``trainers/_chunk.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jno_flax._balancer import AdaptiveWeight
from jno_flax._evaluate import Evaluator
from jno_flax.callbacks._callback import Callback, ChunkMetrics, InGraph
from jno_flax.trainers._chunk import ChunkProgram
from jno_flax.trainers._state import TrainState

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


def collect(callbacks: Sequence[Callback], trainer: "Trainer", problem: "Problem"
            ) -> list[InGraph]:
    """Every callback's :meth:`~jno_flax.callbacks.Callback.in_graph` quantities, checked:
    ``InGraph`` items with names unique among themselves, the constraints and ``"loss"``."""
    quantities: list[InGraph] = []
    taken = set(problem.constraints) | {"loss"}
    for cb in callbacks:
        for q in cb.in_graph(trainer, problem):
            if not isinstance(q, InGraph):
                raise TypeError(f"{type(cb).__name__}.in_graph must return InGraph items, "
                                f"got {q!r}.")
            if q.name in taken:
                raise ValueError(f"the in-graph quantity name {q.name!r} (from "
                                 f"{type(cb).__name__}) is already used; names of "
                                 "constraints, trackers and quantities must be unique.")
            taken.add(q.name)
            quantities.append(q)
    return quantities


class Trackers:
    """The trackers of one fit.

    Args:
        items: the trackers' declarations, in order.
        minibatched: the loss pass sees mini-batches (then only adaptive weights, whose
            values are the loss's own, are computed in it).
    """

    def __init__(self, items: Sequence[InGraph], minibatched: bool = False):
        self.items = list(items)
        if minibatched:
            self.dense = [q for q in self.items if isinstance(q.expr, AdaptiveWeight)]
        else:
            self.dense = [q for q in self.items if q.expr is not None
                          and (q.interval == 1 or isinstance(q.expr, AdaptiveWeight))]
        #: the quantities the chunk program evaluates at their steps
        self.sparse = [q for q in self.items if q not in self.dense]

    @property
    def names(self) -> list[str]:
        return [q.name for q in self.items]

    def signature(self) -> tuple:
        """What a compiled chunk depends on."""
        return tuple((q.name, q.expr.key if q.expr is not None else id(q.fn), q.interval)
                     for q in self.items)

    @staticmethod
    def struct(q: InGraph, state: TrainState) -> jax.ShapeDtypeStruct:
        """The shape and dtype of ``q``'s value."""
        if q.expr is not None:
            return jax.ShapeDtypeStruct(q.expr.value_shape, q.expr.dtype)
        return jax.eval_shape(q.fn, state)

    def bytes_per_step(self, per_step_struct: Any, state: TrainState) -> float:
        """The record bytes one step costs: the per-step outputs plus every sparse tracker
        once per interval (fixed for a compiled configuration)."""
        per_step = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(per_step_struct))
        for q in self.sparse:
            st = self.struct(q, state)
            per_step += int(np.prod(st.shape)) * jnp.dtype(st.dtype).itemsize / q.interval
        return per_step

    @staticmethod
    def capacity(bytes_per_step: float, max_bytes: int, longest: int) -> int:
        """The longest chunk (at most ``longest`` steps) whose records fit ``max_bytes``."""
        return max(1, min(longest, int(max_bytes // max(bytes_per_step, 1))))

    @staticmethod
    def evaluate(problem: "Problem", quantities: list[InGraph], state: TrainState,
                 points: dict[str, Any]) -> dict[str, Any]:
        """``quantities`` at ``state`` on ``points`` (the state's current points)."""
        exprs = [q.expr for q in quantities if q.expr is not None]
        ev = Evaluator.of_state(problem.registry, state, points, exprs)
        return {q.name: ev.value(q.expr) if q.expr is not None else q.fn(state)
                for q in quantities}

    def metrics(self, records: dict, s0: int, end: int, program: ChunkProgram,
                constraints: Sequence[str], state: TrainState) -> ChunkMetrics:
        """A chunk's records (on the host) as arrays with their step indices."""
        steps = np.arange(s0, end)
        dense = records["dense"]
        recorded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        intervals = {q.name: q.interval for q in self.items}
        for name, v in dense["values"].items():
            keep = steps % intervals[name] == 0
            recorded[name] = (steps[keep], np.asarray(v)[keep])
        for group in program.recorded():
            at = group.rows(s0, end)
            table = records["sparse"].get(group.key, {})  # absent: no row in this chunk
            for q in group.trackers:
                if q.name in table:
                    recorded[q.name] = (at, np.asarray(table[q.name][:len(at)]))
                else:
                    st = self.struct(q, state)
                    recorded[q.name] = (at, np.zeros((0,) + st.shape, st.dtype))
        recorded = {n: recorded[n] for n in self.names if n in recorded}
        losses = {name: np.asarray(dense["losses"][name]) for name in constraints}
        return ChunkMetrics(steps, np.asarray(dense["loss"]), losses, recorded,
                            steps[~np.asarray(dense["applied"], bool)])
