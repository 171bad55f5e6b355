"""Adaptive loss weights on the 2-D Poisson problem: ReLoBRaLo against fixed weights.

Trains the same network twice (same initial weights and points): once with the plain sum
``pde + bc`` and once with ReLoBRaLo weights, prints both relative L2 errors and writes
``runs/06_adaptive_weights/weights.png`` (the weights over training and both loss curves).

    python examples/06_adaptive_weights.py
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

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 5000))
OUT = os.path.join("runs", "06_adaptive_weights")
π = jnp.pi


def build(adaptive: bool):
    dom = jno.domain.rect(n_interior=1000, n_boundary=200, seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(1e-3))
    u = net(x, y)
    pde = (u.laplacian(x, y) + 2 * π**2 * jnn.sin(π * x) * jnn.sin(π * y)).mse.name("pde")
    bc = net(xb, yb).mse.name("bc")
    if adaptive:
        w_pde, w_bc = jno.fn.adaptive.relobralo([pde, bc])
        crux = jno.core([(w_pde * pde).name("w_pde*pde"), (w_bc * bc).name("w_bc*bc"),
                         w_pde.tracker().name("w_pde"), w_bc.tracker().name("w_bc"),
                         jnn.tracker(pde, name="pde_raw"), jnn.tracker(bc, name="bc_raw")])
    else:
        crux = jno.core([pde, bc])
    return crux, u, x, y


def rel_l2(crux, u, x, y) -> float:
    g = np.linspace(0, 1, 100)
    X, Y = np.meshgrid(g, g)
    pred = np.asarray(crux.eval(u, inputs={x: X.reshape(-1, 1), y: Y.reshape(-1, 1)}))[0, :, 0]
    exact = (np.sin(np.pi * X) * np.sin(np.pi * Y)).ravel()
    return float(np.linalg.norm(pred - exact) / np.linalg.norm(exact))


results = {}
for adaptive in (False, True):
    crux, u, x, y = build(adaptive)
    history = crux.solve(STEPS)
    results["relobralo" if adaptive else "fixed"] = (history, rel_l2(crux, u, x, y))

for name, (history, err) in results.items():
    print(f"{name:10s} relative L2 error {err:.3e}   wall time {history.wall_time:.1f} s")

h = results["relobralo"][0]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for key in ("w_pde", "w_bc"):
    axes[0].plot(h.trackers[key].steps, h.trackers[key].values, label=key)
axes[0].set(title="ReLoBRaLo weights (sum = 2)", xlabel="step")
axes[0].legend()
fixed = results["fixed"][0]
axes[1].semilogy(fixed.steps, fixed.losses["pde"] + fixed.losses["bc"], label="fixed: pde + bc")
axes[1].semilogy(h.steps, h.trackers["pde_raw"].values + h.trackers["bc_raw"].values,
                 label="ReLoBRaLo: pde + bc (unweighted)")
axes[1].set(title="loss", xlabel="step")
axes[1].legend()
fig.tight_layout()
os.makedirs(OUT, exist_ok=True)
fig.savefig(os.path.join(OUT, "weights.png"), dpi=110)
print(f"wrote {os.path.join(OUT, 'weights.png')}")
