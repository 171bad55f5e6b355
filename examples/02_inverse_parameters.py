"""Inverse problem: recover (a, b, c) in f(x) = a sin(πx) + b cos(πx) + c x (1 - x).

Synthetic data from the true values (1.5, -0.5, 2.0) on 101 points of [0, 1]; three trainable
parameters start at 0 and are fitted with ``adam(1e-2)`` from the residual alone.

    python examples/02_inverse_parameters.py
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import optax

import jno_flax as jno

STEPS = int(os.environ.get("JNO_EXAMPLE_STEPS", 30_000))
TRUE = (1.5, -0.5, 2.0)
π = jnp.pi

line = jno.domain.interval(0.0, 1.0, n_interior=101, sampler="grid")
(x,) = line.variable("interior")

key = jax.random.PRNGKey(0)
k1, k2, k3 = jax.random.split(key, 3)
a = jno.np.parameter((1,), key=k1, name="a")
b = jno.np.parameter((1,), key=k2, name="b")
c = jno.np.parameter((1,), key=k3, name="c")
for p in [a, b, c]:
    p.optimizer(optax.adam(1e-2))

target = TRUE[0] * jno.np.sin(π * x) + TRUE[1] * jno.np.cos(π * x) + TRUE[2] * x * (1 - x)
residual = a * jno.np.sin(π * x) + b * jno.np.cos(π * x) + c * x * (1 - x) - target
crux = jno.core([residual.mse.name("residual")])
history = crux.solve(STEPS)

_a, _b, _c = crux.eval([a, b, c])
print(f"Recovered: a={_a[0]:.4f}, b={_b[0]:.4f}, c={_c[0]:.4f}  (true {TRUE})")
errors = [abs(float(v[0]) - t) for v, t in zip((_a, _b, _c), TRUE)]
print(f"max |error| = {max(errors):.2e} after {STEPS} steps, wall time {history.wall_time:.1f} s")
