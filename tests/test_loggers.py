"""Loggers as in Lightning: versioned run directories, CSV rows, hyper-parameters, History files."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import yaml

import jno_flax.numpy as jnn
from jno_flax.callbacks import CSVLogger, ModelCheckpoint, TensorBoardLogger
from jno_flax.trainers import History, Trainer


def _fit(crux, steps, **kw):
    kw.setdefault("enable_progress_bar", False)
    kw.setdefault("enable_model_summary", False)
    return Trainer(max_steps=steps, **kw).fit(crux)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_each_run_gets_the_next_version(tiny, tmp_path):
    for _ in range(2):
        _fit(tiny.core(), 3)  # default logger: TensorBoard under ./runs (the test's tmp dir)
    runs = tmp_path / "runs" / "default"
    assert sorted(os.listdir(runs)) == ["version_0", "version_1"]
    for v in ("version_0", "version_1"):
        assert list((runs / v).glob("events.out.tfevents.*"))
        assert yaml.safe_load((runs / v / "hparams.yaml").read_text())["max_steps"] == 3


def test_a_continued_run_logs_on_in_its_version(tiny, tmp_path):
    table = CSVLogger(tmp_path, log_every_n_steps=2, aggregation="last")
    trainer = Trainer(max_steps=4, logger=table, enable_progress_bar=False)
    crux = tiny.core()
    trainer.fit(crux)
    trainer.max_steps = 8
    h = trainer.fit(crux)
    assert os.listdir(tmp_path / "default") == ["version_0"]
    rows = _rows(os.path.join(table.log_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [1, 3, 5, 7]
    assert [float(r["loss"]) for r in rows] == [float(h.total_loss[s]) for s in (1, 3, 5, 7)]


def test_two_loggers_of_one_run_share_its_version(tiny, tmp_path):
    tb, table = TensorBoardLogger(tmp_path, name="exp"), CSVLogger(tmp_path, name="exp")
    _fit(tiny.core(), 3, logger=[tb, table])
    assert tb.log_dir == table.log_dir == str(tmp_path / "exp" / "version_0")
    trainer = Trainer(max_steps=2, logger=[CSVLogger(tmp_path, name="exp", version="named")])
    assert trainer.logger.version == "named"


def test_csv_rows_equal_the_history_at_the_logged_steps(tiny, tmp_path):
    crux = tiny.core(jnn.tracker(tiny.error, 4, name="val_error"))
    table = CSVLogger(tmp_path, log_every_n_steps=5, aggregation="last",
                      hparams={"lr": 1e-2, "note": "csv"})
    h = _fit(crux, 12, logger=table, chunk_size=7)
    rows = _rows(os.path.join(table.log_dir, "metrics.csv"))
    assert [int(r["step"]) for r in rows] == [0, 4, 8, 9, 11]
    for r in rows:
        s = int(r["step"])
        if r["loss"]:
            assert float(r["loss"]) == float(h.total_loss[s])
            assert float(r["losses/pde"]) == float(h.losses["pde"][s])
        if r["val_error"]:
            j = list(h.trackers["val_error"].steps).index(s)
            assert float(r["val_error"]) == float(h.trackers["val_error"].values[j])
    assert [int(r["step"]) for r in rows if r["loss"]] == [4, 9, 11]  # window ends, then the end
    hp = yaml.safe_load(open(os.path.join(table.log_dir, "hparams.yaml")))
    assert hp["lr"] == 1e-2 and hp["note"] == "csv" and hp["u/num_params"] == 105


def test_csv_mean_aggregation_and_resume_keeps_earlier_rows(tiny, tmp_path):
    ck = ModelCheckpoint(tmp_path / "ck", every_n_train_steps=10, save_last=False)
    first = CSVLogger(tmp_path, log_every_n_steps=5, aggregation="mean")
    h = _fit(tiny.core(), 15, logger=first, callbacks=[ck], chunk_size=5)
    rows = _rows(os.path.join(first.log_dir, "metrics.csv"))
    np.testing.assert_allclose(float(rows[0]["loss"]), h.total_loss[:5].mean(), rtol=1e-6)
    resumed = CSVLogger(tmp_path, log_every_n_steps=5, aggregation="mean")
    trainer = Trainer(max_steps=20, logger=resumed, enable_progress_bar=False, chunk_size=5,
                      callbacks=[ModelCheckpoint(tmp_path / "ck", every_n_train_steps=10)])
    trainer.fit(tiny.core(), ckpt_path="last")  # the checkpoint of step 10
    assert resumed.version == 0  # the version of the run it resumes
    steps = [int(r["step"]) for r in _rows(os.path.join(resumed.log_dir, "metrics.csv"))]
    assert steps == [4, 9, 14, 19]  # rows before step 10 kept, the old 14 replaced


def test_logger_argument_errors(tiny, tmp_path):
    with pytest.raises(TypeError, match=r"`logger` must be True .*got str: 'tensorboard'"):
        Trainer(max_steps=2, logger="tensorboard")
    with pytest.raises(TypeError, match=r"`logger\[1\]` must be a jno_flax.callbacks.Logger"):
        Trainer(max_steps=2, logger=[CSVLogger(tmp_path), object()])
    with pytest.raises(TypeError, match=r"`callbacks\[0\]` is a logger \(CSVLogger\); pass "
                                        r"loggers with `Trainer\(logger=...\)`"):
        Trainer(max_steps=2, callbacks=[CSVLogger(tmp_path)])
    with pytest.raises(TypeError, match="`version` must be None, a non-negative int"):
        CSVLogger(tmp_path, version=-1)
    with pytest.raises(TypeError, match=r"`hparams\['opt'\]` must be a number, string or bool"):
        TensorBoardLogger(tmp_path, hparams={"opt": [1, 2]})
    assert Trainer(max_steps=2, logger=False).loggers == []


def test_history_save_and_load_round_trip(tiny, tmp_path):
    crux = tiny.core(jnn.tracker(tiny.error, 3, name="val_error"),
                     jnn.tracker(tiny.u, 5, name="u_field"))
    h = _fit(crux, 10, logger=False)
    path = h.save(tmp_path / "history")
    assert path.endswith("history.npz")
    back = History.load(path)
    np.testing.assert_array_equal(back.steps, h.steps)
    np.testing.assert_array_equal(back.total_loss, h.total_loss)
    for name in h.losses:
        np.testing.assert_array_equal(back.losses[name], h.losses[name])
    for name, series in h.trackers.items():
        np.testing.assert_array_equal(back.trackers[name].steps, series.steps)
        np.testing.assert_array_equal(back.trackers[name].values, series.values)
    assert back.wall_time == h.wall_time and back.stop_reason == h.stop_reason
    assert back.run_id == h.run_id and len(h.run_id) == 16
    np.testing.assert_array_equal(back.skipped_steps, h.skipped_steps)
    with pytest.raises(FileNotFoundError, match="`path` .*missing.npz' is not a file"):
        History.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match=r"not a saved History \(no `meta` entry; entries: "
                                         r"\['a'\]\)"):
        History.load(tmp_path / "other.npz")


def test_a_logger_version_never_leads_outside_save_dir(tiny, tmp_path):
    for bad in ("../../x", "a/b", "..", ""):
        with pytest.raises(ValueError, match=r"`version` must be None, a non-negative int or a "
                                             r"plain directory name"):
            CSVLogger(tmp_path, version=bad)
    ck = tmp_path / "ck"
    _fit(tiny.core(), 10, logger=CSVLogger(tmp_path / "logs"),
         callbacks=[ModelCheckpoint(ck, every_n_train_steps=10)])
    state = ck / "10" / "callbacks" / "metadata"   # orbax names a JSON item file so
    entries = json.loads(state.read_text())
    key = next(k for k in entries if k.startswith("CSVLogger"))
    state.write_text(json.dumps({**entries, key: {"version": "../../escaped"}}))
    with pytest.raises(ValueError, match=r"`the checkpoint's logger version` must be None, a "
                                         r"non-negative int or a plain directory name .*got "
                                         r"'../../escaped'"):
        Trainer(max_steps=20, logger=CSVLogger(tmp_path / "logs"), enable_progress_bar=False,
                callbacks=[ModelCheckpoint(ck)]).fit(tiny.core(), ckpt_path="last")
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
