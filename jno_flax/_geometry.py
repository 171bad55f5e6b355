"""Geometries: where points lie, how to sample them, their boundaries and normals.

A geometry maps samples of the unit cube to points. Boundaries are unions of named pieces
(segments, faces, arcs), sampled in proportion to their size, with outward unit normals.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass
class BoundarySample:
    points: np.ndarray   # (N, dim)
    normals: np.ndarray  # (N, dim), outward, unit
    sides: np.ndarray    # (N,) side names


class Geometry:
    """A bounded region of R^dim.

    Besides the NumPy samplers used when a domain is built, every geometry maps unit-cube
    samples to interior points with JAX (:meth:`interior_jax`, :meth:`contains_jax`) for
    drawing new points inside a compiled step; where that map is not onto the interior (a
    polygon maps its bounding box), ``acceptance`` is the fraction it keeps.
    """

    dim: int
    side_names: tuple[str, ...] = ()
    #: expected fraction of :meth:`interior_jax` samples that :meth:`contains_jax` keeps
    acceptance: float = 1.0

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def interior(self, u: np.ndarray) -> np.ndarray:
        """Map unit-cube samples ``u`` of shape ``(N, interior_dims)`` to interior points."""
        raise NotImplementedError  # pragma: no cover

    @property
    def interior_dims(self) -> int:
        return self.dim

    def interior_grid(self, n: int) -> np.ndarray:
        """About ``n`` interior points on a regular grid."""
        raise NotImplementedError  # pragma: no cover

    def boundary(self, u: np.ndarray) -> BoundarySample:
        """Map unit-cube samples ``(N, boundary_dims)`` to boundary points."""
        raise NotImplementedError  # pragma: no cover

    @property
    def boundary_dims(self) -> int:
        return max(self.dim - 1, 1)

    def boundary_grid(self, n: int) -> BoundarySample:
        raise NotImplementedError  # pragma: no cover

    def contains(self, p: np.ndarray) -> np.ndarray:
        """Boolean mask of points strictly inside."""
        raise NotImplementedError  # pragma: no cover

    def distance_to_boundary(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def interior_jax(self, u: jax.Array) -> jax.Array:
        """:meth:`interior` with JAX, without rejection: ``(N, interior_dims)`` unit-cube
        samples to ``(N, dim)`` candidate points."""
        raise NotImplementedError  # pragma: no cover

    def contains_jax(self, p: jax.Array) -> jax.Array:
        """Which candidates of :meth:`interior_jax` lie inside (all of them by default: the
        map is onto the interior)."""
        return jnp.ones(p.shape[:1], bool)


def _grid_counts(n: int, lengths: np.ndarray) -> list[int]:
    """Per-axis counts of a tensor grid with about ``n`` points, proportional to ``lengths``."""
    d = len(lengths)
    scale = (n / np.prod(lengths)) ** (1.0 / d)
    return [max(1, int(round(scale * length))) for length in lengths]


def _midpoints(k: int) -> np.ndarray:
    return (np.arange(k) + 0.5) / k


class Segments(Geometry):
    """A 2-D region bounded by a closed polygon (convex or not)."""

    dim = 2

    def __init__(self, vertices: np.ndarray, side_names: tuple[str, ...] | None = None):
        v = np.asarray(vertices, dtype=np.float64)
        area = 0.5 * np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
        if area < 0:  # make counter-clockwise so that (dy, -dx) points outward
            v = v[::-1]
            if side_names is not None:
                side_names = tuple(reversed(side_names[:-1])) + (side_names[-1],)
        self.vertices = v
        self.starts = v
        self.ends = np.roll(v, -1, axis=0)
        edge = self.ends - self.starts
        self.lengths = np.linalg.norm(edge, axis=1)
        self.normals = np.stack([edge[:, 1], -edge[:, 0]], axis=1) / self.lengths[:, None]
        self.side_names = side_names or tuple(f"side_{i}" for i in range(len(v)))
        self.lo, self.hi = v.min(axis=0), v.max(axis=0)
        self.acceptance = abs(area) / float(np.prod(self.hi - self.lo))

    def describe(self) -> str:
        return f"polygon with {len(self.vertices)} vertices"

    def interior_jax(self, u):
        return jnp.asarray(self.lo, u.dtype) + u[:, :2] * jnp.asarray(self.hi - self.lo, u.dtype)

    def contains_jax(self, p):
        """Crossing-number test, as :meth:`contains`."""
        x, y = p[:, 0:1], p[:, 1:2]
        x0, y0 = self.starts[:, 0], self.starts[:, 1]
        x1, y1 = self.ends[:, 0], self.ends[:, 1]
        crosses = (y0 > y) != (y1 > y)
        dy = np.where(y1 == y0, 1.0, y1 - y0)  # horizontal edges never cross
        xc = x0 + (y - y0) * (x1 - x0) / dy
        return jnp.sum(crosses & (x < xc), axis=1) % 2 == 1

    def contains(self, p):
        p = np.asarray(p, dtype=np.float64)
        x, y = p[:, 0:1], p[:, 1:2]
        x0, y0 = self.starts[:, 0], self.starts[:, 1]
        x1, y1 = self.ends[:, 0], self.ends[:, 1]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside = np.sum(crosses & (x < xc), axis=1) % 2 == 1
        return inside & (self.distance_to_boundary(p) > 1e-12)

    def distance_to_boundary(self, p):
        p = np.asarray(p, dtype=np.float64)[:, None, :]
        a, b = self.starts[None], self.ends[None]
        ab = b - a
        t = np.clip(np.sum((p - a) * ab, -1) / np.sum(ab * ab, -1), 0.0, 1.0)
        closest = a + t[..., None] * ab
        return np.min(np.linalg.norm(p - closest, axis=-1), axis=1)

    def interior(self, u):
        pts = self.lo + u * (self.hi - self.lo)
        return pts[self.contains(pts)]

    def interior_grid(self, n):
        box_area = float(np.prod(self.hi - self.lo))
        area = abs(0.5 * np.sum(self.vertices[:, 0] * np.roll(self.vertices[:, 1], -1)
                                - np.roll(self.vertices[:, 0], -1) * self.vertices[:, 1]))
        counts = _grid_counts(int(np.ceil(n * box_area / area)), self.hi - self.lo)
        axes = [lo + _midpoints(k) * (hi - lo) for lo, hi, k in zip(self.lo, self.hi, counts)]
        pts = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
        return pts[self.contains(pts)]

    def _at_arclength(self, s: np.ndarray) -> BoundarySample:
        cum = np.concatenate([[0.0], np.cumsum(self.lengths)])
        s = np.clip(s, 0.0, cum[-1] * (1 - 1e-12))
        k = np.searchsorted(cum, s, side="right") - 1
        frac = (s - cum[k]) / self.lengths[k]
        pts = self.starts[k] + frac[:, None] * (self.ends[k] - self.starts[k])
        return BoundarySample(pts, self.normals[k], np.asarray(self.side_names, dtype=object)[k])

    def boundary(self, u):
        return self._at_arclength(u[:, 0] * self.lengths.sum())

    def boundary_grid(self, n):
        return self._at_arclength(_midpoints(n) * self.lengths.sum())


class Interval(Geometry):
    dim = 1
    side_names = ("left", "right")

    def __init__(self, a: float, b: float):
        self.a, self.b = float(a), float(b)

    def describe(self):
        return f"interval({self.a:g}, {self.b:g})"

    def interior(self, u):
        return self.a + u[:, :1] * (self.b - self.a)

    def interior_jax(self, u):
        return self.a + u[:, :1] * (self.b - self.a)

    def interior_grid(self, n):
        return np.linspace(self.a, self.b, n + 2)[1:-1, None]

    def contains(self, p):
        return (p[:, 0] > self.a) & (p[:, 0] < self.b)

    def distance_to_boundary(self, p):
        return np.minimum(np.abs(p[:, 0] - self.a), np.abs(p[:, 0] - self.b))

    def boundary(self, u):
        right = u[:, 0] >= 0.5
        return self._sample(right)

    def boundary_grid(self, n):
        return self._sample(np.arange(n) % 2 == 1)

    def _sample(self, right):
        pts = np.where(right, self.b, self.a)[:, None]
        normals = np.where(right, 1.0, -1.0)[:, None]
        sides = np.where(right, "right", "left").astype(object)
        return BoundarySample(pts, normals, sides)


class Rect(Segments):
    def __init__(self, x_range, y_range):
        (x0, x1), (y0, y1) = x_range, y_range
        super().__init__(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]),
                         side_names=("bottom", "right", "top", "left"))
        self.ranges = ((float(x0), float(x1)), (float(y0), float(y1)))

    def describe(self):
        (x0, x1), (y0, y1) = self.ranges
        return f"rect(x=({x0:g}, {x1:g}), y=({y0:g}, {y1:g}))"

    def contains(self, p):
        return np.all((p > self.lo) & (p < self.hi), axis=1)

    # the map of the bounding box is onto the rectangle: no crossing test
    contains_jax = Geometry.contains_jax


class Disk(Geometry):
    dim = 2
    side_names = ()

    def __init__(self, center, radius: float):
        self.center = np.asarray(center, dtype=np.float64)
        self.radius = float(radius)

    def describe(self):
        return f"disk(center=({self.center[0]:g}, {self.center[1]:g}), radius={self.radius:g})"

    def interior(self, u):
        r = self.radius * np.sqrt(u[:, 0])
        th = 2 * np.pi * u[:, 1]
        return self.center + np.stack([r * np.cos(th), r * np.sin(th)], axis=1)

    def interior_jax(self, u):
        r = self.radius * jnp.sqrt(u[:, 0])
        th = 2 * jnp.pi * u[:, 1]
        return jnp.asarray(self.center, u.dtype) + jnp.stack([r * jnp.cos(th), r * jnp.sin(th)],
                                                             axis=1)

    def interior_grid(self, n):
        counts = _grid_counts(int(np.ceil(n * 4 / np.pi)), np.array([2.0, 2.0]) * self.radius)
        axes = [c - self.radius + _midpoints(k) * 2 * self.radius
                for c, k in zip(self.center, counts)]
        pts = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
        return pts[self.contains(pts)]

    def contains(self, p):
        return np.linalg.norm(p - self.center, axis=1) < self.radius

    def distance_to_boundary(self, p):
        return np.abs(np.linalg.norm(p - self.center, axis=1) - self.radius)

    def _at_angle(self, th):
        normals = np.stack([np.cos(th), np.sin(th)], axis=1)
        return BoundarySample(self.center + self.radius * normals, normals,
                              np.full(len(th), "boundary", dtype=object))

    def boundary(self, u):
        return self._at_angle(2 * np.pi * u[:, 0])

    def boundary_grid(self, n):
        return self._at_angle(2 * np.pi * _midpoints(n))


class Box(Geometry):
    dim = 3
    # (axis, low or high) for each face name
    faces = {"left": (0, 0), "right": (0, 1), "front": (1, 0), "back": (1, 1),
             "bottom": (2, 0), "top": (2, 1)}
    side_names = tuple(faces)

    def __init__(self, x_range, y_range, z_range):
        self.ranges = tuple((float(a), float(b)) for a, b in (x_range, y_range, z_range))
        self.lo = np.array([r[0] for r in self.ranges])
        self.hi = np.array([r[1] for r in self.ranges])

    def describe(self):
        return "box(" + ", ".join(f"{n}=({a:g}, {b:g})"
                                  for n, (a, b) in zip("xyz", self.ranges)) + ")"

    def interior(self, u):
        return self.lo + u[:, :3] * (self.hi - self.lo)

    def interior_jax(self, u):
        return jnp.asarray(self.lo, u.dtype) + u[:, :3] * jnp.asarray(self.hi - self.lo, u.dtype)

    def interior_grid(self, n):
        counts = _grid_counts(n, self.hi - self.lo)
        axes = [lo + _midpoints(k) * (hi - lo) for lo, hi, k in zip(self.lo, self.hi, counts)]
        return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)

    def contains(self, p):
        return np.all((p > self.lo) & (p < self.hi), axis=1)

    def distance_to_boundary(self, p):
        return np.min(np.minimum(np.abs(p - self.lo), np.abs(p - self.hi)), axis=1)

    def _face_areas(self):
        ext = self.hi - self.lo
        return np.array([np.prod(np.delete(ext, ax)) for ax, _ in self.faces.values()])

    def _on_faces(self, face_idx, uv):
        names = list(self.faces)
        pts = np.empty((len(face_idx), 3))
        normals = np.zeros((len(face_idx), 3))
        for k, (ax, hi) in enumerate(self.faces.values()):
            sel = face_idx == k
            others = [a for a in range(3) if a != ax]
            pts[sel, ax] = self.hi[ax] if hi else self.lo[ax]
            pts[sel, others[0]] = self.lo[others[0]] + uv[sel, 0] * (self.hi - self.lo)[others[0]]
            pts[sel, others[1]] = self.lo[others[1]] + uv[sel, 1] * (self.hi - self.lo)[others[1]]
            normals[sel, ax] = 1.0 if hi else -1.0
        return BoundarySample(pts, normals, np.asarray(names, dtype=object)[face_idx])

    @property
    def boundary_dims(self) -> int:
        return 3

    def boundary(self, u):
        cum = np.cumsum(self._face_areas())
        face = np.searchsorted(cum / cum[-1], u[:, 0], side="right").clip(0, 5)
        return self._on_faces(face, u[:, 1:3])

    def boundary_grid(self, n):
        areas = self._face_areas()
        per_face = np.maximum(1, np.round(n * areas / areas.sum()).astype(int))
        faces, uvs = [], []
        for k, m in enumerate(per_face):
            cu, cv = _grid_counts(int(m), np.array([1.0, 1.0]))
            gu, gv = np.meshgrid(_midpoints(cu), _midpoints(cv), indexing="ij")
            uvs.append(np.stack([gu.ravel(), gv.ravel()], axis=1))
            faces.append(np.full(cu * cv, k))
        return self._on_faces(np.concatenate(faces), np.concatenate(uvs))
