"""Energy natural gradient (``engd``): exact on linear least squares, the residuals the
Trainer passes, and the losses it refuses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.optimizers import Objective, engd, gauss_newton_direction
from tests.conftest import TinyProblem

QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False,
         "enable_checkpointing": False}


def test_one_step_solves_a_linear_least_squares_problem_exactly():
    with jax.enable_x64(True):
        dom = jno.domain.interval(0, 1, n_interior=50, n_boundary=2, seed=0)
        (x,) = dom.variable("interior")
        p = jnn.parameter((3,), name="p").optimizer(engd())
        fit = (p[0] + p[1] * x + p[2] * x**2 - jnn.sin(3 * x)).mse.name("fit")
        anchor = (p[0] - 0.5).mse.name("anchor")   # a second mean square, of another size
        crux = jno.core([fit, anchor])
        h = crux.solve(1, **QUIET)
        xs = np.asarray(crux.eval(x))[0, :, 0]
        n = xs.size
        a = np.concatenate([np.stack([np.ones(n), xs, xs**2], 1) / np.sqrt(n), [[1, 0, 0]]])
        f = np.concatenate([np.sin(3 * xs) / np.sqrt(n), [0.5]])
        exact = np.linalg.lstsq(a, f, rcond=None)[0]
        np.testing.assert_allclose(np.asarray(crux.eval(p)), exact, rtol=1e-10, atol=1e-12)
        assert h.total_loss[0] > 0.1


@pytest.mark.parametrize("damping, shape", [(0.0, (40, 6)), (0.0, (6, 40)), (1e-12, (40, 6)),
                                            (1e-12, (6, 40))],
                         ids=["pinv-params", "pinv-points", "damped-params", "damped-points"])
def test_the_direction_is_the_least_squares_solution_in_either_space(damping, shape):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        jac, res = jnp.asarray(rng.normal(size=shape)), jnp.asarray(rng.normal(size=shape[0]))
        d = gauss_newton_direction(jac, res, damping)
        expected = np.linalg.lstsq(np.asarray(jac), np.asarray(res), rcond=None)[0]
        np.testing.assert_allclose(np.asarray(d), expected, rtol=1e-6, atol=1e-8)


def test_engd_on_a_network_and_a_parameter_in_one_fit():
    """Two trainables on engd in one fit, each solving its own block of the Gram matrix
    (with the other held): the network fits sin(πx), the parameter its constraint exactly."""
    with jax.enable_x64(True):
        from flax import nnx
        dom = jno.domain.interval(0, 1, n_interior=64, n_boundary=2, seed=0)
        (x,) = dom.variable("interior")
        net = jno.nn.wrap(jno.nn.MLP(1, 1, hidden=8, depth=1, rngs=nnx.Rngs(0)),
                          name="u").optimizer(engd())
        k = jnn.parameter((1,), name="k", init=0.5).optimizer(engd())
        crux = jno.core([(net(x) - jnn.sin(np.pi * x)).mse.name("data"),
                         (k * x - 2.0 * x).mse.name("k")])
        h = crux.solve(30, **QUIET)
        assert h.losses["data"][-1] < 1e-10 and h.losses["k"][1] < 1e-20
        np.testing.assert_allclose(np.asarray(crux.eval(k)), [2.0], rtol=1e-12)


def test_a_loss_that_is_not_a_sum_of_mean_squares_is_refused():
    t = TinyProblem()
    t.net.optimizer(engd())
    with pytest.raises(ValueError, match=r"`engd`\) need every constraint to be a mean square "
                                         r"\(`residual.mse`\).*constraint 'bc' is"):
        jno.core([t.pde, t.net(t.xb, t.yb).mae.name("bc")]).solve(1, **QUIET)
    w = jno.adaptive.relobralo([t.pde, t.bc])
    with pytest.raises(ValueError, match=r"Adaptive weights are not supported"):
        jno.core([w[0] * t.pde, w[1] * t.bc]).solve(1, **QUIET)


def test_engd_outside_the_trainer_needs_an_objective_with_residuals():
    tx = engd()
    p = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"`engd` needs the residuals of the loss"):
        tx.update(p, tx.init(p), p, value_fn=lambda q: jnp.sum(q**2))
    target = jnp.array([1.0, -2.0])
    objective = Objective(lambda q: jnp.sum((q - target) ** 2), lambda q: q - target)
    updates, _ = tx.update(p, tx.init(p), p, value_fn=objective)
    np.testing.assert_allclose(np.asarray(optax.apply_updates(p, updates)), target, atol=1e-6)
