"""Trackers: exact cadence, values from the step's parameters, never in the loss."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import TrackerCallback
from jno_flax.trainers import Trainer


def test_cadence_of_several_intervals_in_one_run(tiny):
    crux = tiny.core(jnn.tracker(tiny.error, 1, name="every"),
                     jnn.tracker(tiny.error, 7, name="seven"),
                     tiny.error.tracker(interval=100).name("hundred"))
    h = Trainer(max_steps=250, chunk_size=64, enable_progress_bar=False).fit(crux)
    np.testing.assert_array_equal(h.trackers["every"].steps, np.arange(250))
    np.testing.assert_array_equal(h.trackers["seven"].steps, np.arange(0, 250, 7))
    np.testing.assert_array_equal(h.trackers["hundred"].steps, [0, 100, 200])
    every = h.trackers["every"].values  # computed in the loss's forward pass, the others
    # in their own compiled branch: equal up to float32 rounding of a different fusion
    np.testing.assert_allclose(h.trackers["seven"].values, every[::7], rtol=1e-6)
    np.testing.assert_allclose(h.trackers["hundred"].values, every[::100], rtol=1e-6)


def test_tracker_value_uses_the_parameters_of_its_step(tiny):
    # the tracked bc loss at step s equals the bc constraint of step s
    crux = tiny.core(jnn.tracker(tiny.bc, interval=5, name="bc_again"))
    h = Trainer(max_steps=20, chunk_size=8, enable_progress_bar=False).fit(crux)
    np.testing.assert_allclose(h.trackers["bc_again"].values, h.losses["bc"][::5], rtol=1e-6)


def test_trackers_do_not_change_training(tiny):
    from tests.conftest import TinyProblem
    plain = TinyProblem()
    crux_plain = plain.core()
    Trainer(max_steps=40, chunk_size=16, enable_progress_bar=False).fit(crux_plain)
    other = TinyProblem()
    crux_tracked = other.core(jnn.tracker(other.error, 1), jnn.tracker(other.u.mse, 3),
                              jnn.tracker(other.u.grad(other.x, other.y), 10))
    Trainer(max_steps=40, chunk_size=16, enable_progress_bar=False).fit(crux_tracked)
    for a, b in zip(jax.tree.leaves(crux_plain.state.params),
                    jax.tree.leaves(crux_tracked.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(crux_plain.history.total_loss, crux_tracked.history.total_loss)


def test_array_valued_tracker(tiny):
    crux = tiny.core(jnn.tracker(tiny.u, interval=4, name="field"))
    h = Trainer(max_steps=9, enable_progress_bar=False).fit(crux)
    s = h.trackers["field"]
    assert s.values.shape == (3, 1, 64, 1)
    np.testing.assert_array_equal(s.steps, [0, 4, 8])


def test_tracker_callback_directly(tiny):
    cb = TrackerCallback([jnn.tracker(tiny.error, 2, name="err")])
    h = Trainer(max_steps=6, callbacks=[cb], enable_progress_bar=False).fit(tiny.core())
    np.testing.assert_array_equal(h.trackers["err"].steps, [0, 2, 4])


def test_second_solve_continues_the_history(tiny):
    crux = tiny.core(jnn.tracker(tiny.error, 10, name="err"))
    crux.solve(25, enable_progress_bar=False)
    h = crux.solve(25, enable_progress_bar=False)
    np.testing.assert_array_equal(h.steps, np.arange(50))
    np.testing.assert_array_equal(h.trackers["err"].steps, [0, 10, 20, 30, 40])


@pytest.mark.parametrize("interval", [0, -1, 1.5, "7", None], ids=repr)
def test_tracker_interval_must_be_a_positive_integer(tiny, interval):
    with pytest.raises(ValueError, match="`interval` must be a positive integer"):
        jnn.tracker(tiny.error, interval=interval)


def test_tracker_of_a_non_expression_is_an_error():
    with pytest.raises(TypeError, match="`expr` of a tracker must be an expression"):
        jno.tracker(3.0)
