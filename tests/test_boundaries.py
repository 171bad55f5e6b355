"""The boundary protocol from a user's callback: optimizer phases, a state entry that changes
shape at chunk boundaries, and the structure a checkpoint of a step is restored into."""

from __future__ import annotations

import os

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


class Answers(Callback):
    """A callback whose boundary-protocol answers are given: a wrong one must be named."""

    def __init__(self, **answers):
        self.answers = answers

    def next_boundary(self, trainer, step):
        return self.answers.get("next_boundary", lambda s: None)(step)

    def enter_chunk(self, trainer, state, step):
        return self.answers["enter_chunk"] if "enter_chunk" in self.answers else state

    def restore_target(self, trainer, target, step):
        return self.answers["restore_target"] if "restore_target" in self.answers else target

    def stopping_step(self, trainer, chunk):
        return self.answers.get("stopping_step")

    def optimizer_phases(self, trainer, trained):
        return self.answers.get("optimizer_phases", ())


@pytest.mark.parametrize("answers, error, message", [
    ({"next_boundary": lambda s: s}, ValueError,
     r"Answers.next_boundary\(trainer, 0\) returned 0; expected None or an integer step "
     r"after 0"),
    ({"next_boundary": lambda s: "7"}, ValueError,
     r"next_boundary\(trainer, 0\) returned '7'; expected None or an integer step after 0"),
    ({"next_boundary": lambda s: 2.5}, ValueError,
     r"next_boundary\(trainer, 0\) returned 2.5; expected None or an integer"),
    ({"enter_chunk": None}, TypeError,
     r"Answers.enter_chunk\(trainer, state, 0\) returned None; expected a TrainState"),
    ({"stopping_step": -1}, ValueError,
     r"Answers.stopping_step\(trainer, chunk\) returned -1; expected None or a step of the "
     r"chunk, 0 to 3"),
    ({"optimizer_phases": 10}, TypeError,
     r"Answers.optimizer_phases\(trainer, trained\) returned 10; expected a list of "
     r"\(at_step, \{trainable name: optax transform\}\) pairs"),
    ({"optimizer_phases": [(0, {})]}, ValueError,
     r"optimizer_phases\(trainer, trained\) returned \[\(0, \{\}\)\]; .*each step a positive "
     r"integer"),
], ids=["boundary_at_step", "boundary_str", "boundary_float", "enter_none", "stop_negative",
        "phases_int", "phases_step_zero"])
def test_wrong_boundary_protocol_answers_name_the_callback(answers, error, message):
    trainer = Trainer(max_steps=8, chunk_size=4, callbacks=[Answers(**answers)], **QUIET)
    with pytest.raises(error, match=message):
        trainer.fit(TinyProblem().core())


def test_numpy_steps_are_steps_and_restore_target_is_checked(tmp_path):
    """A boundary as ``np.int64`` is a boundary (and the checkpoint there is written); a
    ``restore_target`` of ``None`` is named."""
    crux = TinyProblem().core()
    ck = ModelCheckpoint(tmp_path, every_n_train_steps=3, save_top_k=-1)
    nb = Answers(next_boundary=lambda s: np.int64(s // 3 * 3 + 3))
    Trainer(max_steps=7, chunk_size=100, callbacks=[nb, ck], **QUIET).fit(crux)
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [3, 6, 7]
    with pytest.raises(TypeError, match=r"Answers.restore_target\(trainer, target, 6\) "
                                        r"returned None; expected a TrainState"):
        Trainer(max_steps=9, callbacks=[Answers(restore_target=None)], **QUIET).fit(
            TinyProblem().core(), ckpt_path=str(tmp_path / "6"))


def test_a_phase_that_cannot_start_is_refused_before_any_step(tmp_path):
    from jno_flax.callbacks import SwitchOptimizer
    from jno_flax.optimizers import ssbroyden
    crux = TinyProblem().core()
    trainer = Trainer(max_steps=40, callbacks=[SwitchOptimizer(20, ssbroyden(max_params=50)),
                                               ModelCheckpoint(tmp_path)], **QUIET)
    with pytest.raises(ValueError, match=r"SwitchOptimizer: the transform of 'u' from step 20 "
                                         r"cannot start on its parameters \(checked before "
                                         r"training\): .*max_params=50"):
        trainer.fit(crux)
    assert trainer.global_step == 0 and crux.history is None


class Holding(Callback):
    def __init__(self, state):
        self.state = state

    @property
    def state_key(self):
        return "Holding[mine]"

    def state_dict(self):
        return self.state


@pytest.mark.parametrize("state, what", [({"a": np.zeros(2)}, "ndarray"),
                                         ({"s": {1, 2}}, "set")], ids=["ndarray", "set"])
def test_a_state_dict_json_cannot_write_is_refused_when_fit_starts(state, what, tmp_path):
    trainer = Trainer(max_steps=5, callbacks=[Holding(state), ModelCheckpoint(tmp_path)],
                      **QUIET)
    with pytest.raises(TypeError, match=rf"Holding.state_dict\(\) \(state key 'Holding\[mine\]'"
                                        rf"\) cannot be written to a checkpoint as JSON "
                                        rf"\(.*{what}.*\): return plain numbers"):
        trainer.fit(TinyProblem().core())
    assert trainer.global_step == 0
