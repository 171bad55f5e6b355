"""Child process for the checkpoint fault tests.

    python fault_run.py MODE CKPT_DIR OUT.npz

MODE: "full" (uninterrupted), "sigkill" (SIGKILL right after the second save starts, while
orbax writes it in the background), "resume" (``ckpt_path="last"``), "two_checkpoints" (two
``ModelCheckpoint``s, then SIGTERM after ``fit``: the process must die of it), "sigint"
(Ctrl-C mid-run: ``KeyboardInterrupt`` after a checkpoint is saved).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jno_flax as jno  # noqa: E402
import jno_flax.numpy as jnn  # noqa: E402
from jno_flax.callbacks import Callback, ModelCheckpoint  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402
from tests.conftest import TinyProblem  # noqa: E402

STEPS, EVERY = 3000, 1000
mode, ckpt_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]


class KillDuringSecondSave(Callback):
    """Placed after the ModelCheckpoint: SIGKILL as soon as its second save has started."""

    def on_train_chunk_end(self, trainer, problem, chunk):
        if chunk.last_step + 1 == 2 * EVERY:
            os.kill(os.getpid(), signal.SIGKILL)


class InterruptDuringChunk(Callback):
    def on_train_chunk_end(self, trainer, problem, chunk):
        if chunk.last_step + 1 == EVERY:
            threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT)).start()


t = TinyProblem()
w = jno.adaptive.relobralo([t.pde, t.bc], expected_rho=0.5)
crux = jno.core([w[0] * t.pde, w[1] * t.bc, jnn.tracker(t.error, 7, name="err")])
callbacks = [ModelCheckpoint(ckpt_dir, every_n_train_steps=EVERY, save_top_k=-1)]
if mode == "sigkill":
    callbacks.append(KillDuringSecondSave())
if mode == "two_checkpoints":
    callbacks.append(ModelCheckpoint(ckpt_dir + "_b", every_n_train_steps=EVERY))
if mode == "sigint":
    callbacks.append(InterruptDuringChunk())
trainer = Trainer(max_steps=STEPS, chunk_size=EVERY // 2, callbacks=callbacks,
                  enable_progress_bar=False)
try:
    history = trainer.fit(crux, ckpt_path="last" if mode == "resume" else None)
except KeyboardInterrupt:
    saved = callbacks[0].all_steps()
    print(f"interrupted at {crux.global_step}; saved {saved}; history {len(crux.history)}")
    raise SystemExit(3)
flat = {f"state_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(crux.state))}
np.savez(out, total=history.total_loss, steps=history.steps, err=history.trackers["err"].values,
         **flat)
print("finished", crux.global_step, flush=True)
if mode == "two_checkpoints":
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Event().wait(5)
    print("SIGTERM was swallowed")
