"""The Poisson problem with ReLoBRaLo weights that the subprocess scripts train; imported after
each script has configured JAX (float64, forced device count)."""

from types import SimpleNamespace

import jax.numpy as jnp
import optax
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn


def relobralo_poisson(n_interior: int, n_boundary: int, hidden: int,
                      seed: int = 0) -> SimpleNamespace:
    """-Δu = 2π² sin(πx) sin(πy) on the unit square, u = 0 on its boundary; ReLoBRaLo weights
    ``w_pde, w_bc`` for the two mean-square terms (the problem is built by the caller); ``seed``
    draws the points."""
    dom = jno.domain.rect((0, 1), (0, 1), n_interior=n_interior, n_boundary=n_boundary,
                          seed=seed)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=hidden, depth=2, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(1e-3))
    u = net(x, y)
    u_exact = jnn.sin(jnp.pi * x) * jnn.sin(jnp.pi * y)
    pde = (u.laplacian(x, y) + 2 * jnp.pi**2 * u_exact).mse.name("pde")
    bc = net(xb, yb).mse.name("bc")
    w_pde, w_bc = jno.adaptive.relobralo([pde, bc])
    return SimpleNamespace(dom=dom, x=x, y=y, xb=xb, yb=yb, net=net, u=u, u_exact=u_exact,
                           pde=pde, bc=bc, w_pde=w_pde, w_bc=w_bc)


def tracked_core(p: SimpleNamespace) -> jno.Problem:
    """The weighted problem with two interval trackers: the mean error every 10 steps and the
    norm of the boundary Jacobian ``u_b.grad(net)`` every 25."""
    jac = p.net(p.xb, p.yb).grad(p.net)
    return jno.core([p.w_pde * p.pde, p.w_bc * p.bc,
                     jnn.tracker(jnn.mean(jnn.abs(p.u - p.u_exact)), 10, name="err"),
                     jnn.tracker(jnn.sqrt(jnn.sum(jac ** 2)), 25, name="jac_norm")])
