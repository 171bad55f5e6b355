"""Parameter Jacobians, masks, NTK and gradient-conflict diagnostics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import GradientConflict, NTKDiagnostics
from jno_flax.trainers import Trainer


class Affine(nnx.Module):
    """u = w * x + b."""

    def __init__(self):
        self.w = nnx.Param(jnp.array([0.7]))
        self.b = nnx.Param(jnp.array([-0.2]))

    def __call__(self, z):
        return self.w[...] * z + self.b[...]


def _flat_params(module):
    leaves = jax.tree.leaves(nnx.state(module, nnx.Param))
    return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves])


def _set_flat(module, flat):
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    out, i = [], 0
    for leaf in leaves:
        out.append(jnp.asarray(flat[i:i + leaf.size].reshape(leaf.shape)))
        i += leaf.size
    nnx.update(module, jax.tree.unflatten(treedef, out))


def test_affine_jacobian_columns_are_exactly_one_and_x():
    dom = jno.domain.interval(0, 2, n_interior=9, seed=0)
    (x,) = dom.variable("interior")
    net = jno.nn.wrap(Affine(), name="lin")
    J = np.asarray(jno.core([net(x).mse]).eval(net(x).grad(net)))
    assert J.shape == (1, 9, 2)  # leaves in sorted order: b, w
    np.testing.assert_array_equal(J[0, :, 0], np.ones(9))
    np.testing.assert_array_equal(J[0, :, 1], dom.points()[:, 0].astype(np.float32))


@pytest.mark.parametrize("what", ["field", "laplacian", "loss"])
def test_jacobian_matches_central_finite_differences_float64(what):
    with jax.enable_x64(True):
        dom = jno.domain.rect(n_interior=6, n_boundary=4, seed=1)
        x, y = dom.variable("interior")
        module = jno.nn.MLP(2, 1, hidden=5, depth=2, rngs=nnx.Rngs(3))
        module = jax.tree.map(lambda a: a.astype(jnp.float64), module)
        net = jno.nn.wrap(module, name="u")
        u = net(x, y)
        expr = {"field": u, "laplacian": u.laplacian(x, y) + x * y,
                "loss": (u.laplacian(x, y) + 1.0).mse}[what]
        crux = jno.core([u.mse])
        J = np.asarray(crux.eval(expr.grad(net)))
        p0 = _flat_params(module)
        assert J.shape[-1] == p0.size
        eps = 1e-6
        cols = []
        for i in range(p0.size):
            vals = []
            for sign in (1, -1):
                p = p0.copy()
                p[i] += sign * eps
                _set_flat(module, p)
                vals.append(np.asarray(crux.eval(expr)))
            cols.append((vals[0] - vals[1]) / (2 * eps))
        _set_flat(module, p0)
        fd = np.stack(cols, axis=-1).reshape(J.shape)
        np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-8)


def test_masked_jacobian_sizes_and_bool_mask_equals_filter(tiny):
    net = tiny.net
    view = net.mask(nnx.PathContains("output_layer"))
    assert view.num_params == 8 + 1
    state = nnx.state(net.module, nnx.Param)
    mask = jax.tree.map(lambda _: False, state)
    mask["output_layer"]["kernel"] = nnx.Param(True)
    mask["output_layer"]["bias"] = nnx.Param(True)
    crux = tiny.core()
    J_filter, J_bool, J_all = crux.eval([tiny.u.grad(view), tiny.u.grad(net.mask(mask)),
                                         tiny.u.grad(net)])
    assert J_filter.shape == (1, 64, 9) and J_all.shape == (1, 64, net.num_params)
    np.testing.assert_array_equal(J_filter, J_bool)
    # the selected columns of the full Jacobian (output layer leaves are the last two)
    np.testing.assert_array_equal(J_filter, J_all[..., -9:])
    pure = jax.tree.map(lambda _: False, state.to_pure_dict())
    pure["output_layer"]["kernel"] = True
    assert net.mask(pure).num_params == 8
    assert net.mask(lambda path, v: path[-1] == "bias").num_params == 8 + 8 + 1


def test_ntk_is_symmetric_psd_and_cosines_are_bounded(tiny):
    J = tiny.u.grad(tiny.net)[0]
    K = J @ J.T
    g = tiny.pde.grad(tiny.net)
    cos = lambda a, b: jnn.dot(a, b) / (jnn.norm(a) * jnn.norm(b))  # noqa: E731
    k, c_same, c_opp = tiny.core().eval([K, cos(g, g), cos(g, -1.0 * g)])
    k = np.asarray(k, np.float64)
    np.testing.assert_allclose(k, k.T, rtol=1e-6, atol=1e-6)
    eig = np.linalg.eigvalsh(k)
    assert eig.min() > -1e-5 * eig.max()
    np.testing.assert_allclose(c_same, 1.0, rtol=1e-6)
    np.testing.assert_allclose(c_opp, -1.0, rtol=1e-6)


def test_stop_gradient_keeps_values_and_removes_the_second_order_term(tiny):
    J = tiny.u.grad(tiny.net.mask(nnx.PathContains("output_layer")))[0]
    J_sg = J.stop_gradient
    target = np.eye(64, dtype=np.float32)
    reg, reg_sg = (J @ J.T - target).mse, (J_sg @ J_sg.T - target).mse
    crux = tiny.core()
    v, v_sg, g, g_sg = crux.eval([reg, reg_sg, reg.grad(tiny.net), reg_sg.grad(tiny.net)])
    np.testing.assert_array_equal(v, v_sg)
    assert np.abs(np.asarray(g)).max() > 0          # second order through jacrev
    np.testing.assert_array_equal(g_sg, np.zeros_like(g_sg))


def test_jacobian_of_a_parameter_and_as_a_loss_term():
    dom = jno.domain.interval(0, 1, n_interior=5, seed=0)
    (x,) = dom.variable("interior")
    a = jnn.parameter((2,), init=jnp.array([1.0, 2.0]), name="a").optimizer(optax.adam(1e-2))
    f = a[0] * x + a[1] * x**2
    J = np.asarray(jno.core([f.mse]).eval(f.grad(a)))
    xs = dom.points()[:, 0]
    np.testing.assert_allclose(J[0], np.stack([xs, xs**2], 1), rtol=1e-6)
    # a Jacobian in a loss term trains (first order with stop_gradient)
    crux = jno.core([f.mse, jnn.mean(f.grad(a).stop_gradient ** 2) * 0.0])
    crux.solve(5, enable_progress_bar=False)


def test_diagnostic_callbacks_record_their_quantities(tiny):
    crux = tiny.core()
    h = Trainer(max_steps=21, enable_progress_bar=False, callbacks=[
        NTKDiagnostics(interval=10, top_k=3, max_points=32),
        GradientConflict(interval=10, filter=nnx.PathContains("output_layer"))]).fit(crux)
    for name in ["ntk/pde/trace", "ntk/bc/eigs", "ntk/all/condition", "ntk/all/effective_rank",
                 "cos/pde|bc", "grad_norm/pde"]:
        np.testing.assert_array_equal(h.trackers[name].steps, [0, 10, 20])
    eigs = h.trackers["ntk/bc/eigs"].values
    assert eigs.shape == (3, 3) and (np.diff(eigs, axis=1) <= 0).all()
    cos = h.trackers["cos/pde|bc"].values
    assert (np.abs(cos) <= 1 + 1e-6).all()
    assert (h.trackers["ntk/all/effective_rank"].values >= 1 - 1e-5).all()


# ---------------------------------------------------------------------- bad input
def test_grad_of_an_unrelated_model_is_an_error(tiny):
    other = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=2, depth=1, rngs=nnx.Rngs(1)), name="other")
    with pytest.raises(ValueError, match=r"does not depend on .*other.*depends on the "
                                         r"trainables \['u'\]"):
        tiny.u.grad(other)


def test_masks_selecting_nothing_or_mismatching_are_errors(tiny):
    net = tiny.net
    with pytest.raises(ValueError, match=r"selects no parameter; available parameter paths: "
                                         r"\['layers/0/bias'"):
        net.mask(nnx.PathContains("decoder"))
    state = nnx.state(net.module, nnx.Param).to_pure_dict()
    bad = jax.tree.map(lambda _: False, state)
    del bad["output_layer"]["bias"]
    with pytest.raises(ValueError, match="has no entry for 'output_layer/bias'"):
        net.mask(bad)
    extra = jax.tree.map(lambda _: True, state)
    extra["head"] = {"kernel": True}
    with pytest.raises(ValueError, match="'head/kernel' is not a parameter path"):
        net.mask(extra)
    nonbool = jax.tree.map(lambda _: 1, state)
    with pytest.raises(TypeError, match=r"leaves must be Python bools; at 'layers/0/bias' got int"):
        net.mask(nonbool)


def test_jacobian_of_a_frozen_model_is_an_error(tiny):
    tiny.net.freeze()
    with pytest.raises(ValueError, match="is frozen; unfreeze it"):
        tiny.u.grad(tiny.net)


def test_diagnostics_errors(tiny):
    with pytest.raises(ValueError, match=r"GradientConflict `constraints` must name at least "
                                         r"two of \['pde', 'bc'\]"):
        Trainer(max_steps=2, callbacks=[GradientConflict(constraints=["pde", "nope"])],
                enable_progress_bar=False).fit(tiny.core())
    crux = jno.core([tiny.pde, (tiny.pde + tiny.bc) * 2.0])
    with pytest.raises(ValueError, match="'loss_1' .* is not the mean square of a residual field"):
        Trainer(max_steps=2, callbacks=[NTKDiagnostics()],
                enable_progress_bar=False).fit(crux)


def test_chunked_per_point_jacobian_equals_the_vmapped_one(tiny, monkeypatch):
    import jno_flax._jacobian as jac_module
    crux = tiny.core()
    whole = np.asarray(crux.eval(tiny.u.grad(tiny.net)))
    monkeypatch.setattr(jac_module, "POINT_CHUNK", 10)  # 64 points -> lax.map in 7 batches
    J = tiny.u.grad(tiny.net)
    np.testing.assert_allclose(np.asarray(crux.eval(J)), whole, rtol=1e-6, atol=1e-7)
