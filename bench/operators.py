"""Physics-informed DeepONet steps: jno_flax against a hand-written ``jax.jit`` + ``lax.scan``
loop with the same network, points and batch of input functions, side by side in one run.

The problem is the antiderivative operator (``du/dx = f``, ``u(0) = 0``; example 11): a
DeepONet (100 -> 5 x 50 branch, 1 -> 5 x 50 trunk), 100 residual points, Adam. Rows:

* ``full``: the same 100 functions every step;
* ``minibatch``: 100 of 10 000 functions per step, drawn in the step (``batch_size={f: 100}``
  against ``jax.random.choice`` in the hand-written loop).

Two hand-written loops: du/dx by ``jax.grad`` (how a PI-DeepONet is usually written) and by
``jax.jvp`` (forward mode, as jno_flax computes coordinate derivatives).

    python bench/operators.py [--rows full,minibatch] [--rounds 4] [--chunk 200]
"""

from __future__ import annotations

import argparse
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _hand import alternate, fit_runner, scan_runner
from flax import nnx

import jno_flax as jno

M, N_POINTS, BATCH = 100, 100, 100
ROWS = {"full": 100, "minibatch": 10_000}     # functions in the family


def network() -> nnx.Module:
    branch = jno.nn.MLP(M, 50, hidden=50, depth=4, rngs=nnx.Rngs(0))
    trunk = jno.nn.MLP(1, 50, hidden=50, depth=4, rngs=nnx.Rngs(1))
    return jno.nn.DeepONet(branch, trunk, 50, n_sensors=M, n_coords=1)


def family(n: int) -> jno.functions.FunctionSet:
    return jno.functions.grf(n, x_range=(0, 1), n_sensors=M, length_scale=0.2, seed=0)


def hand_runner(n_functions: int, chunk: int, forward: bool = False) -> Callable[[], float]:
    """The hand-written loop; ``forward``: du/dx by ``jax.jvp`` (forward mode, as jno_flax
    does) instead of ``jax.grad``."""
    graphdef, params, rest = nnx.split(network(), nnx.Param, ...)
    functions = jnp.asarray(family(n_functions).values, jnp.float32)
    sensors = jnp.linspace(0.0, 1.0, M)
    xs = jnp.linspace(0.0, 1.0, N_POINTS)
    tx = optax.adam(1e-3)

    def loss(p, key):
        net = nnx.merge(graphdef, p, rest)
        f = functions
        if n_functions > BATCH:
            f = functions[jax.random.choice(key, n_functions, (BATCH,), replace=False)]

        def u(fb, x):
            return net(fb, x[None])[0]

        def du_dx(fb, x):
            if forward:
                return jax.jvp(lambda y: u(fb, y), (x,), (jnp.ones_like(x),))[1]
            return jax.grad(u, argnums=1)(fb, x)
        du = jax.vmap(jax.vmap(du_dx, (None, 0)), (0, None))(f, xs)
        fx = jax.vmap(lambda row: jnp.interp(xs, sensors, row))(f)
        ic = jax.vmap(lambda fb: u(fb, jnp.zeros(())))(f)
        return jnp.mean((du - fx) ** 2) + jnp.mean(ic ** 2)

    return scan_runner(loss, params, tx, chunk, key=jax.random.key(0))


def jno_runner(n_functions: int, chunk: int) -> Callable[[], float]:
    f = family(n_functions)
    dom = jno.domain.interval(0, 1, n_interior=N_POINTS, n_boundary=2, sampler="grid")
    x, = dom.variable("interior")
    x0, = dom.variable("left")
    net = jno.nn.wrap(network(), name="G").optimizer(optax.adam(1e-3))
    crux = jno.core([(net(f, x).d(x) - f(x)).mse, net(f, x0).mse])
    return fit_runner(crux, chunk, batch_size={f: BATCH} if n_functions > BATCH else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=200)
    args = ap.parse_args()
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; rows are {sorted(ROWS)}")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"chunk={args.chunk}, rounds={args.rounds}")
    for name in rows:
        runners = {"hand": hand_runner(ROWS[name], args.chunk),
                   "hand_jvp": hand_runner(ROWS[name], args.chunk, forward=True),
                   "jno": jno_runner(ROWS[name], args.chunk)}
        rate, _, final = alternate(runners, args.rounds, args.chunk)
        print(f"pi-deeponet {name:10s} hand (grad) {rate['hand']:6.1f}, hand (jvp) "
              f"{rate['hand_jvp']:6.1f}, jno {rate['jno']:6.1f} steps/s   ratio "
              f"{rate['jno'] / rate['hand']:5.3f}x / {rate['jno'] / rate['hand_jvp']:5.3f}x   "
              f"final loss hand {final['hand']:.3e} {final['hand_jvp']:.3e} jno "
              f"{final['jno']:.3e}", flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
