"""Parameter-Jacobian diagnostics on the 2-D Poisson problem (the seed's snippets, on NNX).

Tracks, while training:
* the Jacobian norm ``mean(J**2)`` of ``u`` every 50 steps;
* the seed's NTK proxy ``max(K) / min(K)`` every 100 steps, and the ``NTKDiagnostics``
  callback's spectrum (trace, top eigenvalues, effective rank, λ1/λk) every 100 steps;
* the cosine similarity of the mean PDE and BC Jacobian rows every 100 steps;
* the output-layer-only Jacobian norm (a boolean mask, as in the seed, and the NNX filter).

Prints the tracked values and writes ``runs/04_ntk_diagnostics/ntk.png``.

    python examples/04_ntk_diagnostics.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
import jno_flax.numpy as jnn  # noqa: E402
from jno_flax.callbacks import NTKDiagnostics  # noqa: E402
from jno_flax.numpy import tracker  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 3000))
OUT = os.path.join("runs", "04_ntk_diagnostics")
π = jnp.pi

dom = jno.domain.rect(n_interior=1000, n_boundary=200, seed=0)
x, y = dom.variable("interior")
xb, yb = dom.variable("boundary")
u_net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0)), name="u_net")
u_net.optimizer(optax.adam(1e-3))
u = u_net(x, y)
pde_expr = u.laplacian(x, y) + 2 * π**2 * jnn.sin(π * x) * jnn.sin(π * y)
bc_expr = u_net(xb, yb)
pde, bc = pde_expr.mse.name("pde"), bc_expr.mse.name("bc")

# Jacobian norm of the solution, every 50 steps.
J = u.grad(u_net)                                       # (B, N, P)
J_norm = tracker(jnn.mean(J**2), interval=50, name="J_norm")

# NTK proxy from the seed (largest over smallest kernel entry), every 100 steps.
J_flat = J[0]                                           # (N, P)
K = J_flat @ J_flat.T                                   # (N, N)
K_norm = tracker(jnn.max(K) / (jnn.min(K) + 1e-8), interval=100, name="K_ratio")

# Cosine similarity of the PDE and BC Jacobians (mean rows), every 100 steps.
J_pde = pde_expr.grad(u_net)                            # (B, N_int, P)
J_bc = bc_expr.grad(u_net)                              # (B, N_bc, P)
g_pde = jnn.mean(J_pde[0], axis=0)                      # (P,)
g_bc = jnn.mean(J_bc[0], axis=0)
cos_sim = tracker(jnn.dot(g_pde, g_bc) / (jnn.norm(g_pde) * jnn.norm(g_bc) + 1e-8),
                  interval=100, name="cos_pde_bc")

# Output layer only: a boolean mask shaped like the NNX Param state (the seed's style) ...
output_mask = jax.tree.map(lambda _: False, nnx.state(u_net.module, nnx.Param))
output_mask["output_layer"]["kernel"] = nnx.Param(True)
J_out = u.grad(u_net.mask(output_mask))
J_out_norm = tracker(jnn.mean(J_out**2), interval=50, name="J_out_norm")
# ... or, equivalently for kernel + bias, an NNX filter.
J_head = u.grad(u_net.mask(nnx.PathContains("output_layer")))
J_head_norm = tracker(jnn.mean(J_head**2), interval=50, name="J_head_norm")

crux = jno.core([pde, bc, J_norm, K_norm, cos_sim, J_out_norm, J_head_norm])
ntk = NTKDiagnostics(interval=100, top_k=10, max_points=400)
history = Trainer(max_steps=STEPS, callbacks=[ntk]).fit(crux)

tr = history.trackers
for name in ["J_norm", "J_out_norm", "J_head_norm", "K_ratio", "cos_pde_bc",
             "ntk/all/condition", "ntk/all/effective_rank"]:
    s = tr[name]
    print(f"{name:24s} step {s.steps[0]:5d}: {s.values[0]:10.4g}   "
          f"step {s.steps[-1]:5d}: {s.values[-1]:10.4g}")

fig, axes = plt.subplots(1, 3, figsize=(16, 4))
eigs = tr["ntk/pde/eigs"]
for i in [0, len(eigs) // 2, len(eigs) - 1]:
    axes[0].semilogy(np.arange(1, eigs.values.shape[1] + 1), eigs.values[i], marker="o",
                     label=f"step {eigs.steps[i]}")
axes[0].set(title="NTK spectrum of the PDE residual (top 10)", xlabel="k", ylabel="λ_k")
axes[0].legend()
axes[1].plot(tr["cos_pde_bc"].steps, tr["cos_pde_bc"].values, marker=".")
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set(title="cos(mean J_pde, mean J_bc)", xlabel="step")
for name in ["J_norm", "J_out_norm", "J_head_norm"]:
    axes[2].semilogy(tr[name].steps, tr[name].values, label=name)
axes[2].set(title="Jacobian norms", xlabel="step")
axes[2].legend()
fig.tight_layout()
os.makedirs(OUT, exist_ok=True)
fig.savefig(os.path.join(OUT, "ntk.png"), dpi=110)
print(f"wrote {os.path.join(OUT, 'ntk.png')}")
