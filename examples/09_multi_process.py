"""Several processes, one run: the 2-D Poisson problem over every device of every host.

Every process runs this same script. ``jax.distributed.initialize()`` joins them (on SLURM it
needs no arguments: see ``examples/slurm/train.sbatch``); each builds the same problem from
the same seeds, and the trainer shards the collocation points over all devices
(``Trainer(devices="auto")``) while the weights are replicated. Process 0 alone writes the
TensorBoard logs, the progress bar and the figure; checkpoints go through orbax to a directory
all processes see. A SIGTERM to any process (a preemption, or ``--signal=TERM@120`` before the
time limit) makes all of them save at the same step and exit with status 3; started again,
``ckpt_path="last"`` resumes exactly.

Started without a cluster, the script launches two local processes with two CPU devices each
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``), which talk through a coordinator on
127.0.0.1, and waits for them:

    python examples/09_multi_process.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

LOCAL_PROCESSES = 2
PREEMPTED = 3   # exit status after a SIGTERM: saved, start again (examples/slurm/train.sbatch)
STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 3000))
OUT = os.path.join("runs", "09_multi_process")


def launch_locally() -> int:
    """Start ``LOCAL_PROCESSES`` copies of this script as one cluster on this machine.

    The children run in their own session, so Ctrl-C in the terminal reaches this launcher
    only, which forwards it (and SIGTERM) once to every child: each saves and stops at the
    same step, as on a cluster. Process 0 prints; the others' output goes to
    ``runs/09_multi_process/process_<i>.log`` (shown if a process fails)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.makedirs(OUT, exist_ok=True)
    children, logs = [], []
    for i in range(LOCAL_PROCESSES):
        env = {**os.environ, "JNO_COORDINATOR": f"127.0.0.1:{port}", "JNO_PROCESS_ID": str(i),
               "JNO_NUM_PROCESSES": str(LOCAL_PROCESSES), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        log = None if i == 0 else open(os.path.join(OUT, f"process_{i}.log"), "w")
        logs.append(log)
        children.append(subprocess.Popen([sys.executable, __file__], env=env, stdout=log,
                                         stderr=log, start_new_session=True))

    def forward(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    codes = [child.wait() for child in children]
    for i, (code, log) in enumerate(zip(codes, logs)):
        if log is not None:
            log.close()
            if code not in (0, PREEMPTED):
                print(f"process {i} failed (exit status {code}); its output:\n"
                      + open(log.name).read()[-4000:], file=sys.stderr)
    return max(codes)


def train() -> None:
    """What every process runs."""
    import jax

    if "JNO_COORDINATOR" in os.environ:
        jax.distributed.initialize(coordinator_address=os.environ["JNO_COORDINATOR"],
                                   num_processes=int(os.environ["JNO_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JNO_PROCESS_ID"]))
    else:  # a cluster: SLURM (or another environment JAX detects) says who is who
        jax.distributed.initialize()

    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    import jno_flax as jno
    import jno_flax.numpy as jnn
    from jno_flax.callbacks import ModelCheckpoint, TensorBoardLogger
    from jno_flax.trainers import Trainer

    π = jnp.pi
    dom = jno.domain.rect(n_interior=4000, n_boundary=400, seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(optax.exponential_decay(2e-3, STEPS, 0.05)))
    u = net(x, y)
    u_exact = jnn.sin(π * x) * jnn.sin(π * y)
    pde = (u.laplacian(x, y) + 2 * π**2 * u_exact).mse.name("pde")
    bc = net(xb, yb).mse.name("bc")
    crux = jno.core([pde, bc, jnn.tracker(jnn.mean(jnn.abs(u - u_exact)), 100,
                                          name="val_error")])

    checkpoints = ModelCheckpoint(dirpath=os.path.join(OUT, "checkpoints"),
                                  every_n_train_steps=500)
    trainer = Trainer(max_steps=STEPS, callbacks=[checkpoints], devices="auto",
                      logger=TensorBoardLogger("runs", name="09_multi_process"),
                      sigterm_exit_code=PREEMPTED)   # the job script requeues on this status
    if trainer.is_global_zero:
        print(f"{trainer.world_size} processes, {len(jax.devices())} devices: "
              f"{jax.devices()}", flush=True)
    history = trainer.fit(crux, ckpt_path="last")   # SIGTERM: saved, exit status PREEMPTED

    if trainer.is_global_zero:   # every process holds the same weights and History
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        g = np.linspace(0.0, 1.0, 100)
        X, Y = np.meshgrid(g, g, indexing="ij")
        pred = np.asarray(crux.eval(u, inputs={x: X.reshape(-1, 1),
                                               y: Y.reshape(-1, 1)}))[0, :, 0]
        exact = (np.sin(np.pi * X) * np.sin(np.pi * Y)).ravel()
        rel_l2 = np.linalg.norm(pred - exact) / np.linalg.norm(exact)
        print(f"steps: {trainer.global_step}, final loss: {history.total_loss[-1]:.3e}, "
              f"relative L2 error: {rel_l2:.3e} (expected about 8e-2 after 3000 steps: this "
              "example shows the machinery with a short run; 01_poisson_2d trains 5000 steps "
              "to about 8e-3)")
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        im = axes[0].pcolormesh(X, Y, np.abs(pred - exact).reshape(X.shape), shading="auto")
        axes[0].set_title("|error|")
        axes[0].set_xlabel("x")
        axes[0].set_ylabel("y")
        fig.colorbar(im, ax=axes[0])
        axes[1].semilogy(history.steps, history.total_loss, label="total loss")
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("loss")
        axes[1].legend()
        fig.suptitle(f"Poisson on {len(jax.devices())} devices of {trainer.world_size} "
                     f"processes: relative L2 error {rel_l2:.2e}")
        fig.tight_layout()
        os.makedirs(OUT, exist_ok=True)
        fig.savefig(os.path.join(OUT, "poisson.png"), dpi=110)
        print(f"wrote {os.path.join(OUT, 'poisson.png')}")


if __name__ == "__main__":
    on_cluster = "JNO_COORDINATOR" in os.environ or "SLURM_JOB_ID" in os.environ
    if on_cluster:
        train()
    else:
        sys.exit(launch_locally())
