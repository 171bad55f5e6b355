"""Gradient conflict between the PDE and boundary losses while training 2-D Poisson.

``GradientConflict`` records, every 50 steps, the cosine similarity of the parameter
gradients of ``pde`` and ``bc`` and their norms (all parameters, and the output layer only).
Prints a summary and writes ``runs/05_gradient_conflict/conflict.png``.

    python examples/05_gradient_conflict.py
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
from jno_flax.callbacks import GradientConflict  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 3000))
OUT = os.path.join("runs", "05_gradient_conflict")
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


history = Trainer(max_steps=STEPS, callbacks=[
    GradientConflict(interval=50),
    GradientConflict(interval=50, filter=nnx.PathContains("output_layer"), name="head"),
]).fit(crux)

tr = history.trackers
cos, cos_head = tr["cos/pde|bc"], tr["head/cos/pde|bc"]
print(f"cos(g_pde, g_bc): first {cos.values[0]:+.3f}, last {cos.values[-1]:+.3f}, "
      f"fraction of checks in conflict (cos < 0): {np.mean(cos.values < 0):.2f}")
print(f"output layer only: first {cos_head.values[0]:+.3f}, last {cos_head.values[-1]:+.3f}")
print(f"|g_pde| / |g_bc| at the end: "
      f"{tr['grad_norm/pde'].values[-1] / tr['grad_norm/bc'].values[-1]:.3g}")

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
axes[0].plot(cos.steps, cos.values, label="all parameters")
axes[0].plot(cos_head.steps, cos_head.values, label="output layer")
axes[0].axhline(0, color="k", lw=0.5)
axes[0].set(title="cosine similarity of ∇L_pde and ∇L_bc", xlabel="step")
axes[0].legend()
for name in ["grad_norm/pde", "grad_norm/bc"]:
    axes[1].semilogy(tr[name].steps, tr[name].values, label=name)
axes[1].set(title="gradient norms", xlabel="step")
axes[1].legend()
fig.tight_layout()
os.makedirs(OUT, exist_ok=True)
fig.savefig(os.path.join(OUT, "conflict.png"), dpi=110)
print(f"wrote {os.path.join(OUT, 'conflict.png')}")
