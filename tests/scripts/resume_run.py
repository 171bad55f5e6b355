"""Child process for the resume tests: train the tiny problem with a tracker and ReLoBRaLo.

    python resume_run.py MODE CKPT_DIR OUT.npz
MODE: "full" (uninterrupted), "sigterm" (SIGTERM arrives during the second chunk),
"resume" (continue from the newest checkpoint). Saves the final state and history to OUT.
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

STEPS, CHUNK = 12_000, 4000
mode, ckpt_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]


class TermDuringNextChunk(Callback):
    """After the first chunk, send SIGTERM to this process a moment later (mid-chunk)."""

    def on_train_batch_end(self, trainer, problem, metrics):
        if metrics.last_in_chunk and metrics.step + 1 == CHUNK:
            threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGTERM)).start()


t = TinyProblem()
w = jno.adaptive.relobralo([t.pde, t.bc], expected_rho=0.5)
crux = jno.core([w[0] * t.pde, w[1] * t.bc, jnn.tracker(t.error, 7, name="err"),
                 w[0].tracker(interval=3, name="w0")])
callbacks = [ModelCheckpoint(ckpt_dir, every_n_train_steps=10_000)]
if mode == "sigterm":
    callbacks.append(TermDuringNextChunk())
trainer = Trainer(max_steps=STEPS, chunk_size=CHUNK, callbacks=callbacks,
                  enable_progress_bar=False)
history = trainer.fit(crux, ckpt_path="last" if mode == "resume" else None)
flat = {f"state_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(crux.state))}
np.savez(out, total=history.total_loss, steps=history.steps, err=history.trackers["err"].values,
         w=history.trackers["w0"].values, **flat)
print("finished", crux.global_step)
