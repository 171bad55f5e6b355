"""The problem (`jno.core`): constraints, trackers, eval, and their errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.trainers import Trainer


def test_names_defaults_and_lists(tiny):
    crux = jno.core([tiny.pde, tiny.bc, jnn.tracker(tiny.error, 5), tiny.u.mean])
    assert list(crux.constraints) == ["pde", "bc", "loss_2"]
    assert list(crux.trackers) == ["tracker_0"]
    assert list(crux.models) == ["u"]


def test_first_step_loss_matches_a_hand_computation(tiny):
    crux = tiny.core()
    history = Trainer(max_steps=1, enable_progress_bar=False).fit(crux)
    # reference: plain JAX on the initial weights (the live module is updated after fit,
    # so rebuild the same initial network)
    net = jno.nn.MLP(2, 1, hidden=8, depth=2, rngs=nnx.Rngs(0))
    xi = jnp.asarray(tiny.dom.points("interior"))
    xb = jnp.asarray(tiny.dom.points("boundary"))
    lap = jax.vmap(lambda p: jnp.trace(jax.hessian(lambda q: net(q)[0])(p)))(xi)
    src = 2 * jnp.pi**2 * jnp.sin(jnp.pi * xi[:, 0]) * jnp.sin(jnp.pi * xi[:, 1])
    pde = jnp.mean((lap + src) ** 2)
    bc = jnp.mean(jax.vmap(net)(xb) ** 2)
    np.testing.assert_allclose(history.losses["pde"][0], pde, rtol=1e-4)
    np.testing.assert_allclose(history.losses["bc"][0], bc, rtol=1e-5)
    np.testing.assert_allclose(history.total_loss[0], pde + bc, rtol=1e-4)


def test_eval_single_list_and_inputs(tiny):
    crux = tiny.core()
    u = crux.eval(tiny.u)
    assert u.shape == (1, 64, 1)
    u2, e = crux.eval([tiny.u, tiny.u_exact])
    np.testing.assert_array_equal(u, u2)
    g = np.linspace(0.1, 0.9, 7)[:, None]
    out = crux.eval(tiny.u_exact, inputs={tiny.x: g, tiny.y: g[None]})
    assert out.shape == (1, 7, 1)
    np.testing.assert_allclose(out[0, :, 0], np.sin(np.pi * g[:, 0]) ** 2, rtol=1e-5)
    # a derivative at new points
    lap = crux.eval(tiny.u_exact.laplacian(tiny.x, tiny.y), inputs={tiny.x: g, tiny.y: g})
    np.testing.assert_allclose(lap[0, :, 0], -2 * np.pi**2 * np.sin(np.pi * g[:, 0]) ** 2,
                               rtol=1e-3)


# ---------------------------------------------------------------------- bad input
def test_empty_constraint_list_is_an_error():
    with pytest.raises(ValueError, match="`constraints` is empty"):
        jno.core([])


def test_non_scalar_constraint_is_an_error(tiny):
    with pytest.raises(ValueError, match=r"`constraints\[1\]` must be a scalar loss term.*"
                                          r"\(1, 64, 1\).*residual.mse"):
        jno.core([tiny.pde, tiny.u])


def test_only_trackers_or_junk_is_an_error(tiny):
    with pytest.raises(ValueError, match="holds only trackers"):
        jno.core([jnn.tracker(tiny.error)])
    with pytest.raises(TypeError, match=r"`constraints\[0\]` must be an expression or a "
                                        "tracker, got str"):
        jno.core(["pde"])


def test_duplicate_names_are_an_error(tiny):
    with pytest.raises(ValueError, match="name 'pde' is used twice"):
        jno.core([tiny.pde, tiny.bc, jnn.tracker(tiny.error, name="pde")])


def test_tracker_inside_a_loss_is_an_error(tiny):
    t = jnn.tracker(tiny.error, interval=10)
    with pytest.raises(TypeError, match="cannot be used inside a loss term"):
        t * 2
    with pytest.raises(TypeError, match="must not be used inside a loss term"):
        tiny.pde + t


def test_eval_inputs_must_agree(tiny):
    crux = tiny.core()
    with pytest.raises(ValueError, match=r"disagree in their number of points.*'x': 5.*'y': 4"):
        crux.eval(tiny.u, inputs={tiny.x: np.zeros((5, 1)), tiny.y: np.zeros((4, 1))})
    with pytest.raises(ValueError, match=r"miss \['y'\]"):
        crux.eval(tiny.u, inputs={tiny.x: np.zeros((5, 1))})
    with pytest.raises(ValueError, match=r"`inputs\[x\]` must have shape \(N, 1\)"):
        crux.eval(tiny.u, inputs={tiny.x: np.zeros((5, 2)), tiny.y: np.zeros((5, 1))})
    with pytest.raises(TypeError, match="`inputs` keys must be variables"):
        crux.eval(tiny.u, inputs={"x": np.zeros((5, 1))})


@pytest.mark.parametrize("steps", [0, -3, 2.5, "10", True], ids=repr)
def test_max_steps_must_be_a_positive_integer(steps):
    with pytest.raises(ValueError, match="`max_steps` must be a positive integer"):
        Trainer(max_steps=steps)


def test_solve_steps_must_be_a_positive_integer(tiny):
    with pytest.raises(ValueError, match="`steps` must be a positive integer, got 0"):
        tiny.core().solve(0)


def test_loss_is_a_reserved_name(tiny):
    with pytest.raises(ValueError, match=r"the name 'loss' is reserved for the total loss"):
        jno.core([tiny.pde.name("loss"), tiny.bc])
    with pytest.raises(ValueError, match=r"the name 'loss' is reserved"):
        tiny.core(jnn.tracker(tiny.error, name="loss"))


def test_toggling_x64_after_building_is_a_clear_error(tiny):
    crux = tiny.core()
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match=r"`jax_enable_x64` is True but was False when "
                                             r"this problem was built"):
            Trainer(max_steps=2, logger=False, enable_progress_bar=False).fit(crux)
    assert crux.state is None
