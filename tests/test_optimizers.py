"""Optax transforms that need the loss inside the step: L-BFGS and line searches."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jno_flax as jno
import jno_flax.numpy as jnn

QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}


def test_lbfgs_minimises_a_quadratic_exactly_in_few_steps():
    p = jnn.parameter((3,), name="p").optimizer(optax.lbfgs())
    scales, centre = jnp.array([1.0, 10.0, 100.0]), jnp.array([0.5, -2.0, 3.0])
    crux = jno.core([jnn.sum(scales * (p - centre) ** 2).name("quadratic")])
    h = crux.solve(12, **QUIET)
    np.testing.assert_allclose(np.asarray(crux.eval(p)), centre, atol=1e-6)
    assert h.total_loss[0] > 900 and h.total_loss[-1] < 1e-12  # adam would need thousands


def test_lbfgs_steps_equal_a_hand_written_optax_loop():
    dom = jno.domain.interval(0, 1, n_interior=64, n_boundary=2, seed=0)
    (x,) = dom.variable("interior")
    p = jnn.parameter((3,), name="p").optimizer(optax.lbfgs())
    crux = jno.core([(p[0] + p[1] * x + p[2] * x**2 - (1 + 2 * x - 3 * x**2)).mse])
    h = crux.solve(12, **QUIET)

    xs = jnp.asarray(dom.points("interior"))[:, 0]

    def loss(q):
        return jnp.mean((q[0] + q[1] * xs + q[2] * xs**2 - (1 + 2 * xs - 3 * xs**2)) ** 2)
    tx = optax.lbfgs()

    @jax.jit
    def step(q, state):
        v, g = optax.value_and_grad_from_state(loss)(q, state=state)
        updates, state = tx.update(g, state, q, value=v, grad=g, value_fn=loss)
        return optax.apply_updates(q, updates), state, v
    q = jnp.zeros(3)
    state, values = tx.init(q), []
    for _ in range(12):
        q, state, v = step(q, state)
        values.append(float(v))
    np.testing.assert_allclose(h.total_loss, values, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(crux.eval(p)), q, rtol=1e-5)


def test_changing_the_optimizer_between_solves_starts_its_state_fresh(tiny):
    crux = tiny.core()
    crux.solve(5, **QUIET)
    trained = np.asarray(crux.eval(tiny.u))
    tiny.net.optimizer(optax.lbfgs())
    h = crux.solve(5, **QUIET)
    assert crux.global_step == 10 and len(h) == 10
    fresh = optax.lbfgs().init(crux.state.params["u"])
    assert jax.tree.structure(crux.state.opt_state["u"]) == jax.tree.structure(fresh)
    np.testing.assert_allclose(h.total_loss[5], h.total_loss[4], rtol=0.05)  # went on from
    final = float(sum(np.asarray(v) for v in crux.eval([tiny.pde, tiny.bc])))  # the weights
    assert final < h.total_loss[5]  # L-BFGS went downhill from there
    assert not np.array_equal(trained, np.asarray(crux.eval(tiny.u)))


def _lbfgs_problem():
    from tests.conftest import TinyProblem
    t = TinyProblem()
    return t, t.core(jnn.tracker(t.error, 5, name="err"))


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow   # long: run with `-m slow`
def test_switch_at_a_step_equals_two_solves():
    from jno_flax.callbacks import SwitchOptimizer
    t, two = _lbfgs_problem()
    two.solve(12, **QUIET)
    t.net.optimizer(optax.lbfgs())
    h_two = two.solve(8, **QUIET)
    _, one = _lbfgs_problem()
    h_one = one.solve(20, callbacks=[SwitchOptimizer(12, optax.lbfgs())], **QUIET)
    np.testing.assert_array_equal(h_one.total_loss, h_two.total_loss)
    _same(one.state, two.state)


def test_resume_across_a_switch_is_bit_identical(tmp_path):
    from jno_flax.callbacks import ModelCheckpoint, SwitchOptimizer
    from jno_flax.trainers import Trainer
    # rmsprop: a state of another structure than adam's that compiles fast (L-BFGS is above)
    second = optax.rmsprop(1e-3)

    def fit(crux, steps, dirpath, ckpt_path=None):
        cbs = [ModelCheckpoint(dirpath, every_n_train_steps=10, save_top_k=-1),
               SwitchOptimizer(15, {"u": second})]
        return Trainer(max_steps=steps, callbacks=cbs, **QUIET).fit(crux, ckpt_path=ckpt_path)
    _, full = _lbfgs_problem()
    h_full = Trainer(max_steps=40, callbacks=[SwitchOptimizer(15, second)], **QUIET).fit(full)
    _, part = _lbfgs_problem()
    fit(part, 30, tmp_path)
    for ckpt in ("10", "30"):  # before and after the switch
        _, resumed = _lbfgs_problem()
        # from 10, the continued run writes elsewhere: 20 and 30 of the first stay untouched
        h = fit(resumed, 40, tmp_path / f"from_{ckpt}", ckpt_path=str(tmp_path / ckpt))
        np.testing.assert_array_equal(h.total_loss, h_full.total_loss)
        _same(resumed.state, full.state)


def test_switch_optimizer_errors(tiny):
    from jno_flax.callbacks import SwitchOptimizer
    with pytest.raises(ValueError, match="`at_step` must be a positive integer"):
        SwitchOptimizer(0, optax.lbfgs())
    with pytest.raises(TypeError, match="`optimizer` must be an optax GradientTransformation"):
        SwitchOptimizer(5, "lbfgs")
    crux = tiny.core()
    with pytest.raises(ValueError, match=r"SwitchOptimizer `optimizer` names \['v'\], which are "
                                         r"not trained trainables; trained: \['u'\]"):
        crux.solve(5, callbacks=[SwitchOptimizer(3, {"v": optax.lbfgs()})], **QUIET)
    crux.solve(10, **QUIET)
    with pytest.raises(ValueError, match="SwitchOptimizer `at_step` 5 has already passed: the "
                                         "run starts at step 10"):
        crux.solve(5, callbacks=[SwitchOptimizer(5, optax.lbfgs())], **QUIET)


def test_dropping_the_switched_chunk_in_flight_changes_no_number():
    """With overlap, the chunk after the switch is launched before the callbacks of the chunk
    ending at the switch run. A callback that stops there, or assigns ``trainer.state``,
    drops it (and the switch it made); the run goes on exactly."""
    from jno_flax.callbacks import Callback, SwitchOptimizer
    from jno_flax.trainers import Trainer

    class AtTen(Callback):
        def __init__(self, action):
            self.action, self.done = action, False

        def on_train_chunk_end(self, trainer, problem, chunk):
            if chunk.last_step + 1 == 10 and not self.done:
                self.done = True
                if self.action == "stop":
                    trainer.stop("test stop at the switch")
                else:
                    trainer.state = jax.tree.map(jnp.copy, trainer.state)

    second = optax.rmsprop(1e-3)
    _, full = _lbfgs_problem()
    h_full = Trainer(max_steps=20, chunk_size=5, callbacks=[SwitchOptimizer(10, second)],
                     **QUIET).fit(full)
    for action in ("stop", "replace"):
        _, part = _lbfgs_problem()
        trainer = Trainer(max_steps=20, chunk_size=5,
                          callbacks=[SwitchOptimizer(10, second), AtTen(action)], **QUIET)
        h = trainer.fit(part)
        if action == "stop":
            assert part.global_step == 10
            h = trainer.fit(part)  # the same trainer continues the run
        np.testing.assert_array_equal(h.total_loss, h_full.total_loss)
        _same(part.state, full.state)


def _every_optimizer():
    from jno_flax import optimizers as opt
    return {"bfgs": opt.bfgs(), "ssbfgs": opt.ssbfgs(), "ssbroyden": opt.ssbroyden(),
            "soap": opt.soap(1e-2, precondition_frequency=3), "engd": opt.engd()}


@pytest.mark.parametrize("name", sorted(_every_optimizer()))
def test_every_optimizer_round_trips_through_model_checkpoint(name, tmp_path):
    """A checkpoint of the middle of the run (a synchronous and an asynchronous save, every
    leaf of the optimizer state), resumed by a new Trainer, ends bit-identical to the
    uninterrupted run."""
    from jno_flax import optimizers
    from jno_flax.callbacks import ModelCheckpoint
    from jno_flax.trainers import Trainer
    from tests.conftest import TinyProblem
    assert set(_every_optimizer()) == {n for n in optimizers.__all__ if n.islower()
                                       and n not in ("scale_by_quasi_newton", "broyden_update",
                                                     "scale_by_soap", "gauss_newton_direction")}

    def run(steps, *callbacks, ckpt_path=None):
        t = TinyProblem()
        t.net.optimizer(_every_optimizer()[name])
        crux = t.core()
        h = Trainer(max_steps=steps, chunk_size=4, callbacks=list(callbacks), **QUIET).fit(
            crux, ckpt_path=ckpt_path)
        assert len(h.skipped_steps) == 0 and h.total_loss[-1] < h.total_loss[0]  # it trains
        return crux

    full = run(10)
    run(6, ModelCheckpoint(tmp_path, every_n_train_steps=3, save_top_k=-1))
    assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [3, 6]
    resumed = run(10, ModelCheckpoint(tmp_path / "on"), ckpt_path=str(tmp_path / "3"))
    leaves = jax.tree.leaves(full.state)
    assert len(leaves) == len(jax.tree.leaves(resumed.state))
    for a, b in zip(leaves, jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
