"""Collocation points that move: ResamplePoints (uniform, RAD, RAR-D) and mini-batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax._sampling import rad_probabilities, uniform_points
from jno_flax.callbacks import ModelCheckpoint, ResamplePoints
from jno_flax.trainers import Trainer, TrainState

QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _lshape_problem(n=64):
    """A Poisson-like problem on the (non-convex) L-shape, with a tracker of mean(x)."""
    dom = jno.domain.lshape(n_interior=n, n_boundary=32, seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=8, depth=2, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(1e-2))
    residual = net(x, y).laplacian(x, y) + 1.0
    crux = jno.core([residual.mse.name("pde"), net(xb, yb).mse.name("bc"),
                     jnn.tracker(jnn.mean(x), interval=1, name="mean_x")])
    return dom, x, residual, crux


# ---------------------------------------------------------------------- densities and draws
def test_rad_probabilities_follow_the_formula():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 1))
    for k, c in [(1.0, 1.0), (2.0, 0.0), (0.5, 3.0)]:
        e = np.abs(r[:, 0]) ** k
        ref = e / e.mean() + c
        np.testing.assert_allclose(rad_probabilities(jnp.asarray(r), k, c), ref / ref.sum(),
                                   rtol=1e-5)
    v = rng.normal(size=(20, 3))  # a vector residual: its Euclidean norm per point
    e = np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(rad_probabilities(jnp.asarray(v), 1.0, 1.0),
                               (e / e.mean() + 1) / (e / e.mean() + 1).sum(), rtol=1e-5)
    np.testing.assert_allclose(rad_probabilities(jnp.zeros((4, 1)), 1.0, 0.0), 0.25)


@pytest.mark.parametrize("k, c, mean", [(1.0, 0.0, 2 / 3), (2.0, 0.0, 3 / 4),
                                        (1.0, 1.0, 7 / 12)])
def test_rad_draws_follow_the_density(k, c, mean):
    """One point drawn from a pool by |r| = 2x on (0, 1): density ∝ (2x)^k / E + c, whose
    mean is known in closed form; 4000 independent draws land within 4 standard errors."""
    dom = jno.domain.interval(0, 1, n_interior=1, n_boundary=2, seed=0)
    (x,) = dom.variable("interior")
    net = jno.nn.wrap(jno.nn.MLP(1, 1, hidden=2, depth=1, rngs=nnx.Rngs(0)), name="u")
    residual = 2.0 * x
    crux = jno.core([jnn.mean(net(x) ** 2) + jnn.mean(residual)])
    cb = ResamplePoints(residual, every_n_train_steps=1, strategy="rad", pool=400, k=k, c=c)
    cb.setup(None, crux, "fit")
    (update,) = cb.state_updates(None, crux)
    batch = crux.registry.batch()
    params = crux.registry.params()

    def draw(step):
        state = TrainState(step=step, params=params, opt_state={}, rng=jax.random.PRNGKey(1))
        return update.update(state, batch)[0, 0]
    picked = np.asarray(jax.jit(jax.vmap(draw))(jnp.arange(4000)))
    assert np.all((picked > 0) & (picked < 1))
    assert abs(picked.mean() - mean) < 4 * picked.std() / np.sqrt(len(picked))


def test_uniform_draws_lie_in_a_non_convex_region_and_in_time():
    dom = jno.domain.lshape(n_interior=10, n_boundary=8, seed=0)
    pts = np.asarray(jax.jit(lambda k: uniform_points(dom.pointset("interior"), k, 5000))(
        jax.random.PRNGKey(0)))
    assert pts.shape == (5000, 2) and dom.geometry.contains(pts).all()
    # the three quadrants of the L are hit evenly (the rejection keeps the law uniform)
    quadrants = np.array([np.mean((pts[:, 0] < 0) & (pts[:, 1] < 0)),
                          np.mean((pts[:, 0] > 0) & (pts[:, 1] < 0)),
                          np.mean((pts[:, 0] < 0) & (pts[:, 1] > 0))])
    np.testing.assert_allclose(quadrants, 1 / 3, atol=0.03)
    st = jno.domain.disk(n_interior=10, n_boundary=8, time=(0.5, 2.0), seed=0)
    inner = np.asarray(uniform_points(st.pointset("interior"), jax.random.PRNGKey(1), 500))
    assert st.geometry.contains(inner[:, :2]).all()
    assert inner[:, 2].min() >= 0.5 and inner[:, 2].max() <= 2.0 and inner[:, 2].std() > 0.3
    initial = np.asarray(uniform_points(st.pointset("initial"), jax.random.PRNGKey(2), 100))
    assert np.all(initial[:, 2] == 0.5) and st.geometry.contains(initial[:, :2]).all()


def _space_time(kind):
    from jno_flax import geometry as geo
    shapes = {"lshape": geo.lshape(),
              "polygon": geo.polygon([(0, 0), (1, 0), (1, 1), (0.5, 0.4), (0, 1)]),
              "csg": geo.rect((0, 1), (0, 1)) - geo.disk((0.5, 0.5), 0.2)}
    return jno.domain.from_geometry(shapes[kind], n_interior=64, n_boundary=16,
                                    time=(0.5, 2.0), seed=0)


@pytest.mark.parametrize("strategy, tag", [("uniform", "interior"), ("rad", "interior"),
                                           ("uniform", "initial")],
                         ids=["uniform", "rad", "initial"])
@pytest.mark.parametrize("kind", ["lshape", "polygon", "csg"])
def test_resampling_space_time_rejection_geometries(kind, strategy, tag):
    """The containment test of a rejection geometry sees the spatial coordinates, not the
    time column."""
    dom = _space_time(kind)
    coords = dom.variable(tag)
    net = jno.nn.wrap(jno.nn.MLP(3, 1, hidden=8, depth=1, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(1e-3))
    u = net(*coords)
    crux = jno.core([u.mse])
    Trainer(max_steps=5, chunk_size=2, callbacks=[ResamplePoints(u, 2, strategy=strategy)],
            enable_checkpointing=False, **QUIET).fit(crux)
    pts = np.asarray(crux.state.extras[crux.registry.key(coords[0].pointset)])
    assert pts.shape == (dom.pointset(tag).n, 3)
    assert not np.array_equal(pts, dom.points(tag))          # new points
    assert dom.geometry.contains(pts[:, :2]).all()
    if tag == "initial":
        assert np.all(pts[:, 2] == 0.5)
    else:
        assert pts[:, 2].min() >= 0.5 and pts[:, 2].max() <= 2.0


def _far_polygon_problem(n=64):
    """A polygon 3e7 from the origin: in float32 its bounding box's points all round onto a
    few values that the containment test rejects."""
    c = 3e7
    geo = jno.geometry.polygon([(c, c), (c + 1, c), (c + 1, c + 1), (c + 0.5, c + 0.4),
                                (c, c + 1)])
    dom = jno.domain.from_geometry(geo, n_interior=n, n_boundary=16, seed=0)
    x, y = dom.variable("interior")
    net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=8, depth=1, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.adam(1e-3))
    return dom, net(x, y)


def test_the_in_step_rejection_sampler_is_bounded_and_refused_on_the_host():
    dom, u = _far_polygon_problem()
    pts = np.asarray(jax.jit(lambda k: uniform_points(dom.pointset("interior"), k, 64,
                                                      jnp.float32))(jax.random.PRNGKey(0)))
    assert pts.shape == (64, 2) and np.isnan(pts).all()        # returned, nothing found
    trainer = Trainer(max_steps=6, callbacks=[ResamplePoints(u, 2)],
                      enable_checkpointing=False, **QUIET)
    with pytest.raises(RuntimeError, match=r"ResamplePoints: the rejection sampler found only 0 "
                                           r"of 64 new points of 'interior' of polygon.*"
                                           r"float32.*recentre.*float64"):
        trainer.fit(jno.core([u.mse]))
    assert trainer.global_step == 0       # refused before the first step


# ---------------------------------------------------------------------- in training
@pytest.mark.parametrize("strategy", ["uniform", "rad", "rar-d"])
def test_resampled_points_lie_in_the_domain_and_reach_trackers_and_eval(strategy):
    dom, x, residual, crux = _lshape_problem()
    target = x if strategy == "uniform" else residual
    cb = ResamplePoints(target, every_n_train_steps=10, strategy=strategy, n_add=(
        8 if strategy == "rar-d" else None))
    h = Trainer(max_steps=25, callbacks=[cb], **QUIET).fit(crux)
    points = np.asarray(crux.state.extras["points_0"])
    stored = dom.points("interior").astype(points.dtype)
    assert points.shape == ((64 + 2 * 8) if strategy == "rar-d" else 64, 2)
    assert dom.geometry.contains(points).all()
    if strategy == "rar-d":  # the stored points stay, the drawn ones are added
        np.testing.assert_array_equal(points[:64], stored)
    else:
        assert not np.isin(points, stored).all(axis=1).any()
    # the tracker changes exactly at the resamples and sees the points of the step
    mean_x = h.trackers["mean_x"].values
    changed = np.flatnonzero(np.diff(mean_x)) + 1
    np.testing.assert_array_equal(changed, [10, 20])
    np.testing.assert_allclose(mean_x[-1], points[:, 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(crux.eval(jnn.mean(x)), points[:, 0].mean(), rtol=1e-6)
    assert crux.eval(x).shape == (1, len(points), 1)


@pytest.mark.parametrize("strategy", ["rad", pytest.param("rar-d", marks=pytest.mark.slow)])
def test_resume_across_a_resample_is_bit_identical(tmp_path, strategy):
    def fit(steps, dirpath, ckpt_path=None):
        _, _, residual, crux = _lshape_problem()
        cbs = [ResamplePoints(residual, every_n_train_steps=7, strategy=strategy),
               ModelCheckpoint(dirpath, every_n_train_steps=10, save_top_k=-1)]
        h = Trainer(max_steps=steps, callbacks=cbs, **QUIET).fit(crux, ckpt_path=ckpt_path)
        return crux, h
    full, h_full = fit(30, tmp_path / strategy)  # saves at steps 10, 20 and 30
    # the continued run writes to its own directory: the first run's 30 stays
    resumed, h = fit(30, tmp_path / "continued", ckpt_path=str(tmp_path / strategy / "20"))
    np.testing.assert_array_equal(h.total_loss, h_full.total_loss)
    _same(resumed.state, full.state)


def test_resample_errors():
    dom, x, residual, crux = _lshape_problem()
    xb, _ = dom.variable("boundary")
    with pytest.raises(TypeError, match="residual field for strategy='rad'"):
        ResamplePoints(x, 10, strategy="rad")
    with pytest.raises(ValueError, match=r"`pool` must be at least the number of points \(64"):
        ResamplePoints(residual, 10, strategy="rad", pool=10)
    with pytest.raises(ValueError, match="`k` must be a non-negative number, got -1"):
        ResamplePoints(residual, 10, strategy="rad", k=-1)
    with pytest.raises(ValueError, match="`c` must be a non-negative number, got -0.5"):
        ResamplePoints(residual, 10, strategy="rad", c=-0.5)
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        ResamplePoints(x, 10, strategy="random")
    with pytest.raises(ValueError, match="`every_n_train_steps` must be a positive integer"):
        ResamplePoints(x, 0)
    with pytest.raises(ValueError, match="tags \\['interior', 'initial'\\]"):
        ResamplePoints(xb, 10)
    with pytest.raises(TypeError, match="`target` must be a field"):
        ResamplePoints(jnn.mean(x), 10)
    with pytest.raises(ValueError, match="`n_add` is for strategy='rar-d'"):
        ResamplePoints(residual, 10, strategy="rad", n_add=3)
    twice = [ResamplePoints(x, 10), ResamplePoints(residual, 5, strategy="rad")]
    with pytest.raises(ValueError, match="one ResamplePoints per point set"):
        Trainer(max_steps=5, callbacks=twice, **QUIET).fit(crux)


def test_resampling_refuses_per_point_data_and_unused_points():
    dom, x, residual, _ = _lshape_problem()
    y = dom.variable("interior")[1]
    data = np.linspace(0, 1, 64)[:, None]
    crux = jno.core([jnn.mean((x - data) ** 2)])
    with pytest.raises(ValueError, match="per-point data arrays"):
        Trainer(max_steps=5, callbacks=[ResamplePoints(y, 10)], **QUIET).fit(crux)
    other = jno.domain.rect(n_interior=8, n_boundary=8)
    with pytest.raises(ValueError, match="not used by this problem"):
        Trainer(max_steps=5, callbacks=[ResamplePoints(other.variable()[0], 10)],
                **QUIET).fit(jno.core([residual.mse]))


# ---------------------------------------------------------------------- mini-batches
def _minibatch_problem():
    dom = jno.domain.interval(0, 1, n_interior=200, n_boundary=2, seed=0)
    (x,) = dom.variable("interior")
    net = jno.nn.wrap(jno.nn.MLP(1, 1, hidden=2, depth=1, rngs=nnx.Rngs(0)), name="u")
    net.optimizer(optax.sgd(0.0))  # a fixed function: the loss only sees the points
    f = jnn.sin(3 * x) + 0.0 * net(x)
    crux = jno.core([(f ** 2).mse.name("f2"), jnn.tracker(jnn.mean(x), name="mean_x")])
    return dom, x, f, crux


def test_minibatch_means_are_unbiased_and_trackers_see_all_points():
    dom, x, f, crux = _minibatch_problem()
    h = Trainer(max_steps=600, batch_size={x: 20}, **QUIET).fit(crux)
    full = float(np.mean(np.sin(3 * dom.points("interior")[:, 0]) ** 4))
    values = h.losses["f2"]
    assert len(np.unique(values)) > 550  # a new subset every step
    # without replacement from 200 points: the variance of one subset mean is known exactly
    per_point = np.sin(3 * dom.points("interior")[:, 0]) ** 4
    se = np.sqrt(per_point.var() / 20 * (200 - 20) / (200 - 1) / len(values))
    assert abs(values.mean() - full) < 4 * se
    np.testing.assert_allclose(h.trackers["mean_x"].values,
                               dom.points("interior")[:, 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(crux.eval(jnn.mean(x)), dom.points("interior")[:, 0].mean(),
                               rtol=1e-6)


def test_minibatch_int_applies_to_larger_point_sets_and_resumes(tmp_path):
    def fit(steps, dirpath, ckpt_path=None):
        from tests.conftest import TinyProblem
        t = TinyProblem()
        cbs = [ModelCheckpoint(dirpath, every_n_train_steps=10, save_top_k=-1)]
        trainer = Trainer(max_steps=steps, batch_size=40, callbacks=cbs, **QUIET)
        h = trainer.fit(t.core(), ckpt_path=ckpt_path)
        assert trainer.batch_sizes == {"points_0": 40}  # 64 interior points; 32 on the boundary
        return h
    h_full = fit(20, tmp_path / "first")  # saves at steps 10 and 20
    h = fit(20, tmp_path / "continued", ckpt_path=str(tmp_path / "first" / "10"))
    np.testing.assert_array_equal(h.total_loss, h_full.total_loss)


def test_batch_size_errors():
    dom, x, f, crux = _minibatch_problem()
    with pytest.raises(ValueError, match=r"`batch_size\[x\]` is 500, more than the 200 points"):
        Trainer(max_steps=5, batch_size={x: 500}, **QUIET).fit(crux)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        Trainer(max_steps=5, batch_size=0)
    with pytest.raises(TypeError, match="`batch_size` must be None, a positive int"):
        Trainer(max_steps=5, batch_size=0.5)
    with pytest.raises(TypeError, match="`batch_size` keys must be variables"):
        Trainer(max_steps=5, batch_size={"interior": 10})


def test_rad_probabilities_do_not_overflow_for_large_k():
    r = np.array([0.5, 2.0, 40.0, 41.0])
    k = 40.0                                  # 41**40 overflows float32
    ref = (r / r.max()) ** k                  # exact in float64: the formula's ratios
    ref = ref / ref.mean() + 1.0
    p = np.asarray(rad_probabilities(jnp.asarray(r, jnp.float32), k, 1.0))
    assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(p, ref / ref.sum(), rtol=1e-4)
    assert p[3] > 3 * p[0]                    # not silently uniform


@pytest.mark.parametrize("arg", ["k", "c"])
def test_rad_parameters_must_be_finite(arg):
    _, _, residual, _ = _lshape_problem()
    with pytest.raises(ValueError, match=rf"`{arg}` must be a non-negative number, got inf; "
                                         r"accepted: finite values >= 0"):
        ResamplePoints(residual, 10, strategy="rad", **{arg: float("inf")})


# ---------------------------------------------------------------------- strategies as objects
def _draw(current, residual, seed=0):
    from jno_flax.callbacks import Draw
    dom = jno.domain.lshape(n_interior=8, n_boundary=8, seed=0)
    ps = dom.pointset("interior")
    return Draw(jax.random.PRNGKey(seed), current,
                lambda k, n: uniform_points(ps, k, n, current.dtype), residual), dom


def test_r3_retains_the_points_above_the_mean_residual_and_replaces_the_others():
    from jno_flax.callbacks import R3
    current = jnp.asarray(np.random.default_rng(0).uniform(-1, 0, (200, 2)), jnp.float32)
    d, dom = _draw(current, lambda p: p[:, :1] ** 2)   # |r| = x^2: large near x = -1
    new = np.asarray(R3().draw(d))
    size = np.asarray(current[:, 0]) ** 2
    keep = size > size.mean()
    assert new.shape == current.shape and 0 < keep.sum() < len(keep)
    np.testing.assert_array_equal(new[keep], np.asarray(current)[keep])
    assert not np.isin(new[~keep], np.asarray(current)).all(axis=1).any()
    assert dom.geometry.contains(new[~keep]).all()


def test_a_strategy_object_equals_its_shorthand_and_a_new_strategy_needs_no_library_edit():
    from jno_flax.callbacks import RAD, ResamplingStrategy

    class KeepHalf(ResamplingStrategy):   # a researcher's strategy, written outside
        name = "keep-half"

        def draw(self, d):
            fresh = d.uniform(d.key, d.n)
            return jnp.where(jnp.arange(d.n)[:, None] < d.n // 2, d.current, fresh)

    results = {}
    for label, strategy in (("string", "rad"), ("object", RAD(k=1.0, c=1.0)),
                            ("custom", KeepHalf())):
        dom, x, residual, crux = _lshape_problem()
        target = x if label == "custom" else residual
        Trainer(max_steps=12, callbacks=[ResamplePoints(target, 5, strategy=strategy)],
                **QUIET).fit(crux)
        results[label] = np.asarray(crux.state.extras["points_0"])
    np.testing.assert_array_equal(results["string"], results["object"])
    stored = dom.points("interior").astype(results["custom"].dtype)
    np.testing.assert_array_equal(results["custom"][:32], stored[:32])
    assert not np.isin(results["custom"][32:], stored).all(axis=1).any()
    assert dom.geometry.contains(results["custom"]).all()


def test_strategy_settings_go_to_the_strategy_object():
    from jno_flax.callbacks import R3, RAD, RARD
    _, x, residual, _ = _lshape_problem()
    with pytest.raises(ValueError, match=r"\['pool'\] are settings of the string strategies"):
        ResamplePoints(residual, 10, strategy=RAD(), pool=100)
    with pytest.raises(ValueError, match=r"\['k'\] are settings of strategy='rad' and 'rar-d', "
                                         "got them with strategy='uniform'"):
        ResamplePoints(x, 10, strategy="uniform", k=2.0)
    with pytest.raises(TypeError, match="residual field for strategy='r3'"):
        ResamplePoints(x, 10, strategy=R3())
    with pytest.raises(ValueError, match=r"`pool` must be at least the number of points \(64"):
        ResamplePoints(residual, 10, strategy=RARD(pool=8))
    shared = RAD()   # one object for two point sets of different sizes
    a = ResamplePoints(residual, 10, strategy=shared)
    assert a.strategy.pool == 640 and shared.pool is None


def test_a_strategy_that_returns_the_wrong_number_of_points_is_named():
    from jno_flax.callbacks import ResamplingStrategy

    class Half(ResamplingStrategy):
        def draw(self, d):
            return d.current[: d.n // 2]

    _, x, _, crux = _lshape_problem()
    with pytest.raises(ValueError, match=r"Half\(\).draw returned points of shape \(32, 2\) "
                                         r"for .*; expected \(64, 2\)"):
        Trainer(max_steps=12, callbacks=[ResamplePoints(x, 5, strategy=Half())],
                **QUIET).fit(crux)
