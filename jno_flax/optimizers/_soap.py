"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024,
arXiv:2409.11321).

For a weight matrix ``W`` (``m × n``) with gradient ``G``, Shampoo's factors are the moving
averages ``L ← β L + (1 - β) G Gᵀ`` (``m × m``) and ``R ← β R + (1 - β) GᵀG`` (``n × n``);
every ``precondition_frequency`` steps their eigenvectors ``Q_L``, ``Q_R`` are recomputed
(``eigh``). Adam then runs in the rotated coordinates::

    m ← β₁ m + (1 - β₁) G                      (kept in the original basis)
    v ← β₂ v + (1 - β₂) (Q_Lᵀ G Q_R)²          (kept in the rotated basis)
    update = Q_L [ (Q_Lᵀ m̂ Q_R) / (√v̂ + ε) ] Q_Rᵀ

with Adam's bias corrections ``m̂ = m / (1 - β₁ᵗ)``, ``v̂ = v / (1 - β₂ᵗ)``. On step 1 the
eigenbasis is that of the first gradient's factors. Leaves that are not matrices (biases,
scalars) and matrix sides longer than ``max_precond_dim`` keep the identity on that side, so
with ``max_precond_dim=0`` SOAP is exactly Adam. A side without a preconditioner holds a
scalar ``0`` in the state (not an empty array: orbax cannot save arrays of size zero). As in
the paper, ``v`` is not rotated when the eigenbasis is refreshed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jno_flax._checks import integer, learning_rate as check_learning_rate
from jno_flax._checks import positive_int, unit_interval


class SoapState(NamedTuple):
    """State of :func:`scale_by_soap`; per-leaf pytrees like the parameters. Sides without a
    preconditioner hold a scalar ``0`` (:data:`NO_FACTOR`'s shape)."""

    count: jax.Array
    mu: Any
    nu: Any
    left: Any
    right: Any
    q_left: Any
    q_right: Any


#: the shape of a side without a preconditioner (the identity)
NO_FACTOR = ()


def _preconditioned(x: jax.Array) -> bool:
    """A factor or eigenbasis of a preconditioned side (a matrix; the identity is a scalar)."""
    return x.ndim == 2


def _sides(shape: tuple[int, ...], max_dim: int) -> tuple[int, int]:
    """The sizes of the left and right factors of a leaf (0: identity on that side)."""
    if len(shape) != 2:
        return 0, 0
    return tuple(d if d <= max_dim else 0 for d in shape)


def _rotate(x: jax.Array, ql: jax.Array, qr: jax.Array, inverse: bool = False) -> jax.Array:
    """``Q_Lᵀ x Q_R`` (``Q_L x Q_Rᵀ`` when ``inverse``), skipping identity sides."""
    if _preconditioned(ql):
        x = (ql if inverse else ql.T) @ x
    if _preconditioned(qr):
        x = x @ (qr.T if inverse else qr)
    return x


def _eigenvectors(factor: jax.Array) -> jax.Array:
    if not _preconditioned(factor):
        return factor
    # a tiny ridge keeps eigh well-defined for the rank-deficient first factors
    ridge = 1e-30 if factor.dtype == jnp.float64 else 1e-20
    return jnp.linalg.eigh(factor + ridge * jnp.eye(factor.shape[0], dtype=factor.dtype))[1]


def scale_by_soap(b1: float = 0.95, b2: float = 0.95, eps: float = 1e-8,
                  precondition_frequency: int = 10, max_precond_dim: int = 10_000,
                  shampoo_beta: float | None = None) -> optax.GradientTransformation:
    """SOAP's direction (module docstring); chain a learning rate after it."""
    b1, b2 = unit_interval("b1", b1), unit_interval("b2", b2)
    beta = b2 if shampoo_beta is None else unit_interval("shampoo_beta", shampoo_beta)
    frequency = positive_int("precondition_frequency", precondition_frequency)
    max_dim = integer("max_precond_dim", max_precond_dim)
    if max_dim < 0:
        raise ValueError(f"`max_precond_dim` must be >= 0 (0: plain Adam), got {max_dim}.")

    def init_fn(params: Any) -> SoapState:
        def factor(p, side):
            n = _sides(p.shape, max_dim)[side]
            return jnp.zeros((n, n) if n else NO_FACTOR, p.dtype)
        left = jax.tree.map(lambda p: factor(p, 0), params)
        right = jax.tree.map(lambda p: factor(p, 1), params)

        def eye(f):
            return jnp.eye(f.shape[0], dtype=f.dtype) if _preconditioned(f) else f
        return SoapState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params),
                         jax.tree.map(jnp.zeros_like, params), left, right,
                         jax.tree.map(eye, left), jax.tree.map(eye, right))

    def update_fn(updates: Any, state: SoapState, params: Any = None
                  ) -> tuple[Any, SoapState]:
        del params
        count = state.count + 1
        refresh = (state.count % frequency) == 0

        def factors(g, left, right):
            if _preconditioned(left):
                left = beta * left + (1 - beta) * (g @ g.T)
            if _preconditioned(right):
                right = beta * right + (1 - beta) * (g.T @ g)
            return left, right

        pairs = jax.tree.map(factors, updates, state.left, state.right)
        is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
        left = jax.tree.map(lambda t: t[0], pairs, is_leaf=is_pair)
        right = jax.tree.map(lambda t: t[1], pairs, is_leaf=is_pair)
        q_left, q_right = jax.lax.cond(
            refresh, lambda: (jax.tree.map(_eigenvectors, left),
                              jax.tree.map(_eigenvectors, right)),
            lambda: (state.q_left, state.q_right))
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g, ql, qr: b2 * v + (1 - b2) * _rotate(g, ql, qr) ** 2,
                          state.nu, updates, q_left, q_right)
        c1 = 1 - b1 ** count.astype(jnp.float32)
        c2 = 1 - b2 ** count.astype(jnp.float32)

        def direction(m, v, ql, qr):
            rotated = _rotate(m / c1.astype(m.dtype), ql, qr)
            step = rotated / (jnp.sqrt(v / c2.astype(v.dtype)) + eps)
            return _rotate(step, ql, qr, inverse=True)

        out = jax.tree.map(direction, mu, nu, q_left, q_right)
        return out, SoapState(count, mu, nu, left, right, q_left, q_right)

    return optax.GradientTransformation(init_fn, update_fn)


def soap(learning_rate: optax.ScalarOrSchedule = 3e-3, b1: float = 0.95, b2: float = 0.95,
         eps: float = 1e-8, weight_decay: float = 0.0, precondition_frequency: int = 10,
         max_precond_dim: int = 10_000, shampoo_beta: float | None = None
         ) -> optax.GradientTransformation:
    """SOAP (Vyas et al. 2024): Shampoo's eigenbasis per weight matrix, Adam inside it.

    Args:
        learning_rate: a finite positive number or an optax schedule.
        b1, b2, eps: Adam's (the paper's defaults ``0.95, 0.95``).
        weight_decay: decoupled (AdamW) weight decay; 0 by default, as usual for PINNs.
        precondition_frequency: steps between eigenbasis refreshes.
        max_precond_dim: matrix sides longer than this keep the identity (``0``: Adam).
        shampoo_beta: moving-average factor of ``L`` and ``R`` (default ``b2``).

    >>> net.optimizer(jno.optimizers.soap(3e-3))
    <Model ...>
    """
    learning_rate = check_learning_rate("learning_rate", learning_rate)
    parts = [scale_by_soap(b1, b2, eps, precondition_frequency, max_precond_dim, shampoo_beta)]
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)
