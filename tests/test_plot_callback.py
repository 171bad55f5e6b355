"""PlotCallback: figures from live weights to PNG files and TensorBoard."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jno_flax.callbacks import PlotCallback, TensorBoardLogger
from jno_flax.trainers import Trainer

matplotlib.use("Agg")


def test_figures_see_live_weights_and_reach_png_and_tensorboard(tiny, tmp_path):
    import matplotlib.pyplot as plt
    seen = []

    def plot(trainer, problem):
        u = np.asarray(problem.eval(tiny.u))[0, :, 0]
        seen.append((trainer.global_step, u))
        fig, ax = plt.subplots()
        ax.plot(u)
        return fig

    cb = PlotCallback(plot, every_n_steps=4, dirpath=tmp_path / "png", name="u")
    crux = tiny.core()
    Trainer(max_steps=10, chunk_size=100, enable_progress_bar=False,
            logger=TensorBoardLogger(tmp_path / "tb"), callbacks=[cb]).fit(crux)
    assert [s for s, _ in seen] == [4, 8, 10]
    assert [p.split("/")[-1] for p in cb.written] == ["u_00000004.png", "u_00000008.png",
                                                      "u_00000010.png"]
    assert all((tmp_path / "png" / f"u_{s:08d}.png").stat().st_size > 1000 for s in (4, 8, 10))
    assert not np.array_equal(seen[0][1], seen[1][1])           # the weights moved between plots
    np.testing.assert_array_equal(seen[-1][1], np.asarray(crux.eval(tiny.u))[0, :, 0])
    acc = EventAccumulator(str(tmp_path / "tb" / "default" / "version_0"),
                           size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("u")] == [3, 7, 9]


def test_plot_callback_errors():
    with pytest.raises(TypeError, match="`fn` must be callable"):
        PlotCallback("plot")
    with pytest.raises(ValueError, match="`every_n_steps` must be a positive integer"):
        PlotCallback(lambda t, p: None, every_n_steps=0)
