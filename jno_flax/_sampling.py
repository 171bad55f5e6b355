"""Drawing collocation points inside a compiled step, and residual-based sampling (RAD).

:func:`uniform_points` draws new points of a point set with JAX from a PRNG key: interior
points of the geometry (and a time column for space-time domains), or the points of the
``"initial"`` tag (time ``t0``). Where the geometry's map from the unit cube is not onto the
interior (a polygon, convex or not, maps its bounding box), candidates are rejected inside a
``lax.while_loop`` until ``n`` points are kept, for a bounded number of rounds (points not
found are NaN, and :func:`check_drawn` reports them on the host).

:func:`rad_probabilities` is the sampling density of Wu et al. (2023),
``p(x) ∝ |r(x)|^k / mean(|r|^k) + c``.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp

from jno_flax._dtypes import default_float
from jno_flax._evaluate import walk
from jno_flax._expr import Expr
from jno_flax._function_nodes import PairedData
from jno_flax._pointset import PointSet

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import TrainState

#: the tags whose points :func:`uniform_points` can draw
RESAMPLABLE_TAGS = ("interior", "initial")


def check_resamplable(ps: PointSet, arg: str) -> None:
    """Raise unless new points of ``ps`` can be drawn (an interior or initial tag)."""
    if ps.tag not in RESAMPLABLE_TAGS:
        raise ValueError(f"`{arg}` is on the points {ps.describe()}; new points can be drawn for "
                         f"the tags {list(RESAMPLABLE_TAGS)} (boundary points carry normals and "
                         "sides that a draw inside the step does not make).")


#: the in-step rejection sampler gives up after this many rounds (the slots it could not
#: fill hold NaN; see :func:`check_drawn`)
MAX_STEP_ROUNDS = 64


def uniform_points(ps: PointSet, key: jax.Array, n: int, dtype=None) -> jax.Array:
    """``n`` new points of ``ps`` as an ``(n, C)`` array, uniform in its region (in ``jit``).

    A geometry whose map from the unit cube is not onto its interior rejects candidates for
    at most :data:`MAX_STEP_ROUNDS` rounds (each with ``1.25 n / acceptance`` candidates, so
    one round nearly always suffices); the points it could not find are NaN, which
    :func:`check_drawn` reports on the host. The containment test sees the spatial
    coordinates only (the time column of a space-time domain is drawn apart)."""
    check_resamplable(ps, "points")
    domain = ps.domain
    geo = domain.geometry
    dtype = dtype or default_float()
    spatial = geo.interior_dims
    timed = domain.time is not None

    def candidates(k: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
        u = jax.random.uniform(k, (m, spatial + int(timed)), dtype)
        pts = geo.interior_jax(u[:, :spatial]).astype(dtype)
        inside = geo.contains_jax(pts)
        if timed:
            t0, t1 = domain.time
            t = jnp.full((m, 1), t0, dtype) if ps.tag == "initial" else t0 + u[:, -1:] * (t1 - t0)
            pts = jnp.concatenate([pts, t.astype(dtype)], axis=1)
        return pts, inside

    if geo.acceptance >= 1.0:
        return candidates(key, n)[0]
    m = int(math.ceil(1.25 * n / geo.acceptance)) + 16

    def draw_more(carry):
        pts, count, k, rounds = carry
        k, sub = jax.random.split(k)
        cand, ok = candidates(sub, m)
        slot = jnp.where(ok, count + jnp.cumsum(ok) - 1, n)  # n: past the end, dropped
        pts = pts.at[slot].set(cand, mode="drop")
        return pts, jnp.minimum(count + jnp.sum(ok), n), k, rounds + 1

    start = (jnp.full((n, ps.n_coords), jnp.nan, dtype), jnp.asarray(0, jnp.int32), key,
             jnp.asarray(0, jnp.int32))
    return jax.lax.while_loop(lambda c: (c[1] < n) & (c[3] < MAX_STEP_ROUNDS), draw_more,
                              start)[0]


def check_drawn(points: jax.Array, ps: PointSet, where: str) -> None:
    """Raise on the host when the in-step sampler could not find points of ``ps`` (NaN
    rows, see :func:`uniform_points`), saying what to do."""
    missing = int(jnp.sum(jnp.isnan(points[:, 0])))
    if not missing:
        return
    geo = ps.domain.geometry
    raise RuntimeError(
        f"{where}: the rejection sampler found only {points.shape[0] - missing} of "
        f"{points.shape[0]} new points of {ps.describe()} in {MAX_STEP_ROUNDS} rounds "
        f"(expected acceptance {geo.acceptance:.2g} of its bounding box) in "
        f"{jnp.dtype(points.dtype).name}. A region far from the origin or much smaller than "
        "its bounding box loses the containment test to round-off: recentre and rescale the "
        "coordinates (e.g. to [-1, 1]), or train in float64 (`jax.config.update("
        "\"jax_enable_x64\", True)` and `Trainer(precision=\"64-true\")`).")


def rad_probabilities(residual: jax.Array, k: float, c: float) -> jax.Array:
    """Normalised RAD density over the points of ``residual`` (``(N,)`` or ``(N, ...)``:
    the norm over the trailing axes is the residual size): ``p ∝ |r|^k / mean(|r|^k) + c``.

    A residual that is zero everywhere gives the uniform density. The sizes are divided by
    their maximum before the power (the ratio ``|r|^k / mean(|r|^k)`` is unchanged), so a
    large ``k`` cannot overflow: the largest point keeps ``1`` and the others underflow
    towards ``0``, as the exact density does.
    """
    r = residual.reshape(residual.shape[0], -1)
    size = jnp.linalg.norm(r, axis=1) if r.shape[1] > 1 else jnp.abs(r[:, 0])
    top = jnp.max(size)
    e = (size / jnp.where(top > 0, top, 1.0)) ** k
    mean = jnp.mean(e)
    density = jnp.where(mean > 0, e / jnp.where(mean > 0, mean, 1.0), 0.0) + c
    total = jnp.sum(density)
    return jnp.where(total > 0, density / jnp.where(total > 0, total, 1.0),
                     1.0 / density.shape[0])


def step_key(state: "TrainState", salt: str) -> jax.Array:
    """The PRNG key of ``state.step`` for one named feature (independent of the others)."""
    step = jax.random.fold_in(state.rng, state.step)
    return jax.random.fold_in(step, zlib.crc32(salt.encode()) & 0x7FFFFFFF)


def point_data_users(outputs: Sequence[Expr], ps: PointSet) -> list[str]:
    """Labels of operations that match fields on ``ps`` with per-point data arrays (an
    ``(N, D)`` constant combined point by point): they hold one row per *stored* point, so the
    points of ``ps`` cannot change under them."""
    found = []
    for node in walk(outputs):
        if isinstance(node, PairedData) and node.pointset is ps:
            found.append(f"paired data of {node.instances.describe()}")
        if node.pointset is not None or not node.children:
            continue
        fields = [c for c in node.children if c.pointset is ps]
        data = [c for c in node.children if c.pointset is None and len(c.shape) >= 2
                and c.shape[-2] == ps.n]
        if fields and data:
            found.append(node.label)
    return found
