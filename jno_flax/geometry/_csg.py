"""Constructive solid geometry: differences, unions and intersections of geometries.

A boolean's interior is sampled by rejection from its bounding box. Its boundary is made of
the parts of its primitives' boundaries that bound the result: each primitive's boundary is
sampled uniformly in length (area in 3-D), in proportion to its size, and a point is kept
when it lies on the composite boundary — so each kept part is hit in proportion to its
length. Parts of a subtracted geometry have their normals flipped and carry the tag
``"holes"``. Boundaries of two operands that coincide along a curve (a surface in 3-D) are
not merged: such operands are not supported.

Signed distances combine as ``max`` (union), ``min`` (intersection) and
``min(d_a, -d_b)`` (difference). The result is exact outside a union and inside an
intersection; elsewhere it is a bound: zero exactly on the boundary, of the right sign, and
never larger in magnitude than the true distance. It has kinks where the nearest operand
changes; :meth:`Boolean.smooth_distance` combines with R-functions instead
(``a + b ± sqrt(a² + b²)``, Rvachev; Sukumar & Srivastava 2022), smooth inside, zero on the
boundary with unit normal derivative away from corners: the distance to use in
``u = g + d * net``, whose Laplacian must not see kinks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import qmc

from jno_flax.geometry._geometry import (BoundarySample, BoxMapped, Geometry, _unique, box_grid,
                                object_array, r_and, r_or)

#: quasi-random points of the bounding box used to estimate a boolean's area
AREA_SAMPLES = 1 << 16
#: a sampler gives up after this many rounds of rejection
MAX_ROUNDS = 200

_OPS = {"difference": "-", "union": "|", "intersection": "&"}


#: what a condition does with a point on the other operand's boundary too (a shared edge
#: or face): keep it where the two outward normals agree ("same"), where they are opposite
#: ("opposite"), or never ("drop": the other operand keeps it, so it is kept once)
SHARED = ("same", "opposite", "drop")


@dataclass(frozen=True)
class Condition:
    """Where a part of one operand's boundary bounds a boolean: strictly inside (``sign=+1``)
    or strictly outside (``-1``) the other operand ``geo``; on ``geo``'s boundary, ``shared``
    decides (:data:`SHARED`), comparing ``geo``'s outward normal with the part's outward normal
    at that level (``flip``: the part's normal is reversed there)."""

    geo: Geometry
    sign: int
    shared: str
    flip: bool

    def keep(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        d = self.geo.signed_distance(points)
        on = np.abs(d) <= _tolerance(self.geo)
        ok = ~on & (self.sign * d > 0)
        if self.shared != "drop" and on.any():
            mine = (-1.0 if self.flip else 1.0) * normals[on]
            agree = np.sum(mine * outward_normal(self.geo, points[on]), axis=1) > 0
            ok[on] = agree if self.shared == "same" else ~agree
        return ok


def _tolerance(geo: Geometry) -> float:
    """How close to ``geo``'s boundary a point counts as on it: 1e-9 of its size."""
    lo, hi = geo.bounds
    return 1e-9 * max(float(np.max(np.asarray(hi) - np.asarray(lo))), 1.0)


def outward_normal(geo: Geometry, points: np.ndarray) -> np.ndarray:
    """``geo``'s outward unit normal at points on its boundary: minus the gradient of its
    signed distance (positive inside), by central differences."""
    h = 1e3 * _tolerance(geo)
    grad = np.stack([(geo.signed_distance(points + h * e) - geo.signed_distance(points - h * e))
                     / (2 * h) for e in np.eye(points.shape[1])], axis=1)
    size = np.linalg.norm(grad, axis=1, keepdims=True)
    return -grad / np.where(size > 0, size, 1.0)


@dataclass(frozen=True)
class Part:
    """The part of a primitive's boundary that bounds a boolean: the points of ``leaf``'s
    boundary that every condition keeps (nested booleans add one condition per level)."""

    leaf: Geometry
    flip: bool = False
    tags: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()

    def keep(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """Which of the leaf's boundary ``points`` (with the leaf's outward ``normals``)
        bound the boolean."""
        ok = np.ones(len(points), bool)
        for condition in self.conditions:
            ok &= condition.keep(points, normals)
        return ok

    def also(self, geo: Geometry, sign: int, shared: str, flip: bool = False,
             tags: tuple[str, ...] = ()) -> "Part":
        return Part(self.leaf, self.flip ^ flip, self.tags + tags,
                    self.conditions + (Condition(geo, sign, shared, self.flip),))


def parts(geo: Geometry) -> list[Part]:
    """The boundary parts of ``geo`` (one per primitive). A boundary the two operands share
    is kept once, from ``a``: for a union and an intersection where their normals agree
    (an outside edge), for a difference where they are opposite (``a`` ends where ``b``
    begins); an interface between them is not boundary."""
    if not isinstance(geo, Boolean):
        return [Part(geo, tags=geo.own_tags)]
    a, b = geo.a, geo.b
    own = geo.own_tags
    if geo.op == "union":
        out = ([p.also(b, -1, "same") for p in parts(a)]
               + [p.also(a, -1, "drop") for p in parts(b)])
    elif geo.op == "intersection":
        out = ([p.also(b, +1, "same") for p in parts(a)]
               + [p.also(a, +1, "drop") for p in parts(b)])
    else:
        out = ([p.also(b, -1, "opposite") for p in parts(a)]
               + [p.also(a, +1, "drop", flip=True, tags=("holes",)) for p in parts(b)])
    return [Part(p.leaf, p.flip, p.tags + own, p.conditions) for p in out]


class Boolean(BoxMapped, Geometry):
    """``a - b``, ``a | b`` or ``a & b`` of two geometries of the same dimension."""

    def __init__(self, op: str, a: Geometry, b: Geometry):
        symbol = _OPS[op]
        if not isinstance(b, Geometry):
            raise TypeError(f"`a {symbol} b` needs two geometries, got b = {type(b).__name__}: "
                            f"{b!r}. Build shapes with jno_flax.geometry (rect, disk, ...).")
        if a.dim != b.dim:
            raise ValueError(f"`a {symbol} b` needs geometries of the same dimension, got a "
                             f"{a.dim}-D {a.describe()} and a {b.dim}-D {b.describe()}.")
        self.op, self.a, self.b, self.dim = op, a, b, a.dim
        self.lo, self.hi = self._bounding_box()
        self.side_names = _unique(a.tag_names + b.tag_names
                                  + (("holes",) if op == "difference" else ()))
        self.acceptance = self._area_fraction()
        self._boundary_fraction: float | None = None

    def describe(self) -> str:
        return f"({self.a.describe()} {_OPS[self.op]} {self.b.describe()})"

    def _bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        (alo, ahi), (blo, bhi) = self.a.bounds, self.b.bounds
        if self.op == "union":
            return np.minimum(alo, blo), np.maximum(ahi, bhi)
        if self.op == "difference":
            return alo, ahi
        lo, hi = np.maximum(alo, blo), np.minimum(ahi, bhi)
        if np.any(lo >= hi):
            raise ValueError(f"{self.describe()} leaves nothing: the bounding boxes of its "
                             "operands do not overlap.")
        return lo, hi

    def _area_fraction(self) -> float:
        u = qmc.Sobol(self.dim, scramble=True, seed=0).random(AREA_SAMPLES)
        fraction = float(np.mean(self.contains(self.interior(u))))
        if fraction == 0.0:
            raise ValueError(f"{self.describe()} leaves nothing: none of {AREA_SAMPLES} "
                             "quasi-random points of its bounding box lies inside.")
        return fraction

    # ------------------------------------------------------------------ region
    @property
    def bounds(self):
        return self.lo, self.hi

    @property
    def measure(self) -> float:
        """Area (volume in 3-D), estimated from quasi-random points of the bounding box."""
        return self.acceptance * float(np.prod(self.hi - self.lo))

    def signed_distance(self, p, xp=np):
        da, db = self.a.signed_distance(p, xp), self.b.signed_distance(p, xp)
        if self.op == "union":
            return xp.maximum(da, db)
        if self.op == "intersection":
            return xp.minimum(da, db)
        return xp.minimum(da, -db)

    def smooth_distance(self, p, xp=np):
        """R-functions of the operands' smooth distances: ``a + b ± |(a, b)|``."""
        da, db = self.a.smooth_distance(p, xp), self.b.smooth_distance(p, xp)
        if self.op == "union":
            return r_or(da, db, xp)
        if self.op == "intersection":
            return r_and(da, db, xp)
        return r_and(da, -db, xp)

    def interior_grid(self, n):
        pts = box_grid(self.lo, self.hi, int(np.ceil(n / self.acceptance)))
        return pts[self.contains(pts)]

    # ------------------------------------------------------------------ boundary
    @property
    def boundary_dims(self) -> int:
        return 1 + max(p.leaf.boundary_dims for p in parts(self))

    @property
    def boundary_measure(self) -> float:
        """Length (area in 3-D) of the composite boundary, estimated by sampling."""
        return self._kept_fraction() * self._leaf_measure()

    def _kept_fraction(self) -> float:
        """The fraction of the primitives' boundary samples that bound the result."""
        if self._boundary_fraction is None:
            u = np.random.default_rng(0).random((AREA_SAMPLES, self.boundary_dims))
            kept = ~np.isnan(self._draw_parts(u, parts(self)).points[:, 0])
            self._boundary_fraction = float(kept.mean())
        return self._boundary_fraction

    def _leaf_measure(self) -> float:
        return float(sum(p.leaf.boundary_measure for p in parts(self)))

    def _draw_parts(self, u: np.ndarray, all_parts: list[Part]) -> BoundarySample:
        """Map unit samples to points of the parts (chosen by ``u[:, 0]`` in proportion to
        their primitive's boundary size); rows not on the composite boundary get NaN."""
        sizes = np.array([p.leaf.boundary_measure for p in all_parts])
        which = np.searchsorted(np.cumsum(sizes) / sizes.sum(), u[:, 0], side="right")
        which = which.clip(0, len(all_parts) - 1)
        pts = np.full((len(u), self.dim), np.nan)
        normals = np.full((len(u), self.dim), np.nan)
        sides = np.empty(len(u), dtype=object)
        for k, part in enumerate(all_parts):
            rows = np.flatnonzero(which == k)
            if not len(rows):
                continue
            b = part.leaf.boundary(u[rows, 1:1 + part.leaf.boundary_dims]).with_tags(part.tags)
            ok = part.keep(b.points, b.normals)
            rows, sign = rows[ok], -1.0 if part.flip else 1.0
            pts[rows], normals[rows] = b.points[ok], sign * b.normals[ok]
            for row, tags in zip(rows, b.sides[ok]):
                sides[row] = tags
        return BoundarySample(pts, normals, sides)

    def sample_boundary(self, n: int, draw: Callable[[int, int], np.ndarray], extra: int = 0):
        all_parts = parts(self)
        width = self.boundary_dims
        got: list[tuple[BoundarySample, np.ndarray]] = []
        have = tried = 0
        kept = max(self._kept_fraction(), 1e-3)
        for _ in range(MAX_ROUNDS):
            m = max(int(np.ceil(1.2 * (n - have) / kept)), 2 * (n - have), 64)
            u = draw(m, width + extra)
            b = self._draw_parts(u, all_parts)
            ok = ~np.isnan(b.points[:, 0])
            got.append((BoundarySample(b.points[ok], b.normals[ok], b.sides[ok]),
                        u[ok, width:]))
            have, tried = have + int(ok.sum()), tried + m
            if have >= n:
                break
        else:
            raise ValueError(
                f"could not find {n} boundary points of {self.describe()}: {have} of {tried} "
                f"samples of its primitives' boundaries lie on it (acceptance rate "
                f"{have / tried:.2g}).")
        cat = BoundarySample(np.concatenate([g[0].points for g in got])[:n],
                             np.concatenate([g[0].normals for g in got])[:n],
                             object_array([s for g in got for s in g[0].sides][:n]))
        return cat, np.concatenate([g[1] for g in got])[:n]

    def boundary(self, u):
        raise NotImplementedError(
            "a boolean's boundary points are drawn by rejection: use sample_boundary")

    def boundary_grid(self, n: int) -> BoundarySample:
        """About ``n`` points: each primitive's boundary grid, at the spacing of ``n`` points
        over the composite boundary, kept where it bounds the result."""
        all_parts = parts(self)
        total = self.boundary_measure
        out = []
        for part in all_parts:
            share = part.leaf.boundary_measure / total
            b = part.leaf.boundary_grid(max(1, int(round(n * share)))).with_tags(part.tags)
            ok = part.keep(b.points, b.normals)
            sign = -1.0 if part.flip else 1.0
            out.append(BoundarySample(b.points[ok], sign * b.normals[ok], b.sides[ok]))
        return BoundarySample(np.concatenate([b.points for b in out]),
                              np.concatenate([b.normals for b in out]),
                              object_array([s for b in out for s in b.sides]))
