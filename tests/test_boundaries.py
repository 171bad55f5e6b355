"""The boundary protocol from a user's callback: optimizer phases, a state entry that changes
shape at chunk boundaries, and the structure a checkpoint of a step is restored into."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jno_flax.callbacks import Callback, ModelCheckpoint, StateUpdate
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem

QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}


class Freeze(Callback):
    """From ``at`` on, the network trains with a zero learning rate: an optimizer phase of a
    user's callback (no SwitchOptimizer)."""

    def __init__(self, at):
        self.at = at

    def optimizer_phases(self, trainer, trained):
        return [(self.at, {"u": optax.sgd(0.0)})]


class Levels(Callback):
    """A curriculum-like entry ``levels`` that grows by one every 4 steps, at boundaries."""

    def state_updates(self, trainer, problem):
        return [StateUpdate("levels", 4, init=lambda: jnp.zeros((1,), jnp.float32))]

    def next_boundary(self, trainer, step):
        return (step // 4 + 1) * 4

    def size_at(self, step):
        return 1 + step // 4

    def enter_chunk(self, trainer, state, step):
        levels = state.extras["levels"]
        if levels.shape[0] == self.size_at(step):
            return state
        grown = jnp.arange(self.size_at(step), dtype=levels.dtype)
        return state.replace(extras={**state.extras, "levels": grown})

    def restore_target(self, trainer, target, step):
        size = self.size_at(max(step - 1, 0))
        return target.replace(extras={**target.extras, "levels": jax.ShapeDtypeStruct(
            (size,), target.extras["levels"].dtype)})


def _params(crux):
    return [np.asarray(x) for x in jax.tree.leaves(crux.state.params)]


def test_a_user_optimizer_phase_starts_a_chunk_and_a_fresh_state_there():
    tiny = TinyProblem()
    crux = tiny.core()
    trainer = Trainer(max_steps=5, chunk_size=100, callbacks=[Freeze(5)], **QUIET)
    trainer.fit(crux)
    at_five = _params(crux)
    trainer.max_steps = 12
    h = trainer.fit(crux)
    assert len(h.steps) == 12   # the optimizer state is sgd's, fresh at step 5
    assert (jax.tree.structure(crux.state.opt_state["u"])
            == jax.tree.structure(optax.sgd(0.0).init(crux.state.params["u"])))
    for a, b in zip(at_five, _params(crux)):
        np.testing.assert_array_equal(a, b)   # steps 5..11 trained with a zero rate
    assert trainer.transforms_at(4)["u"] is not trainer.transforms_at(5)["u"]
    with pytest.raises(ValueError, match=r"Wrong.optimizer_phases\(\) names \['v'\], which "
                                         r"are not trained trainables; trained: \['u'\]"):
        class Wrong(Freeze):
            def optimizer_phases(self, trainer, trained):
                return [(3, {"v": optax.sgd(0.0)})]
        Trainer(max_steps=5, callbacks=[Wrong(3)], **QUIET).fit(TinyProblem().core())


def test_an_entry_that_grows_at_boundaries_resumes_bit_identically(tmp_path):
    full = TinyProblem().core()
    Trainer(max_steps=14, chunk_size=100, callbacks=[Levels()], **QUIET).fit(full)
    np.testing.assert_array_equal(full.state.extras["levels"], np.arange(4))  # steps 12, 13

    part = TinyProblem().core()
    ck = ModelCheckpoint(tmp_path, every_n_train_steps=5, save_top_k=-1)
    Trainer(max_steps=10, chunk_size=100, callbacks=[Levels(), ck], **QUIET).fit(part)
    resumed = TinyProblem().core()
    Trainer(max_steps=14, chunk_size=100, callbacks=[Levels()], **QUIET).fit(
        resumed, ckpt_path=str(tmp_path / "5"))   # a checkpoint of step 5: two levels
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
