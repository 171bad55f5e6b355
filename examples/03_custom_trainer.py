"""A research-style Trainer subclass: weighted loss terms and gradient clipping.

``WeightedClippedTrainer`` overrides two documented points:

* ``aggregate_loss``: a weighted sum ``Σ w_k L_k`` instead of the plain sum;
* ``configure_optimizers``: every optimizer is chained after global-norm gradient clipping.

It trains the 2-D Poisson problem and prints the relative L2 error.

    python examples/03_custom_trainer.py
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.trainers import Trainer

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 5000))


class WeightedClippedTrainer(Trainer):
    """Weights the constraints by name and clips each model's gradient norm."""

    def __init__(self, *args, weights: dict[str, float], max_norm: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.weights = weights
        self.max_norm = max_norm

    def aggregate_loss(self, losses):
        return sum(self.weights.get(name, 1.0) * value for name, value in losses.items())

    def configure_optimizers(self, problem):
        return {name: optax.chain(optax.clip_by_global_norm(self.max_norm), tx)
                for name, tx in super().configure_optimizers(problem).items()}


π = jnp.pi
dom = jno.domain.rect(n_interior=1000, n_boundary=200, seed=0)
x, y = dom.variable("interior")
xb, yb = dom.variable("boundary")
net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0)), name="u")
net.optimizer(optax.adam(1e-3))
u = net(x, y)
pde = (u.laplacian(x, y) + 2 * π**2 * jnn.sin(π * x) * jnn.sin(π * y)).mse.name("pde")
bc = net(xb, yb).mse.name("bc")
crux = jno.core([pde, bc])

trainer = WeightedClippedTrainer(max_steps=STEPS, weights={"pde": 1.0, "bc": 10.0},
                                 max_norm=10.0)
history = trainer.fit(crux)

g = np.linspace(0, 1, 100)
X, Y = np.meshgrid(g, g)
pred = np.asarray(crux.eval(u, inputs={x: X.reshape(-1, 1), y: Y.reshape(-1, 1)}))[0, :, 0]
exact = (np.sin(np.pi * X) * np.sin(np.pi * Y)).ravel()
print(f"weighted total loss {history.total_loss[-1]:.3e}  (pde {history.losses['pde'][-1]:.3e},"
      f" bc {history.losses['bc'][-1]:.3e})")
rel_l2 = np.linalg.norm(pred - exact) / np.linalg.norm(exact)
print(f"relative L2 error: {rel_l2:.3e}")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
im = axes[0].pcolormesh(X, Y, np.abs(pred - exact).reshape(X.shape), shading="auto")
axes[0].set(title="|u - u_exact|", xlabel="x", ylabel="y", aspect="equal")
fig.colorbar(im, ax=axes[0])
for name, values in history.losses.items():
    axes[1].semilogy(history.steps, values, label=f"{name} (weight "
                     f"{trainer.weights.get(name, 1.0):g})")
axes[1].set(xlabel="step", ylabel="loss")
axes[1].legend()
fig.suptitle(f"Subclassed Trainer (weighted, clipped): relative L2 error {rel_l2:.2e}")
fig.tight_layout()
out = os.path.join("runs", "03_custom_trainer")
os.makedirs(out, exist_ok=True)
fig.savefig(os.path.join(out, "custom_trainer.png"), dpi=110)
print(f"wrote {os.path.join(out, 'custom_trainer.png')}")
