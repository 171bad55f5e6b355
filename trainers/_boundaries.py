"""The state at chunk boundaries: where a fit starts, what a chunk starts with, and what a
checkpoint of a step holds. Each is a function of the trainer's declarations (optimizer
phases, the callbacks' state entries and boundary protocol) and a step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from jno_flax.trainers import _protocol as protocol
from jno_flax.trainers._phases import owned
from jno_flax.trainers._precision import cast_floats
from jno_flax.trainers._state import TrainState

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


def initial_state(trainer: "Trainer", problem: "Problem", continue_run: bool) -> TrainState:
    """The state to start from: the live modules' weights (so edits of ``model.module``
    or ``problem.load_weights`` between fits count); when continuing, the step, RNG,
    balancer states and the optimizer states whose structure still fits from
    ``problem.state``; otherwise a fresh state at step 0. Every leaf is a distinct
    buffer: the state is donated to the compiled chunks, and the modules and
    ``problem.state`` stay usable (and consistent) if a chunk fails."""
    registry = problem.registry
    prev = owned(problem.state) if continue_run else None
    params = {registry.name(t): owned(t.params()) for t in registry.trainables}
    start = 0 if prev is None else int(prev.step)
    opt_state = trainer.phases.initial(params, start, None if prev is None else prev.opt_state)
    extras = owned({**registry.initial_extras(), **{u.name: u.init() for u in trainer.updates}})
    if prev is not None:
        return prev.replace(params=params, opt_state=opt_state,
                            extras={**extras, **prev.extras})
    return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=opt_state,
                      rng=jax.random.PRNGKey(trainer.seed), extras=extras)


def enter_chunk(trainer: "Trainer", state: TrainState, step: int) -> TrainState:
    """The state a chunk starting at ``step`` begins with: the optimizer states of a
    phase that starts there, then every callback's :meth:`Callback.enter_chunk` (``state``
    itself when nothing changes, so the loop need not copy it again)."""
    opt_state = trainer.phases.enter(state.params, state.opt_state, step)
    if opt_state is not state.opt_state:
        state = state.replace(opt_state=opt_state)
    for cb in trainer.callbacks:
        state = protocol.enter_chunk(cb, trainer, state, step)
    return state


def restore_target(trainer: "Trainer", step: int, precision: str | None) -> TrainState:
    """The structure of the state in a checkpoint of ``step`` written in ``precision``:
    the optimizer states of the step before it, the callbacks' entries
    (:meth:`Callback.restore_target`), the checkpoint's float dtypes."""
    state = trainer.state.replace(opt_state=trainer.phases.target(
        trainer.state.params, trainer.state.opt_state, trainer.global_step, step))
    for cb in trainer.callbacks:
        state = protocol.restore_target(cb, trainer, state, step)
    # several devices: orbax reads the state straight into its replicated layout
    return trainer.sharding.abstract(cast_floats(state, precision))
