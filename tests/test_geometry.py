"""CSG geometries: sampling laws, composite boundaries, tags, signed distances and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jno_flax as jno
from jno_flax import geometry
from jno_flax._sampling import uniform_points

HOLES = [(0.3, 0.3), (-0.3, 0.3), (0.3, -0.3), (-0.3, -0.3)]


def plate_with_holes():
    """PINNacle's Poisson2d-C region: [-0.5, 0.5]^2 minus four disks of radius 0.1."""
    holes = geometry.disk(HOLES[0], 0.1)
    for c in HOLES[1:]:
        holes = holes | geometry.disk(c, 0.1)
    return geometry.rect((-0.5, 0.5), (-0.5, 0.5)).named("outer") - holes


AREA = 1.0 - 4 * np.pi * 0.01
#: (region test, its area inside the plate)
REGIONS = {
    "quadrant": (lambda p: (p[:, 0] > 0) & (p[:, 1] > 0), 0.25 - np.pi * 0.01),
    "strip": (lambda p: np.abs(p[:, 0]) < 0.1, 0.2),
    "ring": (lambda p: np.hypot(p[:, 0] - 0.3, p[:, 1] - 0.3) < 0.15, np.pi * (0.15**2 - 0.01)),
}


def _within_four_standard_errors(points, regions, area):
    n = len(points)
    for name, (inside, region_area) in regions.items():
        p = region_area / area
        se = np.sqrt(p * (1 - p) / n)
        assert abs(inside(points).mean() - p) < 4 * se, name


def test_interior_points_are_inside_and_uniform():
    shape = plate_with_holes()
    dom = jno.domain.from_geometry(shape, n_interior=20000, n_boundary=16, seed=3)
    pts = dom.points("interior")
    assert pts.shape == (20000, 2)
    assert shape.contains(pts).all()
    assert min(np.hypot(*(pts - c).T).min() for c in HOLES) > 0.1
    _within_four_standard_errors(pts, REGIONS, AREA)
    assert shape.measure == pytest.approx(AREA, rel=5e-3)


def test_in_step_sampler_draws_the_same_law():
    shape = plate_with_holes()
    dom = jno.domain.from_geometry(shape, n_interior=16, n_boundary=16, seed=0)
    draw = jax.jit(lambda k: uniform_points(dom.pointset("interior"), k, 20000))
    pts = np.asarray(draw(jax.random.PRNGKey(5)))
    assert pts.shape == (20000, 2) and shape.contains(pts).all()
    _within_four_standard_errors(pts, REGIONS, AREA)


def test_boundary_points_on_the_boundary_with_outward_unit_normals():
    shape = plate_with_holes()
    dom = jno.domain.from_geometry(shape, n_interior=16, n_boundary=4000, seed=1)
    b, n = dom.points("boundary"), dom.normals("boundary")
    assert b.shape == (4000, 2)
    assert np.abs(shape.signed_distance(b)).max() < 1e-6
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, rtol=1e-12)
    assert not shape.contains(b + 1e-3 * n).any()
    assert shape.contains(b - 1e-3 * n).mean() > 0.99  # the plate's corners excepted
    # on the holes the outward normal of the region points to the hole's centre
    holes = dom.points("holes")
    centre = np.array(HOLES)[np.argmin([np.hypot(*(holes - c).T) for c in HOLES], axis=0)]
    np.testing.assert_allclose(dom.normals("holes"), (centre - holes) / 0.1, atol=1e-9)


def test_boundary_parts_are_hit_in_proportion_to_their_length():
    dom = jno.domain.from_geometry(plate_with_holes(), n_interior=16, n_boundary=20000, seed=2)
    total = 4.0 + 4 * 2 * np.pi * 0.1
    for tag, length in [("holes", 0.8 * np.pi), ("outer", 4.0), ("left", 1.0), ("top", 1.0)]:
        p = length / total
        got = len(dom.points(tag)) / 20000
        assert abs(got - p) < 4 * np.sqrt(p * (1 - p) / 20000), tag
    assert len(dom.points("holes")) + len(dom.points("outer")) == 20000
    assert dom.geometry.boundary_measure == pytest.approx(total, rel=2e-2)


def test_conditions_on_the_holes_and_the_outer_edge_are_two_constraints():
    dom = jno.domain.from_geometry(plate_with_holes(), n_interior=64, n_boundary=400, seed=0)
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=8, depth=1, rngs=nnx.Rngs(0)), name="u_csg")
    u = net(*dom.variable("interior"))
    crux = jno.core([u.laplacian(*dom.variable("interior")).mse.name("pde"),
                     (net(*dom.variable("outer")) - 1.0).mse.name("outer"),
                     net(*dom.variable("holes")).mse.name("holes")])
    history = crux.solve(3)
    assert set(history.losses) >= {"pde", "outer", "holes"}
    xh, yh = dom.variable("holes")
    assert xh.pointset.n == len(dom.points("holes")) > 0


def test_unknown_tag_lists_the_available_ones():
    dom = jno.domain.from_geometry(plate_with_holes(), n_interior=16, n_boundary=64, seed=0)
    with pytest.raises(ValueError, match=r"'hole'.*available tags: .*'outer', 'holes'"):
        dom.variable("hole")


def test_signed_distance_at_hand_checked_points():
    shape = plate_with_holes()
    pts = np.array([[0.0, 0.0], [0.3, 0.3], [0.45, 0.3], [0.0, 0.5], [0.0, 0.7], [0.3, 0.25]])
    expected = [np.sqrt(0.18) - 0.1, -0.1, 0.05, 0.0, -0.2, -0.05]
    np.testing.assert_allclose(shape.signed_distance(pts), expected, atol=1e-12)
    np.testing.assert_allclose(shape.signed_distance(jnp.asarray(pts), jnp), expected,
                               atol=1e-6)
    # 3-D: a unit box minus a ball at its centre
    solid = geometry.box((0, 1), (0, 1), (0, 1)) - geometry.ball((0.5, 0.5, 0.5), 0.2)
    np.testing.assert_allclose(solid.signed_distance(np.array(
        [[0.5, 0.5, 0.5], [0.5, 0.5, 0.8], [0.5, 0.5, 0.95], [0.5, 0.5, 1.5]])),
        [-0.2, 0.1, 0.05, -0.5], atol=1e-12)


def test_ellipse_distance_matches_brute_force():
    ell = geometry.ellipse((0.2, -0.1), (1.0, 0.4))
    rng = np.random.default_rng(0)
    q = rng.uniform(-1.5, 1.5, (300, 2))
    th = np.linspace(0, 2 * np.pi, 200001)
    curve = np.stack([0.2 + np.cos(th), -0.1 + 0.4 * np.sin(th)], axis=1)
    brute = np.array([np.min(np.hypot(*(curve - p).T)) for p in q])
    got = ell.signed_distance(q)
    np.testing.assert_allclose(np.abs(got), brute, atol=1e-5)
    inside = ((q[:, 0] - 0.2) / 1.0) ** 2 + ((q[:, 1] + 0.1) / 0.4) ** 2 < 1
    np.testing.assert_array_equal(got > 0, inside)


def test_ellipse_and_ball_boundaries_are_uniform_in_length():
    ell = jno.domain.ellipse((0, 0), (2.0, 0.5), n_interior=16, n_boundary=20000, seed=0)
    b = ell.points("boundary")
    np.testing.assert_allclose((b[:, 0] / 2.0) ** 2 + (b[:, 1] / 0.5) ** 2, 1.0, atol=1e-9)
    # the flat sides (|x| < 1) are longer than the ends: their share is their arc length
    th = np.linspace(0, 2 * np.pi, 200001)
    speed = np.hypot(2.0 * np.sin(th), 0.5 * np.cos(th))
    arc = speed[:-1] * np.diff(th)
    p = arc[np.abs(2.0 * np.cos(th[:-1])) < 1].sum() / arc.sum()
    assert abs((np.abs(b[:, 0]) < 1).mean() - p) < 4 * np.sqrt(p * (1 - p) / 20000)
    ball = jno.domain.ball((0, 0, 0), 2.0, n_interior=5000, n_boundary=5000, seed=0)
    s = ball.points("boundary")
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 2.0, rtol=1e-12)
    assert abs((s[:, 2] > 1.0).mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 5000)  # a cap
    inner = ball.points("interior")
    assert abs((np.linalg.norm(inner, axis=1) < 1.0).mean() - 0.125) < 4 * np.sqrt(
        0.125 * 0.875 / 5000)


def test_three_d_boolean_boundary_and_normals():
    solid = geometry.box((0, 1), (0, 1), (0, 1)) - geometry.ball((0.5, 0.5, 0.5), 0.2)
    dom = jno.domain.from_geometry(solid, n_interior=2000, n_boundary=8000, seed=0)
    b, n = dom.points("holes"), dom.normals("holes")
    np.testing.assert_allclose(np.linalg.norm(b - 0.5, axis=1), 0.2, rtol=1e-12)
    np.testing.assert_allclose(n, -(b - 0.5) / 0.2, atol=1e-12)
    p = 4 * np.pi * 0.04 / (6 + 4 * np.pi * 0.04)
    assert abs(len(b) / 8000 - p) < 4 * np.sqrt(p * (1 - p) / 8000)
    assert np.linalg.norm(dom.points("interior") - 0.5, axis=1).min() > 0.2


def test_union_intersection_and_nested_difference():
    a, b = geometry.disk((0, 0), 1.0), geometry.disk((1, 0), 1.0)
    lens = a & b
    lens_area = 2 * np.arccos(0.5) - 0.5 * np.sqrt(3)  # two circles of radius 1, distance 1
    assert lens.measure == pytest.approx(lens_area, rel=1e-2)
    assert (a | b).measure == pytest.approx(2 * np.pi - lens_area, rel=1e-2)
    # A - (B - C): C's boundary bounds the result again, with C's own outward normal
    ring = geometry.rect((-1, 1), (-1, 1)) - (geometry.disk((0, 0), 0.8)
                                              - geometry.disk((0, 0), 0.4))
    dom = jno.domain.from_geometry(ring, n_interior=500, n_boundary=2000, seed=0)
    pts, normals = dom.points("boundary"), dom.normals("boundary")
    r = np.linalg.norm(pts, axis=1)
    inner = np.isclose(r, 0.4)
    outer_circle = np.isclose(r, 0.8)
    assert inner.any() and outer_circle.any()
    np.testing.assert_allclose(normals[inner], pts[inner] / 0.4, atol=1e-12)
    np.testing.assert_allclose(normals[outer_circle], -pts[outer_circle] / 0.8, atol=1e-12)
    inside = dom.points("interior")
    rr = np.linalg.norm(inside, axis=1)
    assert ((rr < 0.4) | (rr > 0.8)).all() and (rr < 0.4).any()


def test_exact_boundary_condition_through_the_signed_distance():
    """u = g + d * net equals g on the composite boundary, and its derivatives are those of
    the formula (the distance of a disk, r - |p|, differentiated by hand)."""
    shape = geometry.disk((0, 0), 1.0) - geometry.disk((0.2, 0.1), 0.3)
    dom = jno.domain.from_geometry(shape, n_interior=64, n_boundary=256, seed=0)
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=8, depth=2, rngs=nnx.Rngs(1)), name="u_exact_bc")
    xb, yb = dom.variable("boundary")
    g = lambda x, y: x * y + 1.0  # noqa: E731
    u_b = g(xb, yb) + dom.signed_distance(xb, yb) * net(xb, yb)
    crux = jno.core([u_b.mse])
    got, want = crux.eval([u_b, g(xb, yb)])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    # derivative of the distance near the outer circle only: d = 1 - r, d_x = -x / r
    plain = jno.domain.disk((0, 0), 1.0, n_interior=64, n_boundary=8, seed=0)
    x, y = plain.variable("interior")
    d = plain.signed_distance(x, y)
    dx, lap = jno.core([d.mse]).eval([d.d(x), d.laplacian(x, y)])
    pts = plain.points("interior")
    r = np.linalg.norm(pts, axis=1)
    np.testing.assert_allclose(np.asarray(dx)[0, :, 0], -pts[:, 0] / r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lap)[0, :, 0], -1.0 / r, rtol=1e-3, atol=1e-4)


def test_space_time_boolean_domain():
    shape = geometry.rect((0, 1), (0, 1)) - geometry.disk((0.5, 0.5), 0.2)
    dom = jno.domain.from_geometry(shape, n_interior=300, n_boundary=200, time=(0, 2), seed=0)
    pts = dom.points("interior")
    assert pts.shape == (300, 3) and shape.contains(pts[:, :2]).all()
    assert (pts[:, 2] > 0).all() and (pts[:, 2] <= 2).all()
    b = dom.points("holes")
    np.testing.assert_allclose(np.hypot(b[:, 0] - 0.5, b[:, 1] - 0.5), 0.2, rtol=1e-12)
    assert dom.points("initial")[:, 2].max() == 0.0
    grid = jno.domain.from_geometry(shape, n_interior=300, n_boundary=200, sampler="grid",
                                    time=(0, 1), seed=0)
    assert shape.contains(grid.points("interior")[:, :2]).all()
    assert np.abs(shape.signed_distance(grid.points("boundary")[:, :2])).max() < 1e-9


def test_named_geometries_keep_their_parts_apart():
    left = geometry.rect((0, 1), (0, 1)).named("a")
    right = geometry.disk((1.0, 0.5), 0.3).named("b")
    dom = jno.domain.from_geometry(left | right, n_interior=16, n_boundary=1000, seed=0)
    a, b = dom.points("a"), dom.points("b")
    assert len(a) + len(b) == 1000
    assert (np.abs(np.hypot(b[:, 0] - 1.0, b[:, 1] - 0.5) - 0.3) < 1e-9).all()
    assert (b[:, 0] > 1.0).all()  # the disk's part inside the square is not boundary


# ---------------------------------------------------------------------- bad input
def test_boolean_of_different_dimensions_is_an_error():
    with pytest.raises(ValueError, match=r"same dimension.*2-D rect.*3-D ball"):
        geometry.rect() - geometry.ball()
    with pytest.raises(TypeError, match=r"two geometries, got b = Domain"):
        geometry.rect() - jno.domain.disk(n_interior=4, n_boundary=4)


def test_a_difference_that_leaves_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"leaves nothing: none of \d+ quasi-random points"):
        geometry.rect((0, 1), (0, 1)) - geometry.rect((-1, 2), (-1, 2))
    with pytest.raises(ValueError, match=r"leaves nothing: the bounding boxes"):
        geometry.disk((0, 0), 1.0) & geometry.disk((5, 0), 1.0)


def test_a_sampler_that_cannot_find_points_says_the_acceptance_rate(monkeypatch):
    shape = geometry.rect((0, 1), (0, 1)) - geometry.disk((0.5, 0.5), 0.7)  # corners only
    monkeypatch.setattr("jno_flax.domain.MAX_ROUNDS", 1)
    monkeypatch.setattr("jno_flax.geometry._csg.MAX_ROUNDS", 1)
    true_acceptance, shape.acceptance = shape.acceptance, 1.0  # claims every candidate is
    # inside: one round cannot fill N
    with pytest.raises(ValueError, match=r"could not find 5000 interior points.*acceptance "
                                         r"rate 0\.\d+"):
        jno.domain.from_geometry(shape, n_interior=5000, n_boundary=8, seed=0)
    shape.acceptance, shape._boundary_fraction = true_acceptance, 1.0  # the same on the
    # boundary: every sample claimed kept
    with pytest.raises(ValueError, match=r"could not find 5000 boundary points.*acceptance "
                                         r"rate 0\.\d+"):
        jno.domain.from_geometry(shape, n_interior=8, n_boundary=5000, seed=0)


def test_bad_shapes_and_names():
    with pytest.raises(ValueError, match=r"`semi_axes` must be two positive numbers"):
        geometry.ellipse((0, 0), (1.0, -1.0))
    with pytest.raises(ValueError, match=r"`radius` must be a positive number"):
        geometry.ball((0, 0, 0), 0.0)
    with pytest.raises(ValueError, match=r"`center` must be 3 finite numbers"):
        geometry.ball((0, 0), 1.0)
    with pytest.raises(ValueError, match=r"`name` must be a non-empty string other than"):
        geometry.rect().named("boundary")
    with pytest.raises(TypeError, match=r"`geometry` must be a geometry"):
        jno.domain.from_geometry("square")
    dom = jno.domain.from_geometry(plate_with_holes(), n_interior=8, n_boundary=8, seed=0)
    with pytest.raises(ValueError, match=r"takes the 2 spatial coordinates"):
        dom.signed_distance(*dom.variable("interior"), 1.0)


def test_smooth_distance_vanishes_on_the_boundary_with_unit_slope_and_no_kinks():
    shape = plate_with_holes()
    dom = jno.domain.from_geometry(shape, n_interior=500, n_boundary=2000, seed=4)
    b, n = dom.points("boundary"), dom.normals("boundary")
    smooth = lambda p: shape.smooth_distance(p, jnp)  # noqa: E731
    np.testing.assert_allclose(np.asarray(smooth(jnp.asarray(b))), 0.0, atol=1e-6)  # float32
    assert (np.asarray(smooth(jnp.asarray(dom.points("interior")))) > 0).all()
    # away from the plate's corners the gradient is minus the outward normal
    grad = np.asarray(jax.vmap(jax.grad(lambda q: smooth(q[None])[0]))(jnp.asarray(b)))
    away = np.min(np.abs(np.abs(b) - 0.5), axis=1) > 0.05
    np.testing.assert_allclose(grad[away], -n[away], atol=1e-5)
    # the exact distance of the plate kinks on its diagonal; the smooth one does not
    eps = 1e-4
    across = jnp.array([[0.45, 0.45 - eps], [0.45, 0.45 + eps]])  # nearest: two sides
    g_exact = np.asarray(jax.vmap(jax.grad(lambda q: shape.signed_distance(q[None], jnp)[0]))(
        across))
    g_smooth = np.asarray(jax.vmap(jax.grad(lambda q: smooth(q[None])[0]))(across))
    assert np.abs(g_exact[0] - g_exact[1]).max() > 0.5
    assert np.abs(g_smooth[0] - g_smooth[1]).max() < 50 * eps  # a bounded second derivative
    # as an expression: u = g + d * net equals g on every tag of the boundary
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=8, depth=1, rngs=nnx.Rngs(2)), name="u_smooth")
    xb, yb = dom.variable("holes")
    u = 0.5 + dom.signed_distance(xb, yb, smooth=True) * net(xb, yb)
    np.testing.assert_allclose(np.asarray(jno.core([u.mse]).eval(u)), 0.5, atol=1e-6)


def test_hypercube_in_five_dimensions():
    dom = jno.domain.from_geometry(geometry.hypercube([(0, 1)] * 4 + [(0, 2)]),
                                   n_interior=2000, n_boundary=20000, seed=0)
    assert dom.coord_names == ("x0", "x1", "x2", "x3", "x4")
    b, n = dom.points("boundary"), dom.normals("boundary")
    assert np.abs(dom.geometry.signed_distance(b)).max() < 1e-12
    assert not dom.geometry.contains(b + 1e-3 * n).any()
    # the faces normal to x4 have area 1, the other eight area 2: shares 1/18 and 2/18
    for tag, p in [("x4_max", 1 / 18), ("x0_min", 2 / 18)]:
        assert abs(len(dom.points(tag)) / 20000 - p) < 4 * np.sqrt(p * (1 - p) / 20000), tag
    # on every face the free coordinates are uniform (mean 1/2 of their range)
    face = dom.points("x0_min")
    np.testing.assert_allclose(face[:, 1:4].mean(axis=0), 0.5, atol=4 * np.sqrt(1 / 12 / len(face)))
    assert abs(face[:, 4].mean() - 1.0) < 4 * np.sqrt(4 / 12 / len(face))
    assert dom.geometry.measure == 2.0 and len(dom.variable("interior")) == 5
    with pytest.raises(ValueError, match=r"`ranges\[1\]` must be a non-empty range"):
        geometry.hypercube([(0, 1), (1, 1)])


def test_a_set_of_points_pins_a_value():
    """A domain of fixed points joins the problem like any other: here u(0, 0) = 2 is pinned
    while u matches x + y on a square."""
    corner = jno.domain.points([[0.0, 0.0]])
    assert corner.tags == ("interior",) and corner.points().tolist() == [[0.0, 0.0]]
    square = jno.domain.rect(n_interior=64, n_boundary=8, seed=0)
    x, y = square.variable("interior")
    x0, y0 = corner.variable("interior")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=16, depth=2, rngs=nnx.Rngs(0)), name="u_pin")
    import optax
    net.optimizer(optax.adam(1e-2))
    crux = jno.core([(net(x, y) - x - y - 1.0).mse, (net(x0, y0) - 2.0).mse.name("pin")])
    before = float(np.asarray(crux.eval(net(x0, y0)))[0, 0, 0])
    crux.solve(300, logger=False, enable_progress_bar=False)
    after = float(np.asarray(crux.eval(net(x0, y0)))[0, 0, 0])
    assert abs(after - 2.0) < 0.1 < abs(before - 2.0)
    with pytest.raises(ValueError, match=r"`array` must be an \(N, D\) array"):
        jno.domain.points([1.0, 2.0])
    with pytest.raises(ValueError, match=r"`coord_names` must name each of the 2 columns"):
        jno.domain.points([[1.0, 2.0]], coord_names=("x",))
    with pytest.raises(ValueError, match=r"have no region"):
        corner.geometry.signed_distance(np.zeros((1, 2)))


@pytest.mark.parametrize("strategy", ["uniform", "rad"])
def test_resampling_in_the_step_stays_in_a_boolean_region(strategy):
    """ResamplePoints on the plate with holes: the new points are drawn by rejection inside
    the compiled step (the geometry's JAX contains), all inside the region."""
    from jno_flax.callbacks import ResamplePoints
    from jno_flax.trainers import Trainer
    shape = plate_with_holes()
    dom = jno.domain.from_geometry(shape, n_interior=128, n_boundary=64, seed=0)
    x, y = dom.variable("interior")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=8, depth=1, rngs=nnx.Rngs(0)), name="u_rs")
    residual = net(x, y).laplacian(x, y) + 1.0
    crux = jno.core([residual.mse, net(*dom.variable("boundary")).mse])
    cb = ResamplePoints(residual if strategy == "rad" else x, every_n_train_steps=3,
                        strategy=strategy)
    Trainer(max_steps=7, callbacks=[cb], logger=False, enable_progress_bar=False,
            enable_model_summary=False).fit(crux)
    points = np.asarray(crux.state.extras["points_0"])
    assert points.shape == (128, 2) and shape.contains(points).all()
    assert not np.isin(points, dom.points("interior").astype(points.dtype)).all(axis=1).all()


# ---------------------------------------------------------------------- shared edges, outlines
@pytest.mark.parametrize("build, length, interface", [
    (lambda: geometry.rect((0, 1), (0, 1)) & geometry.rect((0, 2), (0, 1)), 4.0, None),
    (lambda: geometry.rect((0, 2), (0, 1)) | geometry.rect((0, 1), (0, 2)), 8.0,
     lambda b: np.isclose(b[:, 1], 1.0) & (b[:, 0] < 1 - 1e-9)),
    (lambda: geometry.rect((0, 1), (0, 1)) | geometry.rect((1, 2), (0, 1)), 6.0,
     lambda b: np.isclose(b[:, 0], 1.0) & (b[:, 1] > 1e-9) & (b[:, 1] < 1 - 1e-9)),
    (lambda: geometry.rect((0, 2), (0, 1)) - geometry.rect((1, 2), (0, 1)), 4.0, None),
    (lambda: geometry.rect((0, 1), (0, 1)) - geometry.rect((1, 2), (0, 1)), 4.0, None),
], ids=["intersection", "lshape_union", "side_by_side", "difference_inside", "difference_beside"])
def test_operands_that_share_an_edge_keep_it_once(build, length, interface):
    """Every case is a rectangle or the L of area 3: the boundary has its true length, its
    points lie on it with outward normals, spread evenly, and no interface between the
    operands is boundary."""
    shape = build()
    np.testing.assert_allclose(shape.boundary_measure, length, rtol=0.02)
    dom = jno.domain.from_geometry(shape, n_interior=10, n_boundary=4000, seed=0)
    b, n = dom.points("boundary"), dom.normals("boundary")
    np.testing.assert_allclose(shape.signed_distance(b), 0.0, atol=1e-12)
    assert not shape.contains(b + 1e-6 * n).any() and shape.contains(b - 1e-6 * n).all()
    if interface is not None:
        assert not interface(b).any()
    # uniform in length: each unit of boundary gets its share of the points
    for x in (0.25, 0.75):
        bottom = np.mean(np.isclose(b[:, 1], 0.0) & (np.abs(b[:, 0] - x) < 0.25))
        np.testing.assert_allclose(bottom, 0.5 / length, rtol=0.2)


@pytest.mark.parametrize("vertices, message", [
    ([(0, 0), (1, 1), (1, 0), (0, 1)], r"outline crosses or touches itself: side 0 \(\[0.0, "
                                       r"0.0\] to \[1.0, 1.0\]\) meets side 2"),
    ([(0, 0), (2, 0), (2, 2), (1, -1), (0, 2)], r"outline crosses or touches itself"),
    ([(0, 0), (2, 0), (2, 2), (1, 0), (0, 2)], r"outline crosses or touches itself"),
    ([(0, 0), (1, 0), (2, 0)], r"enclose no area \(collinear points\)"),
    ([(0, 0), (1, 0), (1, 0), (1, 1)], r"`vertices` 1 and 2 are the same point \[1.0, 0.0\]"),
], ids=["bow_tie", "asymmetric_crossing", "touching", "collinear", "repeated"])
def test_polygons_that_bound_no_simple_region_are_refused(vertices, message):
    with pytest.raises(ValueError, match=message):
        geometry.polygon(vertices)


def test_a_closed_ring_is_the_polygon():
    ring = geometry.polygon([(0, 0), (2, 0), (2, 1), (0, 1), (0, 0)])   # shapely's spelling
    plain = geometry.polygon([(0, 0), (2, 0), (2, 1), (0, 1)])
    assert ring.describe() == plain.describe() == "polygon with 4 vertices"
    np.testing.assert_array_equal(ring.normals, plain.normals)
    assert np.isfinite(ring.normals).all() and ring.area == 2.0
    np.testing.assert_allclose(ring.signed_distance(np.array([[1.0, 0.5]])), [0.5])


@pytest.mark.parametrize("shape", [geometry.lshape(),
                                   geometry.polygon([(0, 0), (1, 0), (1, 1), (0.5, 0.4),
                                                     (0, 1)])], ids=["lshape", "arrow"])
def test_smooth_distance_of_polygons_has_no_kinks(shape):
    dom = jno.domain.from_geometry(shape, n_interior=500, n_boundary=2000, seed=4)
    b, n = dom.points("boundary"), dom.normals("boundary")
    smooth = lambda p: shape.smooth_distance(p, jnp)  # noqa: E731
    np.testing.assert_allclose(np.asarray(smooth(jnp.asarray(b))), 0.0, atol=1e-6)
    assert (np.asarray(smooth(jnp.asarray(dom.points("interior")))) > 0).all()
    grad = jax.vmap(jax.grad(lambda q: smooth(q[None])[0]))
    inside = jnp.asarray(b - 1e-4 * n)
    away = np.min(np.linalg.norm(b[:, None] - shape.vertices[None], axis=2), axis=1) > 0.1
    np.testing.assert_allclose(np.asarray(grad(inside))[away], -n[away], atol=1e-2)
    # on the bisector of the lower-left corner the exact distance's nearest side changes
    lo = shape.vertices.min(axis=0)
    across = jnp.asarray(lo + 0.1 * np.array([[1.0, 1.0 + 1e-3], [1.0, 1.0 - 1e-3]]))
    exact = jax.vmap(jax.grad(lambda q: shape.signed_distance(q[None], jnp)[0]))
    jump = lambda g: np.abs(np.diff(np.asarray(g(across)), axis=0)).max()  # noqa: E731
    assert jump(exact) > 0.5 and jump(grad) < 0.01
