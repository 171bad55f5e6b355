"""Preemption and requeue: the same command, started again until the run is done.

A cluster job script runs one command every time the job starts; on preemption the scheduler
sends SIGTERM and later starts the job again (SLURM: ``--requeue``, ``--signal=TERM@120``).
Here a child process plays the job: it trains the 2-D Poisson problem towards ``STEPS`` with

    Trainer(callbacks=[ModelCheckpoint(dirpath, every_n_train_steps=...)]).fit(
        crux, ckpt_path="last")

and is "preempted" (sends itself SIGTERM) after 40 % of the steps. On SIGTERM the trainer
finishes the running chunk, saves, runs every end hook and exits with status 0. The first
start finds no checkpoint (a warning, then step 0); each later start resumes from the newest
one, with the optimizer state, RNG, adaptive weights, tracker history and TensorBoard curves
(``runs/07_resume/tb``) joining seamlessly. The job that finishes writes
``runs/07_resume/resume.png``.

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
PER_JOB = -(-2 * STEPS // 5)   # steps a job runs before it is preempted: three starts
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


class PreemptAfter(Callback):
    """Sends SIGTERM to this process once it has run ``steps`` steps (the scheduler's notice)."""

    def __init__(self, steps: int):
        self.steps = steps
        self.start = 0

    def on_train_start(self, trainer, problem):
        self.start = trainer.global_step
        with open(os.path.join(OUT, "starts.txt"), "a") as f:   # for the plot
            f.write(f"{self.start}\n")

    def on_train_batch_end(self, trainer, problem, metrics):
        if metrics.step + 1 == self.start + self.steps:
            os.kill(os.getpid(), signal.SIGTERM)


def job() -> None:
    """What the job script runs, identical at every start."""
    crux = build()
    callbacks = [ModelCheckpoint(os.path.join(OUT, "ckpt"), every_n_train_steps=max(STEPS // 6, 1)),
                 PreemptAfter(PER_JOB)]
    # every start writes on in the resumed run's log version (OUT/tb/version_0)
    trainer = Trainer(max_steps=STEPS, chunk_size=max(STEPS // 60, 1), callbacks=callbacks,
                      logger=TensorBoardLogger(OUT, name="tb"), enable_progress_bar=False)
    history = trainer.fit(crux, ckpt_path="last")
    err = history.trackers["val_error"]
    print(f"finished: steps {history.steps[0]}..{history.steps[-1]} ({len(history)} steps, "
          f"each once); val_error {err.values[0]:.3e} -> {err.values[-1]:.3e}")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.semilogy(history.steps, history.total_loss, lw=0.8, label="total loss")
    ax.semilogy(err.steps, err.values, "k.", ms=3, label="val_error (tracker)")
    with open(os.path.join(OUT, "starts.txt")) as f:
        for start in [int(line) for line in f][1:]:
            ax.axvline(start, color="gray", ls="--", lw=1)
    ax.set(xlabel="step", title="one run across preemptions and requeues (dashed: restarts)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "resume.png"), dpi=110)
    print(f"wrote {os.path.join(OUT, 'resume.png')}")


if __name__ == "__main__" and sys.argv[1:] == ["--job"]:
    job()
elif __name__ == "__main__":
    import shutil
    shutil.rmtree(OUT, ignore_errors=True)
    command = [sys.executable, __file__, "--job"]
    for start in range(1, 5):
        print(f"[start {start}] {' '.join(command[1:])}")
        run = subprocess.run(command, capture_output=True, text=True)
        said = [line for line in (run.stderr + run.stdout).splitlines()
                if "received" in line or "no checkpoint" in line or "finished" in line]
        print(f"    exit code {run.returncode}: " + " | ".join(s.strip() for s in said))
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        if "finished" in run.stdout:
            print(run.stdout.strip().splitlines()[-1])
            break
