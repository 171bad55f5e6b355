"""The compiled chunk: ``n`` fused steps and the in-graph quantities recorded on their steps.

Layout. Trackers at interval ``k > 1`` are recorded on the steps ``s`` with ``s % k == 0``.
Rather than asking at every step whether a quantity is due (a ``lax.cond`` whose predicate a
GPU reads back to the host every step), the scan is nested so that every quantity is evaluated
at the start of its own block, with no predicate at all::

    chunk  = head + scan over blocks of k1 steps + tail
    block  = [quantities of interval k1] + scan over blocks of k2 steps   (k2 divides k1)
    ...    = [quantities of interval km] + scan of km plain steps

In-loop state updates (:class:`StateUpdate`: resampled points) are periodic events of the
same kind: an update of interval ``k`` runs at the start of the blocks of ``k`` steps, before
the quantities of that block (so a quantity at step ``s`` sees the points that step ``s``
trains on). Only one training step is traced whatever the nesting (the head and the tail add
traces only when a chunk does not start or end on a block boundary). Intervals that do not
divide the larger ones, and functions of the state after the step (``after_step``), use the
per-step ``lax.cond`` form, where updates also run first.

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

from jno_flax.callbacks._callback import InGraph, StateUpdate
from jno_flax.trainers._state import TrainState, all_finite, current_points

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers._devices import PointSharding

Step = Callable[[TrainState, dict], tuple[TrainState, dict]]
Evaluate = Callable[[list[InGraph], TrainState, dict], dict]


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
    """Trackers sharing an interval and a timing (before or after the step), and the
    in-loop state updates of that interval (before-step groups only; run first)."""

    def __init__(self, interval: int, after: bool):
        self.interval, self.after = interval, after
        self.trackers: list[InGraph] = []
        self.updates: list[StateUpdate] = []

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
    """Builds ``run(state, batch, n_steps, phase, limit)``: ``n_steps`` fused steps from
    ``state`` with the periodic in-graph events placed on their steps.

    Args:
        step: ``(state, points) -> (state, outputs)``, one training step (``outputs`` holds at
            least ``"loss"``; the step counter is advanced by it).
        evaluate: ``(quantities, state, points) -> {name: value}``, the quantities' values.
        quantities: the quantities recorded in the chunk's ``"sparse"`` records (those not
            computed by ``step`` itself).
        updates: the in-loop state updates.
        struct: ``quantity -> jax.ShapeDtypeStruct`` of its value.
        sharding: places the points and the result (``None``: one device).
        nested: use the nested layout for the intervals that allow it.

    ``phase`` is the start step modulo the longest nested interval (static, like ``n_steps``),
    so a chunk knows where its blocks start without reading the step counter.
    """

    def __init__(self, step: Step, evaluate: Evaluate, quantities: list[InGraph],
                 updates: list[StateUpdate], struct: Callable[[InGraph], Any],
                 sharding: "PointSharding | None" = None, nested: bool = False):
        self.step, self.evaluate, self.struct, self.sharding = step, evaluate, struct, sharding
        groups: dict[str, Group] = {}
        for q in quantities:
            g = Group(q.interval, q.after_step)
            groups.setdefault(g.key, g).trackers.append(q)
        for u in updates:
            g = Group(u.interval, False)
            groups.setdefault(g.key, g).updates.append(u)
        #: every group by key (``"<interval>/before"``, ``"<interval>/after"``)
        self.groups = groups
        #: the nested levels: before-step groups whose intervals divide each other
        self.levels: list[Group] = []
        for g in sorted(groups.values(), key=lambda g: -g.interval):
            if not nested or g.after or g.interval == 1:
                continue
            if not self.levels or self.levels[-1].interval % g.interval == 0:
                self.levels.append(g)
        #: the groups evaluated through a per-step ``lax.cond``
        self.conditional = [g for g in groups.values() if g not in self.levels]

    @property
    def period(self) -> int:
        """The modulus of ``phase`` (1 without nested levels)."""
        return self.levels[0].interval if self.levels else 1

    def recorded(self) -> list[Group]:
        """The groups that have quantities (rows in the records)."""
        return [g for g in self.groups.values() if g.trackers]

    def __call__(self) -> Callable:
        def run(state: TrainState, batch, n_steps: int, phase: int, limit: jax.Array):
            """``n_steps`` steps from ``state``; steps at or after ``limit`` (a traced step
            count) change nothing: a replay of the chunk that stops early runs the same
            compiled program, so its state is bit-identical to the first pass's."""
            body = _Body(self, state.step, batch, limit)
            buffers = {g.key: {q.name: jnp.zeros((math.ceil(n_steps / g.interval),)
                                                  + self.struct(q).shape, self.struct(q).dtype)
                               for q in g.trackers}
                       for g in self.conditional if g.trackers}
            (state, buffers), dense, nested = body.segment((state, buffers), n_steps, phase, 0)
            out = (state, {"dense": dense, "sparse": {**nested, **buffers}})
            # replicated: every process reads the whole state and every record
            return out if self.sharding is None else self.sharding.constrain_replicated(out)
        return run


def _apply(updates: list[StateUpdate], state: TrainState, points: dict) -> TrainState:
    """``state`` with the ``updates`` applied (each is due: ``state.step`` is a multiple of its
    interval), except at step 0, which trains on the initial entries unless an update is
    ``from_step_zero``."""
    extras = dict(state.extras)
    for u in updates:
        new = u.update(state, points)
        if not u.from_step_zero:
            new = jax.tree.map(lambda a, b: jnp.where(state.step > 0, a, b), new,
                               state.extras[u.name])
        extras[u.name] = new
    return state.replace(extras=extras)


class _Body:
    """The traced pieces of one chunk (``run`` builds one per trace)."""

    def __init__(self, program: ChunkProgram, s0, batch, limit):
        self.p, self.s0, self.batch, self.limit = program, s0, batch, limit

    def points(self, state: TrainState) -> dict[str, Any]:
        """The points of ``state``, sharded along the devices' ``"points"`` axis."""
        points = current_points(state, self.batch)
        return points if self.p.sharding is None else self.p.sharding.constrain_points(points)

    def conditional_updates(self, state: TrainState) -> TrainState:
        """The per-step form of the conditional groups' updates."""
        for g in self.p.conditional:
            if g.updates:
                due = state.step % g.interval == 0
                state = jax.lax.cond(due, lambda st, g=g: _apply(g.updates, st, self.points(st)),
                                     lambda st: st, state)
        return state

    def write_rows(self, g: Group, step, seen_state, points, bufs):
        k = g.interval
        first = (self.s0 + k - 1) // k * k

        def write(buf):
            values = self.p.evaluate(g.trackers, seen_state, points)
            row = (step - first) // k
            return {name: buf[name].at[row].set(v) for name, v in values.items()}
        if k == 1:
            return write(bufs)
        return jax.lax.cond(step % k == 0, write, lambda b: b, bufs)

    def step_body(self, carry, _):
        state, bufs = carry
        bufs = dict(bufs)
        step = state.step
        state = self.conditional_updates(state)
        points = self.points(state)
        recorded = [g for g in self.p.conditional if g.trackers]
        for g in recorded:
            if not g.after:
                bufs[g.key] = self.write_rows(g, step, state, points, bufs[g.key])
        new, out = self.p.step(state, points)
        state, applied = keep_finite(state, new, out["loss"], step < self.limit)
        out = {**out, "applied": applied}
        for g in recorded:
            if g.after:
                bufs[g.key] = self.write_rows(g, step, state, points, bufs[g.key])
        return (state, bufs), out

    def single_step(self, carry):
        """One step as the body of a two-step loop whose second step is dropped: XLA inlines a
        one-trip loop, and the inlined step rounds differently in the last bit from the same
        step inside a loop (resume would not be bit-identical)."""
        def body(c, _):
            c, out = self.step_body(c, None)
            return c, (c, out)
        _, (carries, dense) = jax.lax.scan(body, carry, None, length=2)
        first = jax.tree.map(lambda x: x[0], carries)
        return first, jax.tree.map(lambda x: x[:1], dense), {}

    def block_start(self, g: Group, carry):
        """The events of level ``g`` at the start of one of its blocks: updates, then the
        quantities' row (``None`` without quantities)."""
        state, bufs = carry
        if g.updates:
            state = _apply(g.updates, state, self.points(state))
        row = self.p.evaluate(g.trackers, state, self.points(state)) if g.trackers else None
        return (state, bufs), row

    def segment(self, carry, n: int, phase: int, depth: int):
        """``n`` steps from a step ``s`` with ``s % period == phase``; returns the carry, the
        per-step outputs ``(n, ...)`` and the rows of the nested levels."""
        levels = self.p.levels
        if depth == len(levels):
            if n == 1:
                return self.single_step(carry)
            carry, dense = jax.lax.scan(self.step_body, carry, None, length=n)
            return carry, dense, {}
        g = levels[depth]
        k = g.interval
        parts: list[tuple[Any, dict]] = []
        head = min((-phase) % k, n)
        if head:
            carry, d, r = self.segment(carry, head, phase, depth + 1)
            parts.append((d, r))
        blocks, tail = divmod(n - head, k)

        def block(carry, _):
            carry, row = self.block_start(g, carry)
            carry, d, r = self.segment(carry, k, 0, depth + 1)
            return carry, (row, d, r)
        if blocks:
            carry, (rows, d, r) = jax.lax.scan(block, carry, None, length=blocks)
            own = {} if rows is None else {g.key: rows}
            parts.append((_flatten_blocks(d),
                          {**own, **{key: _flatten_blocks(v) for key, v in r.items()}}))
        if tail:
            carry, row = self.block_start(g, carry)
            own = {} if row is None else {g.key: jax.tree.map(lambda x: x[None], row)}
            carry, d, r = self.segment(carry, tail, 0, depth + 1)
            parts.append((d, {**own, **r}))
        dense = _concat([d for d, _ in parts])
        keys = dict.fromkeys(key for _, r in parts for key in r)
        return carry, dense, {key: _concat([r.get(key) for _, r in parts]) for key in keys}
