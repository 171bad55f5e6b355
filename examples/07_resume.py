"""Preemption and exact resume with orbax checkpoints.

1. A child process trains the 2-D Poisson problem towards 6000 steps with a
   ``ModelCheckpoint``; at step 2000 it sends itself SIGTERM (as a cluster scheduler would).
   The trainer finishes the running chunk, saves a checkpoint and exits cleanly.
2. This process rebuilds the same problem and calls ``fit(crux, ckpt_path="last")``: training
   continues from the saved step, with the optimizer state, RNG, tracker history and
   TensorBoard curves (``runs/07_resume/tb``) joining seamlessly.

Writes ``runs/07_resume/resume.png``.

    python examples/07_resume.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
import jno_flax.numpy as jnn  # noqa: E402
from jno_flax.callbacks import Callback, ModelCheckpoint, TensorBoardLogger  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 6000))
PREEMPT_AT = STEPS // 3
OUT = os.path.join("runs", "07_resume")
π = jnp.pi


def build():
    dom = jno.domain.rect(n_interior=1000, n_boundary=200, seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(1e-3))
    u = net(x, y)
    u_exact = jnn.sin(π * x) * jnn.sin(π * y)
    pde = (u.laplacian(x, y) + 2 * π**2 * u_exact).mse.name("pde")
    bc = net(xb, yb).mse.name("bc")
    w_pde, w_bc = jno.adaptive.relobralo([pde, bc])
    return jno.core([w_pde * pde, w_bc * bc,
                     jnn.tracker(jnn.mean(jnn.abs(u - u_exact)), 100, name="val_error")])


class PreemptAt(Callback):
    """Sends SIGTERM to this process once step ``step`` has run."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, problem, metrics):
        if metrics.step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def trainer(*extra):
    return Trainer(max_steps=STEPS, chunk_size=500, callbacks=[
        ModelCheckpoint(os.path.join(OUT, "ckpt"), every_n_steps=1000),
        TensorBoardLogger(os.path.join(OUT, "tb")), *extra])


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    trainer(PreemptAt(PREEMPT_AT)).fit(build())
    raise SystemExit("not reached: the SIGTERM ends the run")

if __name__ == "__main__":
    import shutil
    shutil.rmtree(OUT, ignore_errors=True)
    print(f"[1] training in a child process; it is preempted after step {PREEMPT_AT}")
    child = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True)
    message = [line for line in child.stderr.splitlines() if "received" in line]
    print(f"    child exit code {child.returncode}: {message[-1] if message else child.stderr}")
    resumed_at = ModelCheckpoint(os.path.join(OUT, "ckpt")).all_steps()[-1]
    print(f"[2] resuming here from the newest checkpoint (step {resumed_at})")
    crux = build()
    history = trainer().fit(crux, ckpt_path="last")
    err = history.trackers["val_error"]
    print(f"    history covers steps {history.steps[0]}..{history.steps[-1]} "
          f"({len(history)} steps, each once); val_error {err.values[0]:.3e} -> "
          f"{err.values[-1]:.3e}")
    fig, ax = plt.subplots(figsize=(7, 4))
    before = history.steps < resumed_at
    ax.semilogy(history.steps[before], history.total_loss[before], label="before preemption")
    ax.semilogy(history.steps[~before], history.total_loss[~before], label="after resume")
    ax.semilogy(err.steps, err.values, "k.", ms=3, label="val_error (tracker)")
    ax.axvline(resumed_at, color="gray", ls="--", lw=1)
    ax.set(xlabel="step", title="loss across a SIGTERM and a resume")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "resume.png"), dpi=110)
    print(f"wrote {os.path.join(OUT, 'resume.png')}")
