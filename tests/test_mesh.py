"""Mesh domains from gmsh: reading, sampling, tags, normals, agreement with CSG, errors."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jno_flax as jno
from jno_flax import geometry
from jno_flax._sampling import uniform_points

gmsh = pytest.importorskip("gmsh")

HOLES = [(0.3, 0.3), (-0.3, 0.3), (0.3, -0.3), (-0.3, -0.3)]
SIZE = 0.02  # mesh size: a chord of a hole strays at most SIZE**2 / (8 * 0.1) from its arc


def plate_csg():
    square, holes = _bench().plate()
    return square - holes


@functools.lru_cache(maxsize=None)
def _bench():
    """bench/pinnacle.py, whose plate_gmsh builds the plate with gmsh's OpenCASCADE booleans
    and physical groups 'outer' and 'holes'."""
    path = Path(__file__).resolve().parents[1] / "bench" / "pinnacle.py"
    spec = importlib.util.spec_from_file_location("pinnacle_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pinnacle_bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plate_msh(tmp_path_factory):
    """The plate meshed by gmsh and written to a .msh file."""
    path = tmp_path_factory.mktemp("mesh") / "plate.msh"
    with jno.domain.gmsh_session():
        _bench().plate_gmsh(SIZE)
        gmsh.write(str(path))
    return path


def test_mesh_and_csg_agree(plate_msh):
    shape = plate_csg()
    mesh = jno.domain.mesh(plate_msh, n_interior=4000, n_boundary=4000, seed=0)
    csg = jno.domain.from_geometry(shape, n_interior=16, n_boundary=16, seed=0)
    assert mesh.tags == ("interior", "boundary", "outer", "holes")
    exact_area = 1 - 4 * np.pi * 0.01
    assert mesh.geometry.measure == pytest.approx(exact_area, rel=2e-3)
    assert shape.measure == pytest.approx(exact_area, rel=5e-3)
    geo = mesh.geometry
    assert geo.boundary_length("outer") == pytest.approx(4.0, rel=1e-12)
    # chords of length h short a circle of radius r by about (h / r)^2 / 24 of its length
    assert geo.boundary_length("holes") == pytest.approx(0.8 * np.pi, rel=(SIZE / 0.1)**2 / 16)
    assert geo.boundary_length() == pytest.approx(
        geo.boundary_length("outer") + geo.boundary_length("holes"), rel=1e-12)
    with pytest.raises(ValueError, match=r"'inlet' is not a boundary tag.*\['outer', 'holes'\]"):
        geo.boundary_length("inlet")
    # boundary points on the CSG boundary (to the chords' sagitta) with the same normals
    sagitta = SIZE**2 / 0.8
    b, n = mesh.points("boundary"), mesh.normals("boundary")
    assert np.abs(shape.signed_distance(b)).max() < 1.5 * sagitta
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, rtol=1e-12)
    outer, on = mesh.points("outer"), mesh.normals("outer")
    np.testing.assert_allclose(np.abs(outer).max(axis=1), 0.5, atol=1e-12)
    side = np.argmax(np.abs(outer), axis=1)  # the normal is the axis of the side, outward
    rows = np.arange(len(on))
    np.testing.assert_allclose(on[rows, side], np.sign(outer[rows, side]))
    holes, hn = mesh.points("holes"), mesh.normals("holes")
    centre = np.array(HOLES)[np.argmin([np.hypot(*(holes - c).T) for c in HOLES], axis=0)]
    radial = (centre - holes) / np.linalg.norm(centre - holes, axis=1, keepdims=True)
    assert np.sum(hn * radial, axis=1).min() > np.cos(1.5 * SIZE / 0.1)  # within one chord
    # both give the holes the same share of the boundary points
    share = len(holes) / 4000
    p = 0.8 * np.pi / (4 + 0.8 * np.pi)
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 4000)
    assert {"outer", "holes"} <= set(csg.tags)
    # interior points lie in the CSG region (up to the sagitta next to the holes), uniformly
    inner = mesh.points("interior")
    assert shape.signed_distance(inner).min() > -sagitta
    q = (0.25 - np.pi * 0.01) / exact_area
    got = ((inner[:, 0] > 0) & (inner[:, 1] > 0)).mean()
    assert abs(got - q) < 4 * np.sqrt(q * (1 - q) / 4000)


def test_mesh_nodes_and_quadrature_points(plate_msh):
    nodes = jno.domain.mesh(plate_msh, interior="nodes", n_boundary=64)
    pts = nodes.points("interior")
    geo = nodes.geometry
    assert len(pts) == len(geo.nodes) - len(geo.facets)  # one boundary node per boundary edge
    assert (geo.signed_distance(pts) > 0).all()
    quad = jno.domain.mesh(plate_msh, interior="quadrature", n_boundary=64)
    q, w = quad.geometry.quadrature_points()
    assert len(quad.points("interior")) == 3 * len(geo.cells)
    assert w.sum() == pytest.approx(geo.measure, rel=1e-12)
    # the rule is exact for quadratics: the integral of x^2 over the mesh
    exact = (1 / 12) - sum(np.pi * 0.1**4 / 4 + np.pi * 0.01 * cx**2 for cx, _ in HOLES)
    assert float(np.sum(w * q[:, 0] ** 2)) == pytest.approx(exact, rel=5e-3)


def test_mesh_from_the_current_model_and_in_step_draws(plate_msh):
    with jno.domain.gmsh_session():
        gmsh.open(str(plate_msh))
        mine = gmsh.model.getCurrent()
        dom = jno.domain.mesh(gmsh, n_interior=32, n_boundary=32, seed=0)
        # reading a file while gmsh runs leaves the user's model current and unchanged
        from_file = jno.domain.mesh(plate_msh, n_interior=32, n_boundary=32, seed=0)
        assert gmsh.model.getCurrent() == mine and gmsh.model.list() == [mine]
    np.testing.assert_array_equal(from_file.points("boundary"), dom.points("boundary"))
    pts = np.asarray(jax.jit(lambda k: uniform_points(dom.pointset("interior"), k, 8000))(
        jax.random.PRNGKey(0)))
    assert (dom.geometry.signed_distance(pts) > -1e-9).all()
    q = (0.25 - np.pi * 0.01) / dom.geometry.measure
    got = ((pts[:, 0] > 0) & (pts[:, 1] > 0)).mean()
    assert abs(got - q) < 4 * np.sqrt(q * (1 - q) / 8000)


def test_a_tetrahedral_mesh_agrees_with_csg(tmp_path):
    """A unit cube minus a ball of radius 0.25, built with gmsh's booleans and meshed with
    tetrahedra: volume, sphere area, normals, distances and tags against the CSG solid."""
    path = tmp_path / "cavity.msh"
    with jno.domain.gmsh_session():
        occ = gmsh.model.occ
        cut, _ = occ.cut([(3, occ.addBox(0, 0, 0, 1, 1, 1))],
                         [(3, occ.addSphere(0.5, 0.5, 0.5, 0.25))])
        occ.synchronize()
        faces = gmsh.model.getBoundary(cut, oriented=False)
        sphere = [t for d, t in faces if gmsh.model.getType(d, t) == "Sphere"]
        gmsh.model.addPhysicalGroup(2, [t for _, t in faces if t not in sphere], name="walls")
        gmsh.model.addPhysicalGroup(2, sphere, name="cavity")
        gmsh.model.addPhysicalGroup(3, [t for _, t in cut], name="solid")
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.08)
        gmsh.model.mesh.generate(3)
        gmsh.write(str(path))
    dom = jno.domain.mesh(path, n_interior=3000, n_boundary=3000, seed=0)
    solid = geometry.box((0, 1), (0, 1), (0, 1)) - geometry.ball((0.5, 0.5, 0.5), 0.25)
    geo = dom.geometry
    assert dom.tags == ("interior", "boundary", "walls", "cavity")
    # flat facets inscribed in the sphere: errors of order (h / r)^2
    assert geo.measure == pytest.approx(1 - 4 / 3 * np.pi * 0.25**3, rel=3e-3)
    assert geo.boundary_length("walls") == pytest.approx(6.0, rel=1e-12)
    assert geo.boundary_length("cavity") == pytest.approx(4 * np.pi * 0.25**2, rel=0.03)
    b, n = dom.points("cavity"), dom.normals("cavity")
    radial = (0.5 - b) / np.linalg.norm(0.5 - b, axis=1, keepdims=True)   # out of the solid
    assert np.sum(n * radial, axis=1).min() > 0.95
    assert np.abs(solid.signed_distance(dom.points("boundary"))).max() < 0.02
    walls, wn = dom.points("walls"), dom.normals("walls")
    side = np.argmax(np.abs(wn), axis=1)
    rows = np.arange(len(wn))
    np.testing.assert_allclose(wn[rows, side], np.where(walls[rows, side] > 0.5, 1.0, -1.0))
    inner = dom.points("interior")
    assert solid.signed_distance(inner).min() > -0.02
    # the mesh's own signed distance: sign by winding number, size to the nearest facet
    probes = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.9], [0.1, 0.1, 0.1], [0.5, 0.5, 1.2]])
    np.testing.assert_allclose(geo.signed_distance(probes), solid.signed_distance(probes),
                               atol=0.01)
    np.testing.assert_array_equal(geo.contains(probes), [False, True, True, False])
    q, w = geo.quadrature_points()
    assert len(q) == 4 * len(geo.cells) and w.sum() == pytest.approx(geo.measure, rel=1e-12)


def _sigpipe_ignored() -> bool:
    """Whether the process ignores SIGPIPE (signal 13), as the kernel reports it."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc/self/status (Linux)")
    mask = next(line for line in status.read_text().splitlines() if line.startswith("SigIgn"))
    return bool(int(mask.split()[1], 16) & (1 << (13 - 1)))


def test_reading_a_mesh_keeps_sigpipe_ignored(plate_msh):
    """gmsh's initialisation resets SIGPIPE to terminate-the-process; a mesh read (and a
    gmsh_session) restore Python's setting, so a closed pipe stays a BrokenPipeError."""
    assert _sigpipe_ignored()
    jno.domain.mesh(plate_msh, n_boundary=16)
    assert _sigpipe_ignored()
    with jno.domain.gmsh_session():
        assert _sigpipe_ignored()
    assert _sigpipe_ignored()


def test_mesh_errors(plate_msh, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"`source` '.*nope.msh' is not a file"):
        jno.domain.mesh(tmp_path / "nope.msh")
    bad = tmp_path / "bad.msh"
    bad.write_text("solid cube\n")
    with pytest.raises(ValueError, match=r"cannot be read as a mesh: it is not a gmsh .msh"):
        jno.domain.mesh(bad)
    with pytest.raises(ValueError, match=r"available tags: .*'outer', 'holes'"):
        jno.domain.mesh(plate_msh, n_boundary=16).variable("inlet")
    with pytest.raises(ValueError, match=r"`n_interior` sets the count of random points"):
        jno.domain.mesh(plate_msh, interior="nodes", n_interior=10)
    with pytest.raises(ValueError, match=r"`interior` must be one of"):
        jno.domain.mesh(plate_msh, interior="centroids")
    with pytest.raises(TypeError, match=r"`source` must be a path to a .msh file"):
        jno.domain.mesh(42)
    monkeypatch.setitem(sys.modules, "gmsh", None)
    with pytest.raises(ImportError, match=r"pip install 'jno_flax\[mesh\]'"):
        jno.domain.mesh(plate_msh)


def _write(path, build):
    with jno.domain.gmsh_session():
        build(gmsh.model.occ)
        gmsh.write(str(path))
    return path


def _two_squares(occ, fine_right=None):
    """Two unit squares side by side, meshed apart (no fragment): the edge x = 1 twice."""
    occ.addRectangle(0, 0, 0, 1, 1)
    occ.addRectangle(1, 0, 0, 1, 1)
    occ.synchronize()
    gmsh.model.mesh.setSize(gmsh.model.getEntities(0), 0.1)
    if fine_right:   # the right square's corners finer: its nodes on x = 1 differ
        gmsh.model.mesh.setSize([(0, 5), (0, 6), (0, 7), (0, 8)], fine_right)
    gmsh.model.mesh.generate(2)


def test_quadrangles_are_two_triangles_each(tmp_path):
    def quads(occ):
        occ.addRectangle(0, 0, 0, 2, 1)
        occ.synchronize()
        gmsh.option.setNumber("Mesh.RecombineAll", 1)
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.2)
        gmsh.model.mesh.generate(2)
    geo = jno.domain.mesh(_write(tmp_path / "q.msh", quads), n_interior=400, n_boundary=40,
                          seed=0).geometry
    np.testing.assert_allclose([geo.measure, geo.boundary_measure], [2.0, 6.0], rtol=1e-12)


def test_parts_meshed_apart_are_one_region_or_refused(tmp_path):
    dom = jno.domain.mesh(_write(tmp_path / "two.msh", _two_squares), n_interior=100,
                          n_boundary=400, seed=0)
    np.testing.assert_allclose(dom.geometry.boundary_measure, 6.0, rtol=1e-12)
    b = dom.points("boundary")
    on_interface = np.isclose(b[:, 0], 1.0) & (b[:, 1] > 1e-9) & (b[:, 1] < 1 - 1e-9)
    assert not on_interface.any()
    mismatched = _write(tmp_path / "mismatch.msh", lambda occ: _two_squares(occ, 0.07))
    with pytest.raises(ValueError, match=r"mesh '.*mismatch.msh': \d+ of its \d+ boundary "
                                         r"facets have cells on both sides \(e.g. at \[1.0, "
                                         r".*\]\): parts meshed apart .* Fragment them"):
        jno.domain.mesh(mismatched, n_interior=10, n_boundary=10)


def test_meshes_it_cannot_take_are_refused_by_name(tmp_path):
    def tilted(occ):
        occ.addRectangle(0, 0, 0, 1, 1)
        occ.rotate([(2, 1)], 0, 0, 0, 1, 0, 0, 0.5)
        occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.3)
        gmsh.model.mesh.generate(2)
    with pytest.raises(ValueError, match=r"tilted.msh is a 2-D mesh outside the xy-plane \(z "
                                         r"from 0 to 0.479\d*\)"):
        jno.domain.mesh(_write(tmp_path / "tilted.msh", tilted), n_interior=10, n_boundary=10)

    def hexahedra(occ):
        occ.addBox(0, 0, 0, 1, 1, 1)
        occ.synchronize()
        gmsh.option.setNumber("Mesh.RecombineAll", 1)
        gmsh.option.setNumber("Mesh.Recombine3DAll", 1)
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.5)
        for dim, tag in gmsh.model.getEntities(1):
            gmsh.model.mesh.setTransfiniteCurve(tag, 3)
        for dim, tag in gmsh.model.getEntities(2):
            gmsh.model.mesh.setTransfiniteSurface(tag)
        gmsh.model.mesh.setTransfiniteVolume(1)
        gmsh.model.mesh.generate(3)
    with pytest.raises(ValueError, match=r"has Hexahedron 8 elements \(gmsh type 5\) of "
                                         r"dimension 3, which a mesh domain does not take"):
        jno.domain.mesh(_write(tmp_path / "hex.msh", hexahedra), n_interior=10, n_boundary=10)
    whole = (tmp_path / "two.msh")
    _write(whole, _two_squares)
    text = whole.read_text()
    (tmp_path / "cut.msh").write_text(text[:len(text) // 2])
    with pytest.raises(ValueError, match=r"`source` '.*cut.msh' cannot be read by gmsh \(Could "
                                         r"not read nodes\): a damaged or truncated .msh file"):
        jno.domain.mesh(tmp_path / "cut.msh", n_interior=10, n_boundary=10)
