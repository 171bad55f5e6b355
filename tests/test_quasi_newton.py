"""Dense quasi-Newton methods (BFGS, SS-BFGS, SS-Broyden): convergence, the update formulas
on hand-checked cases, the trainer's line search, resume and the size limit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jno_flax.callbacks import ModelCheckpoint, SwitchOptimizer
from jno_flax.optimizers import bfgs, broyden_update, ssbfgs, ssbroyden
from jno_flax.trainers import Trainer
from tests.conftest import TinyProblem

QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False,
         "enable_checkpointing": False}
METHODS = {"bfgs": bfgs, "ssbfgs": ssbfgs, "ssbroyden": ssbroyden}


def _minimise(tx, f, x, steps):
    state = tx.init(x)

    @jax.jit
    def step(x, state):
        v, g = jax.value_and_grad(f)(x)
        u, state = tx.update(g, state, x, value=v, grad=g, value_fn=f)
        return optax.apply_updates(x, u), state
    path = [x]
    for _ in range(steps):
        x, state = step(x, state)
        path.append(x)
    return path


def test_bfgs_solves_a_convex_quadratic_in_n_plus_2_iterations():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        n = 8
        a = rng.normal(size=(n, n))
        a = jnp.asarray(a @ a.T + n * np.eye(n))
        b = jnp.asarray(rng.normal(size=n))
        solution = jnp.linalg.solve(a, b)
        path = _minimise(bfgs(), lambda x: 0.5 * x @ a @ x - b @ x, jnp.zeros(n), n + 2)
        err = float(jnp.linalg.norm(path[-1] - solution) / jnp.linalg.norm(solution))
        assert err < 1e-10


@pytest.mark.parametrize("name", list(METHODS))
def test_rosenbrock_is_solved_to_1e_8(name):
    with jax.enable_x64(True):
        def rosenbrock(x):
            return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
        path = _minimise(METHODS[name](), rosenbrock, jnp.array([-1.2, 1.0, -1.2, 1.0]), 80)
        assert float(jnp.max(jnp.abs(path[-1] - 1))) < 1e-8


# H = I, s = (1, 0), y = (2, 1): yᵀs = 2, Hy = (2, 1), yᵀHy = 5, h = 5/2.
S, Y = jnp.array([1.0, 0.0]), jnp.array([2.0, 1.0])


@pytest.mark.parametrize("variant, b, first, expected", [
    # b = 1/2: a = 1/4, c = √(1/5), ρ⁻ = 1, θ⁻ = 0, θ⁺ = 1, (1 - b)/b = 1 → θ = 1 (DFP, φ = 0);
    # later τ = min(σ^(1/(1-2)), 1/θ) = min(1/1.25, 1) = 0.8: H₊ = (I - Hy Hyᵀ/5)/0.8 + ssᵀ/2
    ("ssbroyden", 0.5, False, [[0.75, -0.5], [-0.5, 1.0]]),
    # first update: τ = h / (1 + aθ) = 2.5 / 1.25 = 2
    ("ssbroyden", 0.5, True, [[0.6, -0.2], [-0.2, 0.4]]),
    # SS-BFGS, b = 2: τ = min(1, 1/b) = 1/2, i.e. classic BFGS applied to H/τ = 2I
    ("ssbfgs", 2.0, False, [[1.0, -1.0], [-1.0, 2.0]]),
    # BFGS: (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ with ρ = 1/2
    ("bfgs", 2.0, False, [[0.75, -0.5], [-0.5, 1.0]]),
], ids=["ssbroyden-later", "ssbroyden-first", "ssbfgs-later", "bfgs"])
def test_update_equals_the_hand_computed_formula(variant, b, first, expected):
    H, ok = broyden_update(variant, jnp.eye(2), S, Y, jnp.asarray(b), jnp.asarray(first))
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(H), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(H @ Y), np.asarray(S), atol=1e-6)  # secant


@pytest.mark.parametrize("name", list(METHODS))
def test_updates_stay_symmetric_positive_definite_and_satisfy_the_secant_equation(name):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        n = 6
        q = rng.normal(size=(n, n))
        H = jnp.asarray(q @ q.T + np.eye(n))
        for first in (True, False):
            s = jnp.asarray(rng.normal(size=n))
            y = s + 0.1 * jnp.asarray(rng.normal(size=n))
            new, ok = broyden_update(name, H, s, y, jnp.asarray(1.3), jnp.asarray(first))
            assert bool(ok)
            np.testing.assert_allclose(np.asarray(new), np.asarray(new.T), atol=1e-12)
            assert float(jnp.linalg.eigvalsh(new).min()) > 0
            np.testing.assert_allclose(np.asarray(new @ y), np.asarray(s), atol=1e-10)


def test_ssbroyden_in_the_trainer_beats_adam_on_the_tiny_problem():
    t = TinyProblem()
    t.net.optimizer(ssbroyden())
    h = t.core().solve(60, **QUIET)
    adam = TinyProblem()
    h_adam = adam.core().solve(60, **QUIET)
    assert h.total_loss[-1] < 1e-2 * h_adam.total_loss[-1]
    assert np.all(np.isfinite(h.total_loss))


def test_switching_from_adam_to_ssbfgs_continues_the_run():
    h = Trainer(max_steps=40, callbacks=[SwitchOptimizer(20, ssbfgs())],
                **QUIET).fit(TinyProblem().core())
    h_adam = Trainer(max_steps=40, **QUIET).fit(TinyProblem().core())
    np.testing.assert_array_equal(h.steps, np.arange(40))
    np.testing.assert_array_equal(h.total_loss[:20], h_adam.total_loss[:20])
    assert h.total_loss[-1] < 0.2 * h.total_loss[19]
    assert h.total_loss[-1] < 0.2 * h_adam.total_loss[-1]


@pytest.mark.slow   # long: run with `-m slow`
def test_resume_in_the_middle_of_a_quasi_newton_phase_is_bit_identical(tmp_path):
    def fit(steps, *callbacks, ckpt_path=None):
        t = TinyProblem()
        t.net.optimizer(ssbroyden())
        crux = t.core()
        kw = {**QUIET, "enable_checkpointing": True}
        h = Trainer(max_steps=steps, chunk_size=10, callbacks=list(callbacks),
                    **kw).fit(crux, ckpt_path=ckpt_path)
        return crux, h
    full, h_full = fit(20)
    fit(10, ModelCheckpoint(tmp_path, every_n_train_steps=10))
    resumed, h = fit(20, ModelCheckpoint(tmp_path / "resumed"), ckpt_path=str(tmp_path / "10"))
    np.testing.assert_array_equal(h.total_loss, h_full.total_loss)
    hessians = [s.opt_state["u"][0].inverse_hessian for s in (full.state, resumed.state)]
    assert hessians[0].shape == (105, 105) and not np.allclose(hessians[0], np.eye(105))
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_dense_matrix_over_the_limit_is_a_clear_error():
    t = TinyProblem()
    t.net.optimizer(bfgs(max_params=100))
    with pytest.raises(ValueError, match=r"P = 105 parameters, a matrix of 0\.00 GiB, over "
                                         r"the limit `max_params=100`\. Use `optax\.lbfgs\(\)`"):
        t.core().solve(2, **QUIET)
    with pytest.raises(ValueError, match=r"`max_params` must be a positive integer, got 0"):
        ssbroyden(max_params=0)


def test_line_search_states_compile_the_chunk_once_across_chunks_and_fits():
    """optax's line-search info starts weakly typed; the Trainer's fresh optimizer states are
    strongly typed, so the chunk runner compiles once for six chunks in two ``solve`` calls
    (it compiled again after the first chunk, and again in the second ``solve``)."""
    import logging

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    messages: list[str] = []
    t = TinyProblem()
    t.net.optimizer(ssbroyden())
    crux = t.core()
    handler = Collect()
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles(True):
            crux.solve(30, chunk_size=10, **QUIET)
            crux.solve(30, chunk_size=10, **QUIET)
    finally:
        logging.getLogger("jax").removeHandler(handler)
    assert sum(m.startswith("Compiling jit(run)") for m in messages) == 1, messages
    assert crux.global_step == 60
