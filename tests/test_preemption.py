"""A SIGTERM at any step of a run with early stopping, an optimizer switch, a growing point
set and checkpoints: the resumed run ends bit-identical to the uninterrupted one."""

from __future__ import annotations

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jno_flax.callbacks import (Callback, EarlyStopping, ModelCheckpoint, ResamplePoints,
                                SwitchOptimizer)
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem

STEPS, CHUNK = 30, 4
QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}


class Preempt(Callback):
    """SIGTERM while the chunk that runs step ``at`` computes: it arrives before any other
    callback looks at that chunk (this callback's decision is asked first)."""

    def __init__(self, at: int):
        self.at, self.sent = at, False

    def stopping_step(self, trainer, chunk):
        if not self.sent and self.at in chunk.steps:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return None


def _run(ckpt_dir, *first, ckpt_path=None):
    t = TinyProblem()
    residual = t.u.laplacian(t.x, t.y) + 2 * jnp.pi**2 * t.u_exact
    crux = t.core()
    callbacks = [*first, EarlyStopping("loss", patience=3, min_delta=6.0),
                 SwitchOptimizer(9, optax.sgd(1e-3)),
                 ResamplePoints(residual, 7, strategy="rar-d", n_add=8),
                 ModelCheckpoint(ckpt_dir, every_n_train_steps=5, save_top_k=-1)]
    trainer = Trainer(max_steps=STEPS, chunk_size=CHUNK, callbacks=callbacks, **QUIET)
    return crux, trainer, trainer.fit(crux, ckpt_path=ckpt_path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    crux, trainer, history = _run(tmp_path_factory.mktemp("full") / "ck")
    stop = trainer.callbacks[[type(c) for c in trainer.callbacks].index(EarlyStopping)]
    assert stop.stopped_step is not None and 9 < stop.stopped_step < STEPS - 1  # a real stop
    return crux, history, stop.stopped_step


def _check_stop_at(step, uninterrupted, tmp_path):
    full, h_full, stopped = uninterrupted
    ck = tmp_path / "ck"
    with pytest.raises(SystemExit):
        _run(ck, Preempt(step))
    resumed, trainer, h = _run(ck, ckpt_path="last")
    assert trainer.ckpt_path is not None
    assert trainer.global_step == stopped + 1
    a, b = jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(h.steps, h_full.steps)
    np.testing.assert_array_equal(h.total_loss, h_full.total_loss)


@pytest.mark.parametrize("step", [6, "stop"])
def test_a_sigterm_then_resume_is_bit_identical(step, uninterrupted, tmp_path):
    """The chunk of a resample, and the chunk in which early stopping decides (its checks
    count though the signal came first); every step in the slow test below."""
    _check_stop_at(uninterrupted[2] if step == "stop" else step, uninterrupted, tmp_path)


@pytest.mark.slow  # every step: about a minute
def test_a_sigterm_at_every_step_then_resume_is_bit_identical(uninterrupted, tmp_path):
    for step in range(uninterrupted[2] + 1):
        _check_stop_at(step, uninterrupted, tmp_path / str(step))
