"""The compiled chunk's layout, on a toy step: where periodic events land, in what order, and
which layout needs a ``lax.cond``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import InGraph, ResamplePoints, StateUpdate
from jno_flax.trainers import Trainer, TrainState
from jno_flax.trainers._chunk import ChunkProgram
from tests.conftest import TinyProblem, primitives


def _state():
    return TrainState(step=jnp.asarray(0, jnp.int32), params={}, opt_state={},
                      rng=jax.random.PRNGKey(0),
                      extras={"x": jnp.asarray(0.0), "drawn_at": jnp.asarray(-1.0)})


def _step(state, points):
    """Counts: ``x`` grows by one per step; the loss is the ``x`` the step saw."""
    x = state.extras["x"]
    return state.replace(step=state.step + 1, extras={**state.extras, "x": x + 1}), {"loss": x}


def _evaluate(quantities, state, points):
    return {q.name: q.fn(state) for q in quantities}


def _program(quantities, updates, nested):
    return ChunkProgram(_step, _evaluate, quantities, updates,
                        lambda q: jax.ShapeDtypeStruct((), jnp.float32), nested=nested)


def _drawn(every):
    """An update that records the step it ran at."""
    return StateUpdate("drawn_at", every, init=lambda: jnp.asarray(-1.0),
                       update=lambda st, pts: st.step.astype(jnp.float32))


def _run(program, state, n, limit=None):
    run = jax.jit(program(), static_argnums=(2, 3))
    s0 = int(state.step)
    return run(state, {}, n, s0 % program.period, np.int32(s0 + n if limit is None else limit))


QUANTITIES = [InGraph("x10", fn=lambda s: s.extras["x"], interval=10),
              InGraph("seen5", fn=lambda s: s.extras["drawn_at"], interval=5)]


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("chunks", [(40,), (13, 27), (1, 19, 20)])
def test_events_land_on_their_steps_in_any_layout_and_chunking(nested, chunks):
    program = _program(QUANTITIES, [_drawn(20)], nested)
    state, rows = _state(), {"x10": [], "seen5": []}
    for n in chunks:
        s0 = int(state.step)
        state, records = _run(program, state, n)
        np.testing.assert_array_equal(records["dense"]["loss"], np.arange(s0, s0 + n))
        for q in QUANTITIES:   # rows past a chunk's due steps are padding; none: absent
            group = program.groups[f"{q.interval}/before"]
            due = len(group.rows(s0, s0 + n))
            table = records["sparse"].get(group.key, {q.name: np.zeros(0)})
            rows[q.name].append(np.asarray(table[q.name])[:due])
    assert int(state.step) == 40 and float(state.extras["x"]) == 40
    # x10 at steps 0, 10, 20, 30 sees x = step
    np.testing.assert_array_equal(np.concatenate(rows["x10"]), [0, 10, 20, 30])
    # the update (every 20 steps, not at step 0) runs before the quantities of its step
    np.testing.assert_array_equal(np.concatenate(rows["seen5"]),
                                  [-1, -1, -1, -1, 20, 20, 20, 20])


def test_the_nested_layout_has_no_cond_when_intervals_divide():
    nested = _program(QUANTITIES, [_drawn(20)], nested=True)
    assert [g.interval for g in nested.levels] == [20, 10, 5] and nested.period == 20
    jaxpr = jax.make_jaxpr(nested(), static_argnums=(2, 3))(_state(), {}, 40, 0, np.int32(40))
    assert "cond" not in primitives(jaxpr.jaxpr)
    # an interval that does not divide the others falls back to the per-step cond
    odd = _program(QUANTITIES, [_drawn(7)], nested=True)
    assert [g.interval for g in odd.levels] == [10, 5]
    assert [g.interval for g in odd.conditional] == [7]
    jaxpr = jax.make_jaxpr(odd(), static_argnums=(2, 3))(_state(), {}, 40, 0, np.int32(40))
    assert "cond" in primitives(jaxpr.jaxpr)
    flat = _program(QUANTITIES, [_drawn(20)], nested=False)
    assert flat.levels == [] and flat.period == 1


def test_steps_past_the_limit_change_nothing():
    program = _program(QUANTITIES, [_drawn(20)], nested=True)
    full, _ = _run(program, _state(), 30)
    cut, _ = _run(program, _state(), 30, limit=23)
    assert int(cut.step) == 23 and float(cut.extras["x"]) == 23
    assert float(cut.extras["drawn_at"]) == 20 and float(full.extras["x"]) == 30


def test_a_tracker_and_resampling_on_the_accelerator_layout_compile_without_cond():
    tiny = TinyProblem()
    residual = tiny.u.laplacian(tiny.x, tiny.y) + 2 * jnp.pi ** 2 * tiny.u_exact
    crux = tiny.core(jnn.tracker(jnn.mean(tiny.x), interval=10, name="mean_x"))
    trainer = Trainer(max_steps=200, chunk_size=200, nested_intervals=True,
                      callbacks=[ResamplePoints(residual, every_n_train_steps=100,
                                                strategy="rad")],
                      enable_progress_bar=False, logger=False, enable_model_summary=False)
    h = trainer.fit(crux)
    _, program = trainer.chunks.latest()
    jaxpr = jax.make_jaxpr(program(), static_argnums=(2, 3))(
        crux.state, crux.registry.batch(), 200, 0, np.int32(200))
    assert "cond" not in primitives(jaxpr.jaxpr)
    mean_x = h.trackers["mean_x"].values   # the tracker sees the points of its step
    changed = np.flatnonzero(np.diff(mean_x)) + 1
    np.testing.assert_array_equal(h.trackers["mean_x"].steps[changed], [100])


def test_a_periodic_balancer_refresh_is_a_block_event_with_the_same_weights():
    weights = {}
    for nested in (True, False):
        tiny = TinyProblem()
        w = jno.adaptive.lr_annealing([tiny.pde, tiny.bc], period=10, alpha=0.5)
        crux = jno.core([w[0] * tiny.pde, w[1] * tiny.bc])
        trainer = Trainer(max_steps=30, chunk_size=30, nested_intervals=nested,
                          enable_progress_bar=False, logger=False, enable_model_summary=False)
        h = trainer.fit(crux)
        weights[nested] = h.trackers["weights/lr_annealing0/bc"].values
        _, program = trainer.chunks.latest()
        jaxpr = jax.make_jaxpr(program(), static_argnums=(2, 3))(
            crux.state, crux.registry.batch(), 30, 0, np.int32(30))
        assert ("cond" in primitives(jaxpr.jaxpr)) is not nested
    changes = np.flatnonzero(np.diff(weights[True])) + 1
    np.testing.assert_array_equal(changes, [10, 20])   # refreshed at 0, 10 and 20 only
    np.testing.assert_allclose(weights[True], weights[False], rtol=1e-5)
