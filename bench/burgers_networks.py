"""Burgers with each ``jno.nn`` network at equal wall time: is the architecture worth it?

Every network trains the same problem (``examples/08_burgers.py``'s set-up: 4000 interior,
200 boundary and 200 initial points, float32, soft boundary and initial conditions) with the
same recipe, each phase limited by wall time (``Trainer(max_time=...)``) instead of steps:
Adam (1e-3, x0.9 every 1000 steps) for ``--adam`` seconds, then ``optax.lbfgs()`` for
``--lbfgs`` seconds. Printed: steps done in each phase and the relative L2 error against the
exact Cole–Hopf solution on the 256 x 101 grid.

Networks: ``mlp`` (the example's 8 x 20 tanh MLP), ``fourier_modified`` (64 Fourier features
of scale 1, then a 4 x 32 modified MLP with weight factorisation) and ``pirate`` (PirateNet,
2 blocks of width 64 on 64 Fourier features, ``pi_init`` on the initial condition).

    python bench/burgers_networks.py                          # 120 s + 120 s per network
    python bench/burgers_networks.py --adam 30 --lbfgs 30 --networks mlp,pirate
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
        net = nn.PirateNet(2, 1, hidden=64, depth=2, rwf=(1.0, 0.1),
                           embedding=nn.FourierFeatures(2, 64, scale=1.0, rngs=r()), rngs=r())
        x0 = dom.points("initial")
        net.pi_init(x0, -np.sin(np.pi * x0[:, 0]))
        return net
    return {
        "mlp": lambda: nn.MLP(2, 1, hidden=20, depth=8, rngs=r()),
        "fourier_modified": lambda: nn.Sequential(
            nn.FourierFeatures(2, 64, scale=1.0, rngs=r()),
            nn.ModifiedMLP(64, 1, hidden=32, depth=4, rwf=(1.0, 0.1), rngs=r())),
        "pirate": pirate,
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
    adam = Trainer(max_steps=10**7, max_time=args.adam, **quiet).fit(crux)
    net.optimizer(optax.lbfgs())
    lbfgs = Trainer(max_steps=10**7, max_time=args.lbfgs, **quiet).fit(crux)
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(-1, 1, 256), indexing="ij")
    pred = np.asarray(crux.eval(u, inputs={x: xg.reshape(-1, 1), t: tg.reshape(-1, 1)}))
    err = np.linalg.norm(pred[0, :, 0] - exact.ravel()) / np.linalg.norm(exact)
    print(f"{name:17s} {net.num_params:6d} params   Adam {len(adam.steps):6d} steps   "
          f"L-BFGS {len(lbfgs.steps):5d} steps   relative L2 {err:.3e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adam", type=float, default=120.0, help="seconds of Adam per network")
    ap.add_argument("--lbfgs", type=float, default=120.0, help="seconds of L-BFGS per network")
    ap.add_argument("--networks", default="mlp,fourier_modified,pirate")
    args = ap.parse_args()
    example = _example()
    dom = jno.domain.interval(-1, 1, n_interior=4000, n_boundary=200, n_initial=200,
                              time=(0, 1), seed=0)
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(-1, 1, 256), indexing="ij")
    exact = example.exact_solution(tg, xg)
    print(f"device: {jax.devices()[0].device_kind}; Adam {args.adam:.0f} s + L-BFGS "
          f"{args.lbfgs:.0f} s per network")
    table = networks(dom)
    for name in args.networks.split(","):
        if name not in table:
            raise SystemExit(f"unknown network {name!r}; choose from {sorted(table)}")
        run(name, table[name](), dom, exact, args)


if __name__ == "__main__":
    main()
