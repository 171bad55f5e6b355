"""Geometries: where points lie, how to sample them, their boundaries, normals and distances.

A geometry maps samples of the unit cube to points. Boundaries are unions of named pieces
(segments, faces, arcs), sampled in proportion to their size, with outward unit normals.
Geometries combine with ``a - b`` (difference), ``a | b`` (union) and ``a & b``
(intersection); see :mod:`jno_flax.geometry._csg`.

Signed distances are **positive inside**, zero on the boundary and negative outside, so that
``u = g + d * net`` imposes ``u = g`` on the boundary.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclass
class BoundarySample:
    points: np.ndarray   # (N, dim)
    normals: np.ndarray  # (N, dim), outward, unit
    sides: np.ndarray    # (N,) per point: a side name, or a tuple of the tags it carries

    def has(self, tag: str) -> np.ndarray:
        """Which points carry ``tag``."""
        return np.fromiter((tag == s if isinstance(s, str) else tag in s for s in self.sides),
                           bool, len(self.sides))

    def with_tags(self, extra: tuple[str, ...]) -> "BoundarySample":
        """The same points, each also carrying the tags ``extra``."""
        if not extra:
            return self
        return BoundarySample(self.points, self.normals, object_array(
            [((s,) if isinstance(s, str) else tuple(s)) + extra for s in self.sides]))


def object_array(items) -> np.ndarray:
    """A 1-D object array of ``items`` (tuples stay elements, not rows)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


class Geometry:
    """A bounded region of R^dim.

    Besides the NumPy samplers used when a domain is built, every geometry maps unit-cube
    samples to candidate interior points with JAX (:meth:`interior_jax`,
    :meth:`contains_jax`) for drawing new points inside a compiled step; where that map is not
    onto the interior (a polygon or a boolean maps its bounding box), ``acceptance`` is the
    fraction it keeps.
    """

    dim: int
    side_names: tuple[str, ...] = ()
    #: expected fraction of :meth:`interior_jax` samples that :meth:`contains_jax` keeps
    acceptance: float = 1.0
    #: a tag carried by the whole boundary of this geometry (set with :meth:`named`)
    name: str | None = None
    #: fixed interior points (a mesh's nodes or quadrature points) used instead of a sampler
    fixed_interior: np.ndarray | None = None
    #: whether the geometry has a boundary to sample (a set of points has none)
    has_boundary: bool = True
    #: whether :meth:`interior` maps the unit cube into the interior, so that its points need
    #: no :meth:`contains` test (a mesh: its map picks points inside the cells)
    interior_map_inside: bool = False

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ interior
    def interior(self, u: np.ndarray) -> np.ndarray:
        """Map unit-cube samples ``u`` of shape ``(N, interior_dims)`` to candidate points;
        :meth:`contains` says which to keep (all, where the map is onto the interior)."""
        raise NotImplementedError  # pragma: no cover

    @property
    def interior_dims(self) -> int:
        return self.dim

    def interior_grid(self, n: int) -> np.ndarray:
        """About ``n`` interior points on a regular grid."""
        raise NotImplementedError  # pragma: no cover

    def interior_jax(self, u: jax.Array) -> jax.Array:
        """:meth:`interior` with JAX: ``(N, interior_dims)`` unit-cube samples to ``(N, dim)``
        candidate points."""
        raise NotImplementedError  # pragma: no cover

    def contains_jax(self, p: jax.Array) -> jax.Array:
        """Which candidates of :meth:`interior_jax` lie inside (all of them where the map is
        onto the interior, else those of positive signed distance)."""
        if self.acceptance >= 1.0:
            return jnp.ones(p.shape[:1], bool)
        return self.signed_distance(p, jnp) > 0

    # ------------------------------------------------------------------ boundary
    def boundary(self, u: np.ndarray) -> BoundarySample:
        """Map unit-cube samples ``(N, boundary_dims)`` to boundary points, uniform in
        length (area in 3-D)."""
        raise NotImplementedError  # pragma: no cover

    @property
    def boundary_dims(self) -> int:
        return max(self.dim - 1, 1)

    def boundary_grid(self, n: int) -> BoundarySample:
        raise NotImplementedError  # pragma: no cover

    @property
    def boundary_measure(self) -> float:
        """Length of the boundary (area in 3-D; the number of end points in 1-D)."""
        raise NotImplementedError  # pragma: no cover

    def sample_boundary(self, n: int, draw: Callable[[int, int], np.ndarray], extra: int = 0
                        ) -> tuple[BoundarySample, np.ndarray]:
        """``n`` boundary points from ``draw(m, columns)`` (unit-cube samples), and the
        ``extra`` further columns of the samples used (e.g. a time coordinate)."""
        u = draw(n, self.boundary_dims + extra)
        b = self.boundary(u[:, :self.boundary_dims])
        return b.with_tags(self.own_tags), u[:, self.boundary_dims:]

    # ------------------------------------------------------------------ queries
    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The bounding box ``(lo, hi)``."""
        raise NotImplementedError  # pragma: no cover

    @property
    def measure(self) -> float:
        """Length, area or volume of the region."""
        raise NotImplementedError  # pragma: no cover

    def signed_distance(self, p, xp=np):
        """Signed distance of the ``(N, dim)`` points ``p`` to the boundary: positive inside.

        ``xp`` is ``numpy`` or ``jax.numpy``; with JAX the result is differentiable.
        """
        raise NotImplementedError  # pragma: no cover

    def smooth_distance(self, p, xp=np):
        """An approximate distance that is smooth inside (Sukumar & Srivastava 2022): zero on
        the boundary, positive inside, with unit normal derivative on the boundary (away
        from corners). Primitives whose exact distance has kinks inside (boxes) combine their
        faces with R-functions; booleans combine their operands with R-functions; the others
        return :meth:`signed_distance`."""
        return self.signed_distance(p, xp)

    def distance(self, *coords, smooth: bool = False):
        """The signed distance (``smooth=True``: :meth:`smooth_distance`) at the given
        coordinate expressions, as an expression (positive inside; differentiable).

        ``u = g + shape.distance(x, y) * net(x, y)`` equals ``g`` on the boundary.
        """
        from jno_flax.numpy import function
        if len(coords) != self.dim:
            raise ValueError(f"`distance` takes the {self.dim} spatial coordinates of "
                             f"{self.describe()}, got {len(coords)} arguments.")
        measure = self.smooth_distance if smooth else self.signed_distance

        def distance(*values):
            return measure(jnp.concatenate([jnp.ravel(v) for v in values])[None, :], jnp)

        return function(distance, list(coords),
                        name="smooth_distance" if smooth else "signed_distance")

    def contains(self, p: np.ndarray) -> np.ndarray:
        """Boolean mask of points strictly inside."""
        return self.signed_distance(np.asarray(p, dtype=np.float64)) > 0

    def distance_to_boundary(self, p: np.ndarray) -> np.ndarray:
        return np.abs(self.signed_distance(np.asarray(p, dtype=np.float64)))

    # ------------------------------------------------------------------ tags and booleans
    @property
    def own_tags(self) -> tuple[str, ...]:
        return (self.name,) if self.name else ()

    @property
    def tag_names(self) -> tuple[str, ...]:
        """The boundary tags this geometry gives, besides ``"boundary"``."""
        return _unique(self.side_names + self.own_tags)

    def named(self, name: str) -> "Geometry":
        """A copy whose whole boundary also carries the tag ``name``.

        >>> from jno_flax import geometry
        >>> holes = geometry.disk((0.3, 0.3), 0.1) | geometry.disk((-0.3, 0.3), 0.1)
        >>> shape = geometry.rect((-0.5, 0.5), (-0.5, 0.5)).named("outer") - holes
        >>> shape.tag_names
        ('bottom', 'right', 'top', 'left', 'outer', 'holes')
        """
        if not isinstance(name, str) or not name or name in ("interior", "boundary", "initial"):
            raise ValueError(f"`name` must be a non-empty string other than 'interior', "
                             f"'boundary' and 'initial', got {name!r}.")
        out = copy.copy(self)
        out.name = name
        return out

    def __sub__(self, other):
        from jno_flax.geometry._csg import Boolean
        return Boolean("difference", self, other)

    def __or__(self, other):
        from jno_flax.geometry._csg import Boolean
        return Boolean("union", self, other)

    def __and__(self, other):
        from jno_flax.geometry._csg import Boolean
        return Boolean("intersection", self, other)

    def __repr__(self) -> str:
        return f"<Geometry {self.describe()}>"


class BoxMapped:
    """Interior candidates from the bounding box: unit-cube samples mapped onto
    ``(self.lo, self.hi)`` (the geometry's ``contains`` keeps those inside)."""

    lo: np.ndarray
    hi: np.ndarray
    dim: int

    def interior(self, u):
        return self.lo + u[:, :self.dim] * (self.hi - self.lo)

    def interior_jax(self, u):
        return (jnp.asarray(self.lo, u.dtype)
                + u[:, :self.dim] * jnp.asarray(self.hi - self.lo, u.dtype))


def _unique(names) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _grid_counts(n: int, lengths: np.ndarray) -> list[int]:
    """Per-axis counts of a tensor grid with about ``n`` points, proportional to ``lengths``."""
    d = len(lengths)
    scale = (n / np.prod(lengths)) ** (1.0 / d)
    return [max(1, int(round(scale * length))) for length in lengths]


def _midpoints(k: int) -> np.ndarray:
    return (np.arange(k) + 0.5) / k


def box_grid(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """About ``n`` cell-centre points of a regular grid over the box ``(lo, hi)``."""
    counts = _grid_counts(n, hi - lo)
    axes = [a + _midpoints(k) * (b - a) for a, b, k in zip(lo, hi, counts)]
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)


def box_distance(p, lo, hi, xp):
    """Exact signed distance to an axis-aligned box (positive inside)."""
    lo, hi = xp.asarray(lo, p.dtype), xp.asarray(hi, p.dtype)
    below, above = lo - p, p - hi
    outside = safe_norm(xp.maximum(xp.maximum(below, above), 0.0), xp)
    inside = xp.min(xp.minimum(-below, -above), axis=-1)
    return xp.where(inside > 0, inside, -outside)


def safe_norm(v, xp):
    """Euclidean norm over the last axis whose derivative is finite (zero) at zero."""
    sq = xp.sum(v * v, axis=-1)
    positive = sq > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, sq, 1.0)), 0.0)


def segment_distance(p, a, b, xp):
    """Distance from points ``p`` (``(N, 1, D)``) to the segments ``a -> b`` (``(F, D)``)."""
    ab = b - a
    t = xp.clip(xp.sum((p - a) * ab, -1) / np.sum(ab * ab, -1), 0.0, 1.0)
    return safe_norm(p - a - t[..., None] * ab, xp)


def crossings_inside(p, a, b, xp):
    """Crossing-number test of ``(N, 2)`` points against closed polylines made of the
    segments ``a -> b`` (any orientation)."""
    x, y = p[:, 0:1], p[:, 1:2]
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    dy = np.where(b[:, 1] == a[:, 1], 1.0, b[:, 1] - a[:, 1])  # horizontal: never cross
    xc = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / dy
    return xp.sum(crosses & (x < xc), axis=1) % 2 == 1


def polyline_distance(p, a, b, xp):
    """Signed distance (positive inside) of ``(N, 2)`` points to the region bounded by the
    closed polylines of segments ``a -> b``."""
    dist = xp.min(segment_distance(p[:, None, :], a, b, xp), axis=1)
    return xp.where(crossings_inside(p, a, b, xp), dist, -dist)


def r_and(a, b, xp):
    """R-conjunction ``a + b - |(a, b)|``: positive where both are, zero where either is."""
    return a + b - safe_norm(xp.stack([a, b], axis=-1), xp)


def r_or(a, b, xp):
    """R-disjunction ``a + b + |(a, b)|``: positive where either is."""
    return a + b + safe_norm(xp.stack([a, b], axis=-1), xp)


def polyline_smooth_distance(p, a, b, xp):
    """A smooth distance to the region bounded by the closed polylines of segments
    ``a -> b`` (Sukumar & Srivastava 2022, eqs. 5-7 with m = 1): each segment's distance to
    its line, trimmed to the segment, ``φᵢ = √(f² + ((√(t² + f⁴) - t) / 2)²)``, combined by
    the R-equivalence ``φ = 1 / Σ 1/φᵢ``; zero on the boundary with unit normal derivative
    (away from the corners), smooth inside, signed by the exact distance (positive inside).
    """
    a, b = xp.asarray(a, p.dtype), xp.asarray(b, p.dtype)
    edge = b - a
    length = xp.sqrt(xp.sum(edge * edge, axis=-1))
    q = p[:, None, :] - a                                  # (N, K, 2)
    f = (edge[:, 0] * q[..., 1] - edge[:, 1] * q[..., 0]) / length
    half = q - edge / 2
    t = ((length / 2) ** 2 - xp.sum(half * half, axis=-1)) / length
    root = safe_norm(xp.stack([t, f * f], axis=-1), xp)   # √(t² + f⁴)
    phi = safe_norm(xp.stack([f, (root - t) / 2], axis=-1), xp)
    tiny = xp.asarray(np.finfo(np.dtype(p.dtype)).tiny ** 0.5, p.dtype)
    on = phi <= tiny
    inverse = xp.sum(1.0 / xp.where(on, 1.0, phi), axis=1)
    dist = xp.where(xp.any(on, axis=1), 0.0, 1.0 / xp.where(inverse > 0, inverse, 1.0))
    return xp.where(crossings_inside(p, a, b, xp), dist, -dist)


def box_smooth_distance(p, lo, hi, xp):
    """The R-conjunction of the faces' distances of an axis-aligned box."""
    lo, hi = xp.asarray(lo, p.dtype), xp.asarray(hi, p.dtype)
    out = None
    for k in range(p.shape[-1]):
        for face in (p[..., k] - lo[k], hi[k] - p[..., k]):
            out = face if out is None else r_and(out, face, xp)
    return out


class Points(Geometry):
    """A fixed set of points (data, sensors, a pinned point): no region and no boundary."""

    has_boundary = False

    def __init__(self, points: np.ndarray):
        self.fixed_interior = points
        self.dim = points.shape[1]

    def describe(self):
        return f"{len(self.fixed_interior)} fixed points in {self.dim}-D"

    @property
    def bounds(self):
        return self.fixed_interior.min(axis=0), self.fixed_interior.max(axis=0)

    def _no_region(self, *_args, **_kwargs):
        raise ValueError(f"{self.describe()} have no region: no distance, containment or new "
                         "points (build a geometry with jno_flax.geometry for those).")

    signed_distance = contains = interior = interior_jax = _no_region
