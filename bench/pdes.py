"""Training speed on six PDEs against hand-written JAX loops, side by side in one process.

Each problem is trained by two runners on the same points, network initialisation and optimizer
(adam 1e-3, float32): ``hand``, a ``jax.jit`` + ``lax.scan`` loop whose derivatives are written
by hand as a JAX user would (listed below; the points enter the compiled loop as an argument,
as a batch does), and ``jno``, the same problem written as expressions. Each runner advances
its own copy by one chunk of ``--chunk`` steps per round; rounds alternate the runners so
machine noise hits both alike. Printed: steady steps/s (median over rounds after the first),
the ratio jno / hand, and each runner's first chunk (compilation + one chunk).

=============  ==========================================  ====================================
problem        residual                                    hand-written derivatives
=============  ==========================================  ====================================
poisson        -Δu - f (2-D, 1000 + 200 points, 2-64x3-1)  ``folx.forward_laplacian`` per point
burgers        u_t + u u_x - (0.01/π) u_xx                 u, u_t: one ``jvp``; u_x, u_xx: one
                                                           nested ``jvp``
allen_cahn     u_t - 1e-4 u_xx + 5u³ - 5u                  as burgers
wave           u_tt - 4 u_xx                               nested ``jvp`` along t, along x
kdv            u_t + u u_x + 0.0025 u_xxx                  one ``jvp`` (t); triple nested (x)
mixed          -Δu + u_xy - f (2-D)                        ``folx`` Laplacian; nested ``jvp``
                                                           (x then y) for u_xy
=============  ==========================================  ====================================

Time-dependent problems use ``interval(-1, 1, time=(0, 1))`` (wave: ``(0, 1)``) with 4000
interior, 200 boundary and 200 initial points and an 8 x 20 tanh MLP.

Rows ``allen_cahn+<network>`` train Allen–Cahn with a ``jno.nn`` network instead, and the
hand-written loop calls the same module: ``rwf`` (4 x 32 MLP with weight factorisation),
``fourier`` (64 Fourier features, 4 x 32 MLP), ``periodic`` (periodic embedding in x, 4 x 32
MLP), ``modified`` (4 x 32 modified MLP), ``pirate`` (PirateNet, 2 blocks of width 32 on 32
Fourier features).

    python bench/pdes.py                       # all rows
    python bench/pdes.py --problems burgers,kdv --rounds 6 --chunk 200
    python bench/pdes.py --problems allen_cahn+pirate,allen_cahn+modified
"""

from __future__ import annotations

import argparse
from typing import Callable

import folx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _hand import alternate, fit_runner, scan_runner
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn

PI = float(np.pi)


def _scalar(net, *coords):
    """The network's single output at one point given its coordinates (scalars)."""
    return net(jnp.stack(coords))[0]


def _d(f, i, order=1):
    """``∂^order f / ∂ arg_i`` (a function of the same scalars) by nested ``jvp``."""
    if order == 0:
        return f

    def df(*args):
        inner = _d(f, i, order - 1)
        tangents = tuple(jnp.ones_like(a) if j == i else jnp.zeros_like(a)
                         for j, a in enumerate(args))
        return jax.jvp(inner, args, tangents)[1]
    return df


# ---------------------------------------------------------------------- problems
class Problem:
    """One benchmark problem: its domain, network, hand-written loss and jno constraints."""

    name = ""
    hidden, depth = 20, 8

    def domain(self):
        return jno.domain.interval(-1.0, 1.0, n_interior=4000, n_boundary=200, n_initial=200,
                                   time=(0.0, 1.0), seed=0)

    def net(self):
        if self.network != "mlp":
            return NETWORKS[self.network](self.dom.dim)
        return jno.nn.MLP(self.dom.dim, 1, hidden=self.hidden, depth=self.depth,
                          rngs=nnx.Rngs(0))

    def __init__(self, network: str = "mlp"):
        self.dom = self.domain()
        self.network = network

    def arrays(self):
        tags = ["interior", "boundary"] + (["initial"] if self.dom.time else [])
        return {tag: jnp.asarray(self.dom.points(tag), jnp.float32) for tag in tags}

    def hand_loss(self, net, pts) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def jno_constraints(self, net):  # pragma: no cover - abstract
        raise NotImplementedError


class Poisson(Problem):
    name, hidden, depth = "poisson", 64, 3

    def domain(self):
        return jno.domain.rect((0, 1), (0, 1), n_interior=1000, n_boundary=200, seed=0)

    def hand_loss(self, net, pts):
        xi = pts["interior"]
        f = 2 * PI**2 * jnp.sin(PI * xi[:, 0]) * jnp.sin(PI * xi[:, 1])
        lap = jax.vmap(lambda p: folx.forward_laplacian(net)(p).laplacian)(xi)[:, 0]
        return jnp.mean((lap + f) ** 2) + jnp.mean(jax.vmap(net)(pts["boundary"]) ** 2)

    def jno_constraints(self, net):
        x, y = self.dom.variable("interior")
        xb, yb = self.dom.variable("boundary")
        u = net(x, y)
        f = 2 * PI**2 * jnn.sin(PI * x) * jnn.sin(PI * y)
        return [(u.laplacian(x, y) + f).mse, net(xb, yb).mse]


class _TimeDependent(Problem):
    """Residual on the interior, u = boundary value on the boundary, u = u0(x) initially."""

    boundary_value = 0.0

    def initial(self, x):
        return -jnp.sin(PI * x)

    def hand_residual(self, f, x, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def hand_extra(self, net, pts):
        return 0.0

    def hand_loss(self, net, pts):
        f = lambda x, t: _scalar(net, x, t)  # noqa: E731
        xi, xb, x0 = pts["interior"], pts["boundary"], pts["initial"]
        r = jax.vmap(lambda p: self.hand_residual(f, p[0], p[1]))(xi)
        bc = jax.vmap(net)(xb)[:, 0] - self.boundary_value
        ic = jax.vmap(net)(x0)[:, 0] - self.initial(x0[:, 0])
        return jnp.mean(r**2) + jnp.mean(bc**2) + jnp.mean(ic**2) + self.hand_extra(net, pts)

    def jno_residual(self, u, x, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def jno_extra(self, net):
        return []

    def jno_constraints(self, net):
        x, t = self.dom.variable("interior")
        xb, tb = self.dom.variable("boundary")
        x0, t0 = self.dom.variable("initial")
        u = net(x, t)
        return [self.jno_residual(u, x, t).mse, (net(xb, tb) - self.boundary_value).mse,
                (net(x0, t0) - self.initial_expr(x0)).mse, *self.jno_extra(net)]

    def initial_expr(self, x):
        return -jnn.sin(PI * x)


class Burgers(_TimeDependent):
    name, nu = "burgers", 0.01 / PI

    def hand_residual(self, f, x, t):
        u, u_t = jax.jvp(lambda s: f(x, s), (t,), (jnp.ones_like(t),))
        u_x_of = lambda s: jax.jvp(lambda z: f(z, t), (s,), (jnp.ones_like(s),))[1]  # noqa: E731
        u_x, u_xx = jax.jvp(u_x_of, (x,), (jnp.ones_like(x),))
        return u_t + u * u_x - self.nu * u_xx

    def jno_residual(self, u, x, t):
        return u.d(t) + u * u.d(x) - self.nu * u.d2(x)


class AllenCahn(_TimeDependent):
    name, boundary_value = "allen_cahn", -1.0

    def initial(self, x):
        return x**2 * jnp.cos(PI * x)

    def initial_expr(self, x):
        return x**2 * jnn.cos(PI * x)

    def hand_residual(self, f, x, t):
        u, u_t = jax.jvp(lambda s: f(x, s), (t,), (jnp.ones_like(t),))
        u_x_of = lambda s: jax.jvp(lambda z: f(z, t), (s,), (jnp.ones_like(s),))[1]  # noqa: E731
        _, u_xx = jax.jvp(u_x_of, (x,), (jnp.ones_like(x),))
        return u_t - 1e-4 * u_xx + 5 * u**3 - 5 * u

    def jno_residual(self, u, x, t):
        return u.d(t) - 1e-4 * u.d2(x) + 5 * u**3 - 5 * u


class Wave(_TimeDependent):
    name = "wave"

    def domain(self):
        return jno.domain.interval(0.0, 1.0, n_interior=4000, n_boundary=200, n_initial=200,
                                   time=(0.0, 1.0), seed=0)

    def initial(self, x):
        return jnp.sin(PI * x)

    def initial_expr(self, x):
        return jnn.sin(PI * x)

    def hand_residual(self, f, x, t):
        return _d(f, 1, 2)(x, t) - 4.0 * _d(f, 0, 2)(x, t)

    def hand_extra(self, net, pts):  # u_t = 0 at t = 0
        x0 = pts["initial"]
        f = lambda x, t: _scalar(net, x, t)  # noqa: E731
        return jnp.mean(jax.vmap(lambda p: _d(f, 1)(p[0], p[1]))(x0) ** 2)

    def jno_residual(self, u, x, t):
        return u.d2(t) - 4.0 * u.d2(x)

    def jno_extra(self, net):
        x0, t0 = self.dom.variable("initial")
        return [net(x0, t0).d(t0).mse]


class KdV(_TimeDependent):
    name = "kdv"

    def initial(self, x):
        return jnp.cos(PI * x)

    def initial_expr(self, x):
        return jnn.cos(PI * x)

    def hand_residual(self, f, x, t):
        u, u_t = jax.jvp(lambda s: f(x, s), (t,), (jnp.ones_like(t),))
        return u_t + u * _d(f, 0)(x, t) + 0.0025 * _d(f, 0, 3)(x, t)

    def jno_residual(self, u, x, t):
        return u.d(t) + u * u.d(x) + 0.0025 * u.d(x).d(x).d(x)


class Mixed(Poisson):
    """-Δu + u_xy = f for u = sin(πx) sin(πy)."""

    name = "mixed"

    def source(self, x, y, sin, cos):
        return 2 * PI**2 * sin(PI * x) * sin(PI * y) + PI**2 * cos(PI * x) * cos(PI * y)

    def hand_loss(self, net, pts):
        xi = pts["interior"]
        f = lambda x, y: _scalar(net, x, y)  # noqa: E731
        lap = jax.vmap(lambda p: folx.forward_laplacian(net)(p).laplacian)(xi)[:, 0]
        u_xy = jax.vmap(lambda p: _d(_d(f, 0), 1)(p[0], p[1]))(xi)
        r = -lap + u_xy - self.source(xi[:, 0], xi[:, 1], jnp.sin, jnp.cos)
        return jnp.mean(r**2) + jnp.mean(jax.vmap(net)(pts["boundary"]) ** 2)

    def jno_constraints(self, net):
        x, y = self.dom.variable("interior")
        xb, yb = self.dom.variable("boundary")
        u = net(x, y)
        r = -u.laplacian(x, y) + u.d(x).d(y) - self.source(x, y, jnn.sin, jnn.cos)
        return [r.mse, net(xb, yb).mse]


PROBLEMS = {p.name: p for p in (Poisson, Burgers, AllenCahn, Wave, KdV, Mixed)}


def _networks() -> dict[str, Callable[[int], nnx.Module]]:
    """The ``jno.nn`` networks of today's recipes, small sizes; each takes ``d`` inputs."""
    nn, r = jno.nn, lambda: nnx.Rngs(0)  # noqa: E731
    return {
        "rwf": lambda d: nn.MLP(d, 1, hidden=32, depth=4, rwf=(1.0, 0.1), rngs=r()),
        "fourier": lambda d: nn.Sequential(nn.FourierFeatures(d, 64, scale=1.0, rngs=r()),
                                           nn.MLP(64, 1, hidden=32, depth=4, rngs=r())),
        "periodic": lambda d: nn.Sequential(nn.PeriodicEmbedding(d, axes=(0,), periods=(2.0,)),
                                            nn.MLP(d + 1, 1, hidden=32, depth=4, rngs=r())),
        "modified": lambda d: nn.ModifiedMLP(d, 1, hidden=32, depth=4, rngs=r()),
        "pirate": lambda d: nn.PirateNet(d, 1, hidden=32, depth=2, rngs=r()),
    }


NETWORKS = _networks()
ROWS = [*PROBLEMS, *(f"allen_cahn+{k}" for k in NETWORKS)]


def make_problem(row: str) -> Problem:
    """``"burgers"`` or ``"<problem>+<network>"`` (a row with a ``jno.nn`` network)."""
    name, _, network = row.partition("+")
    if name not in PROBLEMS or (network and network not in NETWORKS):
        raise SystemExit(f"unknown row {row!r}; rows are problems {sorted(PROBLEMS)}, "
                         f"optionally +<network> with networks {sorted(NETWORKS)}")
    return PROBLEMS[name](network or "mlp")


# ---------------------------------------------------------------------- runners
def hand_runner(problem: Problem, chunk: int) -> Callable[[], float]:
    graphdef, params, rest = nnx.split(problem.net(), nnx.Param, ...)
    pts = problem.arrays()
    tx = optax.adam(1e-3)

    def loss(p, points):
        return problem.hand_loss(nnx.merge(graphdef, p, rest), points)

    return scan_runner(loss, params, tx, chunk, data=pts)


def jno_runner(problem: Problem, chunk: int) -> Callable[[], float]:
    net = jno.nn.wrap(problem.net(), name="u").optimizer(optax.adam(1e-3))
    return fit_runner(jno.core(problem.jno_constraints(net)), chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=",".join(ROWS))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=200)
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"chunk={args.chunk}, rounds={args.rounds}")
    for name in args.problems.split(","):
        problem = make_problem(name)
        runners = {"hand": hand_runner(problem, args.chunk), "jno": jno_runner(problem, args.chunk)}
        rate, first, final = alternate(runners, args.rounds, args.chunk)
        print(f"{name:19s} hand {rate['hand']:8.1f} steps/s   jno {rate['jno']:8.1f} steps/s   "
              f"ratio {rate['jno'] / rate['hand']:5.3f}x   first chunk hand "
              f"{first['hand']:5.2f} s, jno {first['jno']:5.2f} s   final loss hand "
              f"{final['hand']:.3e} jno {final['jno']:.3e}", flush=True)


if __name__ == "__main__":
    main()
