"""Domains: geometries with sampled collocation points, tags and (optionally) time.

>>> dom = rect(x_range=(0, 1), y_range=(0, 1), n_interior=100, n_boundary=40, seed=0)
>>> x, y = dom.variable("interior")
>>> xb, yb = dom.variable("boundary")
>>> nx, ny = dom.normal("boundary")

Points are sampled once, at construction, from ``seed``; the same seed gives the same points.
Tags: ``"interior"``, ``"boundary"``, the named sides of the geometry (a subset of the
boundary points) and, for space-time domains, ``"initial"``.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.stats import qmc

from jno_flax._checks import positive_int
from jno_flax._geometry import BoundarySample, Box, Disk, Geometry, Interval, Rect, Segments
from jno_flax._pointset import PointSet, Variable
from jno_flax._seed import default_seed

__all__ = ["Domain", "interval", "rect", "box", "disk", "polygon", "lshape", "SAMPLERS"]

SAMPLERS = ("random", "grid", "sobol", "lhs")


def _check_range(arg: str, value) -> tuple[float, float]:
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


class _UnitSampler:
    """Draws from the unit cube with one of :data:`SAMPLERS` (``grid`` handled elsewhere)."""

    def __init__(self, kind: str, dims: int, seed: np.random.SeedSequence):
        self.kind, self.dims = kind, dims
        self.rng = np.random.default_rng(seed)
        if kind == "sobol":
            self.engine = qmc.Sobol(dims, scramble=True, seed=self.rng)
        elif kind == "lhs":
            self.engine = qmc.LatinHypercube(dims, seed=self.rng)
        else:
            self.engine = None

    def draw(self, n: int) -> np.ndarray:
        if self.engine is None:
            return self.rng.random((n, self.dims))
        return self.engine.random(n)


class Domain:
    """A geometry with sampled point sets; see the module docstring for tags.

    Args:
        geometry: the spatial region.
        n_interior: number of interior points (``grid``: about this many).
        n_boundary: number of boundary points, spread over the sides by size.
        sampler: ``"random"`` (default), ``"grid"``, ``"sobol"`` or ``"lhs"``.
        seed: seed of the sampler; the same seed gives the same points (default: the seed of
            ``jno_flax.seed_everything``, 0 until it is called).
        time: optional ``(t0, t1)``; the domain becomes space-time with ``t`` last.
        n_initial: points of the ``"initial"`` tag (space-time only; default ``n_boundary``).
    """

    def __init__(self, geometry: Geometry, *, n_interior: int, n_boundary: int,
                 sampler: str = "random", seed: int | None = None, time=None,
                 n_initial: int | None = None, coord_names: tuple[str, ...]):
        self.geometry = geometry
        self.n_interior = positive_int("n_interior", n_interior)
        self.n_boundary = positive_int("n_boundary", n_boundary)
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        self.sampler, self.seed = sampler, default_seed(seed)
        self.time = None if time is None else _check_range("time", time)
        if n_initial is not None and self.time is None:
            raise ValueError("`n_initial` needs a space-time domain; pass `time=(t0, t1)` too.")
        self.n_initial = positive_int("n_initial", n_initial if n_initial is not None
                                      else n_boundary)
        self.coord_names = coord_names + (("t",) if self.time is not None else ())
        self._sets: dict[str, PointSet] = {}
        self._sample()

    # ------------------------------------------------------------------ public
    def describe(self) -> str:
        t = f" x time({self.time[0]:g}, {self.time[1]:g})" if self.time else ""
        return self.geometry.describe() + t

    def __repr__(self) -> str:
        return f"<Domain {self.describe()}, tags={self.tags}>"

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._sets)

    @property
    def dim(self) -> int:
        """Number of coordinates (time included)."""
        return len(self.coord_names)

    def pointset(self, tag: str) -> PointSet:
        if tag not in self._sets:
            raise ValueError(f"`tag` {tag!r} is not a tag of {self.describe()}; "
                             f"available tags: {list(self._sets)}.")
        return self._sets[tag]

    def variable(self, tag: str = "interior") -> tuple[Variable, ...]:
        """One coordinate variable per axis (time last); each evaluates to ``(1, N, 1)``."""
        return self.pointset(tag).variables()

    def normal(self, tag: str = "boundary") -> tuple[Variable, ...]:
        """Outward unit normal components on a boundary tag, as ``(1, N, 1)`` fields."""
        ps = self.pointset(tag)
        if "normal" not in ps.data_columns:
            raise ValueError(f"`tag` {tag!r} has no normals; normals exist on 'boundary' and "
                             f"the sides {list(self.geometry.side_names)}.")
        return ps.data_fields("normal")

    def points(self, tag: str = "interior") -> np.ndarray:
        """The ``(N, dim)`` coordinates of a tag."""
        ps = self.pointset(tag)
        return ps.array[:, :ps.n_coords]

    def normals(self, tag: str = "boundary") -> np.ndarray:
        """The ``(N, spatial dim)`` outward normals of a boundary tag."""
        ps = self.pointset(tag)
        if "normal" not in ps.data_columns:
            raise ValueError(f"`tag` {tag!r} has no normals.")
        return ps.array[:, ps.data_columns["normal"]]

    # ------------------------------------------------------------------ sampling
    def _sample(self) -> None:
        seq = np.random.SeedSequence(self.seed).spawn(3)
        geo, t = self.geometry, self.time
        interior = self._sample_interior(self.n_interior, seq[0])
        self._add("interior", interior)
        bnd = self._sample_boundary(self.n_boundary, seq[1])
        self._add("boundary", bnd.points, bnd.normals)
        for side in geo.side_names:
            sel = bnd.sides == side
            if sel.any():
                self._add(side, bnd.points[sel], bnd.normals[sel])
        if t is not None:
            spatial = self._sample_interior(self.n_initial, seq[2], with_time=False)
            self._add("initial", np.concatenate(
                [spatial, np.full((len(spatial), 1), t[0])], axis=1))

    def _add(self, tag: str, points: np.ndarray, normals: np.ndarray | None = None) -> None:
        data = None if normals is None else {"normal": normals}
        self._sets[tag] = PointSet(self, tag, self.coord_names, np.asarray(points), data)

    def _time_counts(self, n: int, space_dims: int) -> tuple[int, int]:
        n_t = max(1, int(round(n ** (1.0 / (space_dims + 1)))))
        return n_t, max(1, int(round(n / n_t)))

    def _sample_interior(self, n: int, seed, with_time: bool = True) -> np.ndarray:
        geo = self.geometry
        timed = with_time and self.time is not None
        if self.sampler == "grid":
            if not timed:
                return geo.interior_grid(n)
            n_t, n_s = self._time_counts(n, geo.dim)
            t0, t1 = self.time
            return _product(geo.interior_grid(n_s), t0 + (np.arange(n_t) + 1) / n_t * (t1 - t0))
        draws = _UnitSampler(self.sampler, geo.interior_dims + int(timed), seed)
        out: list[np.ndarray] = []
        have = 0
        while have < n:
            u = draws.draw(max(2 * (n - have), 16))
            pts = geo.interior(u[:, :geo.interior_dims])
            keep = geo.contains(pts)
            pts = pts[keep]
            if timed:
                t0, t1 = self.time
                pts = np.concatenate([pts, (t1 - u[keep, -1:] * (t1 - t0))], axis=1)
            out.append(pts)
            have += len(pts)
        return np.concatenate(out)[:n]

    def _sample_boundary(self, n: int, seed) -> BoundarySample:
        geo = self.geometry
        timed = self.time is not None
        if self.sampler == "grid":
            if not timed:
                return geo.boundary_grid(n)
            n_t, n_s = self._time_counts(n, geo.boundary_dims)
            t0, t1 = self.time
            b = geo.boundary_grid(n_s)
            times = np.linspace(t0, t1, n_t)
            return BoundarySample(_product(b.points, times), np.tile(b.normals, (n_t, 1)),
                                  np.tile(b.sides, n_t))
        u = _UnitSampler(self.sampler, geo.boundary_dims + int(timed), seed).draw(n)
        b = geo.boundary(u[:, :geo.boundary_dims])
        if timed:
            t0, t1 = self.time
            b = BoundarySample(np.concatenate([b.points, t0 + u[:, -1:] * (t1 - t0)], axis=1),
                               b.normals, b.sides)
        return b


def _product(space: np.ndarray, times: np.ndarray) -> np.ndarray:
    """All (point, time) pairs, time-major."""
    s = np.tile(space, (len(times), 1))
    t = np.repeat(times, len(space))[:, None]
    return np.concatenate([s, t], axis=1)


def interval(a: float, b: float, *, n_interior: int = 100, n_boundary: int = 2,
             sampler: str = "random", seed: int | None = None, time=None,
             n_initial: int | None = None) -> Domain:
    """The interval ``(a, b)``; sides ``"left"`` (x = a) and ``"right"`` (x = b)."""
    lo, hi = _check_range("(a, b)", (a, b))
    return Domain(Interval(lo, hi), n_interior=n_interior, n_boundary=n_boundary,
                  sampler=sampler, seed=seed, time=time, n_initial=n_initial, coord_names=("x",))


def rect(x_range=(0.0, 1.0), y_range=(0.0, 1.0), *, n_interior: int = 1000,
         n_boundary: int = 200, sampler: str = "random", seed: int | None = None, time=None,
         n_initial: int | None = None) -> Domain:
    """A rectangle; sides ``"left"``, ``"right"``, ``"bottom"``, ``"top"``."""
    xr, yr = _check_range("x_range", x_range), _check_range("y_range", y_range)
    return Domain(Rect(xr, yr), n_interior=n_interior, n_boundary=n_boundary, sampler=sampler,
                  seed=seed, time=time, n_initial=n_initial, coord_names=("x", "y"))


def box(x_range=(0.0, 1.0), y_range=(0.0, 1.0), z_range=(0.0, 1.0), *, n_interior: int = 1000,
        n_boundary: int = 600, sampler: str = "random", seed: int | None = None, time=None,
        n_initial: int | None = None) -> Domain:
    """A 3-D box; faces ``left/right`` (x), ``front/back`` (y), ``bottom/top`` (z)."""
    ranges = [_check_range(n, r) for n, r in
              (("x_range", x_range), ("y_range", y_range), ("z_range", z_range))]
    return Domain(Box(*ranges), n_interior=n_interior, n_boundary=n_boundary, sampler=sampler,
                  seed=seed, time=time, n_initial=n_initial, coord_names=("x", "y", "z"))


def disk(center=(0.0, 0.0), radius: float = 1.0, *, n_interior: int = 1000,
         n_boundary: int = 200, sampler: str = "random", seed: int | None = None, time=None,
         n_initial: int | None = None) -> Domain:
    """A disk; its boundary is the circle (tag ``"boundary"``)."""
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (2,) or not np.all(np.isfinite(c)):
        raise ValueError(f"`center` must be two finite numbers, got {center!r}.")
    if not isinstance(radius, numbers.Real) or not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"`radius` must be a positive number, got {radius!r}.")
    return Domain(Disk(c, float(radius)), n_interior=n_interior, n_boundary=n_boundary,
                  sampler=sampler, seed=seed, time=time, n_initial=n_initial,
                  coord_names=("x", "y"))


def polygon(vertices, *, n_interior: int = 1000, n_boundary: int = 200,
            sampler: str = "random", seed: int | None = None, time=None,
            n_initial: int | None = None, side_names: tuple[str, ...] | None = None) -> Domain:
    """A simple polygon (convex or not) given by its vertices in order.

    Sides are named ``"side_0"``, ... (edge ``k`` joins vertex ``k`` to ``k + 1``) unless
    ``side_names`` is given.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"`vertices` must be a (K, 2) array of finite numbers with K >= 3, "
                         f"got shape {np.shape(vertices)}.")
    if side_names is not None and len(side_names) != len(v):
        raise ValueError(f"`side_names` must name each of the {len(v)} sides, "
                         f"got {len(side_names)} names.")
    return Domain(Segments(v, tuple(side_names) if side_names else None),
                  n_interior=n_interior, n_boundary=n_boundary, sampler=sampler, seed=seed,
                  time=time, n_initial=n_initial, coord_names=("x", "y"))


def lshape(size: float = 1.0, **kwargs) -> Domain:
    """The L-shaped domain ``(-size, size)^2`` without its upper-right quadrant (non-convex)."""
    s = float(size)
    if not s > 0:
        raise ValueError(f"`size` must be positive, got {size!r}.")
    v = [(-s, -s), (s, -s), (s, 0.0), (0.0, 0.0), (0.0, s), (-s, s)]
    return polygon(v, **kwargs)
