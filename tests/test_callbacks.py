"""Callback hooks, their order and arguments, fused-chunk boundaries, stopping."""

from __future__ import annotations

import numpy as np
import pytest

import jno_flax.numpy as jnn
from jno_flax.callbacks import Callback, InGraph, StepMetrics
from jno_flax.trainers import Trainer, TrainState


class Recorder(Callback):
    def __init__(self, sync=None):
        self.events: list[tuple] = []
        self.steps: list[StepMetrics] = []
        self.sync = sync
        self.live_steps: list[int] = []

    def sync_every(self, trainer):
        return self.sync

    def setup(self, trainer, problem, stage):
        self.events.append(("setup", stage, trainer.state is None))

    def on_fit_start(self, trainer, problem):
        self.events.append(("on_fit_start", isinstance(trainer.state, TrainState)))

    def on_train_start(self, trainer, problem):
        self.events.append(("on_train_start", trainer.global_step))

    def on_train_batch_end(self, trainer, problem, metrics):
        assert isinstance(metrics, StepMetrics)
        if not self.steps or self.events[-1][0] != "batch":
            self.events.append(("batch",))
        self.steps.append(metrics)
        if metrics.last_in_chunk:
            self.live_steps.append(trainer.global_step)

    def on_train_end(self, trainer, problem):
        self.events.append(("on_train_end", trainer.global_step))

    def on_fit_end(self, trainer, problem):
        self.events.append(("on_fit_end",))

    def on_exception(self, trainer, problem, exception):
        self.events.append(("on_exception", type(exception).__name__))

    def teardown(self, trainer, problem, stage):
        self.events.append(("teardown", stage))


def test_hook_order_and_arguments(tiny):
    rec = Recorder()
    crux = tiny.core()
    Trainer(max_steps=25, callbacks=[rec], chunk_size=10, enable_progress_bar=False).fit(crux)
    assert rec.events == [("setup", "fit", True), ("on_fit_start", True),
                          ("on_train_start", 0), ("batch",), ("on_train_end", 25),
                          ("on_fit_end",), ("teardown", "fit")]
    assert [m.step for m in rec.steps] == list(range(25))
    assert set(rec.steps[0].losses) == {"pde", "bc"}
    np.testing.assert_allclose(rec.steps[3].loss, crux.history.total_loss[3])
    assert rec.live_steps == [10, 20, 25]  # chunk ends: live state after the chunk


def test_sync_every_places_chunk_boundaries(tiny):
    rec = Recorder(sync=7)
    Trainer(max_steps=30, callbacks=[rec], chunk_size=100,
            enable_progress_bar=False).fit(tiny.core())
    assert rec.live_steps == [7, 14, 21, 28, 30]


def test_exception_runs_on_exception_and_teardown(tiny):
    class Boom(Callback):
        def on_train_batch_end(self, trainer, problem, metrics):
            if metrics.step == 3:
                raise RuntimeError("boom")
    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(max_steps=10, callbacks=[Boom(), rec], enable_progress_bar=False).fit(tiny.core())
    assert rec.events[-2:] == [("on_exception", "RuntimeError"), ("teardown", "fit")]


def test_a_callback_stops_training_with_a_reason(tiny):
    class StopAt(Callback):
        def on_train_batch_end(self, trainer, problem, metrics):
            if metrics.step == 12:
                trainer.stop("enough at 12")
    crux = tiny.core()
    h = Trainer(max_steps=100, callbacks=[StopAt()], chunk_size=5,
                enable_progress_bar=False).fit(crux)
    assert crux.global_step == 15  # the chunk that made the decision completes
    assert h.stop_reason == "enough at 12"


def test_in_graph_function_quantities_before_and_after_the_step(tiny):
    class Steps(Callback):
        def in_graph(self, trainer, problem):
            return [InGraph("before", fn=lambda s: s.step, interval=3),
                    InGraph("after", fn=lambda s: s.step, interval=3, after_step=True)]
    crux = tiny.core()
    h = Trainer(max_steps=10, callbacks=[Steps()], chunk_size=4,
                enable_progress_bar=False).fit(crux)
    np.testing.assert_array_equal(h.trackers["before"].steps, [0, 3, 6, 9])
    np.testing.assert_array_equal(h.trackers["before"].values, [0, 3, 6, 9])
    np.testing.assert_array_equal(h.trackers["after"].values, [1, 4, 7, 10])


# ---------------------------------------------------------------------- bad input
def test_a_callback_must_be_a_callback():
    with pytest.raises(TypeError, match=r"`callbacks\[1\]` must be a jno_flax.callbacks.Callback"
                                        " instance, got function"):
        Trainer(max_steps=3, callbacks=[Callback(), lambda t: None])


def test_in_graph_definition_errors(tiny):
    with pytest.raises(ValueError, match="give exactly one of `expr` and `fn`"):
        InGraph("q")
    with pytest.raises(ValueError, match="`interval` must be a positive integer"):
        InGraph("q", expr=tiny.error, interval=0)


def test_duplicate_in_graph_names_are_an_error(tiny):
    class Dup(Callback):
        def in_graph(self, trainer, problem):
            return [InGraph("pde", expr=tiny.error)]
    with pytest.raises(ValueError, match="name 'pde' .* is already used"):
        Trainer(max_steps=3, callbacks=[Dup()], enable_progress_bar=False).fit(tiny.core())


def test_chunk_size_and_seed_validation():
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer or None"):
        Trainer(max_steps=3, chunk_size=0)
    with pytest.raises(TypeError, match="`seed` must be an integer"):
        Trainer(max_steps=3, seed="0")
    with pytest.raises(TypeError, match="`problem` must be a jno_flax.Problem"):
        Trainer(max_steps=3).fit(jnn.parameter((1,)))


def test_chunk_hook_gets_arrays_after_the_per_step_hooks(tiny):
    order = []

    class Both(Callback):
        def on_train_batch_end(self, trainer, problem, metrics):
            order.append(("step", metrics.step))

        def on_train_chunk_end(self, trainer, problem, chunk):
            order.append(("chunk", chunk.last_step))
            assert trainer.global_step == chunk.last_step + 1
            np.testing.assert_array_equal(chunk.loss, problem.history.total_loss[chunk.steps])
            at, vals = chunk.series("err")
            assert (at % 4 == 0).all() and len(at) == len(vals)

    crux = tiny.core(jnn.tracker(tiny.error, 4, name="err"))
    Trainer(max_steps=12, chunk_size=5, callbacks=[Both()], enable_progress_bar=False).fit(crux)
    chunk_ends = [e[1] for e in order if e[0] == "chunk"]
    assert chunk_ends[-1] == 11 and chunk_ends == sorted(chunk_ends) and len(chunk_ends) >= 3
    for end in chunk_ends:
        assert order.index(("chunk", end)) == order.index(("step", end)) + 1
