"""Burgers with each ``jno.nn`` network at equal wall time: is the architecture worth it?

Every network trains the same problem with the same recipe (``examples/08_burgers.py``'s:
8192 Sobol interior, 200 boundary and 200 initial points, soft boundary and initial
conditions), each phase limited by wall time (``Trainer(max_time=...)``) instead of steps:
Adam (1e-3, x0.9 every 1000 steps) in float32 for ``--adam`` seconds (checked every 100
steps), then self-scaled Broyden (``jno.optimizers.ssbroyden()``) in float64 for ``--qn``
seconds (checked every 50 steps; ``--qn 0``: Adam alone). Printed: the
steps done in each phase and the relative L2 error against the exact Cole–Hopf solution on
the 256 x 101 grid (the example's). The networks are sized alike (about 3000 parameters), so
a quasi-Newton step costs about the same for each:

- ``mlp``: the example's 8 x 20 tanh MLP;
- ``fourier_modified``: 16 Fourier features (scale 1) of (x, t), then a 6 x 20 modified MLP;
- ``pirate``: PirateNet, 2 blocks of width 20 on 20 Fourier features (scale 1), the output
  layer fitted to the initial condition held constant in time on the interior points
  (``pi_init``);
- not run unless named: ``fourier_input_modified`` (``fourier_modified`` with
  ``include_input=True``) and ``periodic_fourier_modified`` (a periodic embedding of x,
  period 2, in front of ``fourier_modified``).

    python bench/burgers_networks.py                            # 30 s + 150 s per network
    python bench/burgers_networks.py --adam 20 --qn 60 --networks mlp,pirate
    python bench/burgers_networks.py --adam 150 --qn 0              # Adam alone
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.trainers import Trainer


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "08_burgers.py"
    spec = importlib.util.spec_from_file_location("burgers_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only; training runs under __main__
    return module


def networks(dom) -> dict:
    nn, r = jno.nn, lambda: nnx.Rngs(0)  # noqa: E731

    def pirate():
        net = nn.PirateNet(2, 1, hidden=20, depth=2,
                           embedding=nn.FourierFeatures(2, 20, scale=1.0, rngs=r()), rngs=r())
        xt = dom.points("interior")   # u(x, t) = u(x, 0) over the whole domain
        net.pi_init(xt, -np.sin(np.pi * xt[:, 0]))
        return net

    def fourier_modified(periodic=False, include_input=False):
        d = 3 if periodic else 2    # the periodic embedding maps x to (cos πx, sin πx)
        front = [nn.PeriodicEmbedding(2, axes=(0,), periods=(2.0,))] if periodic else []
        width = 16 + d * include_input
        return lambda: nn.Sequential(
            *front, nn.FourierFeatures(d, 16, scale=1.0, include_input=include_input, rngs=r()),
            nn.ModifiedMLP(width, 1, hidden=20, depth=6, rngs=r()))
    return {
        "mlp": lambda: nn.MLP(2, 1, hidden=20, depth=8, rngs=r()),
        "fourier_modified": fourier_modified(),
        "pirate": pirate,
        "fourier_input_modified": fourier_modified(include_input=True),
        "periodic_fourier_modified": fourier_modified(periodic=True),
    }


def run(name: str, module: nnx.Module, dom, exact, args) -> None:
    x, t = dom.variable("interior")
    xb, tb = dom.variable("boundary")
    x0, t0 = dom.variable("initial")
    net = jno.nn.wrap(module, name="u")
    net.optimizer(optax.adam(optax.exponential_decay(1e-3, 1000, 0.9)))
    u = net(x, t)
    nu = 0.01 / np.pi
    crux = jno.core([(u.d(t) + u * u.d(x) - nu * u.d2(x)).mse.name("pde"),
                     net(xb, tb).mse.name("bc"),
                     (net(x0, t0) + jnn.sin(np.pi * x0)).mse.name("ic")])
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                 enable_model_summary=False)
    adam = Trainer(max_steps=10**7, max_time=args.adam, chunk_size=100, precision="32-true",
                   **quiet).fit(crux)
    qn_steps = 0
    if args.qn > 0:
        net.optimizer(jno.optimizers.ssbroyden())
        qn_steps = len(Trainer(max_steps=10**7, max_time=args.qn, chunk_size=50,
                               precision="64-true", **quiet).fit(crux).steps)
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(-1, 1, 256), indexing="ij")
    pred = np.asarray(crux.eval(u, inputs={x: xg.reshape(-1, 1), t: tg.reshape(-1, 1)}))
    err = np.linalg.norm(pred[0, :, 0] - exact.ravel()) / np.linalg.norm(exact)
    print(f"{name:17s} {net.num_params:6d} params   Adam {len(adam.steps):6d} steps   "
          f"SS-Broyden {qn_steps:5d} steps   relative L2 {err:.3e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adam", type=float, default=30.0, help="seconds of Adam per network")
    ap.add_argument("--qn", type=float, default=150.0,
                    help="seconds of SS-Broyden per network")
    ap.add_argument("--networks", default="mlp,fourier_modified,pirate")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)   # first: float64 arrays for the float64 phase
    example = _example()
    dom = jno.domain.interval(-1, 1, n_interior=8192, n_boundary=200, n_initial=200,
                              time=(0, 1), sampler="sobol", seed=0)
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(-1, 1, 256), indexing="ij")
    exact = example.exact_solution(tg, xg)
    print(f"device: {jax.devices()[0].device_kind}; Adam {args.adam:.0f} s (float32) + "
          f"SS-Broyden {args.qn:.0f} s (float64) per network")
    table = networks(dom)
    for name in args.networks.split(","):
        if name not in table:
            raise SystemExit(f"unknown network {name!r}; choose from {sorted(table)}")
        run(name, table[name](), dom, exact, args)


if __name__ == "__main__":
    main()
