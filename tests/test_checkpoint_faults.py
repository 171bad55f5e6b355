"""Checkpoints under faults: a process killed while saving, NaN steps, retention with a monitor,
requeue on an empty directory, a changed optimizer, signals and interrupted fits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import Callback, ModelCheckpoint, TerminateOnNaN
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem

SCRIPT = Path(__file__).parent / "scripts" / "fault_run.py"


def _child(mode, ckpt, out):
    return subprocess.run([sys.executable, str(SCRIPT), mode, str(ckpt), str(out)],
                          capture_output=True, text=True, timeout=300)


def _steps(path) -> list[int]:
    return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # 35 s; in-process corruption fallback: test_checkpoint.py
def test_sigkill_during_an_async_save_falls_back_and_resumes_bit_identically(tmp_path):
    full = _child("full", tmp_path / "ck_full", tmp_path / "full.npz")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _child("sigkill", tmp_path / "ck", tmp_path / "unused.npz")
    assert killed.returncode == -signal.SIGKILL
    complete = ModelCheckpoint(tmp_path / "ck").all_steps()
    assert complete[0] == 1000 and complete[-1] in (1000, 2000)  # 2000 only if it finished
    resumed = _child("resume", tmp_path / "ck", tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert set(a.files) == set(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _blowup_problem():
    """The tiny problem plus a parameter ``a`` (sgd 0.1, starting at 0.55) in a term whose value
    is NaN once ``a < 0``: step ``s`` sees ``a = 0.55 - 0.1 s``, so step 6 is the first NaN."""
    t = TinyProblem()
    a = jno.np.parameter((), init=0.55, name="a").optimizer(optax.sgd(0.1))
    blowup = (a + jnn.sqrt(a).stop_gradient).name("blowup")
    return jno.core([t.pde, t.bc, blowup])


def test_a_non_finite_step_is_recorded_but_never_applied_or_saved(tmp_path):
    before = _blowup_problem()
    Trainer(max_steps=6, enable_progress_bar=False).fit(before)   # steps 0..5
    crux = _blowup_problem()
    stop = TerminateOnNaN()
    ckpt = ModelCheckpoint(tmp_path, every_n_train_steps=4, save_top_k=-1)
    h = Trainer(max_steps=50, chunk_size=8, callbacks=[ckpt, stop],
                enable_progress_bar=False).fit(crux)
    assert stop.bad_step == 6
    assert h.stop_reason.startswith("TerminateOnNaN: non-finite loss nan at step 6; "
                                    "non-finite constraint(s): ['blowup']")
    assert np.all(np.isfinite(h.total_loss[:6])) and np.isnan(h.total_loss[6])
    # the state after the NaN steps is the state before step 6 (only the counter advanced)
    for part in ("params", "opt_state", "extras", "rng"):
        _leaves_equal(getattr(crux.state, part), getattr(before.state, part))
    assert int(crux.state.step) == 7 == len(h)   # stopped right after step 6
    # every checkpoint is finite; the last one holds exactly that state
    assert _steps(tmp_path) == [4, 7]
    again = _blowup_problem()
    Trainer(max_steps=7, callbacks=[ModelCheckpoint(tmp_path)],
            enable_progress_bar=False).fit(again, ckpt_path="last")
    _leaves_equal(again.state.params, before.state.params)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(again.state.params))


def test_save_top_k_with_a_monitor_resumes_last_from_the_newest_and_best_from_the_best(tmp_path):
    t = TinyProblem()
    crux = t.core(jnn.tracker(t.error, 5, name="err"))
    cb = ModelCheckpoint(tmp_path, monitor="err", save_top_k=1, every_n_train_steps=10)
    h = Trainer(max_steps=60, callbacks=[cb], enable_progress_bar=False).fit(crux)
    err = h.trackers["err"]
    scores = {s: float(err.values[err.steps < s][-1]) for s in range(10, 61, 10)}  # 6 saves
    best = min(scores, key=scores.get)
    assert _steps(tmp_path) == sorted({best, 60})
    assert cb.best_model_path == str(tmp_path / str(best)) and cb.last_model_path.endswith("60")
    for which, step in (("last", 60), ("best", best)):
        t2 = TinyProblem()
        again = t2.core(jnn.tracker(t2.error, 5, name="err"))
        trainer = Trainer(max_steps=step, enable_progress_bar=False,
                          callbacks=[ModelCheckpoint(tmp_path, monitor="err")])
        trainer.fit(again, ckpt_path=which)
        assert again.global_step == step, which
        assert len(again.history) == step


def test_a_resumed_run_with_a_tracker_monitor_saves_at_once(tmp_path):
    t = TinyProblem()
    Trainer(max_steps=20, enable_progress_bar=False, callbacks=[
        ModelCheckpoint(tmp_path, monitor="err", every_n_train_steps=10)]).fit(
        t.core(jnn.tracker(t.error, 25, name="err")))
    t2 = TinyProblem()
    cb = ModelCheckpoint(tmp_path, monitor="err", every_n_train_steps=10)
    Trainer(max_steps=30, enable_progress_bar=False, callbacks=[cb]).fit(
        t2.core(jnn.tracker(t2.error, 25, name="err")), ckpt_path="last")
    assert cb.last_model_path.endswith("30")   # err (recorded at 0 only) came from the state


def test_last_on_an_empty_directory_warns_and_starts_fresh(tmp_path):
    crux = TinyProblem().core()
    with pytest.warns(UserWarning, match=r"`ckpt_path='last'`: no checkpoint in '.*empty' yet; "
                                         r"training starts from step 0"):
        h = Trainer(max_steps=5, enable_progress_bar=False,
                    callbacks=[ModelCheckpoint(tmp_path / "empty")]).fit(crux, ckpt_path="last")
    np.testing.assert_array_equal(h.steps, np.arange(5))
    assert _steps(tmp_path / "empty") == [5]


def test_a_changed_optimizer_is_a_mismatch_not_damage(tmp_path):
    t = TinyProblem()
    Trainer(max_steps=5, enable_progress_bar=False,
            callbacks=[ModelCheckpoint(tmp_path)]).fit(t.core())
    t2 = TinyProblem()
    t2.net.optimizer(optax.sgd(1e-2))
    crux = t2.core()
    with pytest.raises(ValueError, match=r"does not match this problem; nothing was restored\. "
                                         r"Differences: \[\"optimizer state of 'u': checkpoint "
                                         r"\(ScaleByAdamState, EmptyState\) vs problem "
                                         r"\(EmptyState, EmptyState\) \(another optax "
                                         r"transform\?\)\"\]"):
        Trainer(max_steps=10, enable_progress_bar=False,
                callbacks=[ModelCheckpoint(tmp_path)]).fit(crux, ckpt_path="last")
    assert crux.global_step == 0


@pytest.mark.slow   # long: run with `-m slow`
def test_two_checkpoint_callbacks_do_not_swallow_a_later_sigterm(tmp_path):
    run = _child("two_checkpoints", tmp_path / "ck", tmp_path / "out.npz")
    assert "finished 3000" in run.stdout
    assert "SIGTERM was swallowed" not in run.stdout
    assert run.returncode == -signal.SIGTERM


@pytest.mark.slow   # long: run with `-m slow`
def test_ctrl_c_saves_then_raises_keyboard_interrupt(tmp_path):
    run = _child("sigint", tmp_path / "ck", tmp_path / "out.npz")
    assert run.returncode == 3, run.stderr[-2000:]   # the script caught KeyboardInterrupt
    line = next(s for s in run.stdout.splitlines() if s.startswith("interrupted"))
    step = int(line.split()[2].rstrip(";"))
    assert step % 500 == 0 and step >= 1500            # after the running chunk
    assert f"saved [1000, {step}]" in line and f"history {step}" in line
    assert "SIGINT received: saved checkpoint" in run.stderr


class _Boom(Callback):
    def on_train_chunk_end(self, trainer, problem, chunk):
        if chunk.last_step + 1 == 20:
            raise RuntimeError("boom")


def test_an_interrupted_fit_leaves_modules_state_and_history_consistent():
    t = TinyProblem()
    crux = t.core()
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(max_steps=50, chunk_size=10, callbacks=[_Boom()],
                enable_progress_bar=False).fit(crux)
    assert crux.global_step == 20 and len(crux.history) == 20
    _leaves_equal(t.net.params(), crux.state.params["u"])
    h = crux.solve(5, enable_progress_bar=False)            # continues where it stopped
    np.testing.assert_array_equal(h.steps, np.arange(25))


def test_skipped_non_finite_steps_are_reported_and_recorded(tmp_path):
    crux = _blowup_problem()
    with pytest.warns(RuntimeWarning, match=r"4 step\(s\) of this fit had a non-finite loss or "
                                            r"update and were not applied \(first: step 6\)"):
        h = Trainer(max_steps=10, chunk_size=4, enable_progress_bar=False,
                    callbacks=[ModelCheckpoint(tmp_path, every_n_train_steps=4,
                                               save_top_k=-1)]).fit(crux)
    np.testing.assert_array_equal(h.skipped_steps, [6, 7, 8, 9])
    again = _blowup_problem()   # the record survives a resume
    h2 = Trainer(max_steps=8, enable_progress_bar=False, callbacks=[ModelCheckpoint(
        tmp_path)]).fit(again, ckpt_path=str(tmp_path / "8"))
    np.testing.assert_array_equal(h2.skipped_steps, [6, 7])


def test_resuming_with_max_steps_below_the_checkpoint_warns(tmp_path):
    Trainer(max_steps=20, enable_progress_bar=False,
            callbacks=[ModelCheckpoint(tmp_path)]).fit(TinyProblem().core())
    crux = TinyProblem().core()
    with pytest.warns(UserWarning, match=r"`max_steps` is 10, below the step 20 of the "
                                         r"checkpoint '.*/20': nothing is trained"):
        h = Trainer(max_steps=10, enable_progress_bar=False,
                    callbacks=[ModelCheckpoint(tmp_path)]).fit(crux, ckpt_path="last")
    assert crux.global_step == 20 and len(h) == 20
