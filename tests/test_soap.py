"""SOAP: Adam when no side is preconditioned, Shampoo's eigenbasis otherwise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jno_flax.optimizers import scale_by_soap, soap
from tests.conftest import TinyProblem

QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False,
         "enable_checkpointing": False}


def _grads(n):
    rng = np.random.default_rng(0)
    return [{"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
             "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)} for _ in range(n)]


def test_soap_without_preconditioned_sides_is_adam():
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    ours, adam = soap(1e-2, b1=0.9, b2=0.99, max_precond_dim=0), optax.adam(1e-2, 0.9, 0.99)
    s1, s2 = ours.init(params), adam.init(params)
    for g in _grads(6):
        u1, s1 = ours.update(g, s1, params)
        u2, s2 = adam.update(g, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)


def test_the_eigenbasis_diagonalises_the_factors_and_refreshes_on_schedule():
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    tx = scale_by_soap(precondition_frequency=3)
    state = tx.init(params)
    assert state.left["w"].shape == (4, 4) and state.right["w"].shape == (3, 3)
    assert state.left["b"].shape == ()   # biases: plain Adam (a scalar, never a size-0 array)
    bases = []
    for g in _grads(4):
        _, state = tx.update(g, state, params)
        bases.append(np.asarray(state.q_left["w"]))
    q, factor = bases[0], None
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-5)
    np.testing.assert_array_equal(bases[1], bases[0])      # steps 2, 3: kept
    np.testing.assert_array_equal(bases[2], bases[0])
    assert not np.allclose(bases[3], bases[0])              # step 4: refreshed
    factor = np.asarray(state.left["w"])
    rotated = bases[3].T @ factor @ bases[3]
    np.testing.assert_allclose(rotated - np.diag(np.diag(rotated)), 0, atol=1e-5)


def test_soap_trains_the_tiny_problem():
    t = TinyProblem()
    t.net.optimizer(soap(1e-2))
    h = t.core().solve(200, **QUIET)
    assert h.total_loss[-1] < 0.05 * h.total_loss[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_precond_dim": -1}, r"`max_precond_dim` must be >= 0 \(0: plain Adam\), got -1"),
    ({"precondition_frequency": 0}, r"`precondition_frequency` must be a positive integer"),
    ({"b1": 1.5}, r"`b1` must be a number in \[0, 1\], got 1.5"),
    ({"learning_rate": -1e-2}, r"`learning_rate` must be a finite positive number or an optax "
                               r"schedule .*, got -0.01"),
    ({"learning_rate": 0}, r"`learning_rate` must be a finite positive number.*, got 0\."),
    ({"learning_rate": float("nan")}, r"`learning_rate` must be a finite positive.*, got nan"),
], ids=["max_precond_dim", "frequency", "b1", "negative_lr", "zero_lr", "nan_lr"])
def test_bad_soap_arguments_are_clear_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        soap(**kwargs)
