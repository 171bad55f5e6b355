"""A data-driven Fourier neural operator for 1-D Darcy flow (Li et al., ICLR 2021):

    -(a(x) u'(x))' = 1,   x ∈ (0, 1),   u(0) = u(1) = 0,

learned from 5000 pairs. The permeabilities are a = exp(g) with g from a Gaussian random field
(RBF kernel, length scale 0.1) on 128 grid points; the solutions come from the example's
finite-volume solver (``solve_darcy``: harmonic means at the cell faces). The FNO (16 modes,
width 32, 4 Fourier layers) reads the resistivity 1/a (u = ∫ (c - s) / a(s) ds is linear in
it for fixed c) and trains on 50 pairs per step with the data loss
``(fno(r) - r.paired(u)).mse``, the same API as the physics-informed examples. Prints the mean relative L2 error over 500 unseen permeabilities and writes
``runs/14_darcy_fno/darcy.png``.

    python examples/14_darcy_fno.py                        # ~3 min on 2 CPU cores
    JNO_EXAMPLE_STEPS=300 python examples/14_darcy_fno.py  # a quick smoke run
"""

from __future__ import annotations

import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
from jno_flax.callbacks import TensorBoardLogger  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 6000))
GRID = 128
N_TRAIN, N_TEST = 5000, 500
OUT = os.path.join("runs", "14_darcy_fno")


def solve_darcy(a: np.ndarray) -> np.ndarray:
    """u at the nodes of a uniform grid on [0, 1] (rows of ``a``: the permeability there):
    second-order finite volumes with harmonic means of ``a`` at the cell faces."""
    n = a.shape[1]
    h = 1.0 / (n - 1)
    faces = 2 * a[:, 1:] * a[:, :-1] / (a[:, 1:] + a[:, :-1])       # (B, n-1)
    u = np.zeros_like(a)
    for b in range(len(a)):
        west, east = faces[b, :-1], faces[b, 1:]
        matrix = (np.diag(west + east) - np.diag(east[:-1], 1) - np.diag(west[1:], -1)) / h ** 2
        u[b, 1:-1] = np.linalg.solve(matrix, np.ones(n - 2))
    return u


def resistivities(n: int, seed: int) -> jno.functions.FunctionSet:
    """1 / a for ``n`` permeabilities a = exp(g), g a GRF sample."""
    g = jno.functions.grf(n, x_range=(0, 1), n_sensors=GRID, length_scale=0.1, seed=seed)
    return jno.functions.array(np.exp(-g.values), x_range=(0, 1))


def main() -> None:
    r = resistivities(N_TRAIN, seed=0)
    u_data = solve_darcy(1.0 / r.values)
    scale = float(np.abs(u_data).max())
    fno = jno.nn.wrap(jno.nn.FNO(1, 1, grid=(GRID,), modes=16, width=32, depth=4,
                                 rngs=nnx.Rngs(0)), name="fno")
    fno.optimizer(optax.adam(optax.cosine_decay_schedule(1e-3, STEPS)))
    u = scale * fno(r)                       # outputs of order one
    crux = jno.core([((u - r.paired(u_data)) / scale).mse.name("data")])

    started = time.perf_counter()
    history = Trainer(max_steps=STEPS, batch_size={r: 50}, logger=TensorBoardLogger(
        save_dir="runs", name="14_darcy_fno")).fit(crux)
    seconds = time.perf_counter() - started
    test = resistivities(N_TEST, seed=1)
    exact = solve_darcy(1.0 / test.values)
    pred = np.asarray(crux.eval(u, inputs={r: test.values}))
    errors = np.linalg.norm(pred - exact, axis=1) / np.linalg.norm(exact, axis=1)
    print(f"{STEPS} steps in {seconds:.0f} s; mean relative L2 error over {N_TEST} unseen "
          f"permeabilities: {errors.mean():.3e} (std {errors.std():.1e})")

    xs = np.linspace(0, 1, GRID)
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.5))
    for ax, i in zip(axes[:3], (0, 1, 2)):
        ax.plot(xs, exact[i], "b-", lw=2, label="finite volumes")
        ax.plot(xs, pred[i], "r--", lw=2, label="FNO")
        ax2 = ax.twinx()
        ax2.plot(xs, 1.0 / test.values[i], "k:", label="a (permeability)")
        ax.set(title=f"test permeability {i}: error {errors[i]:.1e}", xlabel="x")
        ax.legend(loc="upper left")
    axes[3].hist(np.log10(errors), bins=30)
    axes[3].set(title=f"log10 relative L2 error, mean {errors.mean():.2e}", xlabel="log10")
    axes[4].semilogy(history.steps, history.losses["data"])
    axes[4].set(title="data loss", xlabel="step")
    fig.tight_layout()
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "darcy.png"), dpi=90)
    print(f"wrote {os.path.join(OUT, 'darcy.png')}")


if __name__ == "__main__":
    main()
