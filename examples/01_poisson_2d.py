"""2-D Poisson problem: -Δu = 2π² sin(πx) sin(πy) on the unit square, u = 0 on the boundary.

Exact solution u = sin(πx) sin(πy). Trains an MLP with a PINN loss, logs to TensorBoard
(``runs/01_poisson_2d``), tracks the validation error every 100 steps, prints the relative L2
error on a 100 x 100 grid and writes ``runs/01_poisson_2d/poisson_2d.png``.

    python examples/01_poisson_2d.py            # then: tensorboard --logdir runs
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
import jno_flax.numpy as jnn  # noqa: E402
from jno_flax.callbacks import TensorBoardLogger  # noqa: E402
from jno_flax.numpy import tracker  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 10_000))
OUT = os.path.join("runs", "01_poisson_2d")
π = jnp.pi

dom = jno.domain.rect(x_range=(0, 1), y_range=(0, 1), n_interior=1000, n_boundary=200, seed=0)
x, y = dom.variable("interior")
xb, yb = dom.variable("boundary")

u_net = jno.nn.wrap(jno.nn.MLP(in_features=2, out_features=1, hidden=64, depth=3,
                               rngs=nnx.Rngs(0)), name="u_net")
schedule = optax.exponential_decay(2e-3, transition_steps=STEPS, decay_rate=0.05)
u_net.optimizer(optax.inject_hyperparams(optax.adam)(learning_rate=schedule))

u = u_net(x, y)
u_exact = jnn.sin(π * x) * jnn.sin(π * y)
pde = (u.laplacian(x, y) + 2 * π**2 * u_exact).name("pde")
bc = u_net(xb, yb)

val_error = tracker(jnn.mean(jnn.abs(u - u_exact)), interval=100, name="val_error")
crux = jno.core([pde.mse.name("pde"), bc.mse.name("bc"), val_error])

# logs go to runs/01_poisson_2d/version_<n> (a new version per run), like Lightning's
trainer = Trainer(max_steps=STEPS, logger=TensorBoardLogger("runs", name="01_poisson_2d"))
history = trainer.fit(crux)

# Evaluate on a 100 x 100 grid.
g = np.linspace(0.0, 1.0, 100)
X, Y = np.meshgrid(g, g, indexing="ij")
pred = np.asarray(crux.eval(u, inputs={x: X.reshape(-1, 1), y: Y.reshape(-1, 1)}))[0, :, 0]
exact = (np.sin(np.pi * X) * np.sin(np.pi * Y)).ravel()
rel_l2 = np.linalg.norm(pred - exact) / np.linalg.norm(exact)
print(f"steps: {STEPS}, final loss: {history.total_loss[-1]:.3e}, "
      f"relative L2 error: {rel_l2:.3e}, wall time: {history.wall_time:.1f} s")

fig, axes = plt.subplots(1, 4, figsize=(18, 4))
for ax, data, title in zip(axes[:3], [pred, exact, np.abs(pred - exact)],
                           ["prediction", "exact", "|error|"]):
    im = ax.pcolormesh(X, Y, data.reshape(X.shape), shading="auto")
    ax.set_title(title)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_aspect("equal")
    fig.colorbar(im, ax=ax)
axes[3].semilogy(history.steps, history.total_loss, label="total loss")
s = history.trackers["val_error"]
axes[3].semilogy(s.steps, s.values, label="val_error (mean |u - u_exact|)")
axes[3].set_xlabel("step")
axes[3].set_ylabel("loss / error")
axes[3].legend()
fig.suptitle(f"2-D Poisson, relative L2 error {rel_l2:.2e}")
fig.tight_layout()
os.makedirs(OUT, exist_ok=True)
fig.savefig(os.path.join(OUT, "poisson_2d.png"), dpi=110)
print(f"wrote {os.path.join(OUT, 'poisson_2d.png')} and TensorBoard logs in "
      f"{trainer.logger.log_dir}")
