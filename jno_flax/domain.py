"""Domains: geometries with sampled collocation points, tags and (optionally) time.

>>> dom = rect(x_range=(0, 1), y_range=(0, 1), n_interior=100, n_boundary=40, seed=0)
>>> x, y = dom.variable("interior")
>>> xb, yb = dom.variable("boundary")
>>> nx, ny = dom.normal("boundary")

Any geometry of :mod:`jno_flax.geometry`, booleans included, becomes a domain with
:func:`from_geometry`:

>>> from jno_flax import geometry
>>> plate = geometry.rect((-0.5, 0.5), (-0.5, 0.5)) - geometry.disk((0, 0), 0.2)
>>> dom = jno.domain.from_geometry(plate, n_interior=200, n_boundary=80, seed=0)
>>> xh, yh = dom.variable("holes")
>>> d = dom.signed_distance(*dom.variable("interior"))   # positive inside, 0 on the boundary

Points are sampled once, at construction, from ``seed``; the same seed gives the same points.
Tags: ``"interior"``, ``"boundary"``, the named sides of the geometry and the names given
with ``Geometry.named`` (subsets of the boundary points; ``"holes"`` for the parts of a
subtracted geometry) and, for space-time domains, ``"initial"``.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.stats import qmc

from jno_flax import geometry as _geo
from jno_flax._checks import positive_int
from jno_flax.geometry._csg import MAX_ROUNDS
from jno_flax._expr import Expr
from jno_flax.geometry._geometry import BoundarySample, Geometry
from jno_flax._pointset import PointSet, Variable
from jno_flax._seed import default_seed

__all__ = ["Domain", "from_geometry", "mesh", "gmsh_session", "points", "interval", "rect",
           "box", "disk", "ellipse", "ball", "polygon", "lshape", "SAMPLERS", "MESH_INTERIOR"]

#: where the interior points of a mesh domain come from
MESH_INTERIOR = ("random", "nodes", "quadrature")

SAMPLERS = ("random", "grid", "sobol", "lhs")


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
        if geometry.has_boundary:
            self.n_boundary = positive_int("n_boundary", n_boundary)
        elif n_boundary != 0:
            raise ValueError(f"{geometry.describe()} have no boundary; `n_boundary` must be 0, "
                             f"got {n_boundary!r}.")
        else:
            self.n_boundary = 0
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
        self.sampler, self.seed = sampler, default_seed(seed)
        self.time = None if time is None else _geo.check_range("time", time)
        if n_initial is not None and self.time is None:
            raise ValueError("`n_initial` needs a space-time domain; pass `time=(t0, t1)` too.")
        self.n_initial = (positive_int("n_initial", n_initial if n_initial is not None
                                       else n_boundary) if self.time is not None else 0)
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
                             f"the tags {list(self.geometry.tag_names)}.")
        return ps.data_fields("normal")

    def signed_distance(self, *coords, smooth: bool = False) -> Expr:
        """The geometry's signed distance at the given spatial coordinates, as an expression
        (positive inside, zero on the boundary; differentiable); see
        :meth:`jno_flax.geometry.Geometry.distance`.

        ``u = g + dom.signed_distance(x, y, smooth=True) * net(x, y)`` equals ``g`` on the
        boundary.
        """
        return self.geometry.distance(*coords, smooth=smooth)

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
        if not geo.has_boundary:
            return
        bnd = self._sample_boundary(self.n_boundary, seq[1])
        self._add("boundary", bnd.points, bnd.normals)
        for tag in geo.tag_names:
            sel = bnd.has(tag)
            if sel.any():
                self._add(tag, bnd.points[sel], bnd.normals[sel])
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
        if geo.fixed_interior is not None:
            if timed:
                raise ValueError("fixed interior points (a mesh's nodes or quadrature points) "
                                 "cannot be combined with `time`; use interior='random'.")
            return geo.fixed_interior
        if self.sampler == "grid":
            if not timed:
                return geo.interior_grid(n)
            n_t, n_s = self._time_counts(n, geo.dim)
            t0, t1 = self.time
            return _product(geo.interior_grid(n_s), t0 + (np.arange(n_t) + 1) / n_t * (t1 - t0))
        draws = _UnitSampler(self.sampler, geo.interior_dims + int(timed), seed)
        out: list[np.ndarray] = []
        have = tried = 0
        for _ in range(MAX_ROUNDS):
            m = max(2 * (n - have), int(np.ceil(1.2 * (n - have) / geo.acceptance)), 16)
            u = draws.draw(m)
            pts = geo.interior(u[:, :geo.interior_dims])
            keep = np.ones(len(pts), bool) if geo.interior_map_inside else geo.contains(pts)
            pts = pts[keep]
            if timed:
                t0, t1 = self.time
                pts = np.concatenate([pts, (t1 - u[keep, -1:] * (t1 - t0))], axis=1)
            out.append(pts)
            have, tried = have + len(pts), tried + m
            if have >= n:
                return np.concatenate(out)[:n]
        raise ValueError(f"could not find {n} interior points of {geo.describe()}: {have} of "
                         f"{tried} samples of its bounding box were inside (acceptance rate "
                         f"{have / tried:.2g}).")

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
        sampler = _UnitSampler(self.sampler, geo.boundary_dims + int(timed), seed)
        b, rest = geo.sample_boundary(n, lambda m, _columns: sampler.draw(m), extra=int(timed))
        if timed:
            t0, t1 = self.time
            b = BoundarySample(np.concatenate([b.points, t0 + rest[:, :1] * (t1 - t0)], axis=1),
                               b.normals, b.sides)
        return b


def _product(space: np.ndarray, times: np.ndarray) -> np.ndarray:
    """All (point, time) pairs, time-major."""
    s = np.tile(space, (len(times), 1))
    t = np.repeat(times, len(space))[:, None]
    return np.concatenate([s, t], axis=1)


def from_geometry(geometry: Geometry, *, n_interior: int = 1000, n_boundary: int = 200,
                  sampler: str = "random", seed: int | None = None, time=None,
                  n_initial: int | None = None) -> Domain:
    """A domain of any geometry of :mod:`jno_flax.geometry` (booleans included); coordinates
    ``x``, ``y``, ``z`` by dimension, ``x0, x1, ...`` above three (and ``t`` last with
    ``time=(t0, t1)``)."""
    if not isinstance(geometry, Geometry):
        raise TypeError(f"`geometry` must be a geometry of jno_flax.geometry (rect, disk, "
                        f"their booleans, ...), got {type(geometry).__name__}: {geometry!r}.")
    return Domain(geometry, n_interior=n_interior, n_boundary=n_boundary, sampler=sampler,
                  seed=seed, time=time, n_initial=n_initial,
                  coord_names=coordinate_names(geometry.dim))


def points(array, *, coord_names: tuple[str, ...] | None = None) -> Domain:
    """A fixed set of points as a domain with the one tag ``"interior"``: data or sensor
    locations, or a point a value is pinned at.

    >>> corner = jno.domain.points([[0.0, 0.0]])
    >>> x0, y0 = corner.variable("interior")

    Args:
        array: ``(N, D)`` coordinates.
        coord_names: names of the columns (default ``x``, ``y``, ``z`` / ``x0, x1, ...``).
    """
    from jno_flax.geometry._geometry import Points
    pts = np.asarray(array, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 1 or pts.shape[1] < 1 or not np.all(np.isfinite(pts)):
        raise ValueError(f"`array` must be an (N, D) array of finite numbers with N, D >= 1, "
                         f"got shape {np.shape(array)}.")
    names = coordinate_names(pts.shape[1]) if coord_names is None else tuple(coord_names)
    if len(names) != pts.shape[1]:
        raise ValueError(f"`coord_names` must name each of the {pts.shape[1]} columns, got "
                         f"{names!r}.")
    return Domain(Points(pts), n_interior=len(pts), n_boundary=0, coord_names=names)


def coordinate_names(dim: int) -> tuple[str, ...]:
    """``x``, ``y``, ``z`` up to three dimensions, else ``x0``, ``x1``, ..."""
    return ("x", "y", "z")[:dim] if dim <= 3 else tuple(f"x{i}" for i in range(dim))


def gmsh_session():
    """A context in which gmsh is initialised (quiet) and then finalised, keeping the
    process's handling of SIGPIPE (gmsh resets it); see
    :func:`jno_flax.geometry._mesh.gmsh_session`.

    >>> with jno.domain.gmsh_session() as gmsh:
    ...     square = gmsh.model.occ.addRectangle(0, 0, 0, 1, 1)
    ...     gmsh.model.occ.synchronize()
    ...     gmsh.model.mesh.generate(2)
    ...     dom = jno.domain.mesh(gmsh, n_interior=100, n_boundary=40)
    >>> round(dom.geometry.measure, 12)
    1.0
    """
    from jno_flax.geometry._mesh import gmsh_session as session
    return session()


def mesh(source, *, interior: str = "random", n_interior: int | None = None,
         n_boundary: int = 200, sampler: str = "random", seed: int | None = None, time=None,
         n_initial: int | None = None) -> Domain:
    """A domain from a gmsh mesh of triangles (2-D) or tetrahedra (3-D): a ``.msh`` file, or
    the ``gmsh`` module with a meshed current model (needs the ``mesh`` extra:
    ``pip install 'jno_flax[mesh]'``).

    Args:
        source: path of a ``.msh`` file, or the ``gmsh`` module.
        interior: ``"random"`` (``n_interior`` uniform points, default 1000), ``"nodes"`` (the
            mesh nodes off the boundary) or ``"quadrature"`` (3 points per triangle, 4 per
            tetrahedron).
        n_boundary: points on the boundary facets, uniform in length (area in 3-D).

    Tags: ``"interior"``, ``"boundary"`` and one per physical group of dimension ``dim - 1``
    (its name, or ``"group_<tag>"``), with the outward normals of the facets.
    """
    from jno_flax.geometry._mesh import SimplexMesh, read_gmsh
    if interior not in MESH_INTERIOR:
        raise ValueError(f"`interior` must be one of {MESH_INTERIOR}, got {interior!r}.")
    if interior != "random" and n_interior is not None:
        raise ValueError(f"`n_interior` sets the count of random points; interior={interior!r} "
                         f"uses the mesh's own points, got n_interior={n_interior!r}.")
    name = repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "from gmsh"
    geo = SimplexMesh(read_gmsh(source), name)
    if interior != "random":
        geo.fixed_interior = (geo.nodes_inside() if interior == "nodes"
                              else geo.quadrature_points()[0])
        n_interior = len(geo.fixed_interior)
    return from_geometry(geo, n_interior=1000 if n_interior is None else n_interior,
                         n_boundary=n_boundary, sampler=sampler, seed=seed, time=time,
                         n_initial=n_initial)


def interval(a: float, b: float, *, n_interior: int = 100, n_boundary: int = 2,
             sampler: str = "random", seed: int | None = None, time=None,
             n_initial: int | None = None) -> Domain:
    """The interval ``(a, b)``; sides ``"left"`` (x = a) and ``"right"`` (x = b)."""
    return from_geometry(_geo.interval(a, b), n_interior=n_interior, n_boundary=n_boundary,
                         sampler=sampler, seed=seed, time=time, n_initial=n_initial)


def rect(x_range=(0.0, 1.0), y_range=(0.0, 1.0), *, n_interior: int = 1000,
         n_boundary: int = 200, sampler: str = "random", seed: int | None = None, time=None,
         n_initial: int | None = None) -> Domain:
    """A rectangle; sides ``"left"``, ``"right"``, ``"bottom"``, ``"top"``."""
    return from_geometry(_geo.rect(x_range, y_range), n_interior=n_interior,
                         n_boundary=n_boundary, sampler=sampler, seed=seed, time=time,
                         n_initial=n_initial)


def box(x_range=(0.0, 1.0), y_range=(0.0, 1.0), z_range=(0.0, 1.0), *, n_interior: int = 1000,
        n_boundary: int = 600, sampler: str = "random", seed: int | None = None, time=None,
        n_initial: int | None = None) -> Domain:
    """A 3-D box; faces ``left/right`` (x), ``front/back`` (y), ``bottom/top`` (z)."""
    return from_geometry(_geo.box(x_range, y_range, z_range), n_interior=n_interior,
                         n_boundary=n_boundary, sampler=sampler, seed=seed, time=time,
                         n_initial=n_initial)


def disk(center=(0.0, 0.0), radius: float = 1.0, *, n_interior: int = 1000,
         n_boundary: int = 200, sampler: str = "random", seed: int | None = None, time=None,
         n_initial: int | None = None) -> Domain:
    """A disk; its boundary is the circle (tag ``"boundary"``)."""
    return from_geometry(_geo.disk(center, radius), n_interior=n_interior,
                         n_boundary=n_boundary, sampler=sampler, seed=seed, time=time,
                         n_initial=n_initial)


def ellipse(center=(0.0, 0.0), semi_axes=(1.0, 0.5), *, n_interior: int = 1000,
            n_boundary: int = 200, sampler: str = "random", seed: int | None = None, time=None,
            n_initial: int | None = None) -> Domain:
    """An axis-aligned ellipse; its boundary is tag ``"boundary"``."""
    return from_geometry(_geo.ellipse(center, semi_axes), n_interior=n_interior,
                         n_boundary=n_boundary, sampler=sampler, seed=seed, time=time,
                         n_initial=n_initial)


def ball(center=(0.0, 0.0, 0.0), radius: float = 1.0, *, n_interior: int = 1000,
         n_boundary: int = 600, sampler: str = "random", seed: int | None = None, time=None,
         n_initial: int | None = None) -> Domain:
    """A 3-D ball; its boundary (the sphere) is tag ``"boundary"``."""
    return from_geometry(_geo.ball(center, radius), n_interior=n_interior,
                         n_boundary=n_boundary, sampler=sampler, seed=seed, time=time,
                         n_initial=n_initial)


def polygon(vertices, *, n_interior: int = 1000, n_boundary: int = 200,
            sampler: str = "random", seed: int | None = None, time=None,
            n_initial: int | None = None, side_names: tuple[str, ...] | None = None) -> Domain:
    """A simple polygon (convex or not) given by its vertices in order.

    Sides are named ``"side_0"``, ... (edge ``k`` joins vertex ``k`` to ``k + 1``) unless
    ``side_names`` is given.
    """
    return from_geometry(_geo.polygon(vertices, side_names), n_interior=n_interior,
                         n_boundary=n_boundary, sampler=sampler, seed=seed, time=time,
                         n_initial=n_initial)


def lshape(size: float = 1.0, **kwargs) -> Domain:
    """The L-shaped domain ``(-size, size)^2`` without its upper-right quadrant (non-convex)."""
    return from_geometry(_geo.lshape(size), **kwargs)
