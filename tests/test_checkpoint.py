"""Orbax checkpoints: exact resume, preemption, retention, corruption, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import Callback, ModelCheckpoint, TensorBoardLogger
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem

SCRIPT = Path(__file__).parent / "scripts" / "resume_run.py"


def _problem():
    t = TinyProblem()
    w = jno.adaptive.relobralo([t.pde, t.bc], expected_rho=0.5)
    return t, jno.core([w[0] * t.pde, w[1] * t.bc, jnn.tracker(t.error, 7, name="err")])


def _fit(crux, steps, *callbacks, ckpt_path=None, chunk=16, logger=False):
    return Trainer(max_steps=steps, chunk_size=chunk, callbacks=list(callbacks), logger=logger,
                   enable_progress_bar=False).fit(crux, ckpt_path=ckpt_path)


def _same_state(a, b):
    la, lb = jax.tree.leaves(a.state), jax.tree.leaves(b.state)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_bit_identical_in_process(tmp_path):
    _, full = _problem()
    h_full = _fit(full, 50)
    _, part = _problem()
    _fit(part, 23, ModelCheckpoint(tmp_path, every_n_train_steps=10, save_top_k=-1))
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [10, 20, 23]
    _, resumed = _problem()
    h = _fit(resumed, 50, ModelCheckpoint(tmp_path, every_n_train_steps=10), ckpt_path="last")
    _same_state(full, resumed)
    np.testing.assert_array_equal(h.steps, np.arange(50))
    np.testing.assert_array_equal(h.total_loss, h_full.total_loss)
    np.testing.assert_array_equal(h.trackers["err"].values, h_full.trackers["err"].values)
    np.testing.assert_array_equal(h.trackers["weights/relobralo0/pde"].values,
                                  h_full.trackers["weights/relobralo0/pde"].values)


def _child(mode, ckpt, out):
    return subprocess.run([sys.executable, str(SCRIPT), mode, str(ckpt), str(out)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # 45 s; SIGTERM in a child process is also covered by test_checkpoint_faults
def test_sigterm_mid_chunk_then_resume_in_a_new_process_is_bit_identical(tmp_path):
    full = _child("full", tmp_path / "ck_full", tmp_path / "full.npz")
    assert full.returncode == 0, full.stderr
    stopped = _child("sigterm", tmp_path / "ck", tmp_path / "unused.npz")
    assert stopped.returncode == 0, stopped.stderr
    assert "SIGTERM received: saved checkpoint" in stopped.stderr
    assert "finished" not in stopped.stdout          # exited right after saving
    saved = sorted(int(d) for d in os.listdir(tmp_path / "ck") if d.isdigit())
    assert saved and saved[-1] % 4000 == 0 and 4000 <= saved[-1] < 12_000  # a chunk end
    resumed = _child("resume", tmp_path / "ck", tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert set(a.files) == set(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _kept(path):
    return sorted(int(d) for d in os.listdir(path) if d.isdigit())


@pytest.mark.slow   # long: run with `-m slow`
def test_save_top_k_keeps_the_newest_besides_the_best(tmp_path):
    _, crux = _problem()
    _fit(crux, 50, ModelCheckpoint(tmp_path / "keep", every_n_train_steps=10, save_top_k=2))
    assert _kept(tmp_path / "keep") == [40, 50]
    _, crux = _problem()
    cb = ModelCheckpoint(tmp_path / "best", every_n_train_steps=7, save_top_k=1, monitor="err",
                         mode="max", save_last=False)
    h = _fit(crux, 50, cb)
    err = h.trackers["err"]
    # saved after steps 7, 14, ..., 49 with the latest err value recorded by then (at 6, ..., 49)
    scores = {s: err.values[err.steps < s][-1] for s in range(7, 50, 7)}
    best_step = max(scores, key=scores.get)
    assert _kept(tmp_path / "best") == sorted({best_step, 49})
    assert cb.best_model_path == str(tmp_path / "best" / str(best_step))
    assert cb.best_model_score == pytest.approx(float(scores[best_step]))
    assert cb.last_model_path == str(tmp_path / "best" / "49")


def test_corrupted_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    _, crux = _problem()
    _fit(crux, 30, ModelCheckpoint(tmp_path, every_n_train_steps=10, save_top_k=-1))
    newest = tmp_path / "30"
    for f in (newest / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncate the data
    os.remove(newest / "history" / "history") if (newest / "history" / "history").exists() \
        else None
    _, again = _problem()
    with pytest.warns(RuntimeWarning, match=r"checkpoint '.*/30' is damaged or incomplete.*"
                                            r"falling back to '.*/20'"):
        h = _fit(again, 30, ModelCheckpoint(tmp_path, every_n_train_steps=10), ckpt_path="last")
    np.testing.assert_array_equal(h.steps, np.arange(30))  # resumed from 20, trained to 30


def test_tensorboard_after_resume_has_each_step_once(tmp_path):
    logs, ck = tmp_path / "tb", tmp_path / "ck"
    _, crux = _problem()
    _fit(crux, 23, ModelCheckpoint(ck, every_n_train_steps=10, save_last=False),
         logger=TensorBoardLogger(logs, log_every_n_steps=5))
    _, again = _problem()
    resumed = TensorBoardLogger(logs, log_every_n_steps=5)
    _fit(again, 40, ModelCheckpoint(ck, every_n_train_steps=10), logger=resumed,
         ckpt_path="last")
    assert resumed.version == 0 and sorted(os.listdir(logs / "default")) == ["version_0"]
    acc = EventAccumulator(resumed.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [4, 9, 14, 19, 24, 29, 34, 39]
    assert [e.step for e in acc.Scalars("err")] == list(range(0, 40, 7))


def test_load_weights_for_evaluation(tmp_path):
    t, crux = _problem()
    _fit(crux, 20, ModelCheckpoint(tmp_path / "ck", every_n_train_steps=10))
    crux.save_weights(tmp_path / "w")
    trained = np.asarray(crux.eval(t.u))
    for source in (tmp_path / "w", tmp_path / "ck", tmp_path / "ck" / "20"):
        t2, fresh = _problem()
        assert not np.array_equal(np.asarray(fresh.eval(t2.u)), trained)
        fresh.load_weights(source)
        np.testing.assert_array_equal(np.asarray(fresh.eval(t2.u)), trained)


# ---------------------------------------------------------------------- bad input
def test_missing_ckpt_path_is_an_error_listing_existing_ones(tmp_path):
    _, crux = _problem()
    _fit(crux, 10, ModelCheckpoint(tmp_path, every_n_train_steps=5, save_top_k=-1))
    _, again = _problem()
    with pytest.raises(FileNotFoundError, match=r"`ckpt_path` '.*/77' is not a checkpoint; "
                                                r"existing checkpoints: \['.*/5', '.*/10'\]"):
        _fit(again, 20, ModelCheckpoint(tmp_path), ckpt_path=str(tmp_path / "77"))
    with pytest.raises(ValueError, match="needs a ModelCheckpoint callback"):
        Trainer(max_steps=20, logger=False, enable_progress_bar=False,
                enable_checkpointing=False).fit(again, ckpt_path="last")


def test_resuming_into_a_different_problem_is_an_error(tmp_path):
    _, crux = _problem()
    _fit(crux, 10, ModelCheckpoint(tmp_path, every_n_train_steps=5))
    t = TinyProblem()
    other = jno.core([t.pde, t.bc])
    with pytest.raises(ValueError, match=r"does not match this problem; nothing was restored.*"
                                         r"trackers: checkpoint \['err'\] vs problem \[\]"):
        _fit(other, 20, ModelCheckpoint(tmp_path), ckpt_path="last")
    assert other.global_step == 0  # nothing was restored
    import optax
    from flax import nnx
    bigger = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=9, depth=2, rngs=nnx.Rngs(0)), name="u")
    bigger.optimizer(optax.adam(1e-3))
    u = bigger(t.x, t.y)
    w = jno.adaptive.relobralo([u.mse.name("pde"), bigger(t.xb, t.yb).mse.name("bc")])
    wrong = jno.core([w[0] * w.losses[0], w[1] * w.losses[1], jnn.tracker(u.mean, 7, name="err")])
    with pytest.raises(ValueError, match=r"u/layers/0/bias: checkpoint \[8\] float32 vs problem "
                                         r"\[9\] float32"):
        _fit(wrong, 20, ModelCheckpoint(tmp_path), ckpt_path="last")


def test_checkpoint_argument_errors(tmp_path, tiny):
    with pytest.raises(ValueError, match=r"`every_n_train_steps` must be a positive integer "
                                         r"\(steps\) or None, got 0"):
        ModelCheckpoint(tmp_path, every_n_train_steps=0)
    with pytest.raises(ValueError, match=r"`save_top_k` must be -1 \(keep all\) or >= 0, got -2"):
        ModelCheckpoint(tmp_path, save_top_k=-2)
    with pytest.raises(ValueError, match=r"`filename` must be a plain prefix"):
        ModelCheckpoint(tmp_path, filename="{step}-{loss:.2f}")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        ModelCheckpoint(tmp_path, mode="best")
    with pytest.raises(ValueError, match=r"`monitor` 'val' is not a logged quantity; available: "
                                         r"\['loss', 'pde', 'bc'\]"):
        _fit(tiny.core(), 5, ModelCheckpoint(tmp_path, monitor="val"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"`dirpath` '.*a_file/ck' cannot be created"):
        _fit(tiny.core(), 5, ModelCheckpoint(blocker / "ck"))


class _Extra(Callback):
    """Adds an entry to every checkpoint and records what a resume hands back."""

    def __init__(self):
        self.loaded = None

    def on_save_checkpoint(self, trainer, problem, checkpoint):
        checkpoint["notes"] = {"saved_at": trainer.global_step}

    def on_load_checkpoint(self, trainer, problem, checkpoint):
        self.loaded = checkpoint


def test_default_dirpath_filename_prefix_and_on_save_checkpoint_entries(tmp_path):
    t1, crux = _problem()
    root = tmp_path / "root"
    Trainer(max_steps=12, default_root_dir=str(root), enable_progress_bar=False,
            callbacks=[ModelCheckpoint(filename="ckpt", every_n_train_steps=6), _Extra()]
            ).fit(crux)
    # as in Lightning: the run's version folder of the default TensorBoard logger
    assert sorted(os.listdir(root / "default" / "version_0" / "checkpoints")) == ["ckpt_12"]
    _, again = _problem()
    extra = _Extra()
    Trainer(max_steps=12, default_root_dir=str(root), enable_progress_bar=False,
            callbacks=[ModelCheckpoint(filename="ckpt"), extra]).fit(again, ckpt_path="last")
    assert again.global_step == 12
    assert extra.loaded["notes"] == {"saved_at": 12}
    assert extra.loaded["metadata"]["step"] == 12
    _same_state(crux, again)
    t3, fresh = _problem()
    fresh.load_weights(root / "default" / "version_0" / "checkpoints")  # newest ckpt_<step>
    np.testing.assert_array_equal(np.asarray(fresh.eval(t3.u)), np.asarray(crux.eval(t1.u)))
