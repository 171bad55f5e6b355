"""Round primitives: ellipse, disk and ball.

Each maps unit-cube samples onto its interior and onto its boundary uniformly in length or
area, and gives its exact signed distance (positive inside) with NumPy or JAX.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jno_flax.geometry._geometry import BoundarySample, Geometry, _midpoints, box_grid, safe_norm


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
