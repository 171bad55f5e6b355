"""Dense quasi-Newton methods of the self-scaled Broyden family: BFGS, SS-BFGS, SS-Broyden.

Each keeps a dense inverse-Hessian approximation ``H`` (``P × P``) of one trainable's
parameters, flattened. After a step ``s = x₊ - x`` with gradient change ``y = g₊ - g`` it
becomes (inverse form of the Broyden family, Al-Baali; Urbán, Stefanou & Pons, J. Comput.
Phys. 523 (2025) 113656)::

    H₊ = (H - H y yᵀH / yᵀHy + φ · yᵀHy · v vᵀ) / τ + s sᵀ / yᵀs,
    v  = s / yᵀs - H y / yᵀHy,        φ = (1 - θ) / (1 + a θ),

with ``b = sᵀB s / yᵀs`` (``B = H⁻¹``, so ``sᵀBs = α² gᵀHg`` for the step ``s = -α H g``),
``h = yᵀHy / yᵀs`` and ``a = b h - 1``:

* BFGS: ``θ = 0`` (``φ = 1``), ``τ = 1``;
* SS-BFGS: ``θ = 0`` and the self-scaling ``τ`` below;
* SS-Broyden: ``θ = max(θ⁻, min(θ⁺, (1 - b) / b))`` with ``c = √|a / (1 + a)|``,
  ``ρ⁻ = min(1, h (1 - c))``, ``θ⁻ = (ρ⁻ - 1) / a``, ``θ⁺ = 1 / ρ⁻``, and the ``τ`` below.

Self-scaling: on the first update ``τ = h / (1 + a θ)``; later, with ``σ = 1 + θ a`` and
``ρ = min(1, 1 / b)``, ``τ = min(ρ σ^(1/(1-P)), σ)`` when ``θ ≤ 0`` and
``τ = ρ min(σ^(1/(1-P)), 1 / θ)`` otherwise. Every member satisfies the secant equation
``H₊ y = s``.

The transform returns ``H g`` (optax's ``scale_by_*`` convention); :func:`bfgs`, :func:`ssbfgs`
and :func:`ssbroyden` chain it with ``scale(-1)`` and optax's zoom line search (strong Wolfe
conditions), which needs optax's extra arguments ``value``, ``grad`` and ``value_fn`` (the
Trainer passes them). An update with ``yᵀs ≤ 0`` or a non-finite result (a failed line search)
resets ``H`` to the scaled identity of the first step.

Parameters are flattened per trainable, as every optax transform sees them: each trainable has
its own optimizer (a network on SS-Broyden, an inverse parameter on Adam), its own line search
along its own direction, and a ``P × P`` matrix only as large as that trainable.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jno_flax._checks import positive_int

VARIANTS = ("bfgs", "ssbfgs", "ssbroyden")
#: default bound on the flattened parameters of one trainable for a dense ``P × P`` matrix
DEFAULT_MAX_PARAMS = 12_000


class QuasiNewtonState(NamedTuple):
    """State of :func:`scale_by_quasi_newton` (``P`` the trainable's parameter count).

    Attributes:
        count: ``()`` int32, the number of updates so far.
        inverse_hessian: ``(P, P)`` the approximation ``H``.
        params: ``(P,)`` the parameters of the last update.
        grad: ``(P,)`` their gradient.
        direction: ``(P,)`` ``H g``, the last returned direction.
        fresh: ``()`` bool, ``H`` is the scaled identity (the next update uses the first
            update's ``τ``).
    """

    count: jax.Array
    inverse_hessian: jax.Array
    params: jax.Array
    grad: jax.Array
    direction: jax.Array
    fresh: jax.Array


def _size_error(size: int, itemsize: int, max_params: int) -> ValueError:
    gib = size * size * itemsize / 2**30
    return ValueError(
        f"a dense quasi-Newton method keeps a P × P inverse Hessian: this trainable has "
        f"P = {size:,} parameters, a matrix of {gib:.2f} GiB, over the limit "
        f"`max_params={max_params:,}`. Use `optax.lbfgs()` (memory P × memory_size) for a "
        f"network this large, or raise `max_params` if the memory is there.")


def _scaled_identity(g: jax.Array) -> jax.Array:
    """``c I`` with ``c = min(1, 1 / ‖g‖)``: the first step is at most 1 long."""
    c = jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(g.dtype).tiny))
    return c.astype(g.dtype) * jnp.eye(g.size, dtype=g.dtype)


def broyden_parameters(variant: str, b: jax.Array, h: jax.Array, first: jax.Array,
                       size: int) -> tuple[jax.Array, jax.Array]:
    """``(θ, τ)`` of ``variant`` from ``b``, ``h`` (see the module docstring)."""
    a = b * h - 1.0
    if variant == "ssbroyden":
        c = jnp.sqrt(jnp.abs(a / (1.0 + a)))
        rho_minus = jnp.minimum(1.0, h * (1.0 - c))
        tiny = a <= jnp.finfo(a.dtype).eps
        theta_minus = jnp.where(tiny, -jnp.inf, (rho_minus - 1.0) / jnp.where(tiny, 1.0, a))
        theta = jnp.maximum(theta_minus, jnp.minimum(1.0 / rho_minus, (1.0 - b) / b))
    else:
        theta = jnp.zeros_like(b)
    if variant == "bfgs":
        return theta, jnp.ones_like(b)
    sigma = 1.0 + theta * a
    sigma_root = jnp.abs(sigma) ** (1.0 / (1.0 - size)) if size > 1 else jnp.ones_like(b)
    rho = jnp.minimum(1.0, 1.0 / b)
    later = jnp.where(theta <= 0, jnp.minimum(rho * sigma_root, sigma),
                      rho * jnp.minimum(sigma_root, 1.0 / jnp.where(theta > 0, theta, 1.0)))
    return theta, jnp.where(first, h / sigma, later)


def broyden_update(variant: str, H: jax.Array, s: jax.Array, y: jax.Array, b: jax.Array,
                   first: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The inverse Hessian after the step ``s`` with gradient change ``y``, and whether the
    update is valid (``yᵀs > 0``, ``b > 0``, every coefficient finite)."""
    inner = y @ s
    Hy = H @ y
    yHy = y @ Hy
    h = yHy / inner
    theta, tau = broyden_parameters(variant, b, h, first, s.size)
    phi = (1.0 - theta) / (1.0 + (b * h - 1.0) * theta)
    v = s / inner - Hy / yHy
    # H/τ plus a rank-3 correction, in one pass over the P × P matrix
    basis = jnp.stack([Hy, v, s], axis=1)
    coefs = jnp.stack([-1.0 / (tau * yHy), phi * yHy / tau, 1.0 / inner]).astype(H.dtype)
    ok = ((inner > 0) & (b > 0) & jnp.all(jnp.isfinite(coefs))
          & jnp.all(jnp.isfinite(basis)) & (tau > 0))
    return H / tau + (basis * coefs) @ basis.T, ok


def scale_by_quasi_newton(variant: str = "ssbroyden",
                          max_params: int = DEFAULT_MAX_PARAMS
                          ) -> optax.GradientTransformation:
    """The direction ``H g`` of a dense quasi-Newton method (``variant`` one of ``"bfgs"``,
    ``"ssbfgs"``, ``"ssbroyden"``), ``H`` updated from the last step taken."""
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {list(VARIANTS)}, got {variant!r}.")
    max_params = positive_int("max_params", max_params)

    def init_fn(params: Any) -> QuasiNewtonState:
        flat, _ = ravel_pytree(params)
        if flat.size > max_params:
            raise _size_error(flat.size, flat.dtype.itemsize, max_params)
        zeros = jnp.zeros_like(flat)
        return QuasiNewtonState(jnp.zeros((), jnp.int32), jnp.eye(flat.size, dtype=flat.dtype),
                                zeros, zeros, zeros, jnp.asarray(True))

    def update_fn(updates: Any, state: QuasiNewtonState, params: Any = None
                  ) -> tuple[Any, QuasiNewtonState]:
        if params is None:
            raise ValueError(f"`{variant}` needs `params` in `update(updates, state, params)`.")
        g, unravel = ravel_pytree(updates)
        x, _ = ravel_pytree(params)
        g, x = g.astype(state.grad.dtype), x.astype(state.params.dtype)
        s, y, p = x - state.params, g - state.grad, state.direction
        # the last step was s = -α p with p = H g: α = -(s·p)/(p·p) and sᵀBs = α² (g·p)
        alpha = -(s @ p) / jnp.maximum(p @ p, jnp.finfo(p.dtype).tiny)
        b = alpha**2 * (state.grad @ p) / (y @ s)
        good = state.count > 0
        H, good = jax.lax.cond(
            good, lambda: broyden_update(variant, state.inverse_hessian, s, y, b, state.fresh),
            lambda: (state.inverse_hessian, jnp.asarray(False)))
        good = good & jnp.isfinite(b) & (b > 0)
        H = jax.lax.cond(good, lambda: H, lambda: _scaled_identity(g))
        direction = H @ g
        return unravel(direction), QuasiNewtonState(state.count + 1, H, x, g, direction, ~good)

    return optax.GradientTransformation(init_fn, update_fn)


def _method(variant: str, max_params: int, max_linesearch_steps: int,
            linesearch: optax.GradientTransformation | None
            ) -> optax.GradientTransformationExtraArgs:
    if linesearch is None:
        steps = positive_int("max_linesearch_steps", max_linesearch_steps)
        linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=steps,
                                                    initial_guess_strategy="one")
    return optax.chain(scale_by_quasi_newton(variant, max_params), optax.scale(-1.0),
                       linesearch)


def bfgs(max_params: int = DEFAULT_MAX_PARAMS, max_linesearch_steps: int = 20,
         linesearch: optax.GradientTransformation | None = None
         ) -> optax.GradientTransformationExtraArgs:
    """BFGS with a dense inverse Hessian and optax's zoom line search (strong Wolfe).

    Args:
        max_params: largest trainable (flattened parameters ``P``) accepted; the matrix
            takes ``P² × itemsize`` bytes. Above it ``init`` raises and points to
            ``optax.lbfgs``.
        max_linesearch_steps: of the zoom line search.
        linesearch: another optax line search transform (or ``optax.scale(lr)`` for a
            fixed step) instead of the zoom line search.

    >>> net.optimizer(jno.optimizers.bfgs())
    <Model ...>
    """
    return _method("bfgs", max_params, max_linesearch_steps, linesearch)


def ssbfgs(max_params: int = DEFAULT_MAX_PARAMS, max_linesearch_steps: int = 20,
           linesearch: optax.GradientTransformation | None = None
           ) -> optax.GradientTransformationExtraArgs:
    """Self-scaled BFGS (Urbán et al. 2025): BFGS with the scaling ``τ`` of the module
    docstring. Arguments as :func:`bfgs`."""
    return _method("ssbfgs", max_params, max_linesearch_steps, linesearch)


def ssbroyden(max_params: int = DEFAULT_MAX_PARAMS, max_linesearch_steps: int = 20,
              linesearch: optax.GradientTransformation | None = None
              ) -> optax.GradientTransformationExtraArgs:
    """Self-scaled Broyden (Urbán et al. 2025): the Broyden-family member ``θ`` and the
    scaling ``τ`` chosen per step (module docstring). Arguments as :func:`bfgs`."""
    return _method("ssbroyden", max_params, max_linesearch_steps, linesearch)
