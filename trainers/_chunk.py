"""The compiled chunk: ``n`` fused steps and the in-graph quantities recorded on their steps.

Layout. Quantities at interval ``k > 1`` are recorded on the steps ``s`` with ``s % k == 0``.
Rather than asking at every step whether a quantity is due (a ``lax.cond`` whose predicate a
GPU reads back to the host every step), the scan is nested so that every quantity is evaluated
at the start of its own block, with no predicate at all::

    chunk  = head + scan over blocks of k1 steps + tail
    block  = [quantities of interval k1] + scan over blocks of k2 steps   (k2 divides k1)
    ...    = [quantities of interval km] + scan of km plain steps

Only one training step is traced whatever the nesting (the head and the tail add traces only
when a chunk does not start or end on a block boundary). Quantities whose interval does not
divide the larger ones, and functions of the state after the step (``after_step``), use the
per-step ``lax.cond`` form, and so do in-loop state updates (:class:`StateUpdate`, e.g.
resampled points), which run at the start of the steps they are due, before any quantity.

The nested layout is used on accelerators. On CPU a ``lax.cond`` is a branch of the host loop
and costs nothing, and the flat layout keeps resume bit-identical whatever the chunk
boundaries: XLA compiles block loops differently with their trip counts (a loop of one block
is inlined, short ones may be unrolled), which changes float rounding in the last bit
between a run and its resumed copy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jno_flax.callbacks._callback import InGraph
from jno_flax.trainers._state import TrainState, all_finite, current_points

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import Trainer


def keep_finite(old: TrainState, new: TrainState, loss: jax.Array, active: jax.Array = True
                ) -> tuple[TrainState, jax.Array]:
    """``(new, True)`` when the step's loss and updated parameters are finite; otherwise
    ``(old, False)`` (parameters, optimizer and balancer states unchanged) with the step
    counted. Inside the compiled step, so a non-finite step is recorded but never applied.
    All or nothing: one non-finite constraint leaves every trainable as it was, so the
    trainables never drift apart on a step whose total loss is meaningless.

    A step that is not ``active`` (past the chunk's ``limit``: a replay that stops early)
    leaves the whole state as it was, step counter included."""
    ok = jnp.isfinite(loss) & all_finite(new.params) & active
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new.replace(step=old.step), old)
    return kept.replace(step=jnp.where(active, new.step, old.step)), ok


class Group:
    """Quantities sharing an interval and a timing (before or after the step)."""

    def __init__(self, interval: int, after: bool):
        self.interval, self.after = interval, after
        self.quantities: list[InGraph] = []

    @property
    def key(self) -> str:
        return f"{self.interval}/{'after' if self.after else 'before'}"

    def rows(self, s0: int, end: int) -> np.ndarray:
        """The steps of ``[s0, end)`` at which the group is recorded."""
        k = self.interval
        return np.arange((s0 + k - 1) // k * k, end, k)


def _concat(parts: list[Any]) -> Any:
    parts = [p for p in parts if p is not None]
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _flatten_blocks(tree: Any) -> Any:
    """``(blocks, per_block, ...)`` leaves to ``(blocks * per_block, ...)``."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


class ChunkProgram:
    """Builds ``run(state, batch, n_steps, phase)`` for one trainer configuration; ``nested``
    chooses the nested layout for the intervals that allow it.

    ``phase`` is the start step modulo the longest nested interval (static, like ``n_steps``),
    so a chunk knows where its blocks start without reading the step counter.
    """

    def __init__(self, trainer: "Trainer", quantities: list[InGraph], dense: list[InGraph],
                 nested: bool):
        self.trainer = trainer
        groups: dict[str, Group] = {}
        for q in quantities:
            if q not in dense:
                g = Group(q.interval, q.after_step)
                groups.setdefault(g.key, g).quantities.append(q)
        self.groups = groups
        # the nested levels: before-step groups whose intervals divide each other
        self.levels: list[Group] = []
        for g in sorted(groups.values(), key=lambda g: -g.interval):
            if not nested or g.after or g.interval == 1:
                continue
            if not self.levels or self.levels[-1].interval % g.interval == 0:
                self.levels.append(g)
        self.conditional = [g for g in groups.values() if g not in self.levels]

    @property
    def period(self) -> int:
        """The modulus of ``phase`` (1 without nested levels)."""
        return self.levels[0].interval if self.levels else 1

    def __call__(self) -> Callable:
        trainer = self.trainer
        levels, conditional = self.levels, self.conditional

        def run(state: TrainState, batch, n_steps: int, phase: int, limit: jax.Array):
            """``n_steps`` steps from ``state``; steps at or after ``limit`` (a traced step
            count) change nothing: a replay of the chunk that stops early runs the same
            compiled program, so its state is bit-identical to the first pass's."""
            s0 = state.step
            sharding = trainer.sharding

            def points_of(st: TrainState) -> dict[str, Any]:
                """The points of ``st``, sharded along the devices' ``"points"`` axis."""
                return sharding.constrain_points(current_points(st, batch))
            buffers = {}
            for g in conditional:
                rows = math.ceil(n_steps / g.interval)
                buffers[g.key] = {q.name: jnp.zeros((rows,) + trainer._struct_of(q).shape,
                                                    trainer._struct_of(q).dtype)
                                  for q in g.quantities}

            def apply_updates(state: TrainState) -> TrainState:
                """The in-loop state updates due before this step (``s = k, 2k, ...``)."""
                for u in trainer.updates:
                    due = (state.step % u.interval == 0) & (state.step > 0)
                    value = jax.lax.cond(
                        due, lambda st, u=u: u.update(st, points_of(st)),
                        lambda st, u=u: st.extras[u.name], state)
                    state = state.replace(extras={**state.extras, u.name: value})
                return state

            def write_rows(g: Group, step, seen_state, points, bufs):
                k = g.interval
                first = (s0 + k - 1) // k * k

                def write(buf):
                    values = trainer._evaluate(g.quantities, seen_state, points)
                    row = (step - first) // k
                    return {name: buf[name].at[row].set(v) for name, v in values.items()}
                if k == 1:
                    return write(bufs)
                return jax.lax.cond(step % k == 0, write, lambda b: b, bufs)

            def step_body(carry, _):
                state, bufs = carry
                bufs = dict(bufs)
                step = state.step
                state = apply_updates(state)
                points = points_of(state)
                for g in conditional:
                    if not g.after:
                        bufs[g.key] = write_rows(g, step, state, points, bufs[g.key])
                new, out = trainer.training_step(state, trainer.minibatch(state, points))
                state, applied = keep_finite(state, new, out["loss"], step < limit)
                out = {**out, "applied": applied}
                for g in conditional:
                    if g.after:
                        bufs[g.key] = write_rows(g, step, state, points, bufs[g.key])
                return (state, bufs), out

            def single_step(carry):
                """One step as the body of a two-step loop whose second step is dropped: XLA
                inlines a one-trip loop, and the inlined step rounds differently in the last
                bit from the same step inside a loop (resume would not be bit-identical)."""
                def body(c, _):
                    c, out = step_body(c, None)
                    return c, (c, out)
                _, (carries, dense) = jax.lax.scan(body, carry, None, length=2)
                first = jax.tree.map(lambda x: x[0], carries)
                return first, jax.tree.map(lambda x: x[:1], dense), {}

            def segment(carry, n: int, phase: int, depth: int):
                """``n`` steps from a step ``s`` with ``s % period == phase``; returns the
                carry, the per-step outputs ``(n, ...)`` and the rows of the nested levels."""
                if depth == len(levels):
                    if n == 1:
                        return single_step(carry)
                    carry, dense = jax.lax.scan(step_body, carry, None, length=n)
                    return carry, dense, {}
                g = levels[depth]
                k = g.interval
                parts: list[tuple[Any, dict]] = []
                head = min((-phase) % k, n)
                if head:
                    carry, d, r = segment(carry, head, phase, depth + 1)
                    parts.append((d, r))
                blocks, tail = divmod(n - head, k)

                def block(carry, _):
                    row = trainer._evaluate(g.quantities, carry[0],
                                            points_of(carry[0]))
                    carry, d, r = segment(carry, k, 0, depth + 1)
                    return carry, (row, d, r)
                if blocks:
                    carry, (rows, d, r) = jax.lax.scan(block, carry, None, length=blocks)
                    parts.append((_flatten_blocks(d),
                                  {g.key: rows, **{key: _flatten_blocks(v)
                                                   for key, v in r.items()}}))
                if tail:
                    row = jax.tree.map(lambda x: x[None], trainer._evaluate(
                        g.quantities, carry[0], points_of(carry[0])))
                    carry, d, r = segment(carry, tail, 0, depth + 1)
                    parts.append((d, {g.key: row, **r}))
                dense = _concat([d for d, _ in parts])
                keys = dict.fromkeys(key for _, r in parts for key in r)
                return carry, dense, {key: _concat([r.get(key) for _, r in parts])
                                      for key in keys}

            (state, buffers), dense, nested = segment((state, buffers), n_steps, phase, 0)
            # replicated: every process reads the whole state and every record
            return sharding.constrain_replicated((state, {"dense": dense,
                                                          "sparse": {**nested, **buffers}}))

        return run
