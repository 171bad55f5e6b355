"""The networks of PINN recipes: embeddings, RWF, the modified MLP and PirateNet."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn

N = jno.nn


def _nets(seed: int = 0, param_dtype=None) -> dict[str, nnx.Module]:
    """One small instance of each network, each taking (x, y) and giving one output."""
    r = nnx.Rngs(seed)
    kw = dict(param_dtype=param_dtype, rngs=r)
    return {
        "mlp_rwf": N.MLP(2, 1, hidden=6, depth=2, rwf=(1.0, 0.1), activation="sin", **kw),
        "fourier_mlp": N.Sequential(N.FourierFeatures(2, 8, scale=2.0, **kw),
                                    N.MLP(8, 1, hidden=6, depth=2, **kw)),
        "modified_mlp": N.ModifiedMLP(2, 1, hidden=6, depth=2, rwf=(1.0, 0.1), **kw),
        "periodic_pirate": N.Sequential(
            N.PeriodicEmbedding(2, axes=(0,), periods=(1.0,), param_dtype=param_dtype),
            N.PirateNet(3, 1, hidden=6, depth=2, activation="gelu", **kw)),
    }


# ---------------------------------------------------------------------- formulas
def test_fourier_features_of_a_known_kernel():
    B = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, -1.0]])
    emb = N.FourierFeatures(2, 6, kernel=B)
    x = np.array([[0.3, -0.7], [1.1, 0.2]])
    z = x @ B
    np.testing.assert_allclose(emb(jnp.asarray(x)), np.concatenate([np.cos(z), np.sin(z)], -1),
                               rtol=1e-6)
    assert emb.out_features == 6
    # fixed by default: not a parameter, so not trained and not in Jacobians
    assert jax.tree.leaves(nnx.state(emb, nnx.Param)) == []
    assert len(jax.tree.leaves(nnx.state(N.FourierFeatures(2, 6, kernel=B, trainable=True),
                                         nnx.Param))) == 1


def test_fourier_features_with_the_input_in_front():
    B = np.array([[1.0, 0.5], [0.0, 2.0]])
    emb = N.FourierFeatures(2, 4, kernel=B, include_input=True)
    x = np.array([[0.3, -0.7], [1.1, 0.2]])
    z = x @ B
    np.testing.assert_allclose(emb(jnp.asarray(x)),
                               np.concatenate([x, np.cos(z), np.sin(z)], -1), rtol=1e-6)
    assert (emb.in_features, emb.out_features) == (2, 6)
    net = N.Sequential(emb, N.ModifiedMLP(6, 1, hidden=4, depth=2, rngs=nnx.Rngs(0)))
    assert net(jnp.asarray(x)).shape == (2, 1)
    with pytest.raises(TypeError, match=r"`include_input` must be True or False, got 'yes'"):
        N.FourierFeatures(2, 4, include_input="yes")


def test_fourier_kernel_has_the_requested_scale():
    emb = N.FourierFeatures(3, 4000, scale=2.5, rngs=nnx.Rngs(1))
    std = float(np.std(np.asarray(emb.kernel[...])))
    assert abs(std - 2.5) < 0.05  # 6000 samples: standard error of the std ~ 0.023


def test_periodic_embedding_makes_the_network_and_its_derivatives_periodic():
    with jax.enable_x64(True):
        net = N.Sequential(N.PeriodicEmbedding(2, axes=(1,), periods=(0.7,)),
                           N.MLP(3, 1, hidden=8, depth=2, rngs=nnx.Rngs(0)))
        f = lambda t, x: net(jnp.stack([t, x]))[0]  # noqa: E731
        d2 = jax.grad(jax.grad(f, argnums=1), argnums=1)
        for t, x in [(0.1, 0.2), (0.9, -1.3), (0.4, 5.0)]:
            np.testing.assert_allclose(f(t, x + 0.7), f(t, x), rtol=0, atol=1e-13)
            np.testing.assert_allclose(f(t, x + 3 * 0.7), f(t, x), rtol=0, atol=1e-12)
            np.testing.assert_allclose(d2(t, x + 0.7), d2(t, x), rtol=0, atol=1e-11)
        # the non-periodic input passes through: t -> t + 0.7 changes the output
        assert abs(f(0.1, 0.2) - f(0.8, 0.2)) > 1e-3


def test_trainable_period_is_a_parameter_with_a_gradient():
    emb = N.PeriodicEmbedding(1, axes=(0,), periods=(2.0,), trainable=True)
    (leaf,) = jax.tree.leaves(nnx.state(emb, nnx.Param))
    np.testing.assert_array_equal(leaf, [2.0])

    graphdef, params, rest = nnx.split(emb, nnx.Param, ...)

    def f(p):
        return nnx.merge(graphdef, p, rest)(jnp.array([0.3]))[1]          # sin(2π x / L)
    (g,) = jax.tree.leaves(jax.grad(f)(params))
    np.testing.assert_allclose(g, [-np.cos(np.pi * 0.3) * 2 * np.pi * 0.3 / 4.0], rtol=1e-5)


def test_rwf_reproduces_the_plain_layers_at_initialisation():
    x = jax.random.normal(jax.random.key(1), (7, 3))
    plain = N.MLP(3, 2, hidden=16, depth=3, rngs=nnx.Rngs(4))
    rwf = N.MLP(3, 2, hidden=16, depth=3, rwf=(1.0, 0.1), rngs=nnx.Rngs(4))
    np.testing.assert_allclose(rwf(x), plain(x), rtol=1e-5, atol=1e-6)
    layer = rwf.layers[0]
    assert isinstance(layer, N.RWFLinear)
    s = np.asarray(layer.scale[...])
    assert s.shape == (16,) and 0.7 < s.mean() < 1.3 and s.std() > 0.01
    np.testing.assert_allclose(np.asarray(layer.kernel[...]) * np.exp(s),
                               np.asarray(plain.layers[0].kernel[...]), rtol=1e-5)
    # factorised: s and V are separate parameters (a mask can pick the scales)
    assert N.wrap(rwf).mask(nnx.PathContains("scale")).num_params == 16 + 16 + 16 + 2


def test_modified_mlp_matches_its_formula():
    net = N.ModifiedMLP(2, 1, hidden=5, depth=2, rngs=nnx.Rngs(0))
    x = jnp.array([0.3, -0.4])
    lin = lambda layer, z: z @ layer.kernel[...] + layer.bias[...]  # noqa: E731
    u, v, h = jnp.tanh(lin(net.encoder_u, x)), jnp.tanh(lin(net.encoder_v, x)), x
    for layer in net.layers:
        z = jnp.tanh(lin(layer, h))
        h = z * u + (1 - z) * v
    np.testing.assert_allclose(net(x), lin(net.output_layer, h), rtol=1e-6)


def test_piratenet_with_zero_gates_is_the_linear_map_of_its_embedding():
    net = N.PirateNet(2, 3, hidden=8, depth=3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (11, 2))
    phi = net.embedding(x)
    expected = phi @ net.output_layer.kernel[...] + net.output_layer.bias[...]
    np.testing.assert_allclose(net(x), expected, rtol=1e-6, atol=1e-6)
    for block in net.blocks:            # a non-zero gate changes the output
        block.alpha[...] = jnp.asarray(0.5)
    assert float(jnp.max(jnp.abs(net(x) - expected))) > 1e-3


def test_pi_init_solves_its_least_squares_problem():
    with jax.enable_x64(True):
        net = N.PirateNet(2, 1, hidden=16, depth=2, rwf=(1.0, 0.1), rngs=nnx.Rngs(0))
        x = np.random.default_rng(0).uniform(-1, 1, (200, 2))
        y = np.sin(np.pi * x[:, :1]) * x[:, 1:] ** 2
        residual = net.pi_init(x, y)
        feats = np.asarray(net.features(jnp.asarray(x)))
        design = np.concatenate([feats, np.ones((200, 1))], 1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        pred = np.asarray(net(jnp.asarray(x)))
        np.testing.assert_allclose(pred, design @ coef, rtol=1e-8, atol=1e-10)
        # the least-squares optimality condition: the residual is orthogonal to the features
        np.testing.assert_allclose(design.T @ (pred - y), 0.0, atol=1e-8)
        np.testing.assert_allclose(residual, np.linalg.norm(pred - y) / np.linalg.norm(y))
        assert residual < 0.5


# ---------------------------------------------------------------------- framework features
@pytest.mark.parametrize("name", ["mlp_rwf", "fourier_mlp", "modified_mlp",
                                  pytest.param("periodic_pirate", marks=pytest.mark.slow)])
def test_jacobian_matches_finite_differences_and_ntk_is_psd(name):
    with jax.enable_x64(True):
        module = _nets(seed=1)[name]
        assert {v.dtype for v in jax.tree.leaves(nnx.state(module, nnx.Param))} == {
            jnp.dtype("float64")}
        dom = jno.domain.rect(n_interior=5, n_boundary=4, seed=1)
        x, y = dom.variable("interior")
        net = N.wrap(module, name="u")
        u = net(x, y)
        expr = u.laplacian(x, y)
        crux = jno.core([expr.mse])
        J = np.asarray(crux.eval(expr.grad(net)))
        state = nnx.state(module, nnx.Param)
        leaves, treedef = jax.tree.flatten(state)
        flat = np.concatenate([np.ravel(leaf) for leaf in leaves])
        assert J.shape == (1, 5, flat.size)
        rng = np.random.default_rng(0)
        for i in rng.choice(flat.size, 12, replace=False):
            vals = []
            for sign in (1, -1):
                p = flat.copy()
                p[i] += sign * 1e-6
                pieces = np.split(p, np.cumsum([leaf.size for leaf in leaves])[:-1])
                new = [jnp.asarray(q.reshape(leaf.shape)) for q, leaf in zip(pieces, leaves)]
                nnx.update(module, jax.tree.unflatten(treedef, new))
                vals.append(np.asarray(crux.eval(expr))[0, :, 0])
            nnx.update(module, state)
            np.testing.assert_allclose(J[0, :, i], (vals[0] - vals[1]) / 2e-6, rtol=1e-5,
                                       atol=1e-7)
        K = J[0] @ J[0].T
        np.testing.assert_allclose(K, K.T, rtol=1e-12)
        assert np.linalg.eigvalsh(K).min() > -1e-9 * np.abs(K).max()


def test_masks_by_path_select_the_named_layers():
    nets = _nets()
    pirate = N.wrap(nets["periodic_pirate"], name="p")
    gates = pirate.mask(nnx.PathContains("alpha"))
    assert gates.num_params == 2
    out = pirate.mask(nnx.PathContains("output_layer"))
    assert out.num_params == 6 * 1 + 1   # blocks keep the width of the embedding (Fourier, 6)
    dom = jno.domain.rect(n_interior=6, n_boundary=4, seed=0)
    x, y = dom.variable("interior")
    J = jno.core([pirate(x, y).mse]).eval(pirate(x, y).grad(gates))
    assert J.shape == (1, 6, 2)
    # zero gates: d output / d alpha_l = W_out . (h_l - x_l), generally non-zero
    assert float(np.abs(np.asarray(J)).max()) > 0


@pytest.mark.parametrize("name", ["fourier_mlp",
                                  pytest.param("periodic_pirate", marks=pytest.mark.slow)])
def test_trains_and_weights_round_trip(name, tmp_path):
    module = _nets()[name]
    net = N.wrap(module, name="u")
    dom = jno.domain.rect(n_interior=32, n_boundary=16, seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    u = net(x, y)
    crux = jno.core([(u.laplacian(x, y) + 1.0).mse.name("pde"), net(xb, yb).mse.name("bc")])
    history = crux.solve(60, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False)
    assert history.total_loss[-1] < history.total_loss[0]
    before = np.asarray(crux.eval(u))
    crux.save_weights(tmp_path / "w")
    fresh = _nets(seed=5)[name]
    net.module = fresh
    assert not np.allclose(np.asarray(crux.eval(u)), before)
    crux.load_weights(tmp_path / "w")
    np.testing.assert_array_equal(np.asarray(crux.eval(u)), before)


# ---------------------------------------------------------------------- bad input
def test_embedding_width_must_match_the_coordinates():
    dom = jno.domain.rect(n_interior=8, n_boundary=4, seed=0)
    x, y = dom.variable("interior")
    net = N.wrap(N.Sequential(N.FourierFeatures(3, 8, rngs=nnx.Rngs(0)),
                              N.MLP(8, 1, hidden=4, depth=1, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match=r"FourierFeatures expects inputs with 3 features.*"
                                         r"\(2,\)"):
        net(x, y)
    with pytest.raises(ValueError, match=r"PeriodicEmbedding expects inputs with 1 features"):
        N.PeriodicEmbedding(1, axes=(0,), periods=(1.0,))(jnp.zeros(2))


@pytest.mark.parametrize("period", [0.0, -1.0])
def test_period_must_be_positive(period):
    with pytest.raises(ValueError, match=r"`periods\[0\]` must be a positive number, got "):
        N.PeriodicEmbedding(2, axes=(1,), periods=(period,))


def test_embedding_argument_errors():
    with pytest.raises(ValueError, match=r"`axes` must hold input axes in \[0, 2\), got \(2,\)"):
        N.PeriodicEmbedding(2, axes=(2,), periods=(1.0,))
    with pytest.raises(ValueError, match=r"`axes` and `periods` must be non-empty and of one "
                                         r"length"):
        N.PeriodicEmbedding(2, axes=(0, 1), periods=(1.0,))
    with pytest.raises(ValueError, match=r"`n_features` must be even"):
        N.FourierFeatures(2, 7)
    with pytest.raises(ValueError, match=r"`kernel` must have shape .*\(2, 3\), got \(3, 2\)"):
        N.FourierFeatures(2, 6, kernel=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"`activation` must be a callable or one of .*'tanh'"
                                         r".*got 'tahn'"):
        N.MLP(2, 1, activation="tahn")
    with pytest.raises(ValueError, match=r"`rwf std` must be a positive number, got -0.1"):
        N.ModifiedMLP(2, 1, rwf=(1.0, -0.1))
    with pytest.raises(ValueError, match=r"`rwf` must be None or \(mean, std\), got 0.1"):
        N.MLP(2, 1, rwf=0.1)


def test_widths_that_do_not_chain_are_errors():
    with pytest.raises(ValueError, match=r"widths do not chain: the PirateNet takes "
                                         r"in_features=3 but its embedding \(FourierFeatures\) "
                                         r"takes in_features=2"):
        N.PirateNet(3, 1, embedding=N.FourierFeatures(2, 8, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"widths do not chain: modules\[0\] "
                                         r"\(PeriodicEmbedding\) gives 3 features, modules\[1\] "
                                         r"\(MLP\) takes in_features=2"):
        N.Sequential(N.PeriodicEmbedding(2, axes=(0,), periods=(1.0,)), N.MLP(2, 1))
    with pytest.raises(ValueError, match=r"`embedding` must declare integer `in_features` and "
                                         r"`out_features`.*got Sequential"):
        N.PirateNet(2, 1, embedding=nnx.Sequential(nnx.Linear(2, 4, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match=r"`depth` must be a positive integer, got 0"):
        N.PirateNet(2, 1, depth=0)


def test_pi_init_argument_errors():
    net = N.PirateNet(2, 1, hidden=4, depth=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`points` and `targets` must have the same length, "
                                         r"got 10 points and 9 targets"):
        net.pi_init(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match=r"`points` must have shape \(N, 2\), got \(10, 3\)"):
        net.pi_init(np.zeros((10, 3)), np.zeros(10))
    with pytest.raises(ValueError, match=r"`targets` must have shape \(N, 1\) or \(N,\), got "
                                         r"\(10, 2\)"):
        net.pi_init(np.zeros((10, 2)), np.zeros((10, 2)))


def test_exact_constraints_hold_on_the_boundary_with_exact_derivatives():
    """``u = g + (1 - x²) net`` satisfies u(±1) = g(±1) to float precision, and its
    derivatives are those of the product (checked against the product rule by hand)."""
    with jax.enable_x64(True):
        dom = jno.domain.interval(-1, 1, n_interior=16, n_boundary=2, seed=0)
        (x,) = dom.variable("interior")
        (xb,) = dom.variable("boundary")
        net = N.wrap(N.Sequential(N.FourierFeatures(1, 8, rngs=nnx.Rngs(0)),
                                  N.MLP(8, 1, hidden=8, depth=2, rngs=nnx.Rngs(1))), name="n")
        g = lambda z: jnn.cos(z) + 2.0  # noqa: E731
        u, ub = g(x) + (1 - x**2) * net(x), g(xb) + (1 - xb**2) * net(xb)
        n, dn, d2n = net(x), net(x).d(x), net(x).d2(x)
        crux = jno.core([(u.d2(x) - 1.0).mse])
        vals = [np.asarray(v) for v in crux.eval([ub, g(xb), u.d2(x), n, dn, d2n, x])]
        ub_v, gb, u_xx, n_v, dn_v, d2n_v, xv = vals
        np.testing.assert_allclose(ub_v, gb, rtol=0, atol=1e-15)
        by_hand = -np.cos(xv) - 2 * n_v - 4 * xv * dn_v + (1 - xv**2) * d2n_v
        np.testing.assert_allclose(u_xx, by_hand, rtol=1e-12, atol=1e-12)
