"""Triangle meshes as geometries, read from gmsh (a ``.msh`` file or the current model).

The interior is the union of the triangles. Interior points are drawn uniformly (a triangle
chosen in proportion to its area, then a uniform point in it), or taken from the mesh nodes
or the cells' quadrature points. The boundary is the set of edges that belong to one
triangle only; each has the outward normal pointing away from its triangle. Physical groups
of dimension 1 become boundary tags (their name, or ``"group_<tag>"`` when unnamed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from jno_flax._geometry import BoundarySample, Geometry, object_array, safe_norm

#: gmsh element types of 3-node triangles and 2-node lines (higher orders use their corners)
_TRIANGLES = {2: 3, 9: 6, 21: 10}
_LINES = {1: 2, 8: 3, 26: 4}


def import_gmsh():
    try:
        import gmsh
    except ImportError as err:
        raise ImportError("meshes are read with gmsh, which is not installed: "
                          "pip install 'jno_flax[mesh]' (or pip install gmsh).") from err
    return gmsh


@dataclass
class MeshData:
    nodes: np.ndarray                  # (V, 2)
    triangles: np.ndarray              # (T, 3) node indices
    groups: dict[str, set[tuple[int, int]]]  # boundary tag -> sorted node pairs


def read_gmsh(source) -> MeshData:
    """The triangles and boundary groups of a ``.msh`` file (a path) or of gmsh's current
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
        started = not gmsh.isInitialized()
        if started:
            gmsh.initialize(interruptible=False)
        gmsh.option.setNumber("General.Terminal", 0)
        try:
            gmsh.open(path)
            return _read_model(gmsh, path)
        finally:
            if started:
                gmsh.finalize()
    if source is gmsh or source is getattr(gmsh, "model", None):
        if not gmsh.isInitialized():
            raise ValueError("`source` is the gmsh module but gmsh is not initialized: build "
                             "and mesh a model first (gmsh.initialize(), ..., "
                             "gmsh.model.mesh.generate(2)).")
        return _read_model(gmsh, "the current gmsh model")
    raise TypeError(f"`source` must be a path to a .msh file or the gmsh module, got "
                    f"{type(source).__name__}: {source!r}.")


def _read_model(gmsh, what: str) -> MeshData:
    tags, coords, _ = gmsh.model.mesh.getNodes()
    index = {int(t): i for i, t in enumerate(tags)}
    nodes = np.asarray(coords, dtype=np.float64).reshape(-1, 3)[:, :2]
    triangles = []
    types, _, node_tags = gmsh.model.mesh.getElements(2)
    for kind, nt in zip(types, node_tags):
        if int(kind) in _TRIANGLES:
            per = _TRIANGLES[int(kind)]
            corners = np.asarray(nt, dtype=np.int64).reshape(-1, per)[:, :3]
            triangles.append(np.vectorize(index.__getitem__)(corners))
    if not triangles:
        raise ValueError(f"{what} has no triangles: mesh it in 2-D "
                         "(gmsh.model.mesh.generate(2)); 3-D meshes are not supported.")
    groups: dict[str, set[tuple[int, int]]] = {}
    for dim, tag in gmsh.model.getPhysicalGroups(1):
        name = gmsh.model.getPhysicalName(dim, tag) or f"group_{tag}"
        pairs = groups.setdefault(name, set())
        for entity in gmsh.model.getEntitiesForPhysicalGroup(dim, tag):
            etypes, _, enodes = gmsh.model.mesh.getElements(1, int(entity))
            for kind, nt in zip(etypes, enodes):
                per = _LINES.get(int(kind))
                if per is None:
                    continue
                ends = np.asarray(nt, dtype=np.int64).reshape(-1, per)[:, :2]
                pairs.update(tuple(sorted((index[int(a)], index[int(b)]))) for a, b in ends)
    return MeshData(nodes, np.concatenate(triangles), groups)


class TriangleMesh(Geometry):
    """A 2-D region given by triangles (see the module docstring)."""

    dim = 2

    def __init__(self, data: MeshData, description: str):
        self.nodes, self.triangles = data.nodes, data.triangles
        self._description = description
        a, b, c = (self.nodes[self.triangles[:, k]] for k in range(3))
        (ux, uy), (vx, vy) = (b - a).T, (c - a).T
        self.areas = 0.5 * np.abs(ux * vy - uy * vx)
        self._cells_cum = np.cumsum(self.areas) / self.areas.sum()
        self._boundary_edges()
        self.lengths = np.linalg.norm(self.ends - self.starts, axis=1)
        self._edges_cum = np.cumsum(self.lengths) / self.lengths.sum()
        self._edge_tags = self._tags_of_edges(data.groups)
        self.side_names = tuple(name for name in data.groups if name in self._present)
        self.lo, self.hi = self.nodes.min(axis=0), self.nodes.max(axis=0)

    def _boundary_edges(self) -> None:
        """Edges of one triangle only, oriented with the triangle on their left."""
        t = self.triangles
        edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
        opposite = np.concatenate([t[:, 2], t[:, 0], t[:, 1]])
        key = np.sort(edges, axis=1)
        _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        once = counts[inverse.ravel()] == 1
        e, o = edges[once], opposite[once]
        start, end, apex = self.nodes[e[:, 0]], self.nodes[e[:, 1]], self.nodes[o]
        d = end - start
        normal = np.stack([d[:, 1], -d[:, 0]], axis=1)
        flip = np.sum(normal * (apex - start), axis=1) > 0  # must point away from the apex
        normal[flip] *= -1
        self.starts, self.ends = start, end
        self.edge_normals = normal / np.linalg.norm(normal, axis=1, keepdims=True)
        self._edge_keys = [tuple(k) for k in np.sort(e, axis=1)]

    def _tags_of_edges(self, groups) -> np.ndarray:
        names = [[] for _ in self._edge_keys]
        self._present = set()
        for name, pairs in groups.items():
            for i, key in enumerate(self._edge_keys):
                if key in pairs:
                    names[i].append(name)
                    self._present.add(name)
        return object_array([tuple(n) for n in names])

    def describe(self) -> str:
        return (f"mesh {self._description} ({len(self.triangles)} triangles, "
                f"{len(self.starts)} boundary edges)")

    @property
    def bounds(self):
        return self.lo, self.hi

    @property
    def measure(self) -> float:
        return float(self.areas.sum())

    @property
    def boundary_measure(self) -> float:
        return float(self.lengths.sum())

    # ------------------------------------------------------------------ interior
    @property
    def interior_dims(self) -> int:
        return 3  # which triangle, then two barycentric draws

    def _in_cells(self, u, xp, cum):
        cell = xp.clip(xp.searchsorted(cum, u[:, 0], side="right"), 0, len(self.areas) - 1)
        s, r = xp.sqrt(u[:, 1:2]), u[:, 2:3]
        tri = xp.asarray(self.nodes, u.dtype)[xp.asarray(self.triangles)[cell]]
        return (1 - s) * tri[:, 0] + s * (1 - r) * tri[:, 1] + s * r * tri[:, 2]

    def interior(self, u):
        return self._in_cells(u, np, self._cells_cum)

    def interior_jax(self, u):
        return self._in_cells(u, jnp, jnp.asarray(self._cells_cum, u.dtype))

    def contains(self, p):
        # points drawn in the triangles are inside; elsewhere the crossing test decides
        return self.signed_distance(np.asarray(p, dtype=np.float64)) > 0

    def contains_jax(self, p):
        return jnp.ones(p.shape[:1], bool)

    def interior_grid(self, n):
        raise ValueError("a mesh domain has no grid sampler; use interior='nodes' or "
                         "'quadrature' for the mesh's own points.")

    def nodes_inside(self) -> np.ndarray:
        """The mesh nodes that are not on the boundary."""
        on_boundary = np.unique(np.concatenate([self._edge_index(k) for k in (0, 1)]))
        keep = np.ones(len(self.nodes), bool)
        keep[on_boundary] = False
        keep[np.setdiff1d(np.arange(len(self.nodes)), np.unique(self.triangles))] = False
        return self.nodes[keep]

    def _edge_index(self, k):
        return np.array([key[k] for key in self._edge_keys], dtype=np.int64)

    def quadrature_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The points and weights of a 3-point rule (exact for quadratics) on every cell."""
        tri = self.nodes[self.triangles]
        bary = np.array([[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])
        pts = np.einsum("qk,tkd->tqd", bary, tri).reshape(-1, 2)
        return pts, np.repeat(self.areas / 3.0, 3)

    # ------------------------------------------------------------------ boundary
    def signed_distance(self, p, xp=np):
        a, ab = self.starts, self.ends - self.starts
        rel = p[:, None, :] - a[None]
        t = xp.clip(xp.sum(rel * ab, -1) / np.sum(ab * ab, -1), 0.0, 1.0)
        dist = xp.min(safe_norm(rel - t[..., None] * ab, xp), axis=1)
        x, y = p[:, 0:1], p[:, 1:2]
        y0, y1 = self.starts[:, 1], self.ends[:, 1]
        crosses = (y0 > y) != (y1 > y)
        dy = np.where(y1 == y0, 1.0, y1 - y0)
        xc = self.starts[:, 0] + (y - y0) * (self.ends[:, 0] - self.starts[:, 0]) / dy
        inside = xp.sum(crosses & (x < xc), axis=1) % 2 == 1
        return xp.where(inside, dist, -dist)

    def boundary_length(self, tag: str | None = None) -> float:
        """Length of the boundary edges carrying ``tag`` (all of them by default)."""
        if tag is None:
            return self.boundary_measure
        if tag not in self.side_names:
            raise ValueError(f"`tag` {tag!r} is not a boundary tag of {self.describe()}; its "
                             f"physical groups of dimension 1: {list(self.side_names)}.")
        return float(sum(length for length, names in zip(self.lengths, self._edge_tags)
                         if tag in names))

    def _on_edges(self, edge, frac) -> BoundarySample:
        pts = self.starts[edge] + frac[:, None] * (self.ends[edge] - self.starts[edge])
        return BoundarySample(pts, self.edge_normals[edge], self._edge_tags[edge])

    def boundary(self, u):
        edge = np.searchsorted(self._edges_cum, u[:, 0], side="right")
        return self._on_edges(edge.clip(0, len(self.lengths) - 1), u[:, 1])

    @property
    def boundary_dims(self) -> int:
        return 2

    def boundary_grid(self, n):
        raise ValueError("a mesh domain has no grid sampler for its boundary; use "
                         "sampler='random', 'sobol' or 'lhs'.")

    def edge_midpoints(self) -> BoundarySample:
        return self._on_edges(np.arange(len(self.lengths)), np.full(len(self.lengths), 0.5))
