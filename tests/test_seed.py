"""Every code block of the feature page (``shared/spec/SEED.md``), written as the page writes
it, with ``jno_flax`` imported as ``jno`` and ``jno_flax.numpy`` as ``jnn`` / ``jno.np``. Only
the equinox mask lines take their NNX form. Each block's results are checked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import optax
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import ModelCheckpoint
from jno_flax.trainers import Trainer

π = jnp.pi
N_INT, N_BND = 96, 32


def _setup(hidden: int = 16):
    """The problem the page's snippets assume: ``u``, ``u_exact``, ``pde``, ``bc``."""
    dom = jno.domain.rect(x_range=(0, 1), y_range=(0, 1), n_interior=N_INT, n_boundary=N_BND,
                          seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    u_net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=hidden, depth=2, rngs=nnx.Rngs(0)),
                        name="u_net")
    u_net.optimizer(optax.adam(1e-3))
    u = u_net(x, y)
    u_exact = jnn.sin(π * x) * jnn.sin(π * y)
    pde = u.laplacian(x, y) + 2 * π**2 * u_exact
    bc = u_net(xb, yb)
    return dict(x=x, y=y, u_net=u_net, u=u, u_exact=u_exact, pde=pde, bc=bc)


def _quiet(crux, steps):
    return crux.solve(steps, enable_progress_bar=False)


def test_trackers():
    s = _setup()
    u, u_exact, pde, bc = s["u"], s["u_exact"], s["pde"], s["bc"]
    # --- page
    from jno_flax.numpy import tracker
    val_error = tracker(jno.np.mean(jno.np.abs(u - u_exact)), interval=100)
    crux = jno.core([pde.mse, bc.mse, val_error])
    # ---
    history = _quiet(crux, 250)
    np.testing.assert_array_equal(history.trackers["tracker_0"].steps, [0, 100, 200])
    err = crux.eval(jno.np.mean(jno.np.abs(u - u_exact)))
    assert np.isfinite(err) and 0 < float(err) < 1


@pytest.mark.slow  # 20 s; resume with ReLoBRaLo weights: test_checkpoint.py (fast set)
def test_adaptive_weight_placeholders_train_resume_and_record(tmp_path):
    def build():
        s = _setup()
        pde, bc = s["pde"], s["bc"]
        # --- page
        w_pde, w_bc = jno.fn.adaptive.relobralo([pde.mse, bc.mse])
        crux = jno.core([w_pde * pde.mse, w_bc * bc.mse, w_pde.tracker(), w_bc.tracker()])
        # ---
        return crux, (w_pde, w_bc)

    full, (w_pde, w_bc) = build()
    h_full = Trainer(max_steps=40, chunk_size=16, enable_progress_bar=False).fit(full)
    wp, wb = h_full.trackers["tracker_0"].values, h_full.trackers["tracker_1"].values
    np.testing.assert_array_equal(h_full.trackers["tracker_0"].steps, np.arange(40))
    np.testing.assert_allclose(wp + wb, 2.0, rtol=1e-6)       # ReLoBRaLo weights sum to m
    np.testing.assert_array_equal(wp, h_full.trackers["weights/relobralo0/0"].values)
    assert np.ptp(wp) > 0                                      # the weights do adapt
    # eval gives the weights the last step used (not a fresh draw)
    np.testing.assert_allclose(full.eval([w_pde, w_bc]), [wp[-1], wb[-1]], rtol=1e-6)

    def trainer(steps):
        return Trainer(max_steps=steps, chunk_size=16, enable_progress_bar=False,
                       callbacks=[ModelCheckpoint(tmp_path, every_n_train_steps=10)])

    part, _ = build()
    trainer(25).fit(part)
    resumed, _ = build()
    h = trainer(40).fit(resumed, ckpt_path="last")
    np.testing.assert_array_equal(h.total_loss, h_full.total_loss)
    np.testing.assert_array_equal(h.trackers["tracker_1"].values, wb)
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_custom_functions():
    s = _setup()
    x, y = s["x"], s["y"]
    # --- page
    import jno_flax.numpy as jnn

    def my_fn(x, y):
        return jnp.exp(-x**2) * jnp.sin(y)

    result = jnn.function(my_fn, [x, y])
    # ---
    crux = jno.core([result.mse])
    val, dx, dyy = crux.eval([result, result.d(x), result.d2(y)])
    xs, ys = crux.eval([x, y])
    np.testing.assert_allclose(val, np.exp(-xs**2) * np.sin(ys), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, -2 * xs * np.exp(-xs**2) * np.sin(ys), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dyy, -np.exp(-xs**2) * np.sin(ys), rtol=1e-4, atol=1e-5)


def _inverse_problem(steps: int):
    # --- page
    import jax
    import optax

    import jno_flax as jno
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    a = jno.np.parameter((1,), key=k1, name="a")
    b = jno.np.parameter((1,), key=k2, name="b")
    c = jno.np.parameter((1,), key=k3, name="c")
    for p in [a, b, c]:
        p.optimizer(optax.adam(1e-2))
    # --- the data the page assumes
    dom = jno.domain.interval(0, 1, n_interior=200, seed=0)
    (x,) = dom.variable("interior")
    a_true, b_true, c_true = 1.5, -0.7, 2.0
    target = a_true * jnn.sin(π * x) + b_true * jnn.cos(π * x) + c_true * x * (1 - x)
    # --- page
    residual = a * jno.np.sin(π * x) + b * jno.np.cos(π * x) + c * x * (1 - x) - target
    crux = jno.core([residual.mse])
    history = crux.solve(steps, enable_progress_bar=False)
    _a, _b, _c = crux.eval([a, b, c])
    print(f"Recovered: a={_a[0]:.3f}, b={_b[0]:.3f}, c={_c[0]:.3f}")
    # ---
    return history, (_a, _b, _c), (a_true, b_true, c_true)


def test_trainable_parameters_recover_the_coefficients():
    history, got, true = _inverse_problem(30000)   # as on the page (about 3 s on 2 CPU cores)
    assert history.total_loss[-1] < 1e-6 * history.total_loss[0]
    np.testing.assert_allclose(np.concatenate(got), true, atol=5e-3)


def test_jacobian_norm_tracker():
    s = _setup()
    u, u_net, pde, bc = s["u"], s["u_net"], s["pde"], s["bc"]
    # --- page
    from jno_flax.numpy import tracker
    J = u.grad(u_net)                                      # (B, N, P)
    J_norm = tracker(jno.np.mean(J ** 2), interval=50)     # scalar, logged every 50 steps
    crux = jno.core([pde.mse, bc.mse, J_norm])
    history = crux.solve(120, enable_progress_bar=False)
    # ---
    P = u_net.num_params
    assert J.value_shape == (1, N_INT, P)
    assert crux.eval(J).shape == (1, N_INT, P)
    np.testing.assert_array_equal(history.trackers["tracker_0"].steps, [0, 50, 100])
    assert np.all(history.trackers["tracker_0"].values > 0)


def test_ntk_condition_proxy():
    s = _setup()
    u, u_net, pde = s["u"], s["u_net"], s["pde"]
    from jno_flax.numpy import tracker
    # --- page
    J = u.grad(u_net)          # (B, N, P)
    J_flat = J[0]              # (N, P) — strip batch dim
    K = J_flat @ J_flat.T      # (N, N)
    # Log the ratio of largest to smallest eigenvalue as a proxy for conditioning
    K_norm = tracker(jno.np.max(K) / (jno.np.min(K) + 1e-8), interval=100)
    crux = jno.core([pde.mse, K_norm])
    # ---
    history = _quiet(crux, 101)
    kv = crux.eval(K)
    assert kv.shape == (N_INT, N_INT)
    np.testing.assert_allclose(kv, kv.T, rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(np.asarray(kv, np.float64)).min() > -1e-4 * np.abs(kv).max()
    values = history.trackers["tracker_0"].values
    np.testing.assert_array_equal(history.trackers["tracker_0"].steps, [0, 100])
    assert np.all(np.isfinite(values))


def test_gradient_cosine_similarity():
    s = _setup()
    u_net, pde, bc = s["u_net"], s["pde"], s["bc"]
    pde_expr, bc_expr = pde, bc
    from jno_flax.numpy import tracker
    # --- page
    J_pde = pde_expr.grad(u_net)            # (B, N_int, P)
    J_bc = bc_expr.grad(u_net)              # (B, N_bc, P)
    g_pde = jno.np.mean(J_pde[0], axis=0)   # (P,) — average over interior points
    g_bc = jno.np.mean(J_bc[0], axis=0)     # (P,)
    cos_sim = tracker(
        jno.np.dot(g_pde, g_bc) / (jno.np.norm(g_pde) * jno.np.norm(g_bc) + 1e-8),
        interval=100,
    )
    crux = jno.core([pde.mse, bc.mse, cos_sim])
    # ---
    history = _quiet(crux, 201)
    P = u_net.num_params
    assert J_pde.value_shape == (1, N_INT, P) and J_bc.value_shape == (1, N_BND, P)
    values = history.trackers["tracker_0"].values
    assert values.shape == (3,) and np.all(np.abs(values) <= 1 + 1e-6)


def test_restricting_to_a_parameter_subset():
    s = _setup()
    u, u_net = s["u"], s["u_net"]
    from jno_flax.numpy import tracker
    # --- page (NNX form of the equinox mask lines)
    all_false = jax.tree.map(lambda _: False, nnx.state(u_net.module, nnx.Param))
    output_mask = all_false
    output_mask["output_layer"]["kernel"] = True
    J_out = u.grad(u_net.mask(output_mask))     # only output-layer weights
    J_norm = tracker(jno.np.mean(J_out ** 2), interval=50)
    # --- the equivalent NNX filter
    J_filter = u.grad(u_net.mask(nnx.All(nnx.Param, nnx.PathContains("output_layer"),
                                         nnx.PathContains("kernel"))))
    crux = jno.core([u.mse, J_norm])
    history = _quiet(crux, 51)
    a, b, full = crux.eval([J_out, J_filter, u.grad(u_net)])
    assert a.shape == (1, N_INT, 16)        # the 16 x 1 output kernel
    np.testing.assert_array_equal(a, b)
    # the output kernel's Jacobian is the last hidden activation: a column block of the full J
    kernel_cols = [i for i in range(full.shape[-1])
                   if np.allclose(full[0, :, i], a[0, :, 0])]
    assert kernel_cols
    np.testing.assert_array_equal(history.trackers["tracker_0"].steps, [0, 50])


def test_jacobian_as_a_stop_gradient_loss_term():
    """The regulariser enters the loss with a constant Jacobian: it adds its value to the loss
    and nothing to the gradient, so the weights follow the run without it exactly."""
    def run(with_reg: bool):
        s = _setup(hidden=8)
        u, u_net, pde, bc = s["u"], s["u_net"], s["pde"], s["bc"]
        # --- page (prose)
        J_sg = u.grad(u_net).stop_gradient[0]          # (N, P)
        target_K = jnp.eye(N_INT)
        ntk_reg = (J_sg @ J_sg.T - target_K).mse
        # ---
        items = [pde.mse, bc.mse] + ([ntk_reg.name("ntk_reg")] if with_reg else [])
        crux = jno.core(items)
        return crux, _quiet(crux, 30)

    crux, h = run(True)
    ref, h_ref = run(False)
    assert h.losses["ntk_reg"][0] > 0
    np.testing.assert_allclose(h.total_loss, h_ref.total_loss + h.losses["ntk_reg"], rtol=1e-5)
    assert h.losses["loss_0"][-1] < h.losses["loss_0"][0]
    for a, b in zip(jax.tree.leaves(crux.state.params), jax.tree.leaves(ref.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
