"""Early stopping and stopping on non-finite losses, with their reasons."""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import EarlyStopping, TerminateOnNaN, early_stopping_decision
from jno_flax.trainers import Trainer


@pytest.mark.parametrize("mode, seq, stop_at", [
    ("min", [5, 4, 4, 4, 3], 3),     # patience 2: two checks without improvement
    ("max", [1, 2, 2.05, 1.9, 3], 3),
    ("min", [5, 4, 3, 2, 1], None),
], ids=["min", "max-with-delta", "improving"])
def test_decision_rule(mode, seq, stop_at):
    best, wait = (math.inf if mode == "min" else -math.inf), 0
    stopped = None
    for i, v in enumerate(seq):
        d = early_stopping_decision(v, best, wait, mode=mode, min_delta=0.1, patience=2)
        best, wait = d.best, d.wait
        if d.stop and stopped is None:
            stopped = i
    assert stopped == stop_at


def test_early_stopping_on_a_tracker(tiny):
    # a constant tracker never improves after its first value
    crux = tiny.core(jnn.tracker(tiny.error * 0.0 + 1.0, interval=10, name="flat"))
    es = EarlyStopping(monitor="flat", patience=3, mode="min")
    h = Trainer(max_steps=1000, callbacks=[es], chunk_size=50,
                enable_progress_bar=False).fit(crux)
    assert es.stopped_step == 30
    assert "EarlyStopping: `flat` did not improve for 3 checks" in h.stop_reason
    assert "step 30" in h.stop_reason
    assert crux.global_step == 31  # right after the step of the decision, as in Lightning
    assert len(h) == 31 and h.trackers["flat"].steps.tolist() == [0, 10, 20, 30]
    assert es.state_dict()["wait"] == 3


def test_early_stopping_on_the_loss_keeps_going_while_it_improves():
    dom = jno.domain.interval(0, 1, n_interior=8)
    (x,) = dom.variable("interior")
    a = jnn.parameter((1,), name="a").optimizer(optax.sgd(1e-2))
    crux = jno.core([(a - 1.0).mse])
    es = EarlyStopping(monitor="loss", patience=5, min_delta=0.0)
    h = Trainer(max_steps=200, callbacks=[es], enable_progress_bar=False).fit(crux)
    assert h.stop_reason is None and crux.global_step == 200


def test_terminate_on_nan_names_the_constraint_and_step():
    dom = jno.domain.interval(0, 1, n_interior=8)
    (x,) = dom.variable("interior")
    a = jnn.parameter((1,), init=1.0, name="a").optimizer(optax.sgd(0.5))
    # log(a) goes non-finite once a is pushed below 0 by the second term
    crux = jno.core([jnn.log(a).sum.name("logterm"), (a + 10.0).mse.name("pull")])
    h = Trainer(max_steps=50, callbacks=[TerminateOnNaN()], chunk_size=10,
                enable_progress_bar=False).fit(crux)
    bad = int(np.argmax(~np.isfinite(h.total_loss)))
    assert f"at step {bad}" in h.stop_reason
    assert "['logterm']" in h.stop_reason
    assert crux.global_step == bad + 1 == len(h)


def test_early_stopping_errors(tiny):
    with pytest.raises(ValueError, match="`mode` must be one of"):
        EarlyStopping(mode="lowest")
    with pytest.raises(ValueError, match="`patience` must be a positive integer"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match=r"`monitor` 'val' is not a logged quantity; available: "
                                          r"\['loss', 'pde', 'bc'\]"):
        Trainer(max_steps=2, callbacks=[EarlyStopping(monitor="val")],
                enable_progress_bar=False).fit(tiny.core())


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "no-overlap"])
def test_early_stopping_ends_at_the_step_it_reports_with_that_steps_state(tiny, tmp_path,
                                                                           overlap):
    """The stop comes mid-chunk (chunks of 40); the returned state, the History and the last
    checkpoint are those of the reported step: bit-identical to a run of exactly that many
    steps."""
    from jno_flax.callbacks import ModelCheckpoint
    from tests.conftest import TinyProblem
    crux = tiny.core(jnn.tracker(tiny.error, interval=3, name="err"))
    es = EarlyStopping(monitor="loss", stopping_threshold=30.0)
    ckpt = ModelCheckpoint(tmp_path / "ck", every_n_train_steps=1000)
    h = Trainer(max_steps=400, chunk_size=40, callbacks=[es, ckpt], logger=False,
                overlap_callbacks=overlap, enable_progress_bar=False).fit(crux)
    step = es.stopped_step
    assert step is not None and step % 40 not in (0, 39), "the set-up needs a mid-chunk stop"
    assert f"at step {step}." in h.stop_reason
    assert crux.global_step == step + 1 == len(h) and h.steps[-1] == step
    assert h.total_loss[-1] < 30.0 <= h.total_loss[-2]
    assert h.trackers["err"].steps[-1] <= step
    assert ckpt.last_model_path.endswith(f"/{step + 1}")
    t = TinyProblem()
    exact = t.core(jnn.tracker(t.error, interval=3, name="err"))
    ref = Trainer(max_steps=step + 1, chunk_size=40, logger=False,
                  enable_progress_bar=False).fit(exact)
    np.testing.assert_array_equal(ref.total_loss, h.total_loss)
    for a, b in zip(jax.tree.leaves(exact.state), jax.tree.leaves(crux.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
