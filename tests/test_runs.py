"""Lightning's run semantics: a new Trainer starts a new run; max_time; EarlyStopping rules;
model summary; progress bar; host work overlapping device work; interval quantities."""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta

import jax
import numpy as np
import pytest

import jno_flax.numpy as jnn
from jno_flax.callbacks import (Callback, EarlyStopping, ModelCheckpoint, ModelSummary,
                                ProgressBar, Timer)
from jno_flax.callbacks._timer import parse_max_time
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem, primitives


def _trainer(steps, **kw):
    kw.setdefault("enable_progress_bar", False)
    kw.setdefault("enable_model_summary", False)
    kw.setdefault("logger", False)
    return Trainer(max_steps=steps, **kw)


def _adam_count(crux):
    counts = [int(x) for x in jax.tree.leaves(crux.state.opt_state["u"])
              if np.ndim(x) == 0 and np.issubdtype(np.asarray(x).dtype, np.integer)]
    assert counts, "adam keeps a step count"
    return counts[0]


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------- new run vs continue
def test_a_new_trainer_starts_a_new_run_from_the_trained_weights(tiny):
    crux = tiny.core()
    first = _trainer(5)
    first.fit(crux)
    trained = jax.tree.map(np.asarray, crux.state.params)
    loss_at_trained = sum(float(v) for v in crux.eval([tiny.pde, tiny.bc]))
    h = _trainer(3).fit(crux)
    assert crux.global_step == 3 and list(h.steps) == [0, 1, 2] and _adam_count(crux) == 3
    np.testing.assert_allclose(h.total_loss[0], loss_at_trained, rtol=1e-5)
    assert not np.array_equal(np.asarray(jax.tree.leaves(crux.state.params)[0]),
                              jax.tree.leaves(trained)[0])
    # the same trainer again continues the problem's run
    first.max_steps = 6
    h2 = first.fit(crux)
    assert crux.global_step == 6 and len(h2) == 6 and _adam_count(crux) == 6
    # solve always continues: n more steps, optimizer states kept
    h3 = crux.solve(4, enable_progress_bar=False, logger=False, enable_model_summary=False)
    assert crux.global_step == 10 and len(h3) == 10 and _adam_count(crux) == 10


# ---------------------------------------------------------------------- max_time
def test_max_time_stops_at_a_chunk_boundary_and_the_checkpoint_saves(tiny, tmp_path):
    ck = ModelCheckpoint(tmp_path / "ck")
    trainer = _trainer(10**7, max_time=0.3, chunk_size=20, callbacks=[ck])
    h = trainer.fit(tiny.core())
    assert 0 < trainer.global_step < 10**7 and trainer.global_step % 20 == 0
    assert "Timer: max_time 0:00:00.300000 reached" in h.stop_reason
    assert ck.last_model_path.endswith(str(trainer.global_step))
    assert trainer.timer.state_dict()["time_elapsed"] >= 0.3


@pytest.mark.parametrize("value, seconds", [
    (timedelta(minutes=2), 120), (90, 90), (1.5, 1.5), ("01:02:03:04", 93784),
    ({"hours": 1, "minutes": 30}, 5400)])
def test_max_time_formats(value, seconds):
    assert parse_max_time("max_time", value).total_seconds() == seconds


def test_max_time_errors():
    with pytest.raises(ValueError, match=r"`max_time` \{'hours': 'x'\}: the values "
                                         r"\{'hours': 'x'\} are not finite numbers"):
        Trainer(max_steps=2, max_time={"hours": "x"})
    with pytest.raises(ValueError, match=r"`max_time` must be a finite number of seconds, "
                                         r"got nan"):
        Trainer(max_steps=2, max_time=float("nan"))
    with pytest.raises(ValueError, match=r"`max_time` 1e\+30 is too long for a timedelta"):
        Trainer(max_steps=2, max_time=1e30)
    with pytest.raises(ValueError, match=r"`max_time` '1h' is not in the format "
                                         r"\"DD:HH:MM:SS\"; accepted: a datetime.timedelta"):
        Trainer(max_steps=2, max_time="1h")
    with pytest.raises(ValueError, match="`max_time` must be a positive duration, got -5"):
        Trainer(max_steps=2, max_time=-5)
    with pytest.raises(TypeError, match=r"`max_time` must be a datetime.timedelta.*got list"):
        Trainer(max_steps=2, max_time=[1])
    with pytest.raises(ValueError, match=r"`max_time` \{'hour': 1\} has keys \['hour'\] that "
                                         r"timedelta does not take; accepted keys: \['weeks'"):
        Trainer(max_steps=2, max_time={"hour": 1})
    with pytest.raises(ValueError, match="`duration` must be a positive duration"):
        Timer(0)


# ---------------------------------------------------------------------- EarlyStopping
@pytest.mark.parametrize("kwargs, reason, step", [
    ({"stopping_threshold": 1e9, "start_step": 7},
     "`loss` stopping_threshold reached: .* < 1e\\+09 at step 7", 7),
    ({"divergence_threshold": 1e-9, "start_step": 3},
     "`loss` divergence_threshold passed: .* > 1e-09 at step 3", 3),
])
def test_early_stopping_thresholds_and_warm_up(tiny, kwargs, reason, step):
    es = EarlyStopping(**kwargs)
    h = _trainer(40, chunk_size=10, callbacks=[es]).fit(tiny.core())
    assert es.stopped_step == step and len(h) == step + 1   # right after the decision
    assert h.stop_reason.startswith("EarlyStopping: ")
    assert re.search(reason, h.stop_reason), h.stop_reason


def test_early_stopping_check_finite(tiny):
    bad = jnn.tracker(jnn.mean(jnn.log(-jnn.abs(tiny.u) - 1.0)), 2, name="bad")
    es = EarlyStopping(monitor="bad", patience=100, start_step=4)
    h = _trainer(20, chunk_size=5, callbacks=[es]).fit(tiny.core(bad))
    assert es.stopped_step == 4 and "`bad` the value is nan (not finite) at step 4" in h.stop_reason
    lenient = EarlyStopping(monitor="bad", patience=100, check_finite=False)
    h = _trainer(20, chunk_size=5, callbacks=[lenient]).fit(tiny.core(bad))
    assert h.stop_reason is None and len(h) == 20


def test_early_stopping_argument_errors():
    with pytest.raises(TypeError, match="`stopping_threshold` must be a finite number or None"):
        EarlyStopping(stopping_threshold="low")
    with pytest.raises(ValueError, match="`stopping_threshold` 1.0 must be below "
                                         "`divergence_threshold` 0.5 for mode='min'"):
        EarlyStopping(stopping_threshold=1.0, divergence_threshold=0.5)
    with pytest.raises(ValueError, match="`start_step` must be a non-negative integer, got -1"):
        EarlyStopping(start_step=-1)


# ---------------------------------------------------------------------- summary, progress bar
def test_model_summary_totals_equal_the_parameter_count(tiny, capsys):
    frozen = jnn.parameter((1,), name="c", init=1.0).freeze()
    crux = tiny.core((frozen * tiny.u).mse.name("extra"))
    _trainer(1, enable_model_summary=True).fit(crux)
    out = capsys.readouterr().out
    n = sum(np.size(x) for x in jax.tree.leaves(tiny.net.params()))
    assert n == 105
    assert f"Trainable params: {n:,}  Non-trainable params: 1  Total params: {n + 1:,}" in out
    assert "c (frozen)" in out and "output_layer/kernel" in out and "(8, 1)" in out
    _trainer(1).fit(tiny.core())
    assert "Total params" not in capsys.readouterr().out
    stream = io.StringIO()
    summary = ModelSummary(stream=stream)
    _trainer(1, callbacks=[summary]).fit(tiny.core())
    assert stream.getvalue() == summary.text + "\n" and f"Total params: {n:,}" in summary.text


def test_progress_bar_metrics_and_rate(tiny):
    bar = ProgressBar(metrics=["loss", "val_error"], leave=False)
    crux = tiny.core(jnn.tracker(tiny.error, 5, name="val_error"))
    _trainer(30, chunk_size=10, enable_progress_bar=True, callbacks=[bar]).fit(crux)
    assert set(bar._latest) == {"loss", "val_error"} and bar.steps_per_second > 0
    with pytest.raises(ValueError, match=r"ProgressBar `metrics` \['val'\] are not logged; "
                                         r"available: \['loss', 'pde', 'bc', 'val_error'\]"):
        _trainer(2, callbacks=[ProgressBar(metrics=["val"])]).fit(crux)
    with pytest.raises(TypeError, match="`metrics` must be a list of names"):
        ProgressBar(metrics="loss")


class _Slow(Callback):
    """Host work of ``seconds`` after every chunk."""

    def __init__(self, seconds):
        self.seconds = seconds

    def on_train_chunk_end(self, trainer, problem, chunk):
        time.sleep(self.seconds)


def test_progress_bar_says_compiling_and_keeps_redrawing(tiny, capsys, monkeypatch):
    from tqdm.auto import tqdm
    redraws = []
    original = tqdm.refresh
    monkeypatch.setattr(tqdm, "refresh", lambda self, *a, **k: (redraws.append(self.n),
                                                                original(self, *a, **k))[1])
    bar = ProgressBar(refresh_seconds=0.05)
    _trainer(20, chunk_size=10, enable_progress_bar=True, callbacks=[bar, _Slow(0.3)]).fit(
        tiny.core())
    assert "compiling" in capsys.readouterr().err
    assert redraws.count(10) >= 3           # redrawn while the host worked on chunk 1
    assert bar._ticker is None              # the thread ended with the fit
    with pytest.raises(ValueError, match="`refresh_seconds` must be a positive number"):
        ProgressBar(refresh_seconds=0)


@pytest.mark.slow  # timing: the host work of every chunk hides behind the next chunk
def test_host_work_overlaps_the_next_chunk_with_a_state_of_many_leaves():
    """A 90-leaf state (an MLP of 14 layers with Adam), chunks of ~0.3 s of device work and
    0.35 s of host work after each: overlapped, a chunk costs about the larger of the two;
    without overlap, their sum (side by side, best of two)."""
    from flax import nnx

    import jno_flax as jno
    times = {}
    for overlap in (True, False, True, False):
        t = TinyProblem()
        net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=32, depth=14, rngs=nnx.Rngs(0)), name="u")
        crux = jno.core([(net(t.x, t.y).laplacian(t.x, t.y) - 1.0).mse, net(t.xb, t.yb).mse])
        trainer = _trainer(1200, chunk_size=200, overlap_callbacks=overlap,
                           callbacks=[_Slow(0.35)])
        trainer.fit(crux)                                   # compile
        assert len(jax.tree.leaves(trainer.state)) >= 60
        trainer.max_steps = 2400
        start = time.perf_counter()
        trainer.fit(crux)
        times.setdefault(overlap, []).append(time.perf_counter() - start)
    assert min(times[True]) < 0.8 * min(times[False]), times   # ideal ratio: about 0.5


# ---------------------------------------------------------------------- overlap
class _Stop(Callback):
    """Stops at a chunk end and records the state it saw."""

    def __init__(self, at):
        self.at, self.seen = at, {}

    def on_train_chunk_end(self, trainer, problem, chunk):
        self.seen[chunk.last_step] = jax.tree.map(np.asarray, trainer.state.params)
        if chunk.last_step + 1 >= self.at:
            trainer.stop("test stop")


@pytest.mark.parametrize("stop_at", [21])  # chunks overlapped up to a stop mid-run
def test_overlapping_host_work_changes_no_number(stop_at):
    runs = []
    for overlap in (True, False):
        tiny = TinyProblem()
        crux = tiny.core(jnn.tracker(tiny.error, 3, name="val_error"))
        cbs = [_Stop(stop_at)] if stop_at else []
        h = _trainer(40, chunk_size=7, overlap_callbacks=overlap, callbacks=cbs).fit(crux)
        runs.append((crux, h, cbs))
    (a, ha, ca), (b, hb, cb) = runs
    np.testing.assert_array_equal(ha.total_loss, hb.total_loss)
    np.testing.assert_array_equal(ha.trackers["val_error"].values,
                                  hb.trackers["val_error"].values)
    _same(a.state, b.state)
    assert a.global_step == b.global_step == (21 if stop_at else 40)
    if stop_at:
        _same(ca[0].seen[20], a.state.params)  # the state callbacks saw is the final one
        for step, params in ca[0].seen.items():
            _same(params, cb[0].seen[step])


# ---------------------------------------------------------------------- interval layout
def _chunk_jaxpr(trainer, crux, n, phase):
    run, program = trainer.chunks.latest()
    fn = program()
    return jax.make_jaxpr(fn, static_argnums=(2, 3))(crux.state, crux.registry.batch(), n,
                                                     phase, np.int32(n))


def _nested_trainer(steps, **kw):
    trainer = _trainer(steps, **kw)
    trainer.nested_intervals = True  # the accelerator layout, here on CPU
    return trainer


def test_nested_intervals_need_no_conditional(tiny):
    crux = tiny.core(jnn.tracker(tiny.error, 10, name="e10"),
                     jnn.tracker(jnn.mean(tiny.u), 5, name="u5"))
    trainer = _nested_trainer(20, chunk_size=20)
    trainer.fit(crux)
    assert "cond" not in primitives(_chunk_jaxpr(trainer, crux, 20, 0).jaxpr)
    crux3 = tiny.core(jnn.tracker(tiny.error, 10, name="e10"),
                      jnn.tracker(jnn.mean(tiny.u), 3, name="u3"))  # 3 does not divide 10
    trainer3 = _nested_trainer(20, chunk_size=20)
    trainer3.fit(crux3)
    assert "cond" in primitives(_chunk_jaxpr(trainer3, crux3, 20, 0).jaxpr)
    flat = _trainer(20, chunk_size=20)  # the CPU default: one flat scan, lax.cond per group
    flat.fit(crux)
    assert flat.nested_intervals is False
    assert "cond" in primitives(_chunk_jaxpr(flat, crux, 20, 0).jaxpr)


def test_interval_values_do_not_depend_on_layout_or_chunk_boundaries():
    results = []
    # chunks starting at phases 0, 2 and 4 of the 8-step blocks (heads, blocks and tails of
    # the nested layout), against the flat layout
    for chunk, nested in ((10, True), (10, False)):
        tiny = TinyProblem()
        crux = tiny.core(jnn.tracker(tiny.error, 8, name="e8"),
                         jnn.tracker(jnn.mean(tiny.u), 4, name="u4"),
                         jnn.tracker(jnn.mean(tiny.u ** 2), 3, name="u3"))
        trainer = _nested_trainer(24, chunk_size=chunk)
        trainer.nested_intervals = nested
        results.append(trainer.fit(crux))
    for h in results:
        for name, k in (("e8", 8), ("u4", 4), ("u3", 3)):
            np.testing.assert_array_equal(h.trackers[name].steps, np.arange(0, 24, k))
            np.testing.assert_allclose(h.trackers[name].values,
                                       results[-1].trackers[name].values, rtol=2e-6)
        np.testing.assert_allclose(h.total_loss, results[-1].total_loss, rtol=2e-6)


def test_a_one_step_chunk_continues_bit_identically():
    """XLA inlines a one-trip loop (and rounds differently): a 1-step chunk must not."""
    def params_after(stops):
        tiny = TinyProblem()
        crux = tiny.core(jnn.tracker(tiny.error, 7, name="err"))
        trainer = _trainer(1)
        for end in stops:
            trainer.max_steps = end
            trainer.fit(crux)
        return crux
    _same(params_after([30]).state, params_after([29, 30]).state)
