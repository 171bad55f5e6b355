"""The overlapped run loop: chunks dispatched ahead of their callbacks.

With ``Trainer(overlap_callbacks=True)``, chunk ``k + 1`` is dispatched (JAX runs it
asynchronously) before chunk ``k``'s records are pulled and its callbacks run, so host work
overlaps device work. Callbacks of chunk ``k`` see ``trainer.state`` as it was after chunk
``k`` (a copy). When they stop training or replace ``trainer.state``, the chunk in flight is
discarded and training goes on from their state: the steps computed are exactly those of a
run without overlap. Nothing a launch does outlives a discarded chunk: the state a chunk
starts with is a function of the state and step it is launched from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax
import numpy as np

from jno_flax.callbacks._callback import ChunkMetrics
from jno_flax.trainers._boundaries import enter_chunk
from jno_flax.trainers._chunk import ChunkProgram
from jno_flax.trainers import _protocol as protocol
from jno_flax.trainers._hooks import dispatch, overrides
from jno_flax.trainers._state import TrainState, copy_tree

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import Trainer


class Launch(NamedTuple):
    """A chunk dispatched to the device: steps ``s0 .. end - 1``, its (future) state and
    records, and for an early stop a copy of its first state (``start``) and ``replay(first,
    limit)``, the same compiled chunk run from ``first`` with the steps from ``limit`` on
    changing nothing (so the state after step ``limit - 1`` is bit-identical)."""

    s0: int
    end: int
    program: ChunkProgram
    state: TrainState
    records: Any
    start: TrainState | None
    replay: Callable[[TrainState, int], TrainState]


class Loop:
    """Runs the chunks of one fit until ``max_steps`` or a stop."""

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        active = trainer.active_callbacks()
        self.per_step = [cb for cb in active if overrides(cb, "on_train_batch_end")]
        self.per_chunk = [cb for cb in active if overrides(cb, "on_train_chunk_end")]
        self.stoppers = [cb for cb in trainer.callbacks if overrides(cb, "stopping_step")]

    def end_of_chunk(self, s0: int, capacity: int) -> int:
        """Where the chunk from ``s0`` ends: at ``capacity`` steps, ``max_steps``, or the
        first boundary a callback or an optimizer phase asks for."""
        t = self.trainer
        ends = [s0 + capacity, t.max_steps]
        ends += [b for cb in t.callbacks
                 if (b := protocol.next_boundary(cb, t, s0)) is not None]
        if (b := t.phases.next_boundary(s0)) is not None:
            ends.append(b)
        return min(ends)

    def launch(self, state: TrainState, s0: int, copy: TrainState | None = None) -> Launch:
        """Dispatch the chunk from step ``s0``; ``copy``: a copy of ``state`` already made
        (the state the callbacks see), reused as the replay's start."""
        t = self.trainer
        given = state
        state = enter_chunk(t, state, s0)
        run_chunk, program, capacity = t.chunks.get(t, state, s0)
        end = self.end_of_chunk(s0, capacity)
        args = (t.points, end - s0, s0 % program.period)
        start = None   # for an early stop's replay: a copy of the chunk's first state
        if self.stoppers:
            start = copy if copy is not None and state is given else copy_tree(state)
        new_state, records = run_chunk(state, *args, np.int32(end))
        return Launch(s0, end, program, new_state, records, start,
                      lambda first, limit: run_chunk(first, *args, np.int32(limit))[0])

    def stop_step(self, chunk: ChunkMetrics) -> int | None:
        """The earliest step after which a callback will stop training, or ``None``; with
        several processes, the earliest any of them asks for."""
        t = self.trainer
        if not self.stoppers:   # the same callbacks on every process: none asks anywhere
            return None
        step = min((s for cb in self.stoppers
                    if (s := protocol.stopping_step(cb, t, chunk)) is not None), default=None)
        return t.processes.agree_stop(step) if t.processes.several else step

    def run(self) -> None:
        t = self.trainer
        pending = None
        while not t.should_stop:
            if pending is None:
                if t.global_step >= t.max_steps:
                    break
                pending = self.launch(t.state, t.global_step)
            current, pending = pending, None
            end = current.end
            if t.overlap_callbacks and end < t.max_steps:
                seen = copy_tree(current.state)  # enqueued before the donation
                pending = self.launch(current.state, end, copy=seen)
            else:
                seen = current.state
            chunk = t.trackers.metrics(jax.device_get(current.records), current.s0, end,
                                       current.program, list(t.problem.constraints), t.state)
            last = self.stop_step(chunk)
            if last is not None and last + 1 < end:  # stop right after that step
                end, chunk = last + 1, chunk.until(last + 1)
                # a copy: `start` may be the state the callbacks saw (and may hold)
                seen = current.replay(copy_tree(current.start), end)
                pending = None
            t.advance(seen, end, chunk)
            dispatch(t, chunk, self.per_step, self.per_chunk)
            replaced = t.state is not seen  # a callback replaced the state: go on from it
            if replaced:
                t.advance(t.state, int(t.state.step))
            if t.processes.several:
                t.processes.stop_together(t, preemption=t.handle_signals)
            if replaced or t.should_stop:
                pending = None

