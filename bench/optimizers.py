"""Optimizers side by side: relative L2 error against wall time on Poisson (or Burgers with
``--burgers``), and the cost of an SS-BFGS iteration in the Trainer against a hand-written
``jax.jit`` + ``lax.scan`` loop of the same update (same network, points, float64).

    python bench/optimizers.py                    # ~4 min on 2 CPU cores; bench/optimizers.png
    python bench/optimizers.py --per-iteration    # only the SS-BFGS iteration cost
    JNO_BENCH_SECONDS=300 python bench/optimizers.py --burgers   # Burgers, 6 x 5 min

Poisson: -Δu = 2π² sin(πx) sin(πy) on [0, 1]², u = 0 on the edge, [2, 32, 1] tanh MLP,
900 + 120 points, float64; the error on a 100 x 100 grid after each block of steps.
"""

from __future__ import annotations

import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
import jno_flax.numpy as jnn  # noqa: E402
from jno_flax.optimizers import engd, soap, ssbfgs, ssbroyden  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402

π = np.pi
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
         "enable_checkpointing": False}
BUDGET = float(os.environ.get("JNO_BENCH_SECONDS", 30))


def poisson():
    dom = jno.domain.rect((0, 1), (0, 1), n_interior=900, n_boundary=120, seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=32, depth=1, rngs=nnx.Rngs(0)), name="u")
    u = net(x, y)
    pde = u.laplacian(x, y) + 2 * π**2 * jnn.sin(π * x) * jnn.sin(π * y)
    crux = jno.core([pde.mse.name("pde"), net(xb, yb).mse.name("bc")])
    g = np.linspace(0, 1, 100)
    X, Y = np.meshgrid(g, g, indexing="ij")
    exact = (np.sin(π * X) * np.sin(π * Y)).ravel()

    def error():
        pred = np.asarray(crux.eval(u, inputs={x: X.reshape(-1, 1), y: Y.reshape(-1, 1)}))
        return float(np.linalg.norm(pred[0, :, 0] - exact) / np.linalg.norm(exact))
    return crux, net, error


def burgers():
    """Raissi's Burgers set-up as in ``examples/08_burgers.py`` (8 x 20 tanh, 8192 Sobol
    interior points), its error against the exact Cole–Hopf solution on 256 x 101 points."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                        "08_burgers.py")
    spec = importlib.util.spec_from_file_location("burgers_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    dom = jno.domain.interval(-1, 1, n_interior=8192, n_boundary=200, n_initial=200,
                              time=(0, 1), sampler="sobol", seed=0)
    x, t = dom.variable("interior")
    xb, tb = dom.variable("boundary")
    x0, t0 = dom.variable("initial")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=20, depth=8, rngs=nnx.Rngs(0)), name="u")
    u = net(x, t)
    residual = u.d(t) + u * u.d(x) - example.NU * u.d2(x)
    crux = jno.core([residual.mse.name("pde"), net(xb, tb).mse.name("bc"),
                     (net(x0, t0) + jnn.sin(π * x0)).mse.name("ic")])
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(-1, 1, 256), indexing="ij")
    exact = example.exact_solution(tg, xg).ravel()

    def error():
        pred = np.asarray(crux.eval(u, inputs={x: xg.reshape(-1, 1), t: tg.reshape(-1, 1)}))
        return float(np.linalg.norm(pred[0, :, 0] - exact) / np.linalg.norm(exact))
    return crux, net, error


def curve(phases, block, problem=poisson):
    """Error against seconds: ``phases`` is ``[(transform, precision, steps or None)]``
    (``None``: until the budget is spent)."""
    crux, net, error = problem()
    out, started = [], time.perf_counter()
    for tx, precision, steps in phases:
        net.optimizer(tx)
        trainer = Trainer(max_steps=1, precision=precision, **QUIET)
        end = None if steps is None else crux.global_step + steps
        while time.perf_counter() - started < BUDGET and (end is None
                                                          or crux.global_step < end):
            trainer.max_steps = crux.global_step + (block if end is None
                                                    else min(block, end - crux.global_step))
            trainer.fit(crux)
            out.append((time.perf_counter() - started, error()))
    return out


def per_iteration(steps=200):
    """Seconds per SS-BFGS iteration: the Trainer against a hand-written jit + scan loop."""
    crux, net, _ = poisson()
    net.optimizer(ssbfgs())
    trainer = Trainer(max_steps=steps, chunk_size=steps, precision="64-true", **QUIET)
    trainer.fit(crux)                      # compile
    trainer.max_steps = 2 * steps
    t0 = time.perf_counter()
    trainer.fit(crux)
    ours = (time.perf_counter() - t0) / steps

    dom_batch = crux.registry.batch()
    model = jno.nn.MLP(2, 1, hidden=32, depth=1, rngs=nnx.Rngs(0))
    graph, params = nnx.split(model, nnx.Param)
    keys = sorted(dom_batch)
    interior, boundary = (dom_batch[k] for k in keys)
    if interior.shape[0] < boundary.shape[0]:
        interior, boundary = boundary, interior

    def loss(p):
        f = lambda q: nnx.merge(graph, p)(q[None])[0, 0]  # noqa: E731
        lap = jax.vmap(lambda q: jnp.trace(jax.hessian(f)(q)))(interior[:, :2])
        src = 2 * π**2 * jnp.sin(π * interior[:, 0]) * jnp.sin(π * interior[:, 1])
        bc = jax.vmap(f)(boundary[:, :2])
        return jnp.mean((lap + src) ** 2) + jnp.mean(bc**2)
    tx = ssbfgs()

    @jax.jit
    def run(params, state):
        def step(carry, _):
            p, s = carry
            v, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p, value=v, grad=g, value_fn=loss)
            return (optax.apply_updates(p, u), s), v
        return jax.lax.scan(step, (params, state), None, length=steps)
    # the same trajectory as the Trainer's: the first chunk compiles, the second is timed
    (params, state), _ = jax.block_until_ready(run(params, tx.init(params)))
    t0 = time.perf_counter()
    _, values = jax.block_until_ready(run(params, state))
    hand = (time.perf_counter() - t0) / steps
    print(f"loss after {2 * steps} steps: Trainer {crux.history.total_loss[-1]:.3e}, hand-written "
          f"{float(values[-1]):.3e} (the same trajectory: the same line-search work)")
    return ours, hand


def main() -> None:
    if "--per-iteration" in sys.argv:
        ours, hand = per_iteration()
        print(f"ssbfgs per iteration: Trainer {ours * 1e3:.2f} ms, hand-written "
              f"{hand * 1e3:.2f} ms, ratio (hand / ours) {hand / ours:.3f}")
        return
    if "--burgers" in sys.argv:
        adam = optax.adam(optax.exponential_decay(1e-3, 1000, 0.9))
        runs = {
            "adam (float32)": [(adam, "32-true", None)],
            "adam → lbfgs (float32)": [(adam, "32-true", 1000), (optax.lbfgs(), "32-true", None)],
            "adam → lbfgs (float64)": [(adam, "32-true", 1000), (optax.lbfgs(), "64-true", None)],
            "adam → ssbfgs (float64)": [(adam, "32-true", 1000), (ssbfgs(), "64-true", None)],
            "adam → ssbroyden (float32)": [(adam, "32-true", 1000),
                                           (ssbroyden(), "32-true", None)],
            "adam → ssbroyden (float64)": [(adam, "32-true", 1000),
                                           (ssbroyden(), "64-true", None)],
        }
        compare(runs, {}, burgers, "Burgers", "burgers_optimizers.png")
        return
    runs = {
        "adam 1e-3": [(optax.adam(1e-3), "64-true", None)],
        "soap 3e-3": [(soap(3e-3), "64-true", None)],
        "adam → lbfgs (float64)": [(optax.adam(1e-3), "64-true", 1000),
                                   (optax.lbfgs(), "64-true", None)],
        "adam → ssbfgs (float32)": [(optax.adam(1e-3), "32-true", 1000),
                                    (ssbfgs(), "32-true", None)],
        "adam → ssbroyden (float64)": [(optax.adam(1e-3), "64-true", 1000),
                                       (ssbroyden(), "64-true", None)],
        "engd (float64)": [(engd(), "64-true", None)],
    }
    compare(runs, {"engd (float64)": 10}, poisson, "Poisson sin(πx) sin(πy)", "optimizers.png")
    ours, hand = per_iteration()
    print(f"\nssbfgs per iteration (Poisson, float64): Trainer {ours * 1e3:.2f} ms, "
          f"hand-written jit + scan {hand * 1e3:.2f} ms, ratio (hand / ours) "
          f"{hand / ours:.3f}")


def compare(runs, blocks, problem, title, png) -> None:
    """Each run's error curve within the budget, a table and one PNG."""
    curves = {}
    print(f"{title}, error against wall time (budget {BUDGET:.0f} s each, compilation "
          "included)")
    print(f"{'method':28s} {'final error':>12s} {'best error':>12s} {'seconds':>8s}")
    for name, phases in runs.items():
        curves[name] = curve(phases, blocks.get(name, 250), problem)
        t, e = curves[name][-1]
        print(f"{name:28s} {e:12.3e} {min(v for _, v in curves[name]):12.3e} {t:8.1f}",
              flush=True)
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, points in curves.items():
        t, e = zip(*points)
        ax.semilogy(t, e, "o-", ms=3, label=name)
    ax.set(xlabel="seconds (2 CPU cores)", ylabel="relative L2 error", title=title)
    ax.legend()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), png)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
