"""Derivatives of one operand share one pass: fused values equal separate AD, and a traced
step applies the network once per point set (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.trainers import Trainer

CALLS: list[str] = []


class Counted(nnx.Module):
    """An MLP that records every application (at trace time)."""

    def __init__(self, d_in: int, rngs: nnx.Rngs):
        self.mlp = jno.nn.MLP(d_in, 1, hidden=12, depth=3, rngs=rngs)

    def __call__(self, z):
        CALLS.append("call")
        return self.mlp(z)


def _d(f, i, order=1):
    """Reference: ``∂^order f / ∂ arg_i`` by nested ``jax.jvp`` (one derivative at a time)."""
    if order == 0:
        return f

    def df(*args):
        tangents = tuple(jnp.ones_like(a) if j == i else jnp.zeros_like(a)
                         for j, a in enumerate(args))
        return jax.jvp(_d(f, i, order - 1), args, tangents)[1]
    return df


def _mixed(f, i, j):
    return _d(_d(f, i), j)


# name -> (expressions of u and the coordinates, reference functions of the scalar field f)
SHAPES = {
    "burgers": (lambda u, x, y, t: [u, u.d(t), u.d(x), u.d2(x)],
                lambda f: [f, _d(f, 2), _d(f, 0), _d(f, 0, 2)]),
    "wave": (lambda u, x, y, t: [u.d2(t), u.d2(x)],
             lambda f: [_d(f, 2, 2), _d(f, 0, 2)]),
    "kdv": (lambda u, x, y, t: [u.d(t), u.d(x), u.d(x).d(x).d(x)],
            lambda f: [_d(f, 2), _d(f, 0), _d(f, 0, 3)]),
    "laplacian": (lambda u, x, y, t: [u.laplacian(x, y), u],
                  lambda f: [lambda *a: _d(f, 0, 2)(*a) + _d(f, 1, 2)(*a), f]),
    "heat": (lambda u, x, y, t: [u.d(t) - u.laplacian(x, y), u.d(x)],
             lambda f: [lambda *a: _d(f, 2)(*a) - _d(f, 0, 2)(*a) - _d(f, 1, 2)(*a), _d(f, 0)]),
    "mixed": (lambda u, x, y, t: [u.d(x).d(y), u.laplacian(x, y), u.d(y).d(t)],
              lambda f: [_mixed(f, 0, 1), lambda *a: _d(f, 0, 2)(*a) + _d(f, 1, 2)(*a),
                         _mixed(f, 1, 2)]),
    "laplacian_mixed": (lambda u, x, y, t: [u.laplacian(x), u.d2(y), u.d2(t), u.d(x).d(t)],
                        lambda f: [_d(f, 0, 2), _d(f, 1, 2), _d(f, 2, 2), _mixed(f, 0, 2)]),
    "grad": (lambda u, x, y, t: [u.grad(x, y, t)],
             lambda f: [lambda *a: jnp.stack([_d(f, k)(*a) for k in range(3)])]),
    "hessian": (lambda u, x, y, t: [u.hessian(x, t), u.d2(y)],
                lambda f: [lambda *a: jnp.array([[_d(f, 0, 2)(*a), _mixed(f, 0, 2)(*a)],
                                                 [_mixed(f, 2, 0)(*a), _d(f, 2, 2)(*a)]]),
                           _d(f, 1, 2)]),
    "chained": (lambda u, x, y, t: [u.d(x).d2(t), u.d(t).d(x).d(t)],
                lambda f: [_d(_d(f, 0), 2, 2), _d(_d(f, 0), 2, 2)]),
}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _problem():
    dom = jno.domain.rect((0, 1), (0, 1), n_interior=24, n_boundary=8, time=(0, 1), seed=2)
    x, y, t = dom.variable("interior")
    net = jno.nn.wrap(Counted(3, nnx.Rngs(0)), name="u")
    return dom, net, (x, y, t)


@pytest.mark.parametrize("shape", sorted(SHAPES), ids=str)
def test_fused_derivatives_equal_separate_ones(x64, shape):
    dom, net, (x, y, t) = _problem()
    build, reference = SHAPES[shape]
    exprs = build(net(x, y, t), x, y, t)
    got = jno.core([jnn.mean(e) for e in exprs]).eval(exprs)
    module = net.module
    f = lambda *c: module(jnp.stack(c))[0]  # noqa: E731
    pts = jnp.asarray(dom.points("interior"))
    for expr, g, ref_fn in zip(exprs, got, reference(f)):
        assert g.dtype == jnp.float64
        ref = jax.vmap(lambda p: ref_fn(p[0], p[1], p[2]))(pts)
        np.testing.assert_allclose(np.asarray(g).reshape(ref.shape), ref, rtol=1e-12,
                                   atol=1e-12, err_msg=f"{shape}: {expr!r}")


def _calls_in_one_step(crux) -> int:
    """Network applications in one traced training step (loss, gradient and update)."""
    trainer = Trainer(max_steps=1, enable_progress_bar=False)
    trainer.fit(crux)
    batch = crux.registry.batch()
    CALLS.clear()
    jax.make_jaxpr(lambda s: trainer.training_step(s, batch))(trainer.state)
    return len(CALLS)


@pytest.mark.parametrize("shape", sorted(SHAPES), ids=str)
def test_a_training_step_applies_the_network_once(shape):
    dom, net, (x, y, t) = _problem()
    exprs = SHAPES[shape][0](net(x, y, t), x, y, t)
    calls = _calls_in_one_step(jno.core([jnn.mean(e) ** 2 for e in exprs]))
    # one pass for all derivatives of u on the interior points (a second pass only where two
    # coordinates are needed to second order and never mix: one Taylor pass each)
    passes = 2 if shape in ("wave", "hessian", "laplacian_mixed") else 1
    assert calls == passes, (shape, calls)


def test_an_operand_built_twice_is_evaluated_once():
    dom, net, (x, y, t) = _problem()
    u_a, u_b = net(x, y, t), net(x, y, t)
    assert u_a is not u_b and u_a.key is u_b.key
    residual = u_a.d(t) - u_b.d2(x)
    err = jno.np.tracker(jnn.mean(jnn.abs(net(x, y, t))), interval=1)
    assert _calls_in_one_step(jno.core([residual.mse, err])) == 1


def test_separately_built_tracker_costs_the_same_traced_program():
    """A tracker that rebuilds ``u_net(x, y)`` traces to the same step as one sharing ``u``."""
    def step_jaxpr(rebuild: bool) -> str:
        dom, net, (x, y, t) = _problem()
        u = net(x, y, t)
        tracked = net(x, y, t) if rebuild else u
        crux = jno.core([u.laplacian(x, y).mse, jno.np.tracker(jnn.mean(tracked))])
        trainer = Trainer(max_steps=1, enable_progress_bar=False)
        trainer.fit(crux)
        batch = crux.registry.batch()
        return str(jax.make_jaxpr(lambda s: trainer.training_step(s, batch)[1])(trainer.state))
    assert step_jaxpr(True) == step_jaxpr(False)


def test_operations_without_a_taylor_rule_fall_back_to_nested_jvp(x64):
    dom = jno.domain.interval(0.1, 2.0, n_interior=7, seed=0)
    (x,) = dom.variable("interior")
    h = lambda v: jax.scipy.special.erf(v) * jnp.sin(v)  # noqa: E731  (erf: no jet rule)
    f = jnn.function(h, [x])
    d2, d3 = jno.core([jnn.mean(f)]).eval([f.d2(x), f.d(x).d(x).d(x)])
    xs = jnp.asarray(dom.points("interior")[:, 0])
    np.testing.assert_allclose(d2[0, :, 0], jax.vmap(jax.grad(jax.grad(h)))(xs), rtol=1e-12)
    np.testing.assert_allclose(d3[0, :, 0], jax.vmap(jax.grad(jax.grad(jax.grad(h))))(xs),
                               rtol=1e-12)


def test_burgers_trains_like_a_hand_written_loop():
    """Same points, initialisation and optimizer: the losses of 20 steps agree."""
    dom = jno.domain.interval(-1, 1, n_interior=64, n_boundary=8, n_initial=8, time=(0, 1))
    x, t = dom.variable("interior")
    module = jno.nn.MLP(2, 1, hidden=8, depth=2, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(module)
    params = jax.tree.map(jnp.copy, params)  # training updates the module in place
    net = jno.nn.wrap(module, name="u").optimizer(optax.adam(1e-3))
    u = net(x, t)
    nu = 0.01 / np.pi
    h = jno.core([(u.d(t) + u * u.d(x) - nu * u.d2(x)).mse]).solve(20, enable_progress_bar=False)

    pts = jnp.asarray(dom.points("interior"), jnp.float32)
    tx = optax.adam(1e-3)

    def loss(p):
        m = nnx.merge(graphdef, p)
        f = lambda a, b: m(jnp.stack([a, b]))[0]  # noqa: E731
        r = jax.vmap(lambda q: _d(f, 1)(*q) + f(*q) * _d(f, 0)(*q) - nu * _d(f, 0, 2)(*q))(pts)
        return jnp.mean(r**2)
    losses, opt = [], tx.init(params)
    for _ in range(20):
        value, g = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(g, opt, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(value))
    np.testing.assert_allclose(h.total_loss, losses, rtol=1e-4)
