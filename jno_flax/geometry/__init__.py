"""Geometries without points: primitives and their booleans.

>>> import numpy as np
>>> from jno_flax import geometry
>>> plate = geometry.rect((-0.5, 0.5), (-0.5, 0.5)).named("outer")
>>> holes = geometry.disk((0.3, 0.3), 0.1) | geometry.disk((-0.3, -0.3), 0.1)
>>> shape = plate - holes
>>> shape.contains([[0.0, 0.0], [0.3, 0.3]]).tolist()
[True, False]
>>> abs(float(shape.signed_distance(np.array([[0.0, 0.5]]))[0]))
0.0

``a - b`` (difference), ``a | b`` (union) and ``a & b`` (intersection) combine geometries of
the same dimension; :func:`jno_flax.domain.from_geometry` samples points of any geometry.
Signed distances are positive inside (see :mod:`jno_flax.geometry._csg` for booleans).
"""

from __future__ import annotations

import numbers

import numpy as np

from jno_flax.geometry._csg import Boolean
from jno_flax.geometry._geometry import Geometry
from jno_flax.geometry._polytopes import Box, Hypercube, Interval, Rect, Segments
from jno_flax.geometry._round_shapes import Ball, Disk, Ellipse

__all__ = ["Geometry", "Boolean", "interval", "rect", "box", "disk", "ellipse", "ball",
           "sphere", "hypercube", "polygon", "lshape", "check_range"]


def check_range(arg: str, value) -> tuple[float, float]:
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Real) and np.isfinite(v) for v in value))
    if not ok:
        raise ValueError(f"`{arg}` must be a pair (low, high) of finite numbers, got {value!r}.")
    lo, hi = float(value[0]), float(value[1])
    if not lo < hi:
        raise ValueError(
            f"`{arg}` must be a non-empty range with low < high, got {value!r}."
        )
    return lo, hi


def _check_point(arg: str, value, dim: int) -> np.ndarray:
    c = np.asarray(value, dtype=np.float64)
    if c.shape != (dim,) or not np.all(np.isfinite(c)):
        raise ValueError(f"`{arg}` must be {dim} finite numbers, got {value!r}.")
    return c


def _check_positive(arg: str, value) -> float:
    if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{arg}` must be a positive number, got {value!r}.")
    return float(value)


def interval(a: float, b: float) -> Interval:
    """The interval ``(a, b)``; sides ``"left"`` and ``"right"``."""
    return Interval(*check_range("(a, b)", (a, b)))


def rect(x_range=(0.0, 1.0), y_range=(0.0, 1.0)) -> Rect:
    """A rectangle; sides ``"left"``, ``"right"``, ``"bottom"``, ``"top"``."""
    return Rect(check_range("x_range", x_range), check_range("y_range", y_range))


def box(x_range=(0.0, 1.0), y_range=(0.0, 1.0), z_range=(0.0, 1.0)) -> Box:
    """A 3-D box; faces ``left/right`` (x), ``front/back`` (y), ``bottom/top`` (z)."""
    return Box(*(check_range(n, r) for n, r in
                 (("x_range", x_range), ("y_range", y_range), ("z_range", z_range))))


def disk(center=(0.0, 0.0), radius: float = 1.0) -> Disk:
    """A disk; its boundary is the circle."""
    return Disk(_check_point("center", center, 2), _check_positive("radius", radius))


def ellipse(center=(0.0, 0.0), semi_axes=(1.0, 0.5)) -> Ellipse:
    """An axis-aligned ellipse with semi-axes ``(a, b)`` along x and y."""
    axes = np.asarray(semi_axes, dtype=np.float64)
    if axes.shape != (2,) or not np.all(np.isfinite(axes)) or np.any(axes <= 0):
        raise ValueError(f"`semi_axes` must be two positive numbers, got {semi_axes!r}.")
    return Ellipse(_check_point("center", center, 2), axes)


def ball(center=(0.0, 0.0, 0.0), radius: float = 1.0) -> Ball:
    """A 3-D ball; its boundary is the sphere."""
    return Ball(_check_point("center", center, 3), _check_positive("radius", radius))


sphere = ball


def hypercube(ranges) -> Hypercube:
    """An axis-aligned box in any dimension, from one ``(low, high)`` per axis; faces are
    tags ``"x0_min"``, ``"x0_max"``, ``"x1_min"``, ...

    >>> from jno_flax import geometry
    >>> geometry.hypercube([(0, 1)] * 5).measure
    1.0
    """
    if not isinstance(ranges, (list, tuple)) or not ranges:
        raise ValueError(f"`ranges` must be a list of (low, high) pairs, one per axis, got "
                         f"{ranges!r}.")
    pairs = [check_range(f"ranges[{i}]", r) for i, r in enumerate(ranges)]
    return Hypercube([a for a, _ in pairs], [b for _, b in pairs])


def polygon(vertices, side_names: tuple[str, ...] | None = None) -> Segments:
    """A simple polygon (convex or not) given by its vertices in order, either way round.

    Sides are named ``"side_0"``, ... (edge ``k`` joins vertex ``k`` to ``k + 1``) unless
    ``side_names`` is given. A last vertex equal to the first (the closed ring of shapely and
    matplotlib) is dropped; repeated consecutive vertices otherwise, an outline that crosses
    or touches itself (a bow-tie) and one without area (collinear vertices) are errors.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"`vertices` must be a (K, 2) array of finite numbers with K >= 3, "
                         f"got shape {np.shape(vertices)}.")
    if len(v) > 3 and np.array_equal(v[0], v[-1]):
        v = v[:-1]      # a closed ring: the closing vertex is the first one
        if side_names is not None and len(side_names) == len(v) + 1:
            raise ValueError(f"`side_names` must name each of the {len(v)} sides (the last "
                             f"vertex repeats the first), got {len(side_names)} names.")
    check_simple_outline(v)
    if side_names is not None and len(side_names) != len(v):
        raise ValueError(f"`side_names` must name each of the {len(v)} sides, "
                         f"got {len(side_names)} names.")
    return Segments(v, tuple(side_names) if side_names else None)


def check_simple_outline(v: np.ndarray) -> None:
    """Raise unless the closed outline ``v`` (``(K, 2)``) bounds a region: distinct
    consecutive vertices, a non-zero area, and no two sides that cross or touch (other than
    neighbours at their common vertex)."""
    nxt = np.roll(v, -1, axis=0)
    repeated = np.flatnonzero(np.all(v == nxt, axis=1))
    if repeated.size:
        k = int(repeated[0])
        raise ValueError(f"`vertices` {k} and {(k + 1) % len(v)} are the same point "
                         f"{v[k].tolist()}: give each corner once.")
    scale = float(np.ptp(v))
    meet = _sides_meet(v, nxt, 1e-12 * scale)
    k = len(v)
    pairs = [(i, j) for i, j in zip(*np.nonzero(np.triu(meet, 1)))
             if j != i + 1 and not (i == 0 and j == k - 1)]   # neighbours share a vertex
    if pairs:
        i, j = pairs[0]
        raise ValueError(f"`vertices` outline crosses or touches itself: side {i} "
                         f"({v[i].tolist()} to {nxt[i].tolist()}) meets side {j} "
                         f"({v[j].tolist()} to {nxt[j].tolist()}); give a simple "
                         "polygon (build other shapes with booleans: a | b, a - b).")
    area = 0.5 * abs(float(np.sum(v[:, 0] * nxt[:, 1] - nxt[:, 0] * v[:, 1])))
    if area <= 1e-12 * scale**2:
        raise ValueError(f"`vertices` {v.tolist()} enclose no area (collinear points); a "
                         "polygon needs at least three corners not on one line.")


def _sides_meet(starts: np.ndarray, ends: np.ndarray, tol: float) -> np.ndarray:
    """``(K, K)``: sides ``i`` and ``j`` (from ``starts`` to ``ends``) have a point in common
    (crossing, or an end of one on the other, to ``tol``)."""
    p1, p2 = starts[:, None], ends[:, None]          # side i
    q1, q2 = starts[None], ends[None]                # side j

    def cross(o, a, b):
        return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - \
            (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])

    def within(a, b, c):   # c lies in the box of a b
        return np.all((np.minimum(a, b) - tol <= c) & (c <= np.maximum(a, b) + tol), axis=-1)
    d1, d2 = cross(q1, q2, p1), cross(q1, q2, p2)
    d3, d4 = cross(p1, p2, q1), cross(p1, p2, q2)
    length = np.linalg.norm(ends - starts, axis=1)
    eps = tol * np.maximum(np.maximum(length[:, None], length[None]), 1.0)
    proper = (((d1 > eps) & (d2 < -eps)) | ((d1 < -eps) & (d2 > eps))) & \
        (((d3 > eps) & (d4 < -eps)) | ((d3 < -eps) & (d4 > eps)))
    touch = ((np.abs(d1) <= eps) & within(q1, q2, p1)) | ((np.abs(d2) <= eps)
                                                         & within(q1, q2, p2)) | \
        ((np.abs(d3) <= eps) & within(p1, p2, q1)) | ((np.abs(d4) <= eps) & within(p1, p2, q2))
    return proper | touch


def lshape(size: float = 1.0) -> Segments:
    """The L-shaped region ``(-size, size)^2`` without its upper-right quadrant."""
    s = float(size)
    if not s > 0:
        raise ValueError(f"`size` must be positive, got {size!r}.")
    return polygon([(-s, -s), (s, -s), (s, 0.0), (0.0, 0.0), (0.0, s), (-s, s)])
