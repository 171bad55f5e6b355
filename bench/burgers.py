"""Burgers with Adam then L-BFGS: the framework against a hand-written optax loop, in one run.

Both runners train the same 8 x 20 tanh MLP (same initialisation) on the same 4000 + 200 + 200
points (``bench/pdes.py``'s Burgers problem): ``--adam`` steps of Adam (1e-3, decayed by 0.9
every 1000 steps), then ``--lbfgs`` steps of ``optax.lbfgs()``. ``hand`` is a ``jax.jit`` +
``lax.scan`` loop that passes ``value``, ``grad`` and ``value_fn`` to ``optax.lbfgs`` itself;
``jno`` is one Trainer with ``SwitchOptimizer(adam, optax.lbfgs())``. Chunks of ``--chunk``
steps alternate between the runners so machine noise hits both alike. Printed per phase:
steady steps/s (median over the phase's chunks after its first), the ratio jno / hand, and the
relative L2 error of each against the exact (Cole–Hopf) solution.

    python bench/burgers.py                       # 5000 Adam + 4000 L-BFGS steps (~12 min)
    python bench/burgers.py --adam 1000 --lbfgs 1000 --chunk 250
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _hand import alternate, fit_runner
from flax import nnx
from pdes import Burgers

import jno_flax as jno
from jno_flax.callbacks import SwitchOptimizer


def _exact_solution():
    path = Path(__file__).resolve().parents[1] / "examples" / "08_burgers.py"
    spec = importlib.util.spec_from_file_location("burgers_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only; training runs under __main__
    return module.exact_solution


def adam():
    return optax.adam(optax.exponential_decay(1e-3, 1000, 0.9))


class HandRunner:
    """Adam, then ``optax.lbfgs`` with its extra arguments, in ``lax.scan`` chunks."""

    def __init__(self, problem: Burgers, chunk: int):
        graphdef, self.params = nnx.split(problem.net())
        pts = problem.arrays()
        self.graphdef = graphdef
        self.loss = lambda p: problem.hand_loss(nnx.merge(graphdef, p), pts)  # noqa: E731
        self.chunk, self.tx, self.opt_state, self.run = chunk, None, None, None

    def phase(self, tx: optax.GradientTransformation) -> None:
        self.tx, self.opt_state = tx, tx.init(self.params)
        loss, chunk = self.loss, self.chunk

        @jax.jit
        def run(params, opt_state):
            def body(carry, _):
                p, o = carry
                value, g = jax.value_and_grad(loss)(p)
                updates, o = tx.update(g, o, p, value=value, grad=g, value_fn=loss)
                return (optax.apply_updates(p, updates), o), value
            return jax.lax.scan(body, (params, opt_state), None, length=chunk)
        self.run = run

    def step(self) -> float:
        (self.params, self.opt_state), losses = self.run(self.params, self.opt_state)
        return float(jax.block_until_ready(losses)[-1])

    def predict(self, tx: np.ndarray) -> np.ndarray:
        net = nnx.merge(self.graphdef, self.params)
        return np.asarray(jax.vmap(net)(jnp.asarray(tx, jnp.float32))[:, 0])


class JnoRunner:
    """The same problem as expressions; one Trainer whose SwitchOptimizer starts L-BFGS."""

    def __init__(self, problem: Burgers, chunk: int, adam_steps: int):
        net = jno.nn.wrap(problem.net(), name="u").optimizer(adam())
        self.crux = jno.core(problem.jno_constraints(net))
        self.x, self.t = problem.dom.variable("interior")
        self.u = net(self.x, self.t)
        self.step = fit_runner(self.crux, chunk,
                               callbacks=[SwitchOptimizer(adam_steps, optax.lbfgs())])

    def phase(self, tx) -> None:  # the SwitchOptimizer changes the transform in the run
        pass

    def predict(self, tx: np.ndarray) -> np.ndarray:
        return np.asarray(self.crux.eval(self.u, inputs={self.x: tx[:, :1],
                                                         self.t: tx[:, 1:]}))[0, :, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adam", type=int, default=5000)
    ap.add_argument("--lbfgs", type=int, default=4000)
    ap.add_argument("--chunk", type=int, default=500)
    args = ap.parse_args()
    for name, n in (("--adam", args.adam), ("--lbfgs", args.lbfgs)):
        if n % args.chunk or n < 2 * args.chunk:
            ap.error(f"{name} must be a multiple of --chunk with at least two chunks, got {n}")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"chunk={args.chunk}")
    exact_solution = _exact_solution()
    tg, xg = np.meshgrid(np.linspace(0, 1, 101), np.linspace(-1, 1, 256), indexing="ij")
    grid = np.stack([xg.ravel(), tg.ravel()], axis=1)
    exact = exact_solution(tg, xg).ravel()
    problem = Burgers()
    runners = {"hand": HandRunner(problem, args.chunk),
               "jno": JnoRunner(problem, args.chunk, args.adam)}
    for phase, steps, tx in (("adam", args.adam, adam()), ("lbfgs", args.lbfgs, optax.lbfgs())):
        for r in runners.values():
            r.phase(tx)
        rate, _, final = alternate({k: r.step for k, r in runners.items()},
                                   steps // args.chunk - 1, args.chunk)
        err = {k: float(np.linalg.norm(r.predict(grid) - exact) / np.linalg.norm(exact))
               for k, r in runners.items()}
        print(f"{phase:6s} {steps:5d} steps   hand {rate['hand']:7.1f} steps/s   jno "
              f"{rate['jno']:7.1f} steps/s   ratio {rate['jno'] / rate['hand']:5.3f}x   "
              f"rel. L2 error hand {err['hand']:.3e} jno {err['jno']:.3e} "
              f"(jno / hand {err['jno'] / err['hand']:.3f})   final loss hand "
              f"{final['hand']:.3e} jno {final['jno']:.3e}", flush=True)


if __name__ == "__main__":
    main()
