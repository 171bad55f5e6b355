"""Expressions: operators, reductions, indexing, shapes and their errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn


@pytest.fixture
def line():
    dom = jno.domain.interval(0.0, 1.0, n_interior=16, n_boundary=2, seed=0)
    (x,) = dom.variable("interior")
    return dom, x


def ev(*exprs):
    values = jno.core([jnn.mean(jnn.square(exprs[0]))]).eval(list(exprs))
    return [np.asarray(v) for v in values]


def test_fields_have_batch_point_component_shape(line):
    dom, x = line
    (v,) = ev(x)
    assert v.shape == (1, 16, 1)
    np.testing.assert_allclose(v[0, :, 0], dom.points()[:, 0], rtol=1e-6)
    assert x.value_shape == (1, 16, 1)


@pytest.mark.parametrize("op, ref", [
    (lambda a: a + 2, lambda a: a + 2),
    (lambda a: 2 - a, lambda a: 2 - a),
    (lambda a: a * a, lambda a: a * a),
    (lambda a: 1 / (a + 1), lambda a: 1 / (a + 1)),
    (lambda a: a ** 3, lambda a: a ** 3),
    (lambda a: 2 ** a, lambda a: 2 ** a),
    (lambda a: -a, lambda a: -a),
    (lambda a: abs(a - 0.5), lambda a: np.abs(a - 0.5)),
    (lambda a: (a > 0.5) * 1.0, lambda a: (a > 0.5) * 1.0),
    (lambda a: jnn.where(a < 0.3, a, -a), lambda a: np.where(a < 0.3, a, -a)),
    (lambda a: jnn.clip(a, 0.2, 0.6), lambda a: np.clip(a, 0.2, 0.6)),
    (lambda a: jnn.maximum(a, 0.4), lambda a: np.maximum(a, 0.4)),
    (lambda a: jnn.exp(jnn.sin(a)) + jnn.log1p(a), lambda a: np.exp(np.sin(a)) + np.log1p(a)),
], ids=["add", "rsub", "mul", "div", "pow", "rpow", "neg", "abs", "gt", "where", "clip",
        "maximum", "compose"])
def test_elementwise_matches_numpy(line, op, ref):
    dom, x = line
    (v,) = ev(op(x))
    np.testing.assert_allclose(v[0, :, 0], ref(dom.points()[:, 0]), rtol=1e-5, atol=1e-6)


def test_reductions_properties_and_functions(line):
    dom, x = line
    xs = dom.points()[:, 0]
    vals = ev(x.mse, x.mae, x.mean, x.sum, x.min, x.max, x.std,
              jnn.mean(x, axis=1), jnn.norm(x), jnn.sum(x, axis=(0, 1)))
    expected = [np.mean(xs**2), np.mean(np.abs(xs)), xs.mean(), xs.sum(), xs.min(), xs.max(),
                xs.std(), [[xs.mean()]], np.linalg.norm(xs), [xs.sum()]]
    for got, want in zip(vals, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert x.mse.shape == () and not x.mse.is_field


def test_indexing_transpose_matmul_dot(line):
    dom, x = line
    xs = dom.points()[:, 0]
    m = jnn.concat([x, 2 * x], axis=-1)           # (1, N, 2) field
    first = m[..., 0]                              # stays a field
    assert first.is_field and first.shape == (1,)
    M = m[0]                                       # (N, 2) global
    gram = M.T @ M
    d = jnn.dot(M[:, 0], M[:, 1])
    v_first, v_gram, v_d = ev(first, gram, d)
    np.testing.assert_allclose(v_first[0, :, 0], xs, rtol=1e-6)
    mm = np.stack([xs, 2 * xs], 1)
    np.testing.assert_allclose(v_gram, mm.T @ mm, rtol=1e-5)
    np.testing.assert_allclose(v_d, 2 * xs @ xs, rtol=1e-5)


def test_custom_function_pointwise_and_global(line):
    dom, x = line
    xs = dom.points()[:, 0]
    f = jnn.function(lambda a: a**2 + 1, [x])
    g = jnn.function(lambda a: a - jnp.mean(a), [x], pointwise=False)
    vf, vg = ev(f, g)
    np.testing.assert_allclose(vf[0, :, 0], xs**2 + 1, rtol=1e-6)
    np.testing.assert_allclose(vg[0, :, 0], xs - xs.mean(), rtol=1e-5, atol=1e-6)


def test_stop_gradient_keeps_value_and_blocks_derivative(line):
    _, x = line
    f = x**2
    v, vs, d = ev(f, f.stop_gradient, (x * f.stop_gradient).d(x))
    np.testing.assert_allclose(v, vs)
    np.testing.assert_allclose(d, v)  # d/dx (x * sg(x^2)) = sg(x^2)


def test_name_and_repr(line):
    _, x = line
    e = (x * 2).mse.name("energy")
    assert e.given_name == "energy" and "energy" in repr(e)


# ---------------------------------------------------------------------- bad input
def test_mixing_point_sets_is_an_error():
    dom = jno.domain.rect(n_interior=10, n_boundary=6)
    x, _ = dom.variable("interior")
    xb, _ = dom.variable("boundary")
    with pytest.raises(ValueError, match=r"mixes fields on different point sets.*N=10.*N=6"):
        x + xb


def test_field_with_mismatched_data_array_is_an_error(line):
    _, x = line
    with pytest.raises(ValueError, match="point axis .* must be 16"):
        x + np.zeros((1, 5, 1))


def test_non_expression_operand_is_an_error(line):
    _, x = line
    with pytest.raises(TypeError, match="must be an expression, a number or an array"):
        x + "a"


def test_expression_has_no_truth_value(line):
    _, x = line
    with pytest.raises(TypeError, match="no truth value"):
        bool(x > 0)


def test_bad_axis_and_name(line):
    _, x = line
    with pytest.raises(TypeError, match="`axis` must be None"):
        jnn.mean(x, axis="rows")
    with pytest.raises(TypeError, match="`name` must be a non-empty string"):
        x.name("")
    with pytest.raises(TypeError, match="`fn` must be callable"):
        jnn.function(3, [x])


# ---------------------------------------------------------------------- structural identity
def test_expressions_built_the_same_way_are_the_same_expression(line):
    _, x = line
    net = jno.nn.wrap(jno.nn.MLP(1, 1, hidden=4, depth=1, rngs=nnx.Rngs(0)))
    r = net(x) - jnn.sin(x)
    assert r.mse.key is r.mse.key
    assert jnn.mean(r**2).key is jnn.mean(r**2).key
    assert jnn.mean(jnn.square(r)).key is jnn.mean(jnn.square(r)).key
    assert net(x).key is net(x).key
    assert (x + np.ones(1)).key is (x + np.ones(1)).key      # equal constants
    assert jnn.clip(x, 0, 1).key is jnn.clip(x, 0, 1).key
    # ... and different ones differ
    assert jnn.mean(r**2).key is not jnn.mean(r**3).key
    assert jnn.mean(r**2).key is not r.mse.key
    assert jnn.mean(r, axis=1).key is not jnn.mean(r).key
    assert (x + 2).key is not (x + 2.0).key                  # int and float constants
    assert jnn.clip(x, 0, 1).key is not jnn.clip(x, 0, 2).key
    other = jno.nn.wrap(jno.nn.MLP(1, 1, hidden=4, depth=1, rngs=nnx.Rngs(0)))
    assert other(x).key is not net(x).key                     # another model, same weights
    p, q = jno.np.parameter((1,)), jno.np.parameter((1,))
    assert (p * x).key is not (q * x).key
    assert jnn.function(jnp.sin, [x]).key is jnn.function(jnp.sin, [x]).key
    assert (jnn.function(jnp.sin, [x]).key
            is not jnn.function(jnp.sin, [x], pointwise=False).key)


def test_names_stay_on_their_own_node(line):
    _, x = line
    a, b = x.mse.name("first"), x.mse.name("second")
    assert a.key is b.key and a.given_name == "first" and b.given_name == "second"


# ---------------------------------------------------------------------- broadcasting
def test_one_value_per_point_as_a_1d_array_is_an_error(line):
    _, x = line
    with pytest.raises(ValueError, match=r"`-` combines a field on .* \(N=16 points, 1 component "
                                         r"per point\) with an array of shape \(16,\).*"
                                         r"shape \(N, 1\) = \(16, 1\)"):
        x - np.arange(16)
    with pytest.raises(ValueError, match=r"array of shape \(3,\); a 1-D array combines with a "
                                         r"field only as a scalar \(length 1\) or one value per "
                                         r"component \(length 1\)"):
        jnn.function(lambda v, w: v * w, [x, np.ones(3)])


def test_per_point_data_and_per_component_vectors_combine_exactly(line):
    dom, x = line
    data = np.arange(16.0)
    got, two, pair = ev(x - data.reshape(16, 1), x * np.array([2.0]),
                        jnn.concat([x, x]) * np.array([1.0, -1.0]))
    xs = dom.points("interior")[:, 0]
    np.testing.assert_allclose(got[0, :, 0], xs - data, rtol=1e-6)
    np.testing.assert_allclose(two[0, :, 0], 2 * xs, rtol=1e-6)
    np.testing.assert_allclose(pair[0], np.stack([xs, -xs], 1), rtol=1e-6)


def test_an_unhashable_custom_function_still_works(line):
    dom, x = line

    class Scale:          # a callable object that defines __eq__ and so is unhashable
        __hash__ = None

        def __call__(self, v):
            return 3.0 * v

        def __eq__(self, other):
            return isinstance(other, Scale)

    f = jnn.function(Scale(), [x])
    assert f.key is not jnn.function(Scale(), [x]).key
    (got,) = ev(f.d(x))
    np.testing.assert_allclose(got, 3.0, rtol=1e-6)


@pytest.mark.parametrize("shape, problem", [
    ((16, 2), r"its last axis has 2 entries, not the fields' 1 component"),
    ((1, 16, 5), r"its last axis has 5 entries, not the fields' 1 component"),
    ((2, 16, 1), r"its batch axis \(first\) has 2 entries, not the fields' B=1"),
    ((1, 1, 16, 1), r"it has 4 axes"),
], ids=["components", "components-batched", "batch", "rank"])
def test_data_arrays_combine_point_by_point_with_equal_components_or_not_at_all(line, shape,
                                                                                problem):
    _, x = line
    for op in (lambda a: x - a, lambda a: x * a, lambda a: a + x):
        with pytest.raises(ValueError, match=rf"combines a field on .* \(B=1, N=16, D=1\) with "
                                             rf"an array of shape .*: {problem}\. Per-point "
                                             rf"data must have shape \(16, 1\) or \(1, 16, 1\)"):
            op(np.ones(shape))
    assert (x - np.ones((16, 1))).value_shape == (x * np.ones((1, 16, 1))).value_shape \
        == (1, 16, 1)
