"""Flat-sided primitives: interval, polygon, rectangle, hypercube and box.

Each maps unit-cube samples onto its bounding box (a polygon keeps those inside, with an
``acceptance`` below one) and onto its boundary uniformly in length or area, and gives its
exact signed distance (positive inside) with NumPy or JAX; boxes also a smooth one.
"""

from __future__ import annotations

import numpy as np

from jno_flax.geometry._geometry import (BoundarySample, BoxMapped, Geometry, _midpoints,
                                         box_distance, box_grid, box_smooth_distance,
                                         polyline_distance, polyline_smooth_distance)


class Segments(BoxMapped, Geometry):
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
        self.area = abs(float(area))
        self.acceptance = self.area / float(np.prod(self.hi - self.lo))

    def describe(self) -> str:
        return f"polygon with {len(self.vertices)} vertices"

    @property
    def bounds(self):
        return self.lo, self.hi

    @property
    def measure(self) -> float:
        return self.area

    @property
    def boundary_measure(self) -> float:
        return float(self.lengths.sum())

    def signed_distance(self, p, xp=np):
        return polyline_distance(p, self.starts, self.ends, xp)

    def smooth_distance(self, p, xp=np):
        """The trimmed segments' distances combined by R-equivalence (smooth inside)."""
        return polyline_smooth_distance(p, self.starts, self.ends, xp)

    def interior_grid(self, n):
        pts = box_grid(self.lo, self.hi, int(np.ceil(n / self.acceptance)))
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


class Rect(Segments):
    def __init__(self, x_range, y_range):
        (x0, x1), (y0, y1) = x_range, y_range
        super().__init__(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]),
                         side_names=("bottom", "right", "top", "left"))
        self.ranges = ((float(x0), float(x1)), (float(y0), float(y1)))
        self.acceptance = 1.0  # the map of the bounding box is onto the rectangle

    def describe(self):
        (x0, x1), (y0, y1) = self.ranges
        return f"rect(x=({x0:g}, {x1:g}), y=({y0:g}, {y1:g}))"

    def signed_distance(self, p, xp=np):
        return box_distance(p, self.lo, self.hi, xp)

    def smooth_distance(self, p, xp=np):
        return box_smooth_distance(p, self.lo, self.hi, xp)


class Interval(Geometry):
    dim = 1
    side_names = ("left", "right")

    def __init__(self, a: float, b: float):
        self.a, self.b = float(a), float(b)

    def describe(self):
        return f"interval({self.a:g}, {self.b:g})"

    @property
    def bounds(self):
        return np.array([self.a]), np.array([self.b])

    @property
    def measure(self) -> float:
        return self.b - self.a

    @property
    def boundary_measure(self) -> float:
        return 2.0

    def interior(self, u):
        return self.a + u[:, :1] * (self.b - self.a)

    def interior_jax(self, u):
        return self.a + u[:, :1] * (self.b - self.a)

    def interior_grid(self, n):
        return np.linspace(self.a, self.b, n + 2)[1:-1, None]

    def signed_distance(self, p, xp=np):
        return box_distance(p, [self.a], [self.b], xp)

    def smooth_distance(self, p, xp=np):
        return box_smooth_distance(p, [self.a], [self.b], xp)

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


class Hypercube(BoxMapped, Geometry):
    """An axis-aligned box in any dimension; its faces are tags ``x<i>_min``/``x<i>_max``."""

    def __init__(self, lo, hi):
        self.lo, self.hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        self.dim = len(self.lo)
        self.side_names = tuple(f"x{i}_{end}" for i in range(self.dim) for end in ("min", "max"))

    def describe(self):
        return "hypercube(" + ", ".join(f"({a:g}, {b:g})" for a, b in zip(self.lo, self.hi)) + ")"

    @property
    def bounds(self):
        return self.lo, self.hi

    @property
    def measure(self) -> float:
        return float(np.prod(self.hi - self.lo))

    def _face_areas(self) -> np.ndarray:
        ext = self.hi - self.lo
        return np.repeat([np.prod(np.delete(ext, k)) for k in range(self.dim)], 2)

    @property
    def boundary_measure(self) -> float:
        return float(self._face_areas().sum())

    def interior_grid(self, n):
        return box_grid(self.lo, self.hi, n)

    def signed_distance(self, p, xp=np):
        return box_distance(p, self.lo, self.hi, xp)

    def smooth_distance(self, p, xp=np):
        return box_smooth_distance(p, self.lo, self.hi, xp)

    @property
    def boundary_dims(self) -> int:
        return self.dim

    def _on_faces(self, face, rest) -> BoundarySample:
        axis, upper = face // 2, face % 2 == 1
        pts = self.lo + rest * (self.hi - self.lo)
        rows = np.arange(len(face))
        pts[rows, axis] = np.where(upper, self.hi[axis], self.lo[axis])
        normals = np.zeros_like(pts)
        normals[rows, axis] = np.where(upper, 1.0, -1.0)
        return BoundarySample(pts, normals, np.asarray(self.side_names, dtype=object)[face])

    def boundary(self, u):
        cum = np.concatenate([[0.0], np.cumsum(self._face_areas())])
        cum /= cum[-1]
        face = np.searchsorted(cum, u[:, 0], side="right").clip(1, 2 * self.dim) - 1
        # u[:, 0] within its face's share is uniform again: it places the last coordinate
        # (the one along the face's axis is overwritten)
        within = (u[:, :1] - cum[face, None]) / (cum[face + 1, None] - cum[face, None])
        return self._on_faces(face, np.concatenate([u[:, 1:], within], axis=1))

    def boundary_grid(self, n):
        raise ValueError("a hypercube has no boundary grid sampler; use 'random', 'sobol' or "
                         "'lhs'.")


class Box(Hypercube):
    """A 3-D box with named faces: ``left/right`` (x), ``front/back`` (y), ``bottom/top``
    (z)."""

    # (axis, low or high) for each face name, in the order of the hypercube's faces
    faces = {"left": (0, 0), "right": (0, 1), "front": (1, 0), "back": (1, 1),
             "bottom": (2, 0), "top": (2, 1)}

    def __init__(self, x_range, y_range, z_range):
        self.ranges = tuple((float(a), float(b)) for a, b in (x_range, y_range, z_range))
        super().__init__([r[0] for r in self.ranges], [r[1] for r in self.ranges])
        self.side_names = tuple(self.faces)

    def describe(self):
        return "box(" + ", ".join(f"{n}=({a:g}, {b:g})"
                                  for n, (a, b) in zip("xyz", self.ranges)) + ")"

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

    def boundary(self, u):
        cum = np.cumsum(self._face_areas())
        face = np.searchsorted(cum / cum[-1], u[:, 0], side="right").clip(0, 5)
        return self._on_faces(face, u[:, 1:3])

    def boundary_grid(self, n):
        areas = self._face_areas()
        per_face = np.maximum(1, np.round(n * areas / areas.sum()).astype(int))
        faces, uvs = [], []
        for k, m in enumerate(per_face):
            grid = box_grid(np.zeros(2), np.ones(2), int(m))
            uvs.append(grid)
            faces.append(np.full(len(grid), k))
        return self._on_faces(np.concatenate(faces), np.concatenate(uvs))
