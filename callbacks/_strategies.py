"""Resampling strategies: how :class:`~jno_flax.callbacks.ResamplePoints` draws new points.

A strategy is a small object with a :meth:`~ResamplingStrategy.draw` traced inside the
compiled step. It sees a :class:`Draw`: the draw's PRNG key, the current points, a uniform
sampler of the point set's region and the target residual at any candidate points (with the
current weights). Strategies that keep the number of points run inside the compiled loop;
one that ``grows`` the set runs at chunk boundaries, where shapes may change. A new strategy
is a subclass; nothing else in the library needs to know it::

    class KeepHalf(ResamplingStrategy):
        name = "keep-half"
        def draw(self, d):
            fresh = d.uniform(d.key, d.n)
            return jnp.where(jnp.arange(d.n)[:, None] < d.n // 2, d.current, fresh)
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jno_flax._checks import positive_int
from jno_flax._sampling import rad_probabilities


def nonnegative(arg: str, value: Any) -> float:
    """``value`` as a finite float ``>= 0``, or a ``ValueError`` naming ``arg``."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0
            or not math.isfinite(value)):
        raise ValueError(f"`{arg}` must be a non-negative number, got {value!r}; accepted: "
                         "finite values >= 0.")
    return float(value)


@dataclass(frozen=True)
class Draw:
    """What a strategy draws from, inside the compiled step.

    Attributes:
        key: this draw's PRNG key.
        current: ``(n, d)`` the points the set holds now.
        uniform: ``(key, count) -> (count, d)`` points uniform in the set's region.
        residual: ``(points) -> (count, ...)`` the target at ``points`` (gradients stopped).
    """

    key: jax.Array
    current: jax.Array
    uniform: Callable[[jax.Array, int], jax.Array]
    residual: Callable[[jax.Array], jax.Array]

    @property
    def n(self) -> int:
        return self.current.shape[0]


class ResamplingStrategy:
    """Base class of resampling strategies.

    Attributes:
        name: a short name (part of the callback's checkpoint key).
        needs_residual: the target must be a residual field (not a coordinate variable).
        grows: :meth:`draw` returns more points than it got (drawn at chunk boundaries).
    """

    name: str = "strategy"
    needs_residual: bool = False
    grows: bool = False

    def bind(self, n: int, where: str) -> "ResamplingStrategy":
        """This strategy for a set of ``n`` points (described by ``where``): the settings
        checked against ``n`` and the defaults that depend on it filled, in a copy (one
        strategy object may serve several point sets)."""
        return copy.copy(self)

    def size_at(self, n: int, resamples: int) -> int:
        """The number of points after ``resamples`` draws from ``n`` points."""
        return n

    def draw(self, d: Draw) -> jax.Array:
        """The new points (``d.n`` of them, or more for a strategy that grows)."""
        raise NotImplementedError(f"{type(self).__name__}.draw")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Uniform(ResamplingStrategy):
    """``N`` new points uniform in the region."""

    name = "uniform"

    def draw(self, d: Draw) -> jax.Array:
        return d.uniform(d.key, d.n)


class RAD(ResamplingStrategy):
    """Residual-based adaptive distribution (Wu et al. 2023): ``N`` points drawn without
    replacement from a fresh uniform pool of ``pool`` candidates with probability
    ``p ∝ |r|^k / mean(|r|^k) + c``.

    Args:
        k, c: the exponent and offset (both ``>= 0``; default 1, 1).
        pool: candidates per draw (default ``10 N``; at least ``N``).
    """

    name = "rad"
    needs_residual = True

    def __init__(self, k: float = 1.0, c: float = 1.0, pool: int | None = None):
        self.k, self.c = nonnegative("k", k), nonnegative("c", c)
        self.pool = positive_int("pool", pool, allow_none=True)

    def bind(self, n: int, where: str) -> "RAD":
        bound = copy.copy(self)
        if bound.pool is None:
            bound.pool = 10 * n
        elif bound.pool < n:
            raise ValueError(f"`pool` must be at least the number of points ({n} in {where}), "
                             f"got {bound.pool!r}.")
        return bound

    def pick(self, d: Draw, count: int) -> jax.Array:
        """``count`` pool points drawn by the RAD density."""
        k_pool, k_pick = jax.random.split(d.key)
        pool = d.uniform(k_pool, self.pool)
        p = rad_probabilities(d.residual(pool), self.k, self.c)
        return pool[jax.random.choice(k_pick, self.pool, (count,), replace=False, p=p)]

    def draw(self, d: Draw) -> jax.Array:
        return self.pick(d, d.n)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, c={self.c}, pool={self.pool})"


class RARD(RAD):
    """Residual-based adaptive refinement with distribution (Wu et al. 2023): the ``n_add``
    points drawn as :class:`RAD` draws them are added to the current ones; the set grows.

    Args:
        k, c, pool: as for :class:`RAD`.
        n_add: points added per draw (default ``N // 10``, at least 1).
    """

    name = "rar-d"
    grows = True

    def __init__(self, k: float = 1.0, c: float = 1.0, pool: int | None = None,
                 n_add: int | None = None):
        super().__init__(k, c, pool)
        self.n_add = positive_int("n_add", n_add, allow_none=True)

    def bind(self, n: int, where: str) -> "RARD":
        bound = super().bind(n, where)
        if bound.n_add is None:
            bound.n_add = max(1, n // 10)
        return bound

    def size_at(self, n: int, resamples: int) -> int:
        return n + self.n_add * resamples

    def draw(self, d: Draw) -> jax.Array:
        return jnp.concatenate([d.current, self.pick(d, self.n_add)])

    def __repr__(self) -> str:
        return f"RARD(k={self.k}, c={self.c}, pool={self.pool}, n_add={self.n_add})"


class R3(ResamplingStrategy):
    """Retain–resample–release (Daw et al. 2023): the current points whose residual size
    exceeds its mean over the set are retained, the others are released and replaced by
    uniform points. High-residual regions accumulate points while they stay hard; the number
    of points is fixed."""

    name = "r3"
    needs_residual = True

    def draw(self, d: Draw) -> jax.Array:
        r = d.residual(d.current)
        r = r.reshape(r.shape[0], -1)
        size = jnp.linalg.norm(r, axis=1)
        keep = size > jnp.mean(size)
        return jnp.where(keep[:, None], d.current, d.uniform(d.key, d.n))


#: the string shorthands of ``ResamplePoints(strategy=...)``
SHORTHANDS: dict[str, type[ResamplingStrategy]] = {"uniform": Uniform, "rad": RAD,
                                                  "rar-d": RARD, "r3": R3}
