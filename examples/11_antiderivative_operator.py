"""A physics-informed DeepONet for the antiderivative operator (Wang, Wang & Perdikaris 2021).

    du/dx = f(x),   u(0) = 0,   x ∈ [0, 1],

learned as the operator f ↦ u from 10 000 input functions f drawn from a Gaussian random field
(RBF kernel, length scale 0.2, 100 sensors), **without any solution data**: the loss is the
residual at the 100 sensor locations plus the initial condition, for 100 functions per step
(``Trainer(batch_size={f: 100})``). The DeepONet has a 100 -> 5 x 50 tanh branch and a
1 -> 5 x 50 tanh trunk, as in the paper's notebook.

The test set is 500 further functions (another seed). Their exact antiderivative at the sensors
is the cumulative trapezoid rule (exact for the piecewise-linear interpolant that the residual
uses). Prints the mean relative L2 error over the test functions next to the paper's and writes
``runs/11_antiderivative_operator/antiderivative.png`` (three test functions with the
prediction and the exact antiderivative, the error histogram, the loss).

    python examples/11_antiderivative_operator.py                        # ~10 min, 2 CPU cores
    JNO_EXAMPLE_STEPS=300 python examples/11_antiderivative_operator.py  # a quick smoke run
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

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 40_000))
M = 100                      # sensors
N_TRAIN, N_TEST, BATCH = 10_000, 500, 100
PAPER = 2.49e-3  # the paper's notebook: 1000 test functions, 40k steps, one data point each
OUT = os.path.join("runs", "11_antiderivative_operator")


def antiderivative(f: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """∫_0^x of the piecewise-linear interpolant of each row of ``f`` at the nodes ``xs``."""
    steps = 0.5 * (f[:, 1:] + f[:, :-1]) * np.diff(xs)
    return np.concatenate([np.zeros((len(f), 1)), np.cumsum(steps, axis=1)], axis=1)


def build():
    """The problem: the function family, the operator network and the constraints."""
    f = jno.functions.grf(N_TRAIN, x_range=(0, 1), n_sensors=M, length_scale=0.2, seed=0)
    dom = jno.domain.interval(0, 1, n_interior=M, n_boundary=2, sampler="grid")
    x, = dom.variable("interior")          # the sensor locations
    x0, = dom.variable("left")
    branch = jno.nn.MLP(M, 50, hidden=50, depth=4, rngs=nnx.Rngs(0))
    trunk = jno.nn.MLP(1, 50, hidden=50, depth=4, rngs=nnx.Rngs(1))
    net = jno.nn.wrap(jno.nn.DeepONet(branch, trunk, 50, n_sensors=M, n_coords=1), name="G")
    net.optimizer(optax.adam(optax.exponential_decay(1e-3, 2000, 0.9)))
    u = net(f, x)
    crux = jno.core([(u.d(x) - f(x)).mse.name("residual"), net(f, x0).mse.name("ic")])
    return f, x, u, crux


def main() -> None:
    f, x, u, crux = build()
    test = jno.functions.grf(N_TEST, x_range=(0, 1), n_sensors=M, length_scale=0.2, seed=1)
    xs = np.linspace(0, 1, M)
    exact = antiderivative(test.values, xs)

    started = time.perf_counter()
    trainer = Trainer(max_steps=STEPS, batch_size={f: BATCH},
                      logger=TensorBoardLogger(save_dir="runs", name="11_antiderivative_operator"))
    history = trainer.fit(crux)
    seconds = time.perf_counter() - started
    pred = np.asarray(crux.eval(u, inputs={f: test.values, x: xs[:, None]}))[..., 0]
    errors = np.linalg.norm(pred - exact, axis=1) / np.linalg.norm(exact, axis=1)
    print(f"{STEPS} steps in {seconds:.0f} s; mean relative L2 error over {N_TEST} unseen "
          f"functions: {errors.mean():.3e} (std {errors.std():.1e}); "
          f"paper's notebook: {PAPER:.2e}")

    fig, axes = plt.subplots(1, 5, figsize=(24, 4.5))
    for ax, i in zip(axes[:3], (0, 1, 2)):
        ax.plot(xs, test.values[i], "k:", label="f (input)")
        ax.plot(xs, exact[i], "b-", lw=2, label="exact u")
        ax.plot(xs, pred[i], "r--", lw=2, label="PI-DeepONet")
        ax.set(title=f"test function {i}: error {errors[i]:.1e}", xlabel="x")
        ax.legend()
    axes[3].hist(np.log10(errors), bins=30)
    axes[3].set(title=f"log10 relative L2 error, mean {errors.mean():.2e}", xlabel="log10")
    axes[4].semilogy(history.steps, history.losses["residual"], label="residual")
    axes[4].semilogy(history.steps, history.losses["ic"], label="u(0) = 0")
    axes[4].set(title="loss", xlabel="step")
    axes[4].legend()
    fig.tight_layout()
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "antiderivative.png"), dpi=90)
    print(f"wrote {os.path.join(OUT, 'antiderivative.png')}")


if __name__ == "__main__":
    main()
