"""Models and trainable parameters: wrapping, optimizers, freezing, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn


def test_mlp_shapes_and_paths():
    m = jno.nn.MLP(3, 2, hidden=16, depth=2, rngs=nnx.Rngs(0))
    assert m(jnp.zeros(3)).shape == (2,)
    assert m(jnp.zeros((5, 7, 3))).shape == (5, 7, 2)
    net = jno.nn.wrap(m, name="net")
    assert net.num_params == 3 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2
    assert net.module is m


def test_model_call_concatenates_inputs_per_point():
    dom = jno.domain.rect(n_interior=12, n_boundary=4)
    x, y = dom.variable("interior")

    class Sum(nnx.Module):
        def __call__(self, z):
            assert z.shape == (2,)  # unbatched per point
            return z[:1] + 10 * z[1:]

    net = jno.nn.wrap(Sum())
    v = np.asarray(jno.core([net(x, y).mse]).eval(net(x, y)))
    p = dom.points()
    np.testing.assert_allclose(v[0, :, 0], p[:, 0] + 10 * p[:, 1], rtol=1e-6)


def test_parameter_values_and_init():
    a = jnn.parameter((1,), name="a")
    b = jnn.parameter((2,), init=jnp.array([1.0, 2.0]), name="b")
    c = jnn.parameter((3,), key=jax.random.PRNGKey(0), init=nnx.initializers.ones, name="c")
    va, vb, vc = jno.core([(a * b).sum ** 2]).eval([a, b, c])
    np.testing.assert_array_equal(va, [0.0])
    np.testing.assert_array_equal(vb, [1.0, 2.0])
    np.testing.assert_array_equal(vc, [1.0, 1.0, 1.0])
    assert isinstance(a.module, nnx.Module) and isinstance(a.module.value, nnx.Param)


def test_parameter_trains_and_frozen_parameter_does_not():
    dom = jno.domain.interval(0, 1, n_interior=20, seed=0)
    (x,) = dom.variable("interior")
    a = jnn.parameter((1,), name="a").optimizer(optax.adam(5e-2))
    b = jnn.parameter((1,), init=0.5, name="b").optimizer(optax.adam(5e-2)).freeze()
    crux = jno.core([(a * x + b - (3 * x + 0.5)).mse])
    crux.solve(600, enable_progress_bar=False)
    va, vb = crux.eval([a, b])
    np.testing.assert_allclose(va, [3.0], atol=2e-2)
    np.testing.assert_array_equal(vb, [0.5])
    np.testing.assert_allclose(np.asarray(a.module.value[...]), va)  # live module updated


def test_solve_continues_with_optimizer_state():
    dom = jno.domain.interval(0, 1, n_interior=8, seed=0)
    (x,) = dom.variable("interior")
    a = jnn.parameter((1,), name="a").optimizer(optax.adam(1e-2))
    crux = jno.core([(a - 1.0).mse])
    crux.solve(50, enable_progress_bar=False)
    count = int(crux.state.opt_state["a"][0].count)
    crux.solve(30, enable_progress_bar=False)
    assert crux.global_step == 80
    assert int(crux.state.opt_state["a"][0].count) == count + 30
    assert list(crux.history.steps) == list(range(80))
    # one uninterrupted run gives the same value
    b = jnn.parameter((1,), name="a").optimizer(optax.adam(1e-2))
    other = jno.core([(b - 1.0).mse])
    other.solve(80, enable_progress_bar=False)
    np.testing.assert_array_equal(np.asarray(other.eval(b)), np.asarray(crux.eval(a)))


def test_mask_view_optimizer_group_trains_only_selected(tiny):
    tiny.net.mask(nnx.PathContains("layers")).freeze()
    before = nnx.state(tiny.net.module, nnx.Param)
    before = jax.tree.map(np.asarray, before)
    tiny.core().solve(20, enable_progress_bar=False)
    after = jax.tree.map(np.asarray, nnx.state(tiny.net.module, nnx.Param))
    np.testing.assert_array_equal(after["layers"][0]["kernel"][...],
                                  before["layers"][0]["kernel"][...])
    assert not np.array_equal(after["output_layer"]["kernel"][...],
                              before["output_layer"]["kernel"][...])


# ---------------------------------------------------------------------- bad input
def test_wrap_rejects_non_nnx_objects():
    with pytest.raises(TypeError, match=r"`module` must be a flax.nnx.Module, got function"):
        jno.nn.wrap(lambda z: z)


def test_optimizer_rejects_non_optax():
    net = jno.nn.wrap(jno.nn.MLP(1, 1, hidden=2, depth=1, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=r"`tx` must be an optax GradientTransformation.*float"):
        net.optimizer(1e-3)
    with pytest.raises(TypeError, match="`tx` must be an optax"):
        jnn.parameter((1,)).optimizer("adam")


@pytest.mark.parametrize("shape", [(0,), (-1,), "3", (1.5,), [2]], ids=str)
def test_parameter_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="`shape` must be a tuple of positive integers"):
        jnn.parameter(shape)


def test_parameter_init_errors():
    with pytest.raises(ValueError, match="`key` is required"):
        jnn.parameter((2,), init=nnx.initializers.ones)
    with pytest.raises(ValueError, match=r"`init` gives shape \(3,\), but `shape` is \(2,\)"):
        jnn.parameter((2,), init=np.zeros(3))


def test_mlp_rejects_bad_sizes():
    with pytest.raises(ValueError, match="`hidden` must be a positive integer, got 0"):
        jno.nn.MLP(2, 1, hidden=0, rngs=nnx.Rngs(0))


def test_model_with_wrong_input_width_is_an_error():
    dom = jno.domain.rect(n_interior=4, n_boundary=4)
    x, y = dom.variable("interior")
    net = jno.nn.wrap(jno.nn.MLP(3, 1, hidden=4, depth=1, rngs=nnx.Rngs(0)), name="n")
    with pytest.raises(ValueError, match="calling .* on an input with 2 features failed"):
        net(x, y)


def test_duplicate_trainable_names_are_an_error():
    a = jnn.parameter((1,), name="k")
    b = jnn.parameter((1,), name="k")
    with pytest.raises(ValueError, match="both named 'k'"):
        jno.core([(a + b).sum])


def test_edits_of_the_live_module_between_fits_are_used(tiny):
    crux = tiny.core()
    crux.solve(3, enable_progress_bar=False)
    zeros = jax.tree.map(jnp.zeros_like, nnx.state(tiny.net.module, nnx.Param))
    nnx.update(tiny.net.module, zeros)
    h = crux.solve(1, enable_progress_bar=False)
    # a zero network: u = 0 everywhere, so the bc loss of step 3 is exactly 0
    assert h.losses["bc"][3] == 0.0
