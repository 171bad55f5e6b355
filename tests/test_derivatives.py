"""Derivatives with respect to coordinates against analytic values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn

RTOL, ATOL = 1e-4, 1e-4


def _points(dom, tag="interior"):
    return [dom.points(tag)[:, i] for i in range(dom.dim)]


@pytest.fixture
def sq():
    dom = jno.domain.rect((-1, 1), (0, 2), n_interior=50, n_boundary=8, seed=3)
    x, y = dom.variable("interior")
    return dom, x, y


def _eval(e, exprs):
    return [np.asarray(v)[0] for v in jno.core([jnn.mean(exprs[0])]).eval(exprs)]


def test_first_and_second_derivative_of_sin():
    dom = jno.domain.interval(0.0, 3.0, n_interior=40, seed=1)
    (x,) = dom.variable("interior")
    f = jnn.sin(2.0 * x)
    d1, d2 = _eval(None, [f.d(x), f.d2(x)])
    xs = _points(dom)[0]
    np.testing.assert_allclose(d1[:, 0], 2 * np.cos(2 * xs), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(d2[:, 0], -4 * np.sin(2 * xs), rtol=RTOL, atol=ATOL)


def test_polynomial_derivatives(sq):
    dom, x, y = sq
    p = x**3 * y + 2 * x * y**2 - 5.0
    dx, dy, dxx, dyy, dxy = _eval(None, [p.d(x), p.d(y), p.d2(x), p.d2(y), p.d(x).d(y)])
    xs, ys = _points(dom)
    np.testing.assert_allclose(dx[:, 0], 3 * xs**2 * ys + 2 * ys**2, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dy[:, 0], xs**3 + 4 * xs * ys, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dxx[:, 0], 6 * xs * ys, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dyy[:, 0], 4 * xs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dxy[:, 0], 3 * xs**2 + 4 * ys, rtol=RTOL, atol=ATOL)


def test_product_laplacian_gradient_and_hessian(sq):
    dom, x, y = sq
    f = jnn.sin(x) * jnn.exp(y)
    lap, grad, hess = _eval(None, [f.laplacian(x, y), f.grad(x, y), f.hessian(x, y)])
    xs, ys = _points(dom)
    np.testing.assert_allclose(lap[:, 0], 0.0, atol=1e-3)  # harmonic
    np.testing.assert_allclose(grad, np.stack([np.cos(xs) * np.exp(ys),
                                               np.sin(xs) * np.exp(ys)], 1), rtol=RTOL)
    expected = np.stack([np.stack([-np.sin(xs), np.cos(xs)], 1),
                         np.stack([np.cos(xs), np.sin(xs)], 1)], 1) * np.exp(ys)[:, None, None]
    np.testing.assert_allclose(hess, expected, rtol=RTOL, atol=ATOL)


def test_network_laplacian_equals_hessian_trace_and_chained_d_equals_d2(tiny):
    u, x, y = tiny.u, tiny.x, tiny.y
    lap, hess, dd, d2 = jno.core([u.mse]).eval(
        [u.laplacian(x, y), u.hessian(x, y), u.d(x).d(x), u.d2(x)])
    np.testing.assert_allclose(lap[0, :, 0], np.trace(hess[0], axis1=1, axis2=2),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dd, d2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d2[0, :, 0], hess[0, :, 0, 0], rtol=1e-4, atol=1e-5)


def test_mixed_partials_commute(tiny):
    u, x, y = tiny.u, tiny.x, tiny.y
    a, b = jno.core([u.mse]).eval([u.d(x).d(y), u.d(y).d(x)])
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_custom_function_differentiates(sq):
    dom, x, y = sq

    def my_fn(a, b):
        return jnp.exp(-a**2) * jnp.sin(b)

    r = jnn.function(my_fn, [x, y])
    val, dx = _eval(None, [r, r.d(x)])
    xs, ys = _points(dom)
    np.testing.assert_allclose(val[:, 0], np.exp(-xs**2) * np.sin(ys), rtol=RTOL)
    np.testing.assert_allclose(dx[:, 0], -2 * xs * np.exp(-xs**2) * np.sin(ys), rtol=RTOL,
                               atol=ATOL)


def test_space_time_derivative():
    dom = jno.domain.interval(-1, 1, n_interior=30, n_boundary=10, time=(0, 1), seed=0)
    x, t = dom.variable("interior")
    f = jnn.exp(-t) * jnn.sin(jnp.pi * x)
    ut, uxx = _eval(None, [f.d(t), f.d2(x)])
    xs, ts = _points(dom)
    np.testing.assert_allclose(ut[:, 0], -np.exp(-ts) * np.sin(np.pi * xs), rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(uxx[:, 0], -np.pi**2 * np.exp(-ts) * np.sin(np.pi * xs),
                               rtol=1e-3, atol=1e-3)


def test_float64_derivatives_are_exact():
    with jax.enable_x64(True):
        dom = jno.domain.interval(0.1, 2.0, n_interior=20, seed=0)
        (x,) = dom.variable("interior")
        f = x**4
        d2 = np.asarray(jno.core([f.mse]).eval(f.d2(x)))[0, :, 0]
        xs = dom.points()[:, 0]
        assert d2.dtype == np.float64
        np.testing.assert_allclose(d2, 12 * xs**2, rtol=1e-12)


# ---------------------------------------------------------------------- bad input
def test_derivative_wrt_non_coordinate_is_an_error(sq):
    dom, x, y = sq
    f = x * y
    with pytest.raises(TypeError, match="coordinate variables"):
        f.d(f)
    with pytest.raises(TypeError, match="coordinate variables"):
        f.d(2.0)
    nx, _ = dom.normal("boundary")
    xb, _ = dom.variable("boundary")
    with pytest.raises(TypeError, match="coordinate variables"):
        (xb * 2).d(nx)


def test_derivative_wrt_other_point_set_is_an_error(sq):
    dom, x, y = sq
    xb, yb = dom.variable("boundary")
    with pytest.raises(ValueError, match="belongs to 'boundary'"):
        (x * y).d(xb)


def test_derivative_of_a_reduction_is_an_error(sq):
    _, x, y = sq
    with pytest.raises(ValueError, match="not a field"):
        (x * y).mse.d(x)
