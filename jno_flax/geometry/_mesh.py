"""Simplex meshes (triangles in 2-D, tetrahedra in 3-D) as geometries, read from gmsh.

Quadrangles are split into two triangles; other cells (hexahedra, prisms, pyramids) are
refused by name, never dropped. Coincident nodes are merged, so parts meshed apart along a
common edge or face become one region; where their nodes do not match, the facets with cells
on both sides are refused (fragment the parts in gmsh). A 2-D mesh must lie in a plane
``z = constant``.

The interior is the union of the cells. Interior points are drawn uniformly (a cell chosen in
proportion to its size, then barycentric weights from a flat Dirichlet law, uniform in the
cell), or taken from the mesh nodes or the cells' quadrature points. The boundary is the set
of facets (edges in 2-D, triangles in 3-D) that belong to one cell only; each has the outward
normal pointing away from its cell. Physical groups of dimension ``dim - 1`` become boundary
tags (their name, or ``"group_<tag>"`` when unnamed).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from jno_flax.geometry._geometry import (BoundarySample, Geometry, object_array, polyline_distance,
                                segment_distance)

#: gmsh element types -> nodes per element, by dimension (higher orders use their corners)
_CELLS = {1: {1: 2, 8: 3, 26: 4}, 2: {2: 3, 9: 6, 21: 10}, 3: {4: 4, 11: 10, 29: 20}}
#: gmsh's quadrangles (4, 9 and 8 nodes; the corners first, in order): two triangles each
_QUADS = {3: 4, 10: 9, 16: 8}
#: nodes closer than this fraction of the mesh's size are one node
_MERGE = 1e-10
#: quadrature rules exact for quadratics: barycentric points (weights equal)
_QUADRATURE = {2: np.array([[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]]),
               3: np.full((4, 4), 0.1381966011250105) + np.eye(4) * (0.5854101966249685
                                                                     - 0.1381966011250105)}


def import_gmsh():
    try:
        import gmsh
    except ImportError as err:
        raise ImportError("meshes are read with gmsh, which is not installed: "
                          "pip install 'jno_flax[mesh]' (or pip install gmsh).") from err
    return gmsh


@contextlib.contextmanager
def gmsh_session():
    """``gmsh.initialize()`` ... ``gmsh.finalize()``, quiet, keeping the process's handling
    of SIGPIPE: gmsh's initialisation resets it to the default (terminate), after which a
    write to a closed pipe anywhere in the process would kill it instead of raising
    ``BrokenPipeError``. Public as :func:`jno_flax.domain.gmsh_session`.
    """
    gmsh = import_gmsh()
    main = threading.current_thread() is threading.main_thread()
    pipe = signal.getsignal(signal.SIGPIPE) if main else None
    gmsh.initialize(interruptible=False)
    try:
        if pipe is not None:
            signal.signal(signal.SIGPIPE, pipe)
        gmsh.option.setNumber("General.Terminal", 0)
        yield gmsh
    finally:
        gmsh.finalize()


@dataclass
class MeshData:
    nodes: np.ndarray                            # (V, dim)
    cells: np.ndarray                            # (C, dim + 1) node indices
    groups: dict[str, set[tuple[int, ...]]]      # boundary tag -> sorted facet node tuples


def read_gmsh(source) -> MeshData:
    """The cells and boundary groups of a ``.msh`` file (a path) or of gmsh's current
    model (``source`` is the ``gmsh`` module or ``gmsh.model``)."""
    gmsh = import_gmsh()
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`source` {path!r} is not a file; pass a .msh file or the "
                                    "gmsh module with a meshed model.")
        with open(path, "rb") as f:
            if not f.read(64).lstrip().startswith(b"$MeshFormat"):
                raise ValueError(f"`source` {path!r} cannot be read as a mesh: it is not a gmsh "
                                 ".msh file (no $MeshFormat header).")
        if not gmsh.isInitialized():
            with gmsh_session():
                _open(gmsh, path)
                return _read_model(gmsh, path)
        previous, models = gmsh.model.getCurrent(), len(gmsh.model.list())
        try:
            _open(gmsh, path)
            return _read_model(gmsh, path)
        finally:
            if len(gmsh.model.list()) > models:  # leave the user's model current
                gmsh.model.remove()
                gmsh.model.setCurrent(previous)
    if source is gmsh or source is getattr(gmsh, "model", None):
        if not gmsh.isInitialized():
            raise ValueError("`source` is the gmsh module but gmsh is not initialized: build "
                             "and mesh a model first (gmsh.initialize(), ..., "
                             "gmsh.model.mesh.generate(2)).")
        return _read_model(gmsh, "the current gmsh model")
    raise TypeError(f"`source` must be a path to a .msh file or the gmsh module, got "
                    f"{type(source).__name__}: {source!r}.")


def _open(gmsh, path: str) -> None:
    """``gmsh.open(path)``, with the file's name in gmsh's error (a truncated file)."""
    try:
        gmsh.open(path)
    except Exception as err:  # noqa: BLE001 - gmsh raises plain Exception; re-raised with the path
        raise ValueError(f"`source` {path!r} cannot be read by gmsh ({err}): a damaged or "
                         "truncated .msh file? Write it again with gmsh.write(...).") from err


def _read_model(gmsh, what: str) -> MeshData:
    tags, coords, _ = gmsh.model.mesh.getNodes()
    index = {int(t): i for i, t in enumerate(tags)}
    dim = next((d for d in (3, 2) if len(gmsh.model.mesh.getElements(d, -1)[0])), None)
    if dim is None:
        raise ValueError(f"{what} has no triangles or tetrahedra: mesh it first "
                         "(gmsh.model.mesh.generate(2) or (3)).")
    xyz = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    if dim == 2 and np.ptp(xyz[:, 2]) > _MERGE * max(float(np.ptp(xyz[:, :2])), 1.0):
        raise ValueError(f"{what} is a 2-D mesh outside the xy-plane (z from "
                         f"{xyz[:, 2].min():g} to {xyz[:, 2].max():g}); a 2-D domain's points "
                         "are (x, y): mesh it in a plane z = constant.")
    groups: dict[str, set[tuple[int, ...]]] = {}
    for gdim, tag in gmsh.model.getPhysicalGroups(dim - 1):
        name = gmsh.model.getPhysicalName(gdim, tag) or f"group_{tag}"
        facets = groups.setdefault(name, set())
        for entity in gmsh.model.getEntitiesForPhysicalGroup(gdim, tag):
            for block in _corners(gmsh, dim - 1, int(entity), index, what):
                facets.update(tuple(sorted(f)) for f in block.tolist())
    cells = np.concatenate(_corners(gmsh, dim, None, index, what))
    return _merged(MeshData(xyz[:, :dim], cells, groups))


def _merged(data: MeshData) -> MeshData:
    """``data`` with coincident nodes made one (parts meshed apart along a common edge or
    face have a copy of its nodes each, which would make it a boundary)."""
    nodes = data.nodes
    scale = max(float(np.ptp(nodes)), 1.0)
    _, first, inverse = np.unique(np.round(nodes / (_MERGE * scale)), axis=0,
                                  return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if len(first) == len(nodes):
        return data
    groups = {name: {tuple(sorted(int(inverse[i]) for i in f)) for f in facets}
              for name, facets in data.groups.items()}
    return MeshData(nodes[first], inverse[data.cells], groups)


def _corners(gmsh, dim: int, entity, index, what: str = "the mesh") -> list[np.ndarray]:
    """The corner node indices of the simplices of dimension ``dim`` (of one entity);
    quadrangles become two triangles, and other cells are refused by name."""
    types, _, node_tags = gmsh.model.mesh.getElements(dim, -1 if entity is None else entity)
    out = []
    for kind, nt in zip(types, node_tags):
        kind = int(kind)
        if kind in _CELLS[dim]:
            corners = np.asarray(nt, dtype=np.int64).reshape(-1, _CELLS[dim][kind])[:, :dim + 1]
        elif dim == 2 and kind in _QUADS:
            quads = np.asarray(nt, dtype=np.int64).reshape(-1, _QUADS[kind])[:, :4]
            corners = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
        else:
            name = gmsh.model.mesh.getElementProperties(kind)[0]
            raise ValueError(f"{what} has {name} elements (gmsh type {kind}) of dimension "
                             f"{dim}, which a mesh domain does not take: mesh with "
                             f"{'triangles or quadrangles' if dim == 2 else 'tetrahedra'} "
                             "(e.g. without recombination).")
        out.append(np.vectorize(index.__getitem__)(corners))
    return out


def _simplex_measure(vertices: np.ndarray) -> np.ndarray:
    """Sizes of ``(M, k + 1, D)`` simplices of dimension ``k`` (length, area, volume)."""
    edges = vertices[:, 1:] - vertices[:, :1]
    gram = np.einsum("mid,mjd->mij", edges, edges)
    k = edges.shape[1]
    return np.sqrt(np.clip(np.linalg.det(gram), 0.0, None)) / math.factorial(k)


def _uniform_in_simplices(u, vertices, cum, xp):
    """Points uniform in simplices chosen in proportion to size: ``u[:, 0]`` picks the
    simplex, ``u[:, 1:k + 2]`` give flat-Dirichlet barycentric weights."""
    which = xp.clip(xp.searchsorted(cum, u[:, 0], side="right"), 0, len(cum) - 1)
    k1 = vertices.shape[1]
    e = -xp.log1p(-u[:, 1:1 + k1])                   # exponential draws
    w = e / xp.sum(e, axis=1, keepdims=True)
    return xp.einsum("nk,nkd->nd", w, xp.asarray(vertices, u.dtype)[which]), which


class SimplexMesh(Geometry):
    """A 2-D region of triangles or a 3-D region of tetrahedra (see the module docstring)."""

    interior_map_inside = True

    def __init__(self, data: MeshData, description: str):
        self.nodes, self.cells = data.nodes, data.cells
        self.dim = self.nodes.shape[1]
        self._description = description
        self.volumes = _simplex_measure(self.nodes[self.cells])
        self._cells_cum = np.cumsum(self.volumes) / self.volumes.sum()
        self._boundary_facets()
        self._refuse_interfaces()
        self.facet_sizes = _simplex_measure(self.nodes[self.facets])
        self._facets_cum = np.cumsum(self.facet_sizes) / self.facet_sizes.sum()
        self._facet_tags = self._tags_of_facets(data.groups)
        self.side_names = tuple(name for name in data.groups if name in self._present)
        self.lo, self.hi = self.nodes.min(axis=0), self.nodes.max(axis=0)

    def _boundary_facets(self) -> None:
        """Facets of one cell only, ordered so that their normal points out of the cell."""
        c, d = self.cells, self.dim
        drop = [[j for j in range(d + 1) if j != k] for k in range(d + 1)]
        facets = np.concatenate([c[:, f] for f in drop])
        apex = np.concatenate([c[:, k] for k in range(d + 1)])
        _, inverse, counts = np.unique(np.sort(facets, axis=1), axis=0, return_inverse=True,
                                       return_counts=True)
        once = counts[inverse.ravel()] == 1
        facets, apex = facets[once], apex[once]
        normal = self._raw_normals(self.nodes[facets])
        inward = np.sum(normal * (self.nodes[apex] - self.nodes[facets[:, 0]]), axis=1) > 0
        facets[inward] = facets[inward][:, ::-1]      # reversed order: the normal flips
        normal[inward] *= -1
        self.facets = facets
        self.facet_normals = normal / np.linalg.norm(normal, axis=1, keepdims=True)
        self._facet_keys = [tuple(k) for k in np.sort(facets, axis=1).tolist()]

    def _refuse_interfaces(self) -> None:
        """Refuse boundary facets with a cell on their outer side too: an interface between
        parts meshed apart whose nodes do not match (coincident ones were merged)."""
        from scipy.spatial import cKDTree
        v = self.nodes[self.cells]
        centroids = v.mean(axis=1)
        reach = float(np.max(np.linalg.norm(v - centroids[:, None], axis=2)))
        f = self.nodes[self.facets]
        size = np.max(np.linalg.norm(f - f[:, :1], axis=2), axis=1)
        probes = f.mean(axis=1) + 1e-3 * size[:, None] * self.facet_normals
        inverse = np.linalg.inv(np.swapaxes(v[:, 1:] - v[:, :1], 1, 2))  # (C, d, d)
        inner = []
        for k, near in enumerate(cKDTree(centroids).query_ball_point(probes, reach)):
            if not near:
                continue
            near = np.asarray(near)
            lam = np.einsum("cij,cj->ci", inverse[near], probes[k] - v[near, 0])
            if np.any((lam >= 0).all(axis=1) & (lam.sum(axis=1) <= 1)):
                inner.append(k)
        if inner:
            at = np.round(f[inner[0]].mean(axis=0), 6).tolist()
            raise ValueError(
                f"mesh {self._description}: {len(inner)} of its {len(self.facets)} boundary "
                f"facets have cells on both sides (e.g. at {at}): parts meshed apart whose "
                "nodes do not match along a common edge or face. Fragment them in gmsh "
                "(gmsh.model.occ.fragment(...), then synchronize and mesh) so that they "
                "share it.")

    def _raw_normals(self, v: np.ndarray) -> np.ndarray:
        if self.dim == 2:
            e = v[:, 1] - v[:, 0]
            return np.stack([e[:, 1], -e[:, 0]], axis=1)
        return np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])

    def _tags_of_facets(self, groups) -> np.ndarray:
        names = [[] for _ in self._facet_keys]
        self._present = set()
        for name, keys in groups.items():
            for i, key in enumerate(self._facet_keys):
                if key in keys:
                    names[i].append(name)
                    self._present.add(name)
        return object_array([tuple(n) for n in names])

    def describe(self) -> str:
        kind = "triangles" if self.dim == 2 else "tetrahedra"
        return (f"mesh {self._description} ({len(self.cells)} {kind}, {len(self.facets)} "
                "boundary facets)")

    @property
    def bounds(self):
        return self.lo, self.hi

    @property
    def measure(self) -> float:
        return float(self.volumes.sum())

    @property
    def boundary_measure(self) -> float:
        return float(self.facet_sizes.sum())

    # ------------------------------------------------------------------ interior
    @property
    def interior_dims(self) -> int:
        return self.dim + 2  # which cell, then dim + 1 barycentric draws

    def interior(self, u):
        return _uniform_in_simplices(u, self.nodes[self.cells], self._cells_cum, np)[0]

    def interior_jax(self, u):
        return _uniform_in_simplices(u, self.nodes[self.cells],
                                     jnp.asarray(self._cells_cum, u.dtype), jnp)[0]

    def contains(self, p):
        return self.signed_distance(np.asarray(p, dtype=np.float64)) > 0

    def contains_jax(self, p):
        return jnp.ones(p.shape[:1], bool)  # the map of the unit cube is onto the cells

    def interior_grid(self, n):
        raise ValueError("a mesh domain has no grid sampler; use interior='nodes' or "
                         "'quadrature' for the mesh's own points.")

    def nodes_inside(self) -> np.ndarray:
        """The mesh nodes of some cell that are not on the boundary."""
        keep = np.zeros(len(self.nodes), bool)
        keep[np.unique(self.cells)] = True
        keep[np.unique(self.facets)] = False
        return self.nodes[keep]

    def quadrature_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The points and weights of a rule exact for quadratics on every cell (3 points per
        triangle, 4 per tetrahedron)."""
        bary = _QUADRATURE[self.dim]
        pts = np.einsum("qk,ckd->cqd", bary, self.nodes[self.cells]).reshape(-1, self.dim)
        return pts, np.repeat(self.volumes / len(bary), len(bary))

    # ------------------------------------------------------------------ boundary
    def boundary_length(self, tag: str | None = None) -> float:
        """Size (length in 2-D, area in 3-D) of the boundary facets carrying ``tag`` (all of
        them by default)."""
        if tag is None:
            return self.boundary_measure
        if tag not in self.side_names:
            raise ValueError(f"`tag` {tag!r} is not a boundary tag of {self.describe()}; its "
                             f"physical groups of dimension {self.dim - 1}: "
                             f"{list(self.side_names)}.")
        return float(sum(size for size, names in zip(self.facet_sizes, self._facet_tags)
                         if tag in names))

    def signed_distance(self, p, xp=np):
        v = self.nodes[self.facets]
        if self.dim == 2:
            return polyline_distance(p, v[:, 0], v[:, 1], xp)
        dist = xp.min(_triangle_distance(p[:, None, :], v[:, 0], v[:, 1], v[:, 2], xp), axis=1)
        inside = xp.abs(_winding(p[:, None, :], v[:, 0], v[:, 1], v[:, 2], xp)) > 0.5
        return xp.where(inside, dist, -dist)

    @property
    def boundary_dims(self) -> int:
        return self.dim + 1  # which facet, then dim barycentric draws

    def boundary(self, u):
        pts, which = _uniform_in_simplices(u, self.nodes[self.facets], self._facets_cum, np)
        return BoundarySample(pts, self.facet_normals[which], self._facet_tags[which])

    def boundary_grid(self, n):
        raise ValueError("a mesh domain has no grid sampler for its boundary; use "
                         "sampler='random', 'sobol' or 'lhs'.")


def _triangle_distance(p, a, b, c, xp):
    """Distance from ``(N, 1, 3)`` points to ``(F, 3)``-vertex triangles: to the plane where
    the projection falls inside, else to the nearest edge."""
    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    height = xp.sum((p - a) * n, -1)
    q = p - height[..., None] * n
    inside = ((xp.sum(xp.cross(b - a, q - a) * n, -1) >= 0)
              & (xp.sum(xp.cross(c - b, q - b) * n, -1) >= 0)
              & (xp.sum(xp.cross(a - c, q - c) * n, -1) >= 0))
    edges = xp.minimum(xp.minimum(segment_distance(p, a, b, xp), segment_distance(p, b, c, xp)),
                       segment_distance(p, c, a, xp))
    return xp.where(inside, xp.abs(height), edges)


def _winding(p, a, b, c, xp):
    """Winding number of closed triangulated surfaces around ``(N, 1, 3)`` points (the sum of
    the triangles' solid angles over 4π; Van Oosterom & Strackee 1983)."""
    ra, rb, rc = a - p, b - p, c - p
    la, lb, lc = (xp.sqrt(xp.sum(r * r, -1)) for r in (ra, rb, rc))
    num = xp.sum(ra * xp.cross(rb, rc), -1)
    den = (la * lb * lc + xp.sum(ra * rb, -1) * lc + xp.sum(ra * rc, -1) * lb
           + xp.sum(rb * rc, -1) * la)
    return xp.sum(2.0 * xp.arctan2(num, den), axis=1) / (4 * np.pi)
