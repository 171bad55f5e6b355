"""Operator learning: families of input functions (B > 1), DeepONet and FNO."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import ModelCheckpoint
from jno_flax.trainers import Trainer


def _deeponet(n_sensors: int, n_coords: int = 1, p: int = 8, seed: int = 0):
    branch = jno.nn.MLP(n_sensors, p, hidden=16, depth=2, rngs=nnx.Rngs(seed))
    trunk = jno.nn.MLP(n_coords, p, hidden=16, depth=2, rngs=nnx.Rngs(seed + 1))
    return jno.nn.DeepONet(branch, trunk, p, n_sensors=n_sensors, n_coords=n_coords)


def _problem(n_functions=6, n_sensors=12, n_points=9):
    f = jno.functions.grf(n_functions, n_sensors=n_sensors, length_scale=0.3, seed=0)
    dom = jno.domain.interval(0, 1, n_interior=n_points, n_boundary=2, sampler="grid")
    x, = dom.variable("interior")
    net = jno.nn.wrap(_deeponet(n_sensors), name="G")
    return f, x, net


class ConstantBranch(nnx.Module):
    """A branch that ignores its input: trained coefficients only."""

    def __init__(self, p: int):
        self.c = nnx.Param(jnp.linspace(-1.0, 1.0, p))

    def __call__(self, f):
        return self.c[...]


class TrunkOnly(nnx.Module):
    """The plain network the DeepONet above must equal: ``c · trunk(x) + β``."""

    def __init__(self, deeponet):
        self.deeponet = deeponet

    def __call__(self, x):
        d = self.deeponet
        return jnp.sum(d.branch.c[...] * d.trunk(x), keepdims=True) + d.bias[...]


def test_fields_of_a_family_evaluate_per_instance_and_point():
    f, x, net = _problem()
    u = net(f, x)
    assert u.value_shape == (6, 9, 1)
    crux = jno.core([u.mse])
    value = np.asarray(crux.eval(u))
    module = net.module
    xs = np.asarray(crux.eval(x))[0, :, 0]
    for b in (0, 3, 5):
        for n in (0, 4, 8):
            expect = module(jnp.asarray(f.values[b], jnp.float32), jnp.asarray([xs[n]]))
            np.testing.assert_allclose(value[b, n], expect, rtol=1e-5, atol=1e-6)
    # .mse averages over instances and points
    np.testing.assert_allclose(crux.eval(u.mse), np.mean(value ** 2), rtol=1e-5)


def test_deeponet_with_a_branch_that_ignores_its_input_is_a_plain_trunk_network():
    f, x, _ = _problem()
    trunk = jno.nn.MLP(1, 8, hidden=16, depth=2, rngs=nnx.Rngs(1))
    deeponet = jno.nn.DeepONet(ConstantBranch(8), trunk, 8, n_sensors=12, n_coords=1)
    deeponet.bias[...] = jnp.asarray([0.25])
    u = jno.nn.wrap(deeponet, name="G")(f, x)
    plain = jno.nn.wrap(TrunkOnly(deeponet), name="plain")(x)
    crux = jno.core([u.mse, plain.mse])
    per_instance, single = crux.eval([u, plain])
    assert single.shape == (1, 9, 1) and per_instance.shape == (6, 9, 1)
    np.testing.assert_allclose(per_instance, np.broadcast_to(single, (6, 9, 1)), rtol=1e-6)


def test_deeponet_with_several_outputs_pairs_each_with_its_own_basis():
    branch = jno.nn.MLP(4, 6, hidden=8, depth=1, rngs=nnx.Rngs(0))
    trunk = jno.nn.MLP(2, 6, hidden=8, depth=1, rngs=nnx.Rngs(1))
    net = jno.nn.DeepONet(branch, trunk, 3, n_sensors=4, n_coords=2, n_outputs=2)
    net.bias[...] = jnp.asarray([0.5, -1.0])
    f, y = jnp.arange(4.0) / 4, jnp.asarray([0.3, 0.7])
    b, t = branch(f).reshape(2, 3), trunk(y).reshape(2, 3)
    out = net(f, y[:1], y[1:])                          # coordinates given apart
    np.testing.assert_allclose(out, jnp.sum(b * t, axis=1) + net.bias[...], rtol=1e-6)
    np.testing.assert_allclose(net(jnp.concatenate([f, y])), out, rtol=1e-6)
    bad = jno.nn.DeepONet(branch, jno.nn.MLP(2, 5, hidden=8, depth=1, rngs=nnx.Rngs(2)), 3,
                          n_sensors=4, n_coords=2, n_outputs=2)
    with pytest.raises(ValueError, match=r"trunk must return p · n_outputs = 6 values, got"):
        bad(f, y)


def test_per_instance_derivatives_are_exact_for_an_analytic_operator():
    params = np.array([[1.0, 0.5], [-2.0, 1.5], [0.5, 3.0]])
    fam = jno.functions.parameters(params)
    a, w = fam[0], fam[1]                      # per-instance scalars
    dom = jno.domain.interval(0, 1, n_interior=7, n_boundary=2, sampler="grid")
    x, = dom.variable("interior")
    u = a * jnn.sin(w * x)
    crux = jno.core([u.mse])
    xs = np.asarray(crux.eval(x))
    A, W = params[:, 0, None, None], params[:, 1, None, None]
    vals, d1, d2 = crux.eval([u, u.d(x), u.d2(x)])
    np.testing.assert_allclose(vals, A * np.sin(W * xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d1, A * W * np.cos(W * xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d2, -A * W ** 2 * np.sin(W * xs), rtol=1e-5, atol=1e-5)


def test_parameter_jacobian_with_several_instances_matches_finite_differences():
    jax.config.update("jax_enable_x64", True)
    try:
        f, x, net = _problem(n_functions=3, n_sensors=5, n_points=4)
        u = net(f, x)
        crux = jno.core([u.mse])
        J = np.asarray(crux.eval(u.grad(net)))
        P = net.num_params
        assert J.shape == (3, 4, P)
        graphdef, params, rest = net.split()
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        xs = jnp.asarray(crux.eval(x))[0]
        F = jnp.asarray(f.values)

        def field(theta):
            m = nnx.merge(graphdef, unravel(theta), rest)
            return jax.vmap(lambda fb: jax.vmap(lambda xn: m(fb, xn))(xs))(F)[..., 0]

        eps = 1e-6
        for k in np.random.default_rng(0).choice(P, 12, replace=False):
            e = jnp.zeros(P).at[k].set(eps)
            fd = (field(flat + e) - field(flat - e)) / (2 * eps)
            np.testing.assert_allclose(J[..., k], fd, rtol=1e-6, atol=1e-8)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_ntk_across_instances_is_symmetric_positive_semidefinite():
    f, x, net = _problem(n_functions=3, n_sensors=5, n_points=4)
    J = jnn.reshape(net(f, x).grad(net), (-1, net.num_params))
    K = np.asarray(jno.core([net(f, x).mse]).eval(J @ J.T))
    assert K.shape == (12, 12)
    np.testing.assert_allclose(K, K.T, rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(K.astype(np.float64)).min() > -1e-4 * np.abs(K).max()


def test_masked_jacobian_ntk_callback_and_fno_jacobian_with_several_instances():
    f, x, net = _problem(n_functions=3, n_sensors=5, n_points=4)
    u = net(f, x)
    crux = jno.core([(u.d(x) - f(x)).mse.name("pde")])
    full = np.asarray(crux.eval(u.grad(net)))
    trunk = np.asarray(crux.eval(u.grad(net.mask(nnx.PathContains("trunk")))))
    paths = [p for p, _ in nnx.to_flat_state(net.params())]
    sizes = [leaf.size for leaf in jax.tree.leaves(net.params())]
    cols = np.concatenate([np.full(n, "trunk" in p) for p, n in zip(paths, sizes)])
    assert trunk.shape == (3, 4, cols.sum())
    np.testing.assert_allclose(trunk, full[..., cols], rtol=1e-6)
    from jno_flax.callbacks import NTKDiagnostics
    history = Trainer(max_steps=3, callbacks=[NTKDiagnostics(interval=1, top_k=3)], logger=False,
                      enable_progress_bar=False, enable_model_summary=False).fit(crux)
    trace = history.trackers["ntk/pde/trace"].values
    assert trace.shape == (3,) and np.all(trace > 0)
    fno = jno.nn.wrap(jno.nn.FNO(1, 1, grid=(5,), modes=2, width=4, depth=1,
                                 rngs=nnx.Rngs(0)), name="fno")
    J = np.asarray(jno.core([fno(f).mse]).eval(fno(f).grad(fno)))
    assert J.shape == (3, 5, fno.num_params) and np.abs(J).max() > 0


def test_grf_samples_have_the_kernel_covariance():
    xs = np.linspace(0, 1, 6)
    f = jno.functions.grf(20_000, n_sensors=6, length_scale=0.3, variance=2.0, seed=3)
    cov = np.cov(f.values, rowvar=False)
    kernel = 2.0 * np.exp(-(xs[:, None] - xs[None, :]) ** 2 / (2 * 0.3 ** 2))
    # the standard error of a sample covariance is sqrt((k_ii k_jj + k_ij²) / n) <= 0.02 here
    np.testing.assert_allclose(cov, kernel, atol=5 * np.sqrt(2 * 4.0 / 20_000))
    assert np.abs(f.values.mean(axis=0)).max() < 5 * np.sqrt(2.0 / 20_000)


def test_a_resampled_family_draws_new_functions_at_every_step():
    f = jno.functions.grf(40, n_sensors=8, length_scale=0.3, seed=0, resample=True)
    dom = jno.domain.interval(0, 1, n_interior=5, n_boundary=2, sampler="grid")
    x, = dom.variable("interior")
    net = jno.nn.wrap(_deeponet(8), name="G")
    square = jnn.square(f).mean
    crux = jno.core([net(f, x).mse.name("fit"), square.tracker(interval=1, name="f2")])
    history = Trainer(max_steps=60, logger=False, enable_progress_bar=False,
                      enable_model_summary=False).fit(crux)
    per_step = history.trackers["f2"].values
    assert len(np.unique(per_step)) == 60                  # new functions at every step
    # E[f²] = variance 1; each step's mean over 40 x 8 correlated values scatters ~0.15
    assert abs(per_step.mean() - 1.0) < 0.1
    np.testing.assert_allclose(crux.eval(square), np.mean(f.values ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="draws 40 new functions at every step"):
        Trainer(max_steps=1, batch_size={f: 10}, logger=False).fit(crux)
    with pytest.raises(ValueError, match="paired data belongs to fixed functions"):
        f.paired(np.zeros((40, 5)), x)


def test_grf_2d_is_a_flattened_grid_and_interpolates():
    f = jno.functions.grf(2, x_range=(0, 1), y_range=(0, 2), n_sensors=(5, 7), seed=0)
    assert f.values.shape == (2, 35)
    dom = jno.domain.rect((0, 1), (0, 2), n_interior=30, n_boundary=4, seed=1)
    x, y = dom.variable("interior")
    crux = jno.core([f(x, y).mse])
    # the values at the sensors (rows flatten the grid, x slowest)
    xs, ys = np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 2, 7), indexing="ij")
    at_nodes = np.asarray(crux.eval(f(x, y), inputs={x: xs.reshape(-1, 1),
                                                      y: ys.reshape(-1, 1)}))
    np.testing.assert_allclose(at_nodes[..., 0], f.values, rtol=1e-5, atol=1e-6)
    # bilinear in between: the centre of the first cell is the mean of its four corners
    grid = f.values.reshape(2, 5, 7)
    centre = np.asarray(crux.eval(f(x, y), inputs={x: np.array([[0.125]]),
                                                    y: np.array([[1 / 6]])}))
    np.testing.assert_allclose(centre[:, 0, 0], grid[:, :2, :2].mean(axis=(1, 2)), rtol=1e-5)


def test_spectral_conv_equals_a_hand_written_fourier_layer():
    conv = jno.nn.SpectralConv(3, 2, (4,), rngs=nnx.Rngs(0))
    v = np.random.default_rng(0).standard_normal((16, 3))
    w = np.asarray(conv.real[...]) + 1j * np.asarray(conv.imag[...])
    vf = np.fft.rfft(v, axis=0)                       # (9, 3)
    out = np.zeros((9, 2), complex)
    for k in range(4):
        out[k] = vf[k] @ w[0, :, :, k]
    expect = np.fft.irfft(out, n=16, axis=0)
    np.testing.assert_allclose(conv(jnp.asarray(v, jnp.float32)), expect, rtol=1e-4, atol=1e-5)

    conv2 = jno.nn.SpectralConv(2, 2, (3, 2), rngs=nnx.Rngs(1))
    v2 = np.random.default_rng(1).standard_normal((8, 6, 2))
    w2 = np.asarray(conv2.real[...]) + 1j * np.asarray(conv2.imag[...])
    vf2 = np.fft.rfft2(v2, axes=(0, 1))               # (8, 4, 2)
    out2 = np.zeros((8, 4, 2), complex)
    for a in range(3):
        for b in range(2):
            out2[a, b] = vf2[a, b] @ w2[0, :, :, a, b]
            out2[8 - 3 + a, b] = vf2[8 - 3 + a, b] @ w2[1, :, :, a, b]
    expect2 = np.fft.irfft2(out2, s=(8, 6), axes=(0, 1))
    np.testing.assert_allclose(conv2(jnp.asarray(v2, jnp.float32)), expect2, rtol=1e-4,
                               atol=1e-5)


def test_fno_runs_per_instance_on_a_family_and_trains_on_paired_data():
    n, grid = 16, 32
    a = jno.functions.grf(n, n_sensors=grid, length_scale=0.2, seed=0)
    target = np.cumsum(a.values, axis=1) / grid
    fno = jno.nn.wrap(jno.nn.FNO(1, 1, grid=(grid,), modes=8, width=16, depth=2,
                                 rngs=nnx.Rngs(0)), name="fno")
    u = fno(a)
    assert u.value_shape == (n, grid)
    loss = (u - a.paired(target)).mse
    crux = jno.core([loss.name("data")])
    one = fno.module(jnp.asarray(a.values[3], jnp.float32))
    np.testing.assert_allclose(crux.eval(u)[3], one, rtol=1e-5, atol=1e-6)
    fno.optimizer(optax.adam(3e-3))
    history = crux.solve(200, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    assert history.losses["data"][-1] < 0.2 * history.losses["data"][0]


def test_instance_minibatches_train_and_resume_bit_identically(tmp_path):
    def run(steps, ckpt=None):
        f, x, net = _problem(n_functions=20)
        net.optimizer(optax.adam(1e-3))
        crux = jno.core([(net(f, x).d(x) - f(x)).mse.name("pde"),
                         net(f, x).mean.tracker(interval=2, name="mean_u")])
        cb = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=4)
        trainer = Trainer(max_steps=steps, batch_size={f: 5, x: 4}, logger=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
        trainer.fit(crux, ckpt_path=ckpt)
        return jax.tree.leaves(net.params()), crux

    full, _ = run(8)
    shutil.rmtree(tmp_path / "ckpt")
    run(4)                                   # stopped after 4 steps ...
    resumed, _ = run(8, ckpt="last")         # ... and resumed to 8
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a, b)


def test_paired_data_at_points_and_eval_on_unseen_functions():
    f, x, net = _problem()
    data = np.random.default_rng(0).standard_normal((6, 9))
    u = net(f, x)
    crux = jno.core([(u - f.paired(data, x)).mse.name("data")])
    value = np.asarray(crux.eval(u))[..., 0]
    np.testing.assert_allclose(crux.eval(crux.constraints["data"]),
                               np.mean((value - data) ** 2), rtol=1e-5)
    unseen = jno.functions.grf(4, n_sensors=12, length_scale=0.3, seed=9)
    other = np.asarray(crux.eval(u, inputs={f: unseen.values}))
    assert other.shape == (4, 9, 1)
    x4 = np.asarray(crux.eval(x))[0, 4]
    expect = net.module(jnp.asarray(unseen.values[2], jnp.float32), jnp.asarray(x4))
    np.testing.assert_allclose(other[2, 4], expect, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="paired data"):
        crux.eval(crux.constraints["data"], inputs={f: unseen.values})
    with pytest.raises(ValueError, match=r"inputs\[.*must have shape \(n_functions, 12\)"):
        crux.eval(u, inputs={f: unseen.values[:, :5]})


def test_four_devices_train_an_operator_like_one():
    """The point axis is sharded, families are replicated (a subprocess: 4 forced devices)."""
    script = Path(__file__).parent / "scripts" / "sharded_operator_run.py"
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------- bad input
def test_a_family_whose_sensor_count_does_not_match_the_branch_is_refused():
    f = jno.functions.grf(4, n_sensors=10, seed=0)
    dom = jno.domain.interval(0, 1, n_interior=5, n_boundary=2)
    x, = dom.variable("interior")
    net = jno.nn.wrap(_deeponet(12), name="G")
    with pytest.raises(ValueError, match=r"n_sensors=12 sensor values.*shapes \(\(10,\), \(1,\)\)"):
        net(f, x)


def test_two_instance_sets_cannot_meet():
    f = jno.functions.grf(4, n_sensors=10, seed=0)
    g = jno.functions.grf(4, n_sensors=10, seed=1)
    dom = jno.domain.interval(0, 1, n_interior=5, n_boundary=2)
    x, = dom.variable("interior")
    with pytest.raises(ValueError, match="two different instance sets"):
        f(x) + g(x)
    with pytest.raises(ValueError, match="two different instance sets"):
        jno.nn.wrap(_deeponet(10), name="G")(f, x) * g(x)


def test_paired_data_of_the_wrong_size_is_refused():
    f, x, _ = _problem()
    with pytest.raises(ValueError, match=r"one row per function .* shape \(6, \.\.\.\)"):
        f.paired(np.zeros((5, 9)), x)
    with pytest.raises(ValueError, match=r"must have shape \(6, 9\) or \(6, 9, D\)"):
        f.paired(np.zeros((6, 8)), x)


def test_a_batch_size_over_the_number_of_instances_is_refused():
    f, x, net = _problem()
    crux = jno.core([net(f, x).mse])
    with pytest.raises(ValueError, match=r"is 7, more than the 6 functions"):
        Trainer(max_steps=1, batch_size={f: 7}, logger=False).fit(crux)


def test_bad_family_arguments_are_refused():
    with pytest.raises(ValueError, match="`length_scale` must be a positive number"):
        jno.functions.grf(3, length_scale=0)
    with pytest.raises(ValueError, match="`n_functions` must be a positive integer"):
        jno.functions.grf(0)
    with pytest.raises(ValueError, match=r"`values` must have shape \(n_instances, k\)"):
        jno.functions.parameters(np.zeros(3))
    f = jno.functions.parameters(np.zeros((3, 2)))
    dom = jno.domain.interval(0, 1, n_interior=5, n_boundary=2)
    x, = dom.variable("interior")
    with pytest.raises(ValueError, match="has no sensor grid"):
        f(x)
    with pytest.raises(ValueError, match=r"`axes\[0\]` must be an increasing uniform grid"):
        jno.functions.FunctionSet(np.zeros((2, 3)), axes=[np.array([0.0, 0.1, 0.5])])
    with pytest.raises(ValueError, match="has 3 sensors per function, but the grid"):
        jno.functions.FunctionSet(np.zeros((2, 3)), axes=[np.linspace(0, 1, 4)])


def test_function_values_outside_the_sensor_grid_are_refused():
    """``f(x)`` beyond the family's sensors would hold the last sensor's value: refused when
    the problem is built (the domain's range) and at ``crux.eval`` points."""
    f = jno.functions.grf(3, x_range=(0, 1), n_sensors=16, length_scale=0.3, seed=0)
    wide = jno.domain.interval(0, 2, n_interior=8, n_boundary=2, seed=0)
    (xw,) = wide.variable("interior")
    with pytest.raises(ValueError, match=r"`f\(x\)`: the points of 'interior' of interval\(0, "
                                         r"2\) reach x in \[0, 2\], outside the sensors of "
                                         r".*\(\[0, 1\]\), where f would hold its last "
                                         r"sensor's value"):
        f(xw)
    (x,) = jno.domain.interval(0, 1, n_interior=8, n_boundary=2, seed=0).variable("interior")
    crux = jno.core([f(x).mse])
    inside = np.linspace(0, 1, 5)[:, None]
    assert np.asarray(crux.eval(f(x), inputs={x: inside})).shape == (3, 5, 1)
    with pytest.raises(ValueError, match=r"`f\(x\)`: the `inputs` points reach x in \[-0.5, "
                                         r"1\], outside the sensors"):
        crux.eval(f(x), inputs={x: np.linspace(-0.5, 1, 5)[:, None]})


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_eval_inputs_of_a_family_must_be_finite(bad):
    f = jno.functions.grf(3, x_range=(0, 1), n_sensors=16, length_scale=0.3, seed=0)
    (x,) = jno.domain.interval(0, 1, n_interior=8, n_boundary=2, seed=0).variable("interior")
    crux = jno.core([f(x).mse])
    values = np.array(f.values)
    values[1, 3] = bad
    with pytest.raises(ValueError, match=r"`inputs\[.*\]` must be finite numbers \(as the "
                                         r"family's own values\); it contains NaN or inf"):
        crux.eval(f(x), inputs={f: values})
