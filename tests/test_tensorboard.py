"""TensorBoard event files written by TensorBoardLogger, read back with tensorboard."""

from __future__ import annotations

import numpy as np
import optax
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import jno_flax.numpy as jnn
from jno_flax.callbacks import LearningRateMonitor, TensorBoardLogger
from jno_flax.trainers import Trainer


def _read(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_scalars_trackers_histograms_and_lr_read_back(tiny, tmp_path):
    sched = optax.linear_schedule(1e-2, 1e-3, transition_steps=40)
    tiny.net.optimizer(optax.inject_hyperparams(optax.adam)(learning_rate=sched))
    crux = tiny.core(jnn.tracker(tiny.error, 10, name="val_error"),
                     jnn.tracker(tiny.u, 20, name="u_field"))
    logger = TensorBoardLogger(tmp_path, log_every_n_steps=10, histogram_every_n_steps=20)
    h = Trainer(max_steps=40, logger=logger, callbacks=[LearningRateMonitor(logging_interval=10)],
                enable_progress_bar=False).fit(crux)
    assert logger.log_dir == str(tmp_path / "default" / "version_0")
    acc = _read(logger.log_dir)
    tags = acc.Tags()
    assert {"loss", "losses/pde", "losses/bc", "val_error", "lr/u"} <= set(tags["scalars"])
    assert "u_field" in tags["histograms"]
    assert any(t.startswith("params/u/") for t in tags["histograms"])
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [9, 19, 29, 39]
    # by default the logged value is the step's own: the curve equals the History there
    np.testing.assert_allclose([e.value for e in loss], h.total_loss[[9, 19, 29, 39]],
                               rtol=1e-6)
    pde = acc.Scalars("losses/pde")
    np.testing.assert_allclose(pde[0].value, h.losses["pde"][9], rtol=1e-6)
    val = acc.Scalars("val_error")
    assert [e.step for e in val] == [0, 10, 20, 30]
    np.testing.assert_allclose([e.value for e in val], h.trackers["val_error"].values, rtol=1e-6)
    lr = acc.Scalars("lr/u")
    assert [e.step for e in lr] == [0, 10, 20, 30]
    np.testing.assert_allclose([e.value for e in lr], [sched(s) for s in (0, 10, 20, 30)],
                               rtol=1e-6)
    np.testing.assert_allclose(h.trackers["lr/u"].values, [sched(s) for s in (0, 10, 20, 30)],
                               rtol=1e-6)


def test_lr_monitor_across_a_switch_to_a_transform_without_a_rate(tiny):
    """Before the switch the injected rate, after it NaN (L-BFGS-like transforms have none)."""
    from jno_flax.callbacks import SwitchOptimizer
    tiny.net.optimizer(optax.inject_hyperparams(optax.adam)(learning_rate=0.02))
    h = Trainer(max_steps=20, logger=False, enable_progress_bar=False,
                callbacks=[LearningRateMonitor(logging_interval=5),
                           SwitchOptimizer(10, optax.rmsprop(1e-3))]).fit(tiny.core())
    np.testing.assert_array_equal(h.trackers["lr/u"].steps, [0, 5, 10, 15])
    np.testing.assert_allclose(h.trackers["lr/u"].values[:2], 0.02)
    assert np.isnan(h.trackers["lr/u"].values[2:]).all()


def test_mean_aggregation(tiny, tmp_path):
    logger = TensorBoardLogger(tmp_path, log_every_n_steps=5, aggregation="mean")
    h = Trainer(max_steps=10, logger=logger, enable_progress_bar=False).fit(tiny.core())
    loss = _read(logger.log_dir).Scalars("loss")
    np.testing.assert_allclose([e.value for e in loss], h.total_loss.reshape(2, 5).mean(axis=1),
                               rtol=1e-5)


def test_logger_and_lr_monitor_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="`aggregation` must be one of"):
        TensorBoardLogger(tmp_path, aggregation="median")
    with pytest.raises(ValueError, match="`figure_fn` and `figure_every_n_steps` go together"):
        TensorBoardLogger(tmp_path, figure_every_n_steps=10)
    with pytest.raises(ValueError, match=r"cannot read the learning rate of \['u'\].*"
                                          "inject_hyperparams"):
        Trainer(max_steps=2, callbacks=[LearningRateMonitor()],
                enable_progress_bar=False).fit(tiny.core())


def test_figures_and_hparams_are_written(tiny, tmp_path):
    import matplotlib.pyplot as plt

    def figure(trainer, problem):
        fig, ax = plt.subplots()
        ax.plot(problem.history.total_loss)
        return fig

    logger = TensorBoardLogger(tmp_path, figure_fn=figure, figure_every_n_steps=5,
                               hparams={"lr": 1e-2})
    Trainer(max_steps=10, logger=logger, enable_progress_bar=False).fit(tiny.core())
    acc = _read(logger.log_dir)
    assert [e.step for e in acc.Images("figure")] == [4, 9]
    plugins = acc.PluginTagToContent("hparams")
    assert plugins  # the hparams session summaries were written


def test_default_logger_writes_under_the_trainers_root(tiny, tmp_path):
    trainer = Trainer(max_steps=3, default_root_dir=str(tmp_path / "root"),
                      enable_progress_bar=False)
    trainer.fit(tiny.core())
    assert isinstance(trainer.logger, TensorBoardLogger) and trainer.loggers == [trainer.logger]
    assert list((tmp_path / "root" / "default" / "version_0").glob("events.out.tfevents.*"))


def test_two_periods_that_do_not_divide_each_other_both_get_their_steps(tiny, tmp_path):
    import matplotlib.pyplot as plt

    def figure(trainer, problem):
        fig, ax = plt.subplots()
        ax.plot(problem.history.total_loss)
        return fig

    logger = TensorBoardLogger(tmp_path, histogram_every_n_steps=3, figure_fn=figure,
                               figure_every_n_steps=2)
    assert logger.sync_every(None) == 1
    assert [logger.next_boundary(None, s) for s in (0, 2, 3, 4)] == [2, 3, 4, 6]
    Trainer(max_steps=6, logger=logger, enable_progress_bar=False,
            enable_checkpointing=False).fit(tiny.core())
    acc = _read(logger.log_dir)
    tag = next(t for t in acc.Tags()["histograms"] if t.startswith("params/u/"))
    assert [e.step for e in acc.Histograms(tag)] == [2, 5]
    assert [e.step for e in acc.Images("figure")] == [1, 3, 5]
