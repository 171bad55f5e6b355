"""Viscous Burgers (Raissi et al. 2019) to 1e-5: Adam in float32, then SS-Broyden in float64.

    u_t + u u_x = (0.01/π) u_xx   on x ∈ [-1, 1], t ∈ [0, 1],
    u(0, x) = -sin(πx),   u(t, ±1) = 0.

The exact solution comes from the Cole–Hopf transform, computed here with Gauss–Hermite
quadrature. Recipe (8 x 20 tanh MLP, 3021 parameters; 8192 Sobol interior + 200 boundary +
200 initial points):

1. Adam (1e-3, decayed by 0.9 every 1000 steps) for 1000 steps in float32
   (``precision="32-true"``);
2. self-scaled Broyden (``jno.optimizers.ssbroyden()``: a dense 3021 x 3021 inverse Hessian,
   a strong-Wolfe line search; Urbán et al. 2025) in float64 (``precision="64-true"``) on the
   same run, printing the error every 500 steps.

``jax_enable_x64`` is set first in ``main()``, so the float32 phase is a cast of a float64-built
problem. Prints the relative L2 error against the exact solution on a 256 x 101 grid and
writes ``runs/08_burgers/burgers.png`` (prediction, exact, error over (t, x); slices at
t = 0.25, 0.5, 0.75; error against time; the loss) and TensorBoard logs to
``runs/08_burgers/version_<n>``.

    python examples/08_burgers.py                         # ~12 min on 2 CPU cores
    JNO_EXAMPLE_STEPS=200 python examples/08_burgers.py   # a quick smoke run
"""

from __future__ import annotations

import os
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
import jno_flax.numpy as jnn  # noqa: E402
from jno_flax.callbacks import TensorBoardLogger  # noqa: E402

ADAM_STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 1000))
QN_STEPS = 4 * ADAM_STEPS      # SS-Broyden steps
QN_BLOCK = max(1, ADAM_STEPS // 2)
NU = 0.01 / np.pi
OUT = os.path.join("runs", "08_burgers")


def exact_solution(t: np.ndarray, x: np.ndarray, n_nodes: int = 100) -> np.ndarray:
    """Cole–Hopf: u = -∫ sin(π(x-η)) f(x-η) G(η) dη / ∫ f(x-η) G(η) dη with
    f(y) = exp(-cos(πy) / (2πν)) and G the heat kernel of variance 2νt; η = sqrt(4νt) z turns
    both integrals into Gauss–Hermite sums over z (converged to 1e-15 at 100 nodes)."""
    z, w = np.polynomial.hermite.hermgauss(n_nodes)
    t, x = np.broadcast_arrays(np.asarray(t, np.float64), np.asarray(x, np.float64))
    y = x[..., None] - np.sqrt(4 * NU * t)[..., None] * z
    log_f = -np.cos(np.pi * y) / (2 * np.pi * NU)
    f = w * np.exp(log_f - log_f.max(axis=-1, keepdims=True))  # scaled: no overflow
    return -np.sum(np.sin(np.pi * y) * f, axis=-1) / np.sum(f, axis=-1)


def main() -> None:
    jax.config.update("jax_enable_x64", True)   # first: float64 arrays for the float64 phase
    dom = jno.domain.interval(-1, 1, n_interior=8192, n_boundary=200, n_initial=200,
                              time=(0, 1), sampler="sobol", seed=0)
    x, t = dom.variable("interior")
    xb, tb = dom.variable("boundary")
    x0, t0 = dom.variable("initial")

    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=20, depth=8, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(optax.exponential_decay(1e-3, 1000, 0.9)))
    u = net(x, t)
    residual = u.d(t) + u * u.d(x) - NU * u.d2(x)
    crux = jno.core([residual.mse.name("pde"), net(xb, tb).mse.name("bc"),
                     (net(x0, t0) + jnn.sin(np.pi * x0)).mse.name("ic")])
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(-1, 1, 256), indexing="ij")
    exact = exact_solution(tg, xg)
    grid = {x: xg.reshape(-1, 1), t: tg.reshape(-1, 1)}

    def error() -> float:
        pred = np.asarray(crux.eval(u, inputs=grid))[0, :, 0].reshape(tg.shape)
        return float(np.linalg.norm(pred - exact) / np.linalg.norm(exact))

    # 1. Adam in float32: a cheap start
    logger = TensorBoardLogger(save_dir="runs", name="08_burgers")
    started = time.perf_counter()
    crux.solve(ADAM_STEPS, precision="32-true", logger=logger)
    print(f"Adam {ADAM_STEPS} steps (float32): relative L2 error {error():.3e} "
          f"({time.perf_counter() - started:.0f} s)")
    # 2. SS-Broyden in float64 on the same run: a fresh optimizer state, the weights cast
    net.optimizer(jno.optimizers.ssbroyden())
    curve = []
    while crux.global_step < ADAM_STEPS + QN_STEPS:
        history = crux.solve(min(QN_BLOCK, ADAM_STEPS + QN_STEPS - crux.global_step),
                             precision="64-true", logger=logger)
        curve.append((crux.global_step, time.perf_counter() - started, error()))
        print(f"SS-Broyden to step {curve[-1][0]} (float64): relative L2 error "
              f"{curve[-1][2]:.3e} ({curve[-1][1]:.0f} s)")
    rel_l2 = curve[-1][2]
    print(f"relative L2 error {rel_l2:.3e} after {ADAM_STEPS} Adam + {QN_STEPS} SS-Broyden "
          f"steps ({time.perf_counter() - started:.0f} s)")
    pred = np.asarray(crux.eval(u, inputs=grid))[0, :, 0].reshape(tg.shape)

    # plots
    fig, axes = plt.subplots(2, 4, figsize=(19, 8))
    extent = (0, 1, -1, 1)
    for ax, field, title, cmap in [(axes[0, 0], pred, "prediction", "RdBu_r"),
                                   (axes[0, 1], exact, "exact (Cole–Hopf)", "RdBu_r"),
                                   (axes[0, 2], np.abs(pred - exact), "|error|", "viridis")]:
        im = ax.imshow(field.T, origin="lower", extent=extent, aspect="auto", cmap=cmap)
        ax.set(title=title, xlabel="t", ylabel="x")
        fig.colorbar(im, ax=ax)
    _, seconds, errors = zip(*curve)
    axes[0, 3].semilogy(seconds, errors, "o-")
    axes[0, 3].set(title="relative L2 error (SS-Broyden phase)", xlabel="seconds")
    for ax, ts in zip(axes[1, :3], (0.25, 0.5, 0.75)):
        i = int(round(ts * 100))
        ax.plot(xg[i], exact[i], "b-", lw=2, label="exact")
        ax.plot(xg[i], pred[i], "r--", lw=2, label="prediction")
        ax.set(title=f"t = {ts}", xlabel="x", ylabel="u")
        ax.legend()
    axes[1, 3].semilogy(history.steps, history.total_loss)
    axes[1, 3].axvline(ADAM_STEPS, color="k", ls=":", label="Adam | SS-Broyden")
    axes[1, 3].set(title="loss", xlabel="step")
    axes[1, 3].legend()
    fig.suptitle(f"Burgers, relative L2 error {rel_l2:.2e}")
    fig.tight_layout()
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "burgers.png"), dpi=100)
    print(f"wrote {os.path.join(OUT, 'burgers.png')}")


if __name__ == "__main__":
    main()
