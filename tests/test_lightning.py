"""A Lightning user's habits: checkpoints on by default in the run's folder, the Trainer
attributes they reach for, a clear word for arguments we do not take, one seed, loss names."""

from __future__ import annotations

import csv
import os

import jax
import numpy as np
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_plain_script_leaves_a_last_checkpoint_that_a_new_trainer_resumes():
    """No ModelCheckpoint given: the last checkpoint of the fit lands in the run's version
    folder; the same script started again with ``ckpt_path="last"`` continues that run, in
    that folder, exactly as an uninterrupted run."""
    first = Trainer(max_steps=30, callbacks=[EarlyStopping(patience=10_000)], **QUIET)
    first.fit(TinyProblem().core())
    folder = os.path.join("runs", "default", "version_0", "checkpoints")
    assert sorted(os.listdir(folder)) == ["30"]
    assert first.checkpoint_callback.last_model_path == os.path.abspath(
        os.path.join(folder, "30"))
    crux = TinyProblem().core()
    again = Trainer(max_steps=50, **QUIET)
    h = again.fit(crux, ckpt_path="last")
    assert crux.global_step == 50 and len(h) == 50
    assert again.ckpt_path == os.path.abspath(os.path.join(folder, "30"))
    assert sorted(os.listdir(folder)) == ["50"]            # the same run, the same folder
    assert sorted(os.listdir(os.path.join("runs", "default"))) == ["version_0"]
    full = TinyProblem().core()
    Trainer(max_steps=50, logger=False, enable_checkpointing=False, **QUIET).fit(full)
    _same(full.state.params, crux.state.params)
    # a new run (no ckpt_path) gets a version folder of its own
    Trainer(max_steps=5, **QUIET).fit(TinyProblem().core())
    assert os.listdir(os.path.join("runs", "default", "version_1", "checkpoints")) == ["5"]


def test_without_a_logger_every_run_checkpoints_in_its_own_folder():
    for _ in range(2):
        Trainer(max_steps=5, logger=False, **QUIET).fit(TinyProblem().core())
    root = os.path.join("runs", "checkpoints")
    assert sorted(os.listdir(root)) == ["version_0", "version_1"]
    crux = TinyProblem().core()
    Trainer(max_steps=8, logger=False, **QUIET).fit(crux, ckpt_path="last")
    assert crux.global_step == 8 and os.listdir(os.path.join(root, "version_1")) == ["8"]
    Trainer(max_steps=3, logger=False, enable_checkpointing=False, **QUIET).fit(crux)
    assert sorted(os.listdir(root)) == ["version_0", "version_1"]


def test_trainer_attributes_as_in_lightning(tiny, tmp_path):
    crux = tiny.core(jnn.tracker(tiny.error, 5, name="err"))
    es = EarlyStopping(monitor="err", patience=1000)
    ckpt = ModelCheckpoint(tmp_path / "ck", monitor="err", every_n_train_steps=10)
    logger = CSVLogger(tmp_path / "logs", log_every_n_steps=4)
    trainer = Trainer(max_steps=20, callbacks=[es, ckpt], logger=logger, **QUIET)
    h = trainer.fit(crux)
    assert trainer.checkpoint_callback is ckpt and trainer.checkpoint_callbacks == [ckpt]
    assert trainer.early_stopping_callback is es and trainer.early_stopping_callbacks == [es]
    assert trainer.checkpoint_callback.best_model_path.startswith(str(tmp_path / "ck"))
    metrics = trainer.callback_metrics
    assert metrics["loss"] == pytest.approx(float(h.total_loss[-1]))
    assert metrics["pde"] == pytest.approx(float(h.losses["pde"][-1]))
    assert metrics["err"] == pytest.approx(float(h.trackers["err"].values[-1]))
    # the logger writes each step's own value: the CSV equals the History where it logged
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    for row in rows:
        step = int(row["step"])
        assert float(row["loss"]) == pytest.approx(float(h.total_loss[step]), rel=1e-6)
    assert [int(r["step"]) for r in rows] == [3, 7, 11, 15, 19]
    assert trainer.logged_metrics["loss"] == pytest.approx(float(h.total_loss[19]))
    # predict: Lightning's entry point for evaluation on new points
    xs = np.linspace(0, 1, 7)[:, None]
    out = trainer.predict(crux, tiny.u, inputs={tiny.x: xs, tiny.y: xs})
    np.testing.assert_array_equal(out, crux.eval(tiny.u, inputs={tiny.x: xs, tiny.y: xs}))
    assert out.shape == (1, 7, 1)
    with pytest.raises(ValueError, match="`exprs` must be an expression"):
        trainer.predict(crux)


def test_save_checkpoint_writes_what_fit_resumes(tiny, tmp_path):
    crux = tiny.core()
    trainer = Trainer(max_steps=12, logger=False, enable_checkpointing=False, **QUIET)
    with pytest.raises(RuntimeError, match="`save_checkpoint` needs a trained state"):
        trainer.save_checkpoint(tmp_path / "early")
    trainer.fit(crux)
    path = trainer.save_checkpoint(tmp_path / "manual")
    assert path == str(tmp_path / "manual")
    with pytest.raises(FileExistsError, match=r"`filepath` '.*manual' exists"):
        trainer.save_checkpoint(tmp_path / "manual")
    again = TinyProblem().core()
    Trainer(max_steps=20, logger=False, enable_checkpointing=False, **QUIET).fit(
        again, ckpt_path=path)
    full = TinyProblem().core()
    Trainer(max_steps=20, logger=False, enable_checkpointing=False, **QUIET).fit(full)
    _same(full.state, again.state)


@pytest.mark.parametrize("kwargs, hint", [
    ({"gradient_clip_val": 1.0}, r"clip in the optimizer: `net.optimizer\(optax.chain\("),
    ({"max_epochs": 3}, r"there are no epochs .*: use `max_steps`"),
    ({"accumulate_grad_batches": 4}, r"`optax.MultiSteps`"),
    ({"fast_dev_run": True}, r"`Trainer\(max_steps=1, logger=False, enable_checkpointing"),
    ({"accelerator": "gpu"}, r"JAX picks the platform"),
    ({"val_check_interval": 100}, r"`jnn.tracker\(expr, interval=k\)`"),
    ({"min_epochs": 2}, r"there are no epochs: use `max_steps`"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_lightning_arguments_we_do_not_take_say_what_to_use(kwargs, hint):
    name = next(iter(kwargs))
    with pytest.raises(TypeError, match=rf"Trainer does not take Lightning's `{name}` "
                                        rf"\({name}=.*\): .*{hint}"):
        Trainer(max_steps=5, **kwargs)
    with pytest.raises(TypeError, match=r"unexpected keyword argument `max_step`; accepted: "
                                        r"\['batch_size', .*'max_steps'"):
        Trainer(max_steps=5, max_step=3)


def test_seed_everything_seeds_points_weights_and_the_trainer():
    def build():
        dom = jno.domain.rect((0, 1), (0, 1), n_interior=16, n_boundary=8)
        net = jno.nn.MLP(2, 1, hidden=4, depth=1)
        return dom.points("interior"), jax.tree.leaves(jax.tree.map(
            np.asarray, __import__("flax").nnx.state(net)))
    try:
        assert jno.seed_everything(7) == 7
        a = build(), Trainer(max_steps=1).seed
        jno.seed_everything(7)
        b = build(), Trainer(max_steps=1).seed
        jno.seed_everything(8)
        c = build(), Trainer(max_steps=1).seed
    finally:
        jno.seed_everything(0)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    _same(a[0][1], b[0][1])
    assert a[1] == b[1] == 7 and c[1] == 8
    assert not np.array_equal(a[0][0], c[0][0])
    assert Trainer(max_steps=1, seed=3).seed == 3


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64], ids=["negative", "2**32", "2**64"])
def test_seeds_outside_lightnings_range_are_refused(seed):
    with pytest.raises(ValueError, match=rf"`seed` must be an integer from 0 to 4294967295 "
                                         rf"\(2\*\*32 - 1\), got {seed}"):
        jno.seed_everything(seed)
    with pytest.raises(ValueError, match=r"`seed` must be an integer from 0 to 4294967295"):
        Trainer(max_steps=1, seed=seed)
    with pytest.raises(ValueError, match=r"`seed` must be an integer from 0 to 4294967295"):
        jno.domain.rect((0, 1), (0, 1), n_interior=4, n_boundary=4, seed=seed)
    assert jno.seed_everything(2**32 - 1) == 2**32 - 1 and jno.seed_everything(0) == 0


def test_loggers_import_as_in_lightning():
    from jno_flax.loggers import CSVLogger as Csv
    from jno_flax.loggers import TensorBoardLogger
    assert Csv is CSVLogger and TensorBoardLogger.__module__.startswith("jno_flax.callbacks")


def test_weighted_terms_are_named_after_their_loss_and_keep_their_order(tmp_path):
    t = TinyProblem()
    pde = (t.u.laplacian(t.x, t.y) + 2 * np.pi**2 * t.u_exact).mse
    bc = t.net(t.xb, t.yb).mse
    w_pde, w_bc = jno.adaptive.relobralo([pde.name("pde"), bc.name("bc")])
    # built anew, unnamed: the weight knows which loss it balances
    crux = jno.core([w_pde * (t.u.laplacian(t.x, t.y) + 2 * np.pi**2 * t.u_exact).mse,
                     w_bc * t.net(t.xb, t.yb).mse, 2.0 * t.u.mean.name("mean")])
    assert list(crux.constraints) == ["pde", "bc", "mean"]
    ck = ModelCheckpoint(tmp_path, every_n_train_steps=5)
    Trainer(max_steps=5, callbacks=[ck], logger=False, **QUIET).fit(crux)
    t2 = TinyProblem()
    w2 = jno.adaptive.relobralo([(t2.u.laplacian(t2.x, t2.y) + 2 * np.pi**2 * t2.u_exact)
                                 .mse.name("pde"), t2.net(t2.xb, t2.yb).mse.name("bc")])
    again = jno.core([w2[0] * w2.losses[0], w2[1] * w2.losses[1],
                      2.0 * t2.u.mean.name("mean")])
    h = Trainer(max_steps=8, callbacks=[ModelCheckpoint(tmp_path)], logger=False,
                **QUIET).fit(again, ckpt_path="last")
    assert list(h.losses) == ["pde", "bc", "mean"]
    assert list(h.trackers)[:2] == ["weights/relobralo0/pde", "weights/relobralo0/bc"]


def test_warnings_point_at_the_users_line():
    with pytest.warns(UserWarning, match=r"`ckpt_path='last'`: no checkpoint in .* yet") as rec:
        Trainer(max_steps=2, logger=False, **QUIET).fit(TinyProblem().core(),
                                                        ckpt_path="last")
    assert [w.filename for w in rec] == [__file__]
