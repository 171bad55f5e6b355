"""One process of a Poisson run over ``jax.distributed`` processes with 2 CPU devices each (or
the one-process reference: ``NUM_PROCESSES`` = 1, one device).

usage: multi_process_run.py PROCESS_ID NUM_PROCESSES PORT DIR MODE

MODE:
  ``full``     200 steps (1000 + 200 points) in chunks of 10, checkpoints every 50 in DIR/ckpt,
               TensorBoard logs in DIR/logs;
  ``preempt``  the same, and process 1 sends itself SIGTERM at its first chunk end at or after
               step 120: every process must save at one step and exit;
  ``resume``   ``fit(..., ckpt_path="last")`` on DIR/ckpt, to step 200;
  ``checks``   eight fits in a row, on 1001 + 201 points: process 1 draws other points
               (refused); process 1 fails in ``on_fit_start`` (both stop); 20 steps
               (checkpoint at 10 and 20); a resume from a path only process 0 can read
               (refused); resumes where process 1 has another ``overlap_callbacks``,
               ``max_record_bytes``, learning rate, a schedule that differs from step 31
               on, another ``EarlyStopping`` patience, another RAD exponent or one more
               callback (each refused); 20 steps on mini-batches of
               256, RAR-D adding 100 interior points before step 10 (no checkpoint, no
               logger); a fit that process 0 alone decides to stop after step 4.

Each process prints one line ``RESULT <json>``; process 0 writes the final parameters of the
last training fit to DIR/params.npz.
"""

import json
import os
import signal
import sys
import time

PROCESS, COUNT, PORT, DIR, MODE = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                   sys.argv[4], sys.argv[5])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={2 if COUNT > 1 else 1}"
#: JAX's preemption notifier polls for SIGTERM once a second and then tells the other
#: processes; on a cluster the notice comes minutes before the kill, here process 1 waits this
#: long at each chunk end after its SIGTERM, so that the run does not end before the notice
#: has reached every process (the stop ends the waiting)
NOTICE_SECONDS = 2.0

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

if COUNT > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{PORT}", num_processes=COUNT,
                               process_id=PROCESS)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from jno_flax.callbacks import (Callback, EarlyStopping, ModelCheckpoint,  # noqa: E402
                                ResamplePoints, TensorBoardLogger)
from jno_flax.trainers import Trainer  # noqa: E402
from _poisson import relobralo_poisson, tracked_core  # noqa: E402


class SigtermAt(Callback):
    """Process 1 sends itself SIGTERM once a chunk ends at or after ``step``, then gives the
    notice time to travel at every chunk end until the stop."""

    def __init__(self, step: int):
        self.step, self.sent = step, False

    def on_train_chunk_end(self, trainer, problem, chunk):
        if trainer.global_rank != 1 or chunk.last_step + 1 < self.step:
            return
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(NOTICE_SECONDS)


class StopOnProcess0(Callback):
    """Process 0 alone decides to stop after ``step`` (same settings, another answer)."""

    def __init__(self, step: int):
        self.step = step

    def stopping_step(self, trainer, chunk):
        return self.step if trainer.global_rank == 0 and self.step in chunk.steps else None

    def on_train_chunk_end(self, trainer, problem, chunk):
        if trainer.global_rank == 0 and self.step in chunk.steps:
            trainer.stop(f"process 0 stops after step {self.step}")


def build(seed: int = 0, resample: bool = False):
    # checks: point counts that the 4 devices do not divide (whole on every device)
    p = relobralo_poisson(*((1001, 201) if MODE == "checks" else (1000, 200)), hidden=16,
                          seed=seed)
    crux = tracked_core(p)
    if not resample:
        return crux
    residual = p.u.laplacian(p.x, p.y) + 2 * jnp.pi**2 * p.u_exact
    return crux, ResamplePoints(residual, every_n_train_steps=10, strategy="rar-d", n_add=100)


def fit(crux, steps, every, callbacks=(), ckpt_path=None, monitor=None, **settings):
    """One fit; returns what the test checks (an error is returned, not raised)."""
    ckpt = ModelCheckpoint(dirpath=os.path.join(DIR, "ckpt"), every_n_train_steps=every,
                           save_top_k=-1, monitor=monitor)
    trainer = Trainer(max_steps=steps, callbacks=[ckpt, *callbacks], chunk_size=10,
                      logger=TensorBoardLogger(save_dir=os.path.join(DIR, "logs")),
                      enable_progress_bar=False, enable_model_summary=False, **settings)
    out = {"error": None, "exit": None}
    try:
        history = trainer.fit(crux, ckpt_path=ckpt_path)
        out["losses"] = history.total_loss.tolist()
        out["err"] = history.trackers["err"].values.tolist()
        if PROCESS == 0:
            leaves = jax.tree_util.tree_flatten_with_path(crux.state.params)[0]
            np.savez(os.path.join(DIR, "params.npz"),
                     **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    except SystemExit as exit_:
        out["exit"] = exit_.code
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        out["error"] = f"{type(err).__name__}: {err}"
    out.update(step=trainer.global_step, saved=ckpt.last_saved_step,
               stop_reason=trainer.stop_reason)
    return out


result = {"process": PROCESS, "pid": os.getpid()}
if MODE == "checks":
    crux = build()
    result["differ"] = fit(build(seed=PROCESS), 20, 10)["error"]
    result["fail"] = fit(crux, 20, 10, monitor="missing" if PROCESS == 1 else None)["error"]
    result["train"] = fit(crux, 20, 10)
    unseen = os.path.join(DIR, "ckpt", "10") if PROCESS == 0 else os.path.join(DIR, "none")
    result["ckpt"] = fit(build(), 30, 10, ckpt_path=unseen)["error"]
    # one setting differs on process 1: refused on both when the fit starts (never a hang)
    started = time.monotonic()
    result["overlap"] = fit(build(), 30, 10, ckpt_path="last",
                            overlap_callbacks=PROCESS == 0)["error"]
    result["record"] = fit(build(), 30, 10, ckpt_path="last",
                           max_record_bytes=2**20 * (1 + PROCESS))["error"]
    slower = build()
    if PROCESS == 1:
        slower.trainables[0].optimizer(optax.adam(2e-3))
    result["lr"] = fit(slower, 30, 10, ckpt_path="last")["error"]
    late = build()   # a schedule that differs only from step 31 on, on process 1
    late.trainables[0].optimizer(optax.adam(optax.piecewise_constant_schedule(
        1e-3, {31: 0.5} if PROCESS == 1 else {})))
    result["schedule"] = fit(late, 40, 10, ckpt_path="last")["error"]
    result["patience"] = fit(build(), 30, 10, ckpt_path="last", callbacks=[
        EarlyStopping("loss", patience=1 if PROCESS == 0 else 100)])["error"]
    drawn, draw = build(resample=True)
    redraw = ResamplePoints(draw.target, 10, strategy="rad", k=1.0 if PROCESS == 0 else 3.0)
    result["rad_k"] = fit(drawn, 30, 10, ckpt_path="last", callbacks=[redraw])["error"]
    result["count"] = fit(build(), 30, 10, ckpt_path="last", callbacks=[
        EarlyStopping("loss")] if PROCESS == 1 else [])["error"]
    result["settings_seconds"] = time.monotonic() - started
    moving, grow = build(resample=True)
    trainer = Trainer(max_steps=20, callbacks=[grow], batch_size=256, chunk_size=10,
                      logger=False, enable_progress_bar=False, enable_model_summary=False)
    history = trainer.fit(moving)
    result["moving"] = {"losses": history.total_loss.tolist(),
                        "points": int(moving.state.extras[grow.initial_points().name].shape[0])}
    split = build()
    trainer = Trainer(max_steps=20, callbacks=[StopOnProcess0(4)], chunk_size=10, logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False)
    history = trainer.fit(split)
    result["split_stop"] = {"step": trainer.global_step, "losses": history.total_loss.tolist()}
else:
    result["train"] = fit(build(), 200, 50,
                          callbacks=[SigtermAt(120)] if MODE == "preempt" else [],
                          ckpt_path="last" if MODE == "resume" else None)
print("RESULT " + json.dumps(result), flush=True)
