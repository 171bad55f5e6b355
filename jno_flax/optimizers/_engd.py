"""Energy natural gradient / Gauss–Newton descent (Müller & Zeinhofer 2023,
arXiv:2302.13163).

For a loss that is a sum of mean squares, ``L(θ) = Σ_c mean(r_c(θ)²) = ‖ρ(θ)‖²`` with the
stacked, scaled residual vector ``ρ = [r_c / √n_c]`` (``M`` entries), the Gram matrix of the
energy is ``G = JᵀJ`` (``J = ∂ρ/∂θ``, ``M × P``) and the natural gradient direction solves
``G d = Jᵀρ`` (``= ∇L / 2``): by default ``d = G⁺ Jᵀρ`` with the pseudo-inverse of the
Gram matrix (least squares, SVD); with ``damping > 0`` a damped solve. Either works in the
smaller space::

    P ≤ M:  (JᵀJ + λ I) d = Jᵀρ
    P > M:  d = Jᵀ (J Jᵀ + λ I)⁻¹ ρ

with ``λ = damping · tr(G) / P``. The step ``θ ← θ - η d`` takes the ``η`` of the grid
``{1, 1/2, 1/4, …}`` (``grid_size`` values) with the smallest loss, the paper's line search.
For a linear least-squares problem ``η = 1`` lands on the solution in one step.

The residuals come from the Trainer: the ``value_fn`` it passes (optax's extra argument) has a
``residuals(params)`` method returning ``ρ`` for that trainable (every constraint must be a
mean square, ``residual.mse``); the Jacobian is exact (``jax.jacfwd``, or ``jax.jacrev``
when ``M < P``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jno_flax._checks import positive_int, positive_number


class EngdState(NamedTuple):
    """State of :func:`engd`: the step count and the last line-search step ``η``."""

    count: jax.Array
    step_size: jax.Array


def _residual_function(value_fn: Any):
    residuals = getattr(value_fn, "residuals", None)
    if value_fn is None or residuals is None:
        raise ValueError(
            "`engd` needs the residuals of the loss, not only its value: run it through "
            "`jno_flax.trainers.Trainer` (its `value_fn` carries `residuals`), or pass "
            "`value_fn=jno_flax.optimizers.Objective(loss, residuals)` to `update`; got "
            f"value_fn={value_fn!r}.")
    return residuals


def gauss_newton_direction(jac: jax.Array, res: jax.Array, damping: float = 0.0) -> jax.Array:
    """``d = G⁺ Jᵀρ`` (``G = JᵀJ``; least squares by SVD, singular values of ``G`` below
    ``eps · size · σ_max`` cut) for ``damping = 0``, else ``(G + λI) d = Jᵀρ`` with
    ``λ = damping · tr(G) / P`` by Cholesky; both in the smaller of parameter space (``P``:
    ``G``) and residual space (``M``: ``d = Jᵀ (J Jᵀ)⁺ ρ``)."""
    m, p = jac.shape
    small = jac.T @ jac if p <= m else jac @ jac.T
    rhs = jac.T @ res if p <= m else res
    if damping:
        lam = damping * jnp.trace(small) / p
        out = jax.scipy.linalg.solve(small + lam * jnp.eye(small.shape[0], dtype=jac.dtype),
                                     rhs, assume_a="pos")
    else:
        out = jnp.linalg.lstsq(small, rhs)[0]
    return out if p <= m else jac.T @ out


def engd(damping: float = 0.0, grid_size: int = 30) -> optax.GradientTransformationExtraArgs:
    """Energy natural gradient descent with the paper's grid line search (module docstring).

    Args:
        damping: ``0`` (default): the pseudo-inverse ``G⁺`` (least squares by SVD, as in
            the paper); ``> 0``: Tikhonov damping ``λ = damping · tr(G) / P`` solved by Cholesky
            (cheaper for large ``P`` or ``M``; ``1e-10`` in float64, ``1e-6`` in float32).
        grid_size: the line search tries ``η = 2⁻ᵏ``, ``k = 0 … grid_size - 1``.

    Works per trainable, like every optax transform: each trainable on ``engd`` solves its
    own diagonal block of ``G`` with the others held, so strongly coupled trainables (a
    network and the coefficient of its PDE) converge like alternating least squares — slowly.
    Every constraint must be a mean square (``pde.mse``); the Trainer refuses adaptive
    weights and other losses.

    >>> net.optimizer(jno.optimizers.engd())   # float64: Trainer(precision="64-true")
    <Model ...>
    """
    if damping != 0:
        damping = positive_number("damping", damping)
    grid_size = positive_int("grid_size", grid_size)

    def init_fn(params: Any) -> EngdState:
        flat, _ = ravel_pytree(params)
        return EngdState(jnp.zeros((), jnp.int32), jnp.zeros((), flat.dtype))

    def update_fn(updates: Any, state: EngdState, params: Any = None, *, value_fn: Any = None,
                  **extra_args: Any) -> tuple[Any, EngdState]:
        del updates, extra_args
        if params is None:
            raise ValueError("`engd` needs `params` in `update(updates, state, params, ...)`.")
        residuals = _residual_function(value_fn)
        flat, unravel = ravel_pytree(params)
        fn = lambda f: jnp.ravel(residuals(unravel(f)))  # noqa: E731
        res = fn(flat)
        if res.ndim != 1 or not res.size:
            raise ValueError(f"`value_fn.residuals` must return a non-empty vector, got shape "
                             f"{res.shape}.")
        jac = (jax.jacfwd if flat.size <= res.size else jax.jacrev)(fn)(flat)
        d = gauss_newton_direction(jac, res, damping)
        etas = 0.5 ** jnp.arange(grid_size, dtype=flat.dtype)
        losses = jax.vmap(lambda eta: jnp.sum(fn(flat - eta * d) ** 2))(etas)
        best = jnp.argmin(jnp.where(jnp.isfinite(losses), losses, jnp.inf))
        eta = etas[best]
        return unravel(-eta * d), EngdState(state.count + 1, eta)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
