"""The compiled chunk of the live configuration: one ``jax.jit`` of a :class:`ChunkProgram`,
compiled once per distinct chunk length and phase and reused by later fits of the same
trainer and problem."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax

from jno_flax.trainers._chunk import ChunkProgram
from jno_flax.trainers._trackers import Trackers
from jno_flax.trainers._state import TrainState

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import Trainer


class CompiledChunks:
    """The jitted chunk runner of the latest configuration (one entry: older ones would pin
    a problem in memory)."""

    def __init__(self):
        self._cache: dict[Any, tuple[Any, ChunkProgram, float]] = {}

    def latest(self) -> tuple[Any, ChunkProgram]:
        """The runner and program compiled last."""
        run, program, _ = next(iter(self._cache.values()))
        return run, program

    def get(self, trainer: "Trainer", state: TrainState, s0: int
            ) -> tuple[Any, ChunkProgram, int]:
        """The jitted chunk runner for a chunk from ``s0`` with ``state`` (one compilation per
        distinct chunk length and phase, reused by later ``fit`` calls), its program and the
        longest chunk the record memory bound allows."""
        txs, quantities = trainer.transforms_at(s0), trainer.trackers
        signature = (id(trainer.problem), quantities.signature(), trainer.nested_intervals,
                     tuple((n, id(tx)) for n, tx in txs.items()),
                     tuple((u.name, u.interval, id(u.update)) for u in trainer.updates),
                     tuple(sorted(trainer.batch_sizes.items())), jax.tree.structure(state))
        if signature not in self._cache:
            def step(st: TrainState, points: dict) -> tuple[TrainState, dict]:
                with trainer.compiling(txs):
                    return trainer.training_step(st, trainer.minibatch(st, points))
            out_struct = jax.eval_shape(lambda st: step(st, trainer.points)[1], state)
            shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
            program = ChunkProgram(
                step, lambda qs, st, pts: Trackers.evaluate(trainer.problem, qs, st, pts),
                quantities.sparse, [u for u in trainer.updates if u.in_loop],
                lambda q: Trackers.struct(q, shapes), trainer.sharding,
                trainer.nested_intervals)
            run = jax.jit(program(), static_argnums=(2, 3), donate_argnums=0)
            # one entry: older ones would pin a problem; the record bytes are computed once
            self._cache = {signature: (run, program,
                                       quantities.bytes_per_step(out_struct, shapes))}
        run, program, per_step = self._cache[signature]
        longest = min(trainer.chunk_size, max(1, trainer.max_steps - s0))
        return run, program, quantities.capacity(per_step, trainer.max_record_bytes, longest)
