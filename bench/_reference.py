"""The reference 2-D Poisson problem the benchmarks share.

-Δu = 2π² sin(πx) sin(πy) on the unit square, u = 0 on the boundary; 1000 interior + 200
boundary random points by default (seed 0); MLP 2-64-64-64-1 tanh; adam(1e-3); float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import optax
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn

PI = float(jnp.pi)


@dataclass
class Reference:
    net: jno.nn.Model
    u: jno.Expr
    u_exact: jno.Expr
    pde: jno.Expr          # the residual field
    bc: jno.Expr           # the boundary field


def reference_poisson(n_interior: int = 1000, n_boundary: int = 200) -> Reference:
    """The reference problem; other point counts for scaling measurements."""
    dom = jno.domain.rect((0, 1), (0, 1), n_interior=n_interior, n_boundary=n_boundary,
                          seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(1e-3))
    u = net(x, y)
    u_exact = jnn.sin(PI * x) * jnn.sin(PI * y)
    return Reference(net, u, u_exact, u.laplacian(x, y) + 2 * PI**2 * u_exact, net(xb, yb))
