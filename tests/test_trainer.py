"""Trainer subclassing, History, and the fused loop's bookkeeping."""

from __future__ import annotations

import jax
import matplotlib
import numpy as np
import optax
import pytest

import jno_flax.numpy as jnn
from jno_flax.callbacks import Callback
from jno_flax.trainers import History, Trainer

matplotlib.use("Agg")


class Weighted(Trainer):
    def aggregate_loss(self, losses):
        return 3.0 * losses["pde"] + 0.5 * losses["bc"]


class Frozen(Trainer):
    def configure_optimizers(self, problem):
        return {name: optax.sgd(0.0) for name in super().configure_optimizers(problem)}


def test_aggregate_loss_override_takes_effect(tiny):
    h = Weighted(max_steps=5, enable_progress_bar=False).fit(tiny.core())
    np.testing.assert_allclose(h.total_loss, 3.0 * h.losses["pde"] + 0.5 * h.losses["bc"],
                               rtol=1e-6)


def test_configure_optimizers_override_takes_effect(tiny):
    before = [np.asarray(x) for x in jax.tree.leaves(tiny.net.params())]
    Frozen(max_steps=5, enable_progress_bar=False).fit(tiny.core())
    after = [np.asarray(x) for x in jax.tree.leaves(tiny.net.params())]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_training_step_override_takes_effect(tiny):
    class Counting(Trainer):
        def training_step(self, state, batch):
            state, out = super().training_step(state, batch)
            out["losses"] = {k: v * 0 + state.step for k, v in out["losses"].items()}
            return state, out
    h = Counting(max_steps=4, enable_progress_bar=False).fit(tiny.core())
    np.testing.assert_array_equal(h.losses["pde"], [1, 2, 3, 4])


def test_history_roundtrip_and_plot(tiny, tmp_path):
    crux = tiny.core(jnn.tracker(tiny.error, 3, name="err"))
    h = Trainer(max_steps=10, enable_progress_bar=False).fit(crux)
    d = h.to_dict()
    assert set(d) >= {"steps", "total_loss", "losses", "trackers", "wall_time"}
    h2 = History.from_dict(d)
    np.testing.assert_array_equal(h2.total_loss, h.total_loss)
    np.testing.assert_array_equal(h2.trackers["err"].steps, [0, 3, 6, 9])
    assert h.wall_time > 0
    fig = h.plot(str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert len(fig.axes) == 2


def test_fit_beyond_max_steps_runs_nothing(tiny):
    crux = tiny.core()
    t = Trainer(max_steps=5, enable_progress_bar=False)
    t.fit(crux)
    h = t.fit(crux)
    assert crux.global_step == 5 and len(h) == 5


def test_record_memory_bound_shortens_chunks(tiny):
    class ChunkEnds(Callback):
        ends: list[int] = []

        def on_train_batch_end(self, trainer, problem, metrics):
            if metrics.last_in_chunk:
                self.ends.append(metrics.step)
    crux = tiny.core(jnn.tracker(tiny.u, interval=1, name="field"))  # 256 bytes per step
    ends = ChunkEnds()
    t = Trainer(max_steps=20, chunk_size=20, max_record_bytes=64 * 4 * 4 + 100,
                callbacks=[ends], enable_progress_bar=False)
    h = t.fit(crux)
    assert len(h.trackers["field"]) == 20
    assert len(ends.ends) > 1  # the 20-step chunk was split to respect the bound


def test_progress_bar_runs(tiny, capsys):
    Trainer(max_steps=3, enable_progress_bar=True).fit(tiny.core())
    assert "3/3" in capsys.readouterr().err


def test_renamed_trainer_attributes_point_to_their_new_names():
    trainer = Trainer(max_steps=1, logger=False)
    with pytest.raises(AttributeError, match="`trainer.quantities` is now `trainer.trackers`"):
        trainer.quantities
    trainer.SIGTERM_EXIT_CODE = 3    # the earlier spelling still sets the exit status
    assert trainer.sigterm_exit_code == 3
    with pytest.raises(TypeError, match="`sigterm_exit_code` must be an int exit status"):
        Trainer(max_steps=1, logger=False, sigterm_exit_code="3")
