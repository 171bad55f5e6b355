"""Adaptive loss weights: formulas against NumPy references, state handling, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.trainers import Trainer

SEQ = np.array([[10.0, 1.0], [8.0, 1.2], [6.0, 1.1], [6.5, 0.7], [3.0, 0.9], [2.0, 0.2]],
               np.float32)


def _drive(balancer, seq, key=jax.random.PRNGKey(3)):
    """Feed a fixed sequence of loss values step by step; return the weights of each step."""
    state = balancer.init()
    out = []
    for t, losses in enumerate(seq):
        w, state = balancer.update(state, jnp.asarray(losses), jax.random.fold_in(key, t))
        out.append(np.asarray(w))
    return np.array(out)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture
def two_losses(tiny):
    return tiny, [tiny.pde, tiny.bc]


@pytest.mark.parametrize("expected_rho", [1.0, 0.0, 0.5])
def test_relobralo_matches_numpy(two_losses, expected_rho):
    _, losses = two_losses
    b = jno.adaptive.relobralo(losses, alpha=0.9, tau=0.5, expected_rho=expected_rho)
    got = _drive(b, SEQ)
    m, lam, L0, Lp = 2, np.ones(2), None, None
    key = jax.random.PRNGKey(3)
    for t, L in enumerate(SEQ.astype(np.float64)):
        if t == 0:
            lam, L0 = np.ones(2), L
        else:
            rho = float(jax.random.bernoulli(jax.random.fold_in(key, t), expected_rho))
            bal_prev = m * _softmax(L / (0.5 * Lp))
            bal_init = m * _softmax(L / (0.5 * L0))
            lam = 0.9 * (rho * lam + (1 - rho) * bal_init) + 0.1 * bal_prev
        Lp = L
        np.testing.assert_allclose(got[t], lam, rtol=1e-5)
        np.testing.assert_allclose(got[t].sum(), m, rtol=1e-6)
    np.testing.assert_array_equal(got[0], [1.0, 1.0])


def test_softadapt_and_dwa_match_numpy(two_losses):
    _, losses = two_losses
    got = _drive(jno.adaptive.softadapt(losses, beta=2.0), SEQ)
    want = [np.ones(2)]
    for t in range(1, len(SEQ)):
        s = SEQ[t].astype(np.float64) - SEQ[t - 1]
        want.append(2 * _softmax(2.0 * s / np.abs(s).sum()))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    got = _drive(jno.adaptive.dwa(losses, temperature=2.0), SEQ)
    want = [np.ones(2), np.ones(2)] + [2 * _softmax(SEQ[t - 1] / SEQ[t - 2] / 2.0)
                                       for t in range(2, len(SEQ))]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_causal_matches_numpy(two_losses):
    tiny, _ = two_losses
    losses = [tiny.pde, tiny.bc, tiny.u.mse]
    seq = np.abs(np.random.default_rng(0).normal(size=(4, 3))).astype(np.float32)
    got = _drive(jno.adaptive.causal(losses, epsilon=0.7), seq)
    want = np.exp(-0.7 * np.concatenate([np.zeros((4, 1)), np.cumsum(seq, 1)[:, :-1]], 1))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _grad_norms(tiny):
    """Gradient norms of pde and bc at the initial weights, in plain JAX."""
    from flax import nnx
    net = tiny.net
    graphdef, params = nnx.split(net.module)
    xi = jnp.asarray(tiny.dom.points("interior"), jnp.float32)
    xb = jnp.asarray(tiny.dom.points("boundary"), jnp.float32)

    def pde(p):
        m = nnx.merge(graphdef, p)
        lap = jax.vmap(lambda q: jnp.trace(jax.hessian(lambda z: m(z)[0])(q)))(xi)
        src = 2 * jnp.pi**2 * jnp.sin(jnp.pi * xi[:, 0]) * jnp.sin(jnp.pi * xi[:, 1])
        return jnp.mean((lap + src) ** 2)

    def bc(p):
        return jnp.mean(jax.vmap(nnx.merge(graphdef, p))(xb) ** 2)

    flat = lambda g: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])  # noqa: E731
    return [flat(jax.grad(f)(params)) for f in (pde, bc)]


def test_lr_annealing_matches_gradient_norms(two_losses):
    tiny, losses = two_losses
    g = _grad_norms(tiny)
    w = jno.adaptive.lr_annealing(losses, period=5, alpha=0.5)
    crux = jno.core([w[0] * losses[0], w[1] * losses[1]])
    h = crux.solve(6, enable_progress_bar=False)
    norms = np.array([np.linalg.norm(np.asarray(x)) for x in g])
    target = norms.sum() / norms
    series = h.trackers["weights/lr_annealing0/pde"].values
    np.testing.assert_allclose(series[:5], 0.5 + 0.5 * target[0], rtol=1e-4)  # refreshed at 0
    assert series[5] != series[4]                                                # and at 5
    from tests.conftest import TinyProblem
    fresh = TinyProblem()  # the first problem's training updated the shared live module
    w2 = jno.adaptive.lr_annealing([fresh.pde, fresh.bc], period=5, alpha=0.0,
                                   mode="max_mean")
    crux2 = jno.core([w2[0] * fresh.pde, w2[1] * fresh.bc])
    h2 = crux2.solve(1, enable_progress_bar=False)
    ref = np.abs(np.asarray(g[0])).max() / np.abs(np.asarray(g[1])).mean()
    np.testing.assert_allclose(h2.trackers["weights/lr_annealing0/bc"].values[0], ref, rtol=1e-3)
    np.testing.assert_allclose(h2.trackers["weights/lr_annealing0/pde"].values[0], 1.0)


def test_ntk_weights_match_jacobian_traces(two_losses):
    tiny, losses = two_losses
    w = jno.adaptive.ntk(losses, period=10)
    crux = jno.core([w[0] * losses[0], w[1] * losses[1]])
    pde_field = tiny.u.laplacian(tiny.x, tiny.y) + 2 * jnp.pi**2 * tiny.u_exact
    J_pde, J_bc = crux.eval([pde_field.grad(tiny.net), tiny.net(tiny.xb, tiny.yb).grad(tiny.net)])
    tr = np.array([np.sum(np.asarray(J_pde, np.float64) ** 2) / 64,
                   np.sum(np.asarray(J_bc, np.float64) ** 2) / 32])
    h = crux.solve(1, enable_progress_bar=False)
    got = [h.trackers["weights/ntk0/pde"].values[0], h.trackers["weights/ntk0/bc"].values[0]]
    np.testing.assert_allclose(got, tr.sum() / tr, rtol=1e-4)


def test_uncertainty_weights_are_trainable(two_losses):
    tiny, losses = two_losses
    w = jno.adaptive.uncertainty(losses, optimizer=optax.adam(5e-2))
    crux = jno.core([w[0] * losses[0], w[1] * losses[1], w.penalty])
    h = crux.solve(50, enable_progress_bar=False)
    s = np.asarray(crux.eval(w.log_var))
    series = h.trackers["weights/uncertainty0/pde"].values
    # eval gives the weight the last step used: exp(-s)/2 of the log-variance before its update
    np.testing.assert_array_equal(crux.eval(w[0]), series[-1])
    np.testing.assert_allclose(series[-1], 0.5 * np.exp(-s[0]), rtol=5e-2)
    assert series[-1] < series[0]
    assert s[0] > 0.5  # the large PDE loss gets a larger variance (a smaller weight)
    np.testing.assert_allclose(h.trackers["weights/uncertainty0/pde"].values[0], 0.5)


def test_used_weights_equal_tracked_weights_and_state_is_in_the_train_state(two_losses):
    tiny, losses = two_losses
    w_pde, w_bc = jno.fn.adaptive.relobralo(losses, expected_rho=0.5)
    crux = jno.core([w_pde * losses[0], w_bc * losses[1], w_pde.tracker(),
                     w_bc.tracker(interval=3).name("wbc3"),
                     jnn.tracker(losses[0], name="raw_pde"), jnn.tracker(losses[1], name="raw_bc")])
    h = Trainer(max_steps=12, chunk_size=5, enable_progress_bar=False).fit(crux)
    wp = h.trackers["tracker_0"].values
    wb = h.trackers["weights/relobralo0/bc"].values
    # an unnamed weighted term is named after the loss its weight balances
    assert list(h.losses) == ["pde", "bc"]
    np.testing.assert_allclose(h.losses["pde"], wp * h.trackers["raw_pde"].values, rtol=1e-6)
    np.testing.assert_allclose(h.losses["bc"], wb * h.trackers["raw_bc"].values, rtol=1e-6)
    np.testing.assert_array_equal(h.trackers["wbc3"].values, wb[::3])
    np.testing.assert_array_equal(h.trackers["wbc3"].steps, [0, 3, 6, 9])
    np.testing.assert_array_equal(wp[0], 1.0)
    np.testing.assert_allclose(wp + wb, 2.0, rtol=1e-6)
    assert int(crux.state.extras["relobralo0"]["state"]["count"]) == 12
    crux.eval([w_pde, w_bc])  # evaluating never advances the state
    assert int(crux.state.extras["relobralo0"]["state"]["count"]) == 12


def test_compiled_step_has_no_host_callbacks(two_losses):
    tiny, losses = two_losses
    w = jno.adaptive.relobralo(losses)
    crux = jno.core([w[0] * losses[0], w[1] * losses[1]])
    trainer = Trainer(max_steps=1, enable_progress_bar=False)
    trainer.fit(crux)
    jaxpr = str(jax.make_jaxpr(trainer.training_step)(crux.state, crux.registry.batch()))
    assert "callback" not in jaxpr
    assert "bernoulli" in jaxpr or "random_bits" in jaxpr or "threefry" in jaxpr


def test_time_slices(tiny):
    dom = jno.domain.interval(0, 1, n_interior=40, time=(0, 2), seed=0)
    x, t = dom.variable("interior")
    slices = jno.adaptive.time_slices(t * 0.0 + 1.0, t, 4)
    vals = jno.core([slices[0]]).eval(slices)
    np.testing.assert_allclose(vals, 1.0, rtol=1e-6)  # mean of ones over each slice


# ---------------------------------------------------------------------- bad input
def test_adaptive_errors(two_losses):
    tiny, losses = two_losses
    with pytest.raises(ValueError, match="needs at least two loss terms"):
        jno.adaptive.relobralo([losses[0]])
    with pytest.raises(ValueError, match=r"`losses\[1\]` must be a scalar loss expression"):
        jno.adaptive.relobralo([losses[0], tiny.u])
    with pytest.raises(ValueError, match="`tau` must be a positive number, got 0"):
        jno.adaptive.relobralo(losses, tau=0)
    with pytest.raises(ValueError, match=r"`alpha` must be a number in \[0, 1\], got 1.5"):
        jno.adaptive.relobralo(losses, alpha=1.5)
    with pytest.raises(ValueError, match="`period` must be a positive integer"):
        jno.adaptive.lr_annealing(losses, period=0)
    with pytest.raises(ValueError, match="`period` must be a positive integer"):
        jno.adaptive.ntk(losses, period=2.5)
    a = jno.adaptive.relobralo(losses)
    b = jno.adaptive.softadapt([losses[1], losses[0]])
    with pytest.raises(ValueError, match="weight 0 of <ReLoBRaLo over 2 losses> balances"):
        jno.core([a[0] * losses[1], a[1] * losses[0]])
    with pytest.raises(ValueError, match="balances"):
        jno.core([a[0] * b[0] * losses[0]])
    u = jno.adaptive.uncertainty(losses)
    with pytest.raises(ValueError, match="add its `penalty` to the constraints"):
        jno.core([u[0] * losses[0], u[1] * losses[1]])


@pytest.mark.parametrize("form", ["mse", "mean_pow", "mean_square"], ids=str)
def test_ntk_takes_the_residual_of_any_mean_square_form(tiny, form):
    r_pde = tiny.u.laplacian(tiny.x, tiny.y) + 2 * jnp.pi**2 * tiny.u_exact
    r_bc = tiny.net(tiny.xb, tiny.yb)
    make = {"mse": lambda r: r.mse, "mean_pow": lambda r: jnn.mean(r ** 2),
            "mean_square": lambda r: jnn.mean(jnn.square(r))}[form]
    w = jno.adaptive.ntk([make(r_pde), make(r_bc)])
    assert w.jacobians[0].expr.key is r_pde.key and w.jacobians[1].expr.key is r_bc.key


@pytest.mark.parametrize("form", ["max", "sum", "mean_abs", "mean_cube"], ids=str)
def test_ntk_refuses_losses_that_are_not_mean_squares(tiny, form):
    from jno_flax.callbacks import NTKDiagnostics
    r = tiny.u.laplacian(tiny.x, tiny.y) + 2 * jnp.pi**2 * tiny.u_exact
    loss = {"max": lambda: r.max, "sum": lambda: jnn.sum(r), "mean_abs": lambda: jnn.mean(
        jnn.abs(r)), "mean_cube": lambda: jnn.mean(r ** 3)}[form]()
    accepted = r"`r.mse`, `jno.np.mean\(r \*\* 2\)` or `jno.np.mean\(jno.np.square\(r\)\)`"
    with pytest.raises(ValueError, match=r"`losses\[0\]` .* is not the mean square of a residual "
                                         r"field; .*" + accepted):
        jno.adaptive.ntk([loss, tiny.bc])
    with pytest.raises(ValueError, match=r"constraint 'loss_0' .* is not the mean square.*"
                                         + accepted):
        Trainer(max_steps=1, callbacks=[NTKDiagnostics()],
                enable_progress_bar=False).fit(jno.core([loss, tiny.bc]))


def test_a_weight_accepts_its_loss_rebuilt_and_refuses_another(tiny):
    pde = tiny.u.laplacian(tiny.x, tiny.y) + 2 * jnp.pi**2 * tiny.u_exact
    bc = tiny.net(tiny.xb, tiny.yb)
    w_pde, w_bc = jno.adaptive.relobralo([pde.mse, bc.mse])
    jno.core([w_pde * pde.mse, w_bc * bc.mse])             # rebuilt: the same expressions
    with pytest.raises(ValueError, match=r"weight 1 of <ReLoBRaLo over 2 losses> balances "
                                         r"<Expr mse .*> but multiplies <Expr mse .*>, a "
                                         "different expression"):
        jno.core([w_pde * pde.mse, w_bc * (2 * bc).mse])
