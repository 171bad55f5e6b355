"""Domains: sampling, tags, normals, reproducibility and their errors."""

from __future__ import annotations

import numpy as np
import pytest

import jno_flax as jno
from jno_flax.domain import SAMPLERS

SHAPES = {
    "interval": lambda **kw: jno.domain.interval(-1.0, 2.0, **kw),
    "rect": lambda **kw: jno.domain.rect((0, 2), (-1, 1), **kw),
    "box": lambda **kw: jno.domain.box((0, 1), (0, 2), (0, 3), **kw),
    "disk": lambda **kw: jno.domain.disk((0.5, -0.5), 2.0, **kw),
    "lshape": lambda **kw: jno.domain.lshape(1.0, **kw),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_interior_inside_boundary_on_boundary(shape, sampler):
    dom = SHAPES[shape](n_interior=128, n_boundary=64, sampler=sampler, seed=1)
    geo = dom.geometry
    inner = dom.points("interior")
    assert len(inner) > 0.8 * 128 if sampler == "grid" else len(inner) == 128
    assert geo.contains(inner).all()
    bnd = dom.points("boundary")
    assert np.abs(geo.distance_to_boundary(bnd)).max() < 1e-9
    normals = dom.normals("boundary")
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, rtol=1e-12)
    # outward: stepping along the normal leaves the domain, stepping back enters it
    assert not geo.contains(bnd + 1e-3 * normals).any()
    assert geo.contains(bnd - 1e-3 * normals).mean() > 0.9  # corners of polygons excepted


def test_lshape_is_non_convex_and_excludes_the_cut_quadrant():
    dom = jno.domain.lshape(1.0, n_interior=2000, n_boundary=300, seed=0)
    pts = dom.points("interior")
    assert not ((pts[:, 0] > 0) & (pts[:, 1] > 0)).any()
    for quadrant in [(-1, -1), (1, -1), (-1, 1)]:
        sel = (np.sign(pts[:, 0]) == quadrant[0]) & (np.sign(pts[:, 1]) == quadrant[1])
        assert sel.sum() > 400
    # the re-entrant corner's sides are on the boundary
    b = dom.points("boundary")
    assert ((np.abs(b[:, 0]) < 1e-12) & (b[:, 1] > 0)).any()


def test_same_seed_same_points_other_seed_other_points():
    a = jno.domain.rect(n_interior=50, n_boundary=20, seed=7)
    b = jno.domain.rect(n_interior=50, n_boundary=20, seed=7)
    c = jno.domain.rect(n_interior=50, n_boundary=20, seed=8)
    np.testing.assert_array_equal(a.points("interior"), b.points("interior"))
    np.testing.assert_array_equal(a.points("boundary"), b.points("boundary"))
    assert not np.array_equal(a.points("interior"), c.points("interior"))
    # interior points do not depend on the boundary count
    d = jno.domain.rect(n_interior=50, n_boundary=33, seed=7)
    np.testing.assert_array_equal(a.points("interior"), d.points("interior"))


def test_rect_sides_partition_the_boundary():
    dom = jno.domain.rect((0, 2), (0, 1), n_interior=10, n_boundary=120, seed=0)
    sides = {"left": (0, 0.0), "right": (0, 2.0), "bottom": (1, 0.0), "top": (1, 1.0)}
    total = 0
    for tag, (axis, value) in sides.items():
        pts = dom.points(tag)
        np.testing.assert_allclose(pts[:, axis], value)
        total += len(pts)
        xs, _ = dom.variable(tag)
        assert xs.pointset.n == len(pts)
    assert total == 120
    # longer sides get more points
    assert len(dom.points("bottom")) > len(dom.points("left"))


def test_box_faces_and_interval_sides():
    dom = jno.domain.box(n_interior=10, n_boundary=300, seed=0)
    np.testing.assert_allclose(dom.points("top")[:, 2], 1.0)
    np.testing.assert_allclose(dom.normals("front"), [[0, -1, 0]] * len(dom.points("front")))
    line = jno.domain.interval(0, 1)
    np.testing.assert_allclose(line.points("left"), 0.0)
    np.testing.assert_allclose(line.normals("right"), 1.0)


def test_space_time_tags():
    dom = jno.domain.rect(n_interior=200, n_boundary=80, n_initial=30, time=(0.0, 2.0), seed=0)
    x, y, t = dom.variable("interior")
    assert t.symbol == "t" and dom.dim == 3
    ti = dom.points("interior")[:, 2]
    assert ((ti > 0.0) & (ti <= 2.0)).all()
    tb = dom.points("boundary")[:, 2]
    assert ((tb >= 0.0) & (tb <= 2.0)).all()
    init = dom.points("initial")
    assert init.shape == (30, 3) and (init[:, 2] == 0.0).all()
    assert dom.geometry.contains(init[:, :2]).all()
    grid = jno.domain.interval(0, 1, n_interior=100, sampler="grid", time=(0, 1))
    assert len(np.unique(grid.points()[:, 1])) == 10


def test_variables_and_normals_are_fields():
    dom = jno.domain.disk(n_interior=20, n_boundary=10)
    nx, ny = dom.normal("boundary")
    xb, yb = dom.variable("boundary")
    crux = jno.core([(xb * nx + yb * ny).mse])
    r = np.asarray(crux.eval(xb * nx + yb * ny))
    np.testing.assert_allclose(r, 1.0, rtol=1e-5)  # x.n = radius on the unit circle
    assert dom.variable("boundary")[0] is xb


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(x_range=(1, 0)), r"`x_range` must be a non-empty range.*\(1, 0\)"),
    (dict(y_range=(0, 0)), r"`y_range` must be a non-empty range"),
    (dict(x_range=(0, float("nan"))), r"`x_range` must be a pair"),
    (dict(n_interior=0), r"`n_interior` must be a positive integer, got 0"),
    (dict(n_boundary=-5), r"`n_boundary` must be a positive integer, got -5"),
    (dict(n_interior=2.5), r"`n_interior` must be a positive integer, got 2.5"),
    (dict(sampler="halton"), r"`sampler` must be one of"),
    (dict(time=(1, 1)), r"`time` must be a non-empty range"),
    (dict(n_initial=5), r"`n_initial` needs a space-time domain"),
], ids=["reversed", "empty", "nan", "zero-points", "negative", "float-count", "sampler",
        "time", "initial"])
def test_bad_domain_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jno.domain.rect(**kwargs)


def test_bad_tags_and_shapes():
    dom = jno.domain.rect(n_interior=5, n_boundary=8)
    with pytest.raises(ValueError, match=r"`tag` 'inside' is not a tag.*available tags"):
        dom.variable("inside")
    with pytest.raises(ValueError, match="has no normals"):
        dom.normal("interior")
    with pytest.raises(ValueError, match="`radius` must be a positive number"):
        jno.domain.disk(radius=0)
    with pytest.raises(ValueError, match=r"`vertices` must be a \(K, 2\) array"):
        jno.domain.polygon([(0, 0), (1, 1)])
    with pytest.raises(ValueError, match=r"`\(a, b\)` must be a non-empty range"):
        jno.domain.interval(2, 1)
