"""A checkpoint directory belongs to one run: nothing another run (or another timeline of the
same run) wrote is deleted or replaced, scores live in the checkpoints, one writer at a time,
and damage, changed settings and vanished directories are told apart."""

from __future__ import annotations

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

import jno_flax.numpy as jnn
from jno_flax.callbacks import Callback, ModelCheckpoint, ResamplePoints
from jno_flax.callbacks._checkpoint_dir import DirectoryLock
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem


def _steps(path) -> list[int]:
    return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def _fit(crux, steps, *callbacks, ckpt_path=None):
    return Trainer(max_steps=steps, chunk_size=10, callbacks=list(callbacks), logger=False,
                   enable_progress_bar=False,
                   enable_model_summary=False).fit(crux, ckpt_path=ckpt_path)


def _tracked(seed=0):
    t = TinyProblem(seed=seed)
    return t.core(jnn.tracker(t.error, 5, name="err"))


def _mtimes(path) -> dict[str, float]:
    return {d: os.stat(os.path.join(path, d, "metadata", "metadata")).st_mtime_ns
            for d in os.listdir(path) if d.isdigit()}


def test_a_new_run_refuses_a_directory_another_run_wrote_and_deletes_nothing(tmp_path):
    ck = tmp_path / "ck"
    _fit(TinyProblem().core(), 30, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1))
    assert _steps(ck) == [10, 20, 30]
    before = _mtimes(ck)
    second = TinyProblem().core()   # the same problem, a new run
    with pytest.raises(ValueError, match=r"`dirpath` '.*/ck' holds checkpoints of another run "
                                         r"\(steps \[10, 20, 30\]\); nothing was deleted or "
                                         r"written\. To go on: resume that run with"):
        _fit(second, 15, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1))
    assert second.global_step == 0
    other = _tracked(seed=1)        # another problem, save_top_k=1
    with pytest.raises(ValueError, match="holds checkpoints of another run"):
        _fit(other, 5, ModelCheckpoint(ck, every_n_train_steps=5))
    assert _mtimes(ck) == before and sorted(os.listdir(ck)) == ["10", "20", "30"]
    # resuming that run is still possible, and goes on in the same directory
    again = TinyProblem().core()
    _fit(again, 40, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1),
         ckpt_path="last")
    assert _steps(ck) == [10, 20, 30, 40] and again.global_step == 40


def test_a_resume_from_best_never_deletes_newer_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    cb = ModelCheckpoint(ck, monitor="err", mode="max", save_top_k=-1, every_n_train_steps=10)
    _fit(_tracked(), 50, cb)
    best = int(os.path.basename(cb.best_model_path))
    assert best < 50, "the set-up needs a best checkpoint older than the newest"
    before = _mtimes(ck)
    # evaluation-style resume (no further steps): allowed, nothing written
    crux = _tracked()
    _fit(crux, best, ModelCheckpoint(ck, monitor="err", mode="max"), ckpt_path="best")
    assert crux.global_step == best and _mtimes(ck) == before
    # training on from an older checkpoint would replace the newer ones: refused
    crux = _tracked()
    with pytest.raises(ValueError, match=rf"holds newer checkpoints of this run \(it resumed "
                                         rf"from step {best}\) \(steps \[.*50\]\)"):
        _fit(crux, 60, ModelCheckpoint(ck, monitor="err", mode="max"), ckpt_path="best")
    assert _mtimes(ck) == before
    # the way out the message names: the continued run gets its own directory
    branch = ModelCheckpoint(tmp_path / "branch", every_n_train_steps=10)
    crux = _tracked()
    _fit(crux, best + 10, branch, ckpt_path=str(ck / str(best)))
    assert _steps(tmp_path / "branch") == [best + 10] and _mtimes(ck) == before


def test_scores_come_from_the_checkpoints_so_a_moved_directory_keeps_its_best(tmp_path):
    first = tmp_path / "first"
    cb = ModelCheckpoint(first, monitor="err", mode="max", save_top_k=1, every_n_train_steps=7)
    _fit(_tracked(), 35, cb)
    kept, best_score = _steps(first), cb.best_model_score
    moved = tmp_path / "moved"
    shutil.move(str(first), str(moved))
    resumed = ModelCheckpoint(moved, monitor="err", mode="max", save_top_k=1,
                              every_n_train_steps=7)
    _fit(_tracked(), 35, resumed, ckpt_path="last")    # nothing to train: only the scores
    assert resumed.best_model_score == pytest.approx(best_score)
    assert resumed.best_model_path == str(moved / os.path.basename(cb.best_model_path))
    resumed = ModelCheckpoint(moved, monitor="err", mode="max", save_top_k=1,
                              every_n_train_steps=7)
    _fit(_tracked(), 42, resumed, ckpt_path="last")    # one more save, at 42, then pruning
    assert resumed.best_model_score >= best_score      # mode="max": never a worse best
    if resumed.best_model_score == pytest.approx(best_score):   # the old best survived
        assert _steps(moved) == sorted({int(os.path.basename(cb.best_model_path)), 42})
    assert set(kept) - {35} <= set(_steps(moved))      # only 35 (newest, not best) went


@pytest.mark.slow   # long: run with `-m slow`
def test_a_changed_point_count_is_a_mismatch_naming_the_points_and_nothing_is_deleted(tmp_path):
    def grown(period):
        t = TinyProblem()
        residual = t.u.laplacian(t.x, t.y) + 2 * jnp.pi**2 * t.u_exact
        return t.core(), ResamplePoints(residual, every_n_train_steps=period,
                                        strategy="rar-d", n_add=8)
    ck = tmp_path / "ck"
    crux, grow = grown(10)
    _fit(crux, 40, grow, ModelCheckpoint(ck, every_n_train_steps=20, save_top_k=-1))
    assert _steps(ck) == [20, 40]
    before = _mtimes(ck)
    crux, grow = grown(15)
    with pytest.raises(ValueError, match=r"checkpoint '.*/40' does not match this problem; "
                                         r"nothing was restored\. Differences: "
                                         r"\['extras/points_0: checkpoint \[88, 2\] float32 vs "
                                         r"problem \[80, 2\] float32'\]"):
        _fit(crux, 60, grow, ModelCheckpoint(ck, every_n_train_steps=20), ckpt_path="last")
    assert _mtimes(ck) == before


def _newest_metadata_changed(tmp_path, **changes):
    """Checkpoints of steps 10 and 20 in ``tmp_path / "ck"``, the metadata of 20 changed;
    returns the directory and that metadata file."""
    ck = tmp_path / "ck"
    _fit(TinyProblem().core(), 20, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1))
    meta = ck / "20" / "metadata" / "metadata"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **changes}))
    return ck, meta


def test_metadata_of_the_wrong_type_counts_as_damage(tmp_path):
    ck, meta = _newest_metadata_changed(tmp_path, step="twenty")
    crux = TinyProblem().core()
    with pytest.warns(RuntimeWarning, match=r"checkpoint '.*/20' is damaged or incomplete "
                                            r"\(ValueError: the metadata of .* has "
                                            r"step='twenty'; expected an integer\)"):
        _fit(crux, 20, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1),
             ckpt_path="last")
    assert crux.global_step == 20                  # from 10, retrained to 20
    assert _steps(ck) == [10, 20]                  # the damaged 20 replaced by a good one
    assert json.loads(meta.read_text())["step"] == 20


class _SecondTrainer(Callback):
    """Starts a second trainer on the same checkpoint directory while the first one runs."""

    def __init__(self, dirpath):
        self.dirpath, self.error = dirpath, None

    def on_train_chunk_end(self, trainer, problem, chunk):
        if self.error is None:
            with pytest.raises(RuntimeError) as info:
                _fit(TinyProblem().core(), 5, ModelCheckpoint(self.dirpath))
            self.error = str(info.value)


def test_two_trainers_cannot_write_one_directory_at_once(tmp_path):
    ck = tmp_path / "ck"
    second = _SecondTrainer(ck)
    _fit(TinyProblem().core(), 20, second, ModelCheckpoint(ck, every_n_train_steps=10))
    assert f"`dirpath` '{ck}' is in use by another trainer (process {os.getpid()} on " \
           in second.error
    assert _steps(ck) == [20] and not (ck / ".lock").exists()   # released, file removed
    lock = DirectoryLock()
    lock.acquire(str(ck))
    with pytest.raises(RuntimeError, match="is in use by another trainer"):
        DirectoryLock().acquire(str(ck))
    lock.release()
    DirectoryLock().acquire(str(ck))   # free again


class _Vanish(Callback):
    """After the checkpoint of step 10 is complete, the directory is replaced by a file."""

    def __init__(self, ckpt):
        self.ckpt = ckpt

    def on_train_chunk_end(self, trainer, problem, chunk):
        if chunk.last_step + 1 == 10:
            self.ckpt.wait()
            shutil.rmtree(self.ckpt.dirpath)
            with open(self.ckpt.dirpath, "w") as f:
                f.write("not a directory")


def test_a_directory_that_vanishes_mid_run_is_a_clear_error(tmp_path):
    ck = ModelCheckpoint(tmp_path / "ck", every_n_train_steps=10)
    with pytest.raises(OSError, match=r"`dirpath` '.*/ck' is no longer a directory: the "
                                      r"checkpoint of step 20 cannot be written; no complete "
                                      r"checkpoint of this run remains"):
        _fit(TinyProblem().core(), 40, ck, _Vanish(ck))
    assert ck.last_saved_step == 10   # what was complete, never the failed one


def test_dirpath_that_is_a_file_and_reserved_checkpoint_entries(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"`dirpath` '.*afile' is a file, not a "
                                                 r"directory"):
        _fit(TinyProblem().core(), 5, ModelCheckpoint(afile))

    class _Path(Callback):
        def on_save_checkpoint(self, trainer, problem, checkpoint):
            checkpoint["path"] = "mine"
    with pytest.raises(ValueError, match=r"`on_save_checkpoint` added the entries \['path'\], "
                                         r"whose names are reserved"):
        _fit(TinyProblem().core(), 5, _Path(), ModelCheckpoint(tmp_path / "ck"))


def test_history_run_id_is_kept_by_continued_and_resumed_fits(tmp_path):
    crux = TinyProblem().core()
    h = _fit(crux, 10, ModelCheckpoint(tmp_path / "ck"))
    run = h.run_id
    assert isinstance(run, str) and len(run) == 16
    assert crux.solve(5, enable_progress_bar=False, logger=False).run_id == run
    again = TinyProblem().core()
    assert _fit(again, 10, ModelCheckpoint(tmp_path / "ck"), ckpt_path="last").run_id == run
    assert _fit(TinyProblem().core(), 5).run_id != run        # a new Trainer, a new run
    np.testing.assert_array_equal(h.steps, np.arange(15))


class _RemoveInFlight(Callback):
    """Right after the save of step 10 is issued (asynchronous, not waited for), the
    directory is removed; orbax's final rename of that save waits for it (``released``)."""

    def __init__(self, ckpt, released):
        self.ckpt, self.released = ckpt, released

    def on_train_chunk_end(self, trainer, problem, chunk):
        if chunk.last_step + 1 == 10:
            assert self.ckpt._issued == 10
            os.rename(self.ckpt.dirpath, self.ckpt.dirpath + ".gone")  # rmtree races the writer
            self.released.set()


def test_a_directory_removed_under_an_async_save_is_an_oserror_naming_the_step(tmp_path,
                                                                             monkeypatch):
    import threading

    from orbax.checkpoint._src.path import atomicity
    released, finalize = threading.Event(), atomicity.AtomicRenameTemporaryPath.finalize

    async def held(self, *args, **kwargs):   # the background write ends after the removal
        released.wait(timeout=60)
        return await finalize(self, *args, **kwargs)
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", held)
    ck = ModelCheckpoint(tmp_path / "ck", every_n_train_steps=10)
    with pytest.raises(OSError, match=r"ModelCheckpoint could not complete the checkpoint of "
                                      r"step 10 in '.*/ck' \(.*\); no complete checkpoint of "
                                      r"this run remains"):
        _fit(TinyProblem().core(), 40, ck, _RemoveInFlight(ck, released))
    assert ck.last_model_path == "" and ck.last_saved_step is None   # never the failed one


@pytest.mark.parametrize("key, value, expected", [
    ("wall_time", "abc", "a finite number of seconds >= 0"),
    ("wall_time", float("nan"), "a finite number of seconds >= 0"),
    ("wall_time", -5.0, "a finite number of seconds >= 0"),
    ("history_order", "x", "an object of name lists .*"),
    ("skipped_steps", "x", r"a list of steps \(integers >= 0\)"),
], ids=["wall_time_str", "wall_time_nan", "wall_time_negative", "history_order",
        "skipped_steps"])
def test_history_metadata_of_the_wrong_type_counts_as_damage(key, value, expected, tmp_path):
    ck, _ = _newest_metadata_changed(tmp_path, **{key: value})
    crux = TinyProblem().core()
    with pytest.warns(RuntimeWarning, match=rf"checkpoint '.*/20' is damaged or incomplete "
                                            rf"\(ValueError: the metadata of .* has {key}=.*; "
                                            rf"expected {expected}\); falling back to "
                                            rf"'.*/10'"):
        h = _fit(crux, 20, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1),
                 ckpt_path="last")
    assert crux.global_step == 20 and h.wall_time > 0 and np.isfinite(h.wall_time)


def test_a_refused_permission_is_reported_as_such_and_the_checkpoint_kept(tmp_path,
                                                                        monkeypatch):
    from jno_flax import _checkpoint_format as fmt
    ck = tmp_path / "ck"
    _fit(TinyProblem().core(), 20, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1))
    before = _mtimes(ck)
    read = fmt._read

    def denied(path, target):   # as orbax words an EACCES of TensorStore's
        try:
            raise PermissionError(13, "Permission denied", os.path.join(path, "state"))
        except PermissionError as err:
            raise ValueError("PyTree structure error while reading the state") from err
    monkeypatch.setattr(fmt, "_read", denied)
    crux = TinyProblem().core()
    with pytest.raises(PermissionError, match=r"checkpoint '.*/20' cannot be read: permission "
                                              r"denied \(ValueError: .*\)\. Nothing was "
                                              r"restored and the checkpoint is left as it is"):
        _fit(crux, 30, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1),
             ckpt_path="last")
    assert crux.global_step == 0 and _mtimes(ck) == before     # nothing replaced
    monkeypatch.setattr(fmt, "_read", read)                    # access given back
    _fit(crux, 30, ModelCheckpoint(ck, every_n_train_steps=10, save_top_k=-1),
         ckpt_path="last")
    assert crux.global_step == 30 and _steps(ck) == [10, 20, 30]
    assert _mtimes(ck)["20"] == before["20"]
