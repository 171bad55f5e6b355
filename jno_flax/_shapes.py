"""The primitive geometries: interval, polygon, rectangle, box, disk, ellipse and ball.

Each maps unit-cube samples onto its interior (or onto its bounding box, with an
``acceptance`` below one) and onto its boundary uniformly in length or area, and gives its
exact signed distance (positive inside) with NumPy or JAX.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jno_flax._geometry import (BoundarySample, BoxMapped, Geometry, _midpoints, box_distance,
                                box_grid, box_smooth_distance, safe_norm)


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

    def _inside(self, p, xp):
        """Crossing-number test (``p`` of shape ``(N, 2)``)."""
        x, y = p[:, 0:1], p[:, 1:2]
        x0, y0 = self.starts[:, 0], self.starts[:, 1]
        x1, y1 = self.ends[:, 0], self.ends[:, 1]
        crosses = (y0 > y) != (y1 > y)
        dy = np.where(y1 == y0, 1.0, y1 - y0)  # horizontal edges never cross
        xc = x0 + (y - y0) * (x1 - x0) / dy
        return xp.sum(crosses & (x < xc), axis=1) % 2 == 1

    def signed_distance(self, p, xp=np):
        a, ab = self.starts, self.ends - self.starts
        rel = p[:, None, :] - a[None]
        t = xp.clip(xp.sum(rel * ab, -1) / np.sum(ab * ab, -1), 0.0, 1.0)
        dist = xp.min(safe_norm(rel - t[..., None] * ab, xp), axis=1)
        return xp.where(self._inside(p, xp), dist, -dist)

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


class Ellipse(Geometry):
    """An axis-aligned ellipse with semi-axes ``(a, b)`` (a disk when ``a == b``)."""

    dim = 2

    def __init__(self, center, semi_axes):
        self.center = np.asarray(center, dtype=np.float64)
        self.semi_axes = np.asarray(semi_axes, dtype=np.float64)
        a, b = self.semi_axes
        # arc length as a function of the angle parameter, for uniform boundary samples
        self._theta = np.linspace(0.0, 2 * np.pi, 4097)
        speed = np.hypot(a * np.sin(self._theta), b * np.cos(self._theta))
        steps = 0.5 * (speed[1:] + speed[:-1]) * np.diff(self._theta)
        self._arc = np.concatenate([[0.0], np.cumsum(steps)])

    def describe(self):
        (cx, cy), (a, b) = self.center, self.semi_axes
        return f"ellipse(center=({cx:g}, {cy:g}), semi_axes=({a:g}, {b:g}))"

    @property
    def bounds(self):
        return self.center - self.semi_axes, self.center + self.semi_axes

    @property
    def measure(self) -> float:
        return float(np.pi * np.prod(self.semi_axes))

    @property
    def boundary_measure(self) -> float:
        return float(self._arc[-1])

    def interior(self, u):
        r, th = np.sqrt(u[:, 0]), 2 * np.pi * u[:, 1]
        return self.center + self.semi_axes * np.stack([r * np.cos(th), r * np.sin(th)], axis=1)

    def interior_jax(self, u):
        r, th = jnp.sqrt(u[:, 0]), 2 * jnp.pi * u[:, 1]
        unit = jnp.stack([r * jnp.cos(th), r * jnp.sin(th)], axis=1)
        return (jnp.asarray(self.center, u.dtype)
                + jnp.asarray(self.semi_axes, u.dtype) * unit)

    def interior_grid(self, n):
        lo, hi = self.bounds
        pts = box_grid(lo, hi, int(np.ceil(n * 4 / np.pi)))
        return pts[self.contains(pts)]

    def signed_distance(self, p, xp=np):
        a, b = self.semi_axes
        q = p - xp.asarray(self.center, p.dtype)
        if a == b:
            return a - safe_norm(q, xp)
        return _ellipse_distance(xp.abs(q[:, 0]), xp.abs(q[:, 1]), a, b, xp)

    def _at_angle(self, th):
        a, b = self.semi_axes
        c, s = np.cos(th), np.sin(th)
        normals = np.stack([b * c, a * s], axis=1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        pts = self.center + np.stack([a * c, b * s], axis=1)
        return BoundarySample(pts, normals, np.full(len(th), "boundary", dtype=object))

    def _at_arclength(self, fraction):
        return self._at_angle(np.interp(fraction * self._arc[-1], self._arc, self._theta))

    def boundary(self, u):
        return self._at_arclength(u[:, 0])

    def boundary_grid(self, n):
        return self._at_arclength(_midpoints(n))


def _ellipse_distance(px, py, a, b, xp, iterations: int = 12):
    """Signed distance (positive inside) from first-quadrant points ``(px, py)`` to the ellipse
    ``x²/a² + y²/b² = 1``.

    The closest point ``(a cos t, b sin t)`` is found by moving along the ellipse: at each
    iteration the local circle of curvature (centre on the evolute) is matched to the query's
    direction, which converges in a few steps from ``t = π/4``.
    """
    tx = ty = xp.full_like(px, np.sqrt(0.5))
    for _ in range(iterations):
        ex, ey = (a * a - b * b) * tx**3 / a, (b * b - a * a) * ty**3 / b
        rx, ry = a * tx - ex, b * ty - ey
        qx, qy = px - ex, py - ey
        r = xp.sqrt(rx * rx + ry * ry)
        q = xp.sqrt(qx * qx + qy * qy)
        scale = r / xp.where(q > 0, q, 1.0)
        tx = xp.clip((qx * scale + ex) / a, 0.0, 1.0)
        ty = xp.clip((qy * scale + ey) / b, 0.0, 1.0)
        norm = xp.sqrt(tx * tx + ty * ty)
        tx, ty = tx / norm, ty / norm
    d = safe_norm(xp.stack([px - a * tx, py - b * ty], axis=-1), xp)
    return xp.where((px / a) ** 2 + (py / b) ** 2 < 1.0, d, -d)


class Disk(Ellipse):
    def __init__(self, center, radius: float):
        super().__init__(center, (radius, radius))
        self.radius = float(radius)

    def describe(self):
        return f"disk(center=({self.center[0]:g}, {self.center[1]:g}), radius={self.radius:g})"


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


class Ball(Geometry):
    """A 3-D ball; its boundary is the sphere."""

    dim = 3

    def __init__(self, center, radius: float):
        self.center = np.asarray(center, dtype=np.float64)
        self.radius = float(radius)

    def describe(self):
        c = ", ".join(f"{v:g}" for v in self.center)
        return f"ball(center=({c}), radius={self.radius:g})"

    @property
    def bounds(self):
        return self.center - self.radius, self.center + self.radius

    @property
    def measure(self) -> float:
        return 4.0 / 3.0 * np.pi * self.radius**3

    @property
    def boundary_measure(self) -> float:
        return 4.0 * np.pi * self.radius**2

    @staticmethod
    def _directions(u, xp):
        z = 1.0 - 2.0 * u[:, 0]
        phi = 2 * np.pi * u[:, 1]
        s = xp.sqrt(xp.clip(1.0 - z * z, 0.0, None))
        return xp.stack([s * xp.cos(phi), s * xp.sin(phi), z], axis=1)

    def interior(self, u):
        r = self.radius * np.cbrt(u[:, 2:3])
        return self.center + r * self._directions(u, np)

    def interior_jax(self, u):
        r = self.radius * jnp.cbrt(u[:, 2:3])
        return jnp.asarray(self.center, u.dtype) + r * self._directions(u, jnp)

    def interior_grid(self, n):
        lo, hi = self.bounds
        pts = box_grid(lo, hi, int(np.ceil(n * 6 / np.pi)))
        return pts[self.contains(pts)]

    def signed_distance(self, p, xp=np):
        return self.radius - safe_norm(p - xp.asarray(self.center, p.dtype), xp)

    def _on_sphere(self, directions):
        return BoundarySample(self.center + self.radius * directions, directions,
                              np.full(len(directions), "boundary", dtype=object))

    @property
    def boundary_dims(self) -> int:
        return 2

    def boundary(self, u):
        return self._on_sphere(self._directions(u, np))

    def boundary_grid(self, n):
        # a Fibonacci lattice: nearly even spacing on the sphere
        k = np.arange(n) + 0.5
        return self._on_sphere(self._directions(
            np.stack([k / n, (k * (np.sqrt(5.0) - 1.0) / 2.0) % 1.0], axis=1), np))


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
