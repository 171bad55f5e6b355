"""A physics-informed DeepONet for a nonlinear diffusion–reaction operator (Wang, Wang &
Perdikaris 2021, section 3.2):

    u_t = D u_xx + k u² + f(x),   (x, t) ∈ [0, 1]²,   D = k = 0.01,
    u(0, x) = 0,   u(t, 0) = u(t, 1) = 0,

learned as the operator f ↦ u from 5000 source terms f drawn from a Gaussian random field
(RBF kernel, length scale 0.2, 100 sensors) with no solution data: only the residual. The
initial and boundary values are exact through the output transform
``u = x (1 - x) t · G(f)(x, t)``. Each step trains on 50 functions and 100 of 4096 Sobol
collocation points (``Trainer(batch_size={f: 50, x: 100})``); the DeepONet has
100 -> 5 x 50 tanh branch and 2 -> 5 x 50 tanh trunk nets.

The test set is 500 further source terms (another seed), solved by the example's finite
differences (Crank–Nicolson in time with a second-order predictor–corrector for the reaction,
centred differences in space; ``solve_fd``), on a 101 x 101 grid. Prints the mean relative L2
error over the test functions next to the paper's and writes
``runs/12_diffusion_reaction_operator/diffusion_reaction.png``.

    python examples/12_diffusion_reaction_operator.py                        # ~12 min
    JNO_EXAMPLE_STEPS=300 python examples/12_diffusion_reaction_operator.py  # a smoke run
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

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 30_000))
D = K = 0.01
M = 100                      # sensors
N_TRAIN, N_TEST = 5000, 500
PAPER = 5.33e-3  # the paper's notebook: mean relative L2 over 100 test functions (120k steps)
OUT = os.path.join("runs", "12_diffusion_reaction_operator")


def solve_fd(f: np.ndarray, sensors: np.ndarray, nx: int = 101, nt: int = 101) -> np.ndarray:
    """u on the ``(nt, nx)`` grid of [0, 1]² for each source ``f`` (rows, values at
    ``sensors``, linearly interpolated): Crank–Nicolson for ``D u_xx``, the reaction ``k u²``
    by a predictor–corrector (trapezoidal), so second order in x and t."""
    xs = np.linspace(0, 1, nx)
    dt, dx = 1.0 / (nt - 1), 1.0 / (nx - 1)
    src = np.stack([np.interp(xs[1:-1], sensors, row) for row in f])   # (B, nx-2)
    n = nx - 2
    lap = (np.diag(-2.0 * np.ones(n)) + np.diag(np.ones(n - 1), 1)
           + np.diag(np.ones(n - 1), -1)) / dx ** 2
    lhs = np.eye(n) - 0.5 * dt * D * lap
    rhs = np.eye(n) + 0.5 * dt * D * lap
    inv = np.linalg.inv(lhs)
    u = np.zeros((len(f), nt, nx))
    inner = np.zeros((len(f), n))
    for i in range(1, nt):
        explicit = inner @ rhs.T + dt * src
        guess = (explicit + dt * K * inner ** 2) @ inv.T
        inner = (explicit + 0.5 * dt * K * (inner ** 2 + guess ** 2)) @ inv.T
        u[:, i, 1:-1] = inner
    return u


def build():
    f = jno.functions.grf(N_TRAIN, x_range=(0, 1), n_sensors=M, length_scale=0.2, seed=0)
    dom = jno.domain.interval(0, 1, n_interior=4096, time=(0, 1), sampler="sobol", seed=0)
    x, t = dom.variable("interior")
    branch = jno.nn.MLP(M, 50, hidden=50, depth=4, rngs=nnx.Rngs(0))
    trunk = jno.nn.MLP(2, 50, hidden=50, depth=4, rngs=nnx.Rngs(1))
    net = jno.nn.wrap(jno.nn.DeepONet(branch, trunk, 50, n_sensors=M, n_coords=2), name="G")
    net.optimizer(optax.adam(optax.exponential_decay(1e-3, 1500, 0.9)))
    u = x * (1 - x) * t * net(f, x, t)
    residual = u.d(t) - D * u.d2(x) - K * u ** 2 - f(x)
    crux = jno.core([residual.mse.name("residual")])
    return f, x, t, u, crux


def main() -> None:
    f, x, t, u, crux = build()
    test = jno.functions.grf(N_TEST, x_range=(0, 1), n_sensors=M, length_scale=0.2, seed=1)
    sensors = np.linspace(0, 1, M)
    exact = solve_fd(test.values, sensors)
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(0, 1, 101), indexing="ij")

    started = time.perf_counter()
    trainer = Trainer(max_steps=STEPS, batch_size={f: 50, x: 100}, logger=TensorBoardLogger(
        save_dir="runs", name="12_diffusion_reaction_operator"))
    history = trainer.fit(crux)
    seconds = time.perf_counter() - started
    grid = {f: test.values, x: xg.reshape(-1, 1), t: tg.reshape(-1, 1)}
    pred = np.asarray(crux.eval(u, inputs=grid))[..., 0].reshape(exact.shape)
    errors = (np.linalg.norm((pred - exact).reshape(N_TEST, -1), axis=1)
              / np.linalg.norm(exact.reshape(N_TEST, -1), axis=1))
    print(f"{STEPS} steps in {seconds:.0f} s; mean relative L2 error over {N_TEST} unseen "
          f"source terms: {errors.mean():.3e} (std {errors.std():.1e}); "
          f"paper's notebook: {PAPER:.2e}")

    fig, axes = plt.subplots(1, 5, figsize=(25, 4.5))
    i = int(np.argsort(errors)[len(errors) // 2])       # a median test function
    for ax, field, title in [(axes[0], pred[i], "PI-DeepONet"),
                             (axes[1], exact[i], "finite differences"),
                             (axes[2], np.abs(pred[i] - exact[i]), "|error|")]:
        im = ax.imshow(field, origin="lower", extent=(0, 1, 0, 1), aspect="auto")
        ax.set(title=f"{title} (test function {i})", xlabel="x", ylabel="t")
        fig.colorbar(im, ax=ax)
    axes[3].hist(np.log10(errors), bins=30)
    axes[3].set(title=f"log10 relative L2 error, mean {errors.mean():.2e}", xlabel="log10")
    axes[4].semilogy(history.steps, history.losses["residual"])
    axes[4].set(title="residual loss", xlabel="step")
    fig.tight_layout()
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "diffusion_reaction.png"), dpi=90)
    print(f"wrote {os.path.join(OUT, 'diffusion_reaction.png')}")


if __name__ == "__main__":
    main()
