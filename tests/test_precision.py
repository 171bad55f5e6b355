"""float64 end to end: with ``jax_enable_x64`` set before building, every array follows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
import pytest

import jno_flax as jno

SCRIPT = Path(__file__).parent / "scripts" / "float64_run.py"


@pytest.mark.slow   # long: run with `-m slow`
def test_poisson_in_float64_end_to_end():
    """Parameters, points, balancer states, weights, eval outputs and History are float64, and
    the parameter Jacobian matches central finite differences to 1e-8 (a subprocess: x64 is
    global)."""
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


def test_mlp_parameters_default_to_the_default_float_and_take_param_dtype():
    mlp = jno.nn.MLP(2, 1, hidden=4, depth=1, rngs=nnx.Rngs(0))
    assert {v.dtype for v in jax.tree.leaves(nnx.state(mlp, nnx.Param))} == {jnp.dtype("float32")}
    with jax.enable_x64(True):
        wide = jno.nn.MLP(2, 1, hidden=4, depth=1, rngs=nnx.Rngs(0))
    assert {v.dtype for v in jax.tree.leaves(nnx.state(wide, nnx.Param))} == {jnp.dtype("float64")}
    half = jno.nn.MLP(2, 1, hidden=4, depth=1, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert {v.dtype for v in jax.tree.leaves(nnx.state(half, nnx.Param))} == {jnp.dtype("bfloat16")}


QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False,
         "enable_checkpointing": False}


def _float_dtypes(tree):
    return {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_a_float32_phase_then_a_float64_phase_continue_one_run(tmp_path):
    """``precision="32-true"`` then ``"64-true"``: one run (steps, History), every float of
    the state cast, the checkpoint records the precision and resumes into it."""
    import json

    import numpy as np

    from jno_flax.callbacks import ModelCheckpoint
    from jno_flax.optimizers import ssbroyden
    from jno_flax.trainers import Trainer
    from tests.conftest import TinyProblem
    with jax.enable_x64(True):
        t = TinyProblem()
        crux = t.core()
        crux.solve(20, precision="32-true", **QUIET)
        assert _float_dtypes(crux.state) == {jnp.dtype("float32")}
        t.net.optimizer(ssbroyden())
        ckpt = ModelCheckpoint(tmp_path, every_n_train_steps=10)
        h = crux.solve(20, precision="64-true", callbacks=[ckpt],
                       **{**QUIET, "enable_checkpointing": True})
        assert _float_dtypes(crux.state) == {jnp.dtype("float64")}
        assert crux.history.total_loss.dtype == np.float64
        np.testing.assert_array_equal(h.steps, np.arange(40))
        assert h.total_loss[-1] < 0.1 * h.total_loss[19]
        with open(tmp_path / "40" / "metadata" / "metadata") as f:
            assert json.load(f)["precision"] == "64-true"
        again = TinyProblem()
        again.net.optimizer(ssbroyden())
        resumed = again.core()
        Trainer(max_steps=40, precision="64-true", callbacks=[ModelCheckpoint(tmp_path)],
                **{**QUIET, "enable_checkpointing": True}).fit(resumed, ckpt_path="last")
        for a, b in zip(jax.tree.leaves(crux.state), jax.tree.leaves(resumed.state)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_precision_errors_name_what_is_accepted():
    import pytest

    from jno_flax.trainers import Trainer
    from tests.conftest import TinyProblem
    with pytest.raises(ValueError, match=r"`precision` must be one of \['32-true', '32', 32, "
                                         r"'64-true', '64', 64\] or None .*got '16-mixed'"):
        Trainer(max_steps=2, precision="16-mixed")
    assert Trainer(max_steps=2, precision=64).precision == "64-true"
    with pytest.raises(ValueError, match=r"`precision=\"64-true\"` needs float64 arrays, "
                                         r"which JAX gives only with `jax_enable_x64`"):
        TinyProblem().core().solve(2, precision="64-true", **QUIET)


def test_a_float32_checkpoint_resumes_exactly_then_runs_in_float64(tmp_path):
    """The state is read in the checkpoint's recorded precision (its exact values), then cast
    to the resuming Trainer's."""
    import numpy as np

    from jno_flax.callbacks import ModelCheckpoint
    from jno_flax.trainers import Trainer
    from tests.conftest import TinyProblem
    kw = {**QUIET, "enable_checkpointing": True}
    with jax.enable_x64(True):
        first = TinyProblem().core()
        Trainer(max_steps=10, precision="32-true", callbacks=[ModelCheckpoint(tmp_path / "a")],
                **kw).fit(first)
        resumed = TinyProblem().core()
        Trainer(max_steps=10, precision="64-true", callbacks=[ModelCheckpoint(tmp_path / "b")],
                **kw).fit(resumed, ckpt_path=str(tmp_path / "a" / "10"))
        assert _float_dtypes(resumed.state) == {jnp.dtype("float64")}
        for a, b in zip(jax.tree.leaves(first.state.params), jax.tree.leaves(resumed.state.params)):
            np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b))


def test_the_float32_phase_of_an_x64_problem_stays_float32_with_features_and_time_slices():
    """A fixed Fourier feature matrix (not a Param) and causal time-slice weights follow the
    precision: the ``"32-true"`` phase of an x64-built problem keeps every float of its state
    and of the network in float32 (the slices' indicator once made the balancer's state
    float64 and the step failed), and the ``"64-true"`` phase after it is float64."""
    import jno_flax.numpy as jnn
    with jax.enable_x64(True):
        dom = jno.domain.interval(-1, 1, n_interior=64, n_boundary=2, time=(0, 1), seed=0)
        x, t = dom.variable("interior")
        module = jno.nn.Sequential(jno.nn.FourierFeatures(2, 8, rngs=nnx.Rngs(0)),
                                   jno.nn.MLP(8, 1, hidden=8, depth=1, rngs=nnx.Rngs(1)))
        net = jno.nn.wrap(module, name="u")
        u = net(x, t)
        slices = jno.adaptive.time_slices(u.d(t) - 0.01 * u.d2(x) + jnn.sin(x), t, 4)
        w = jno.adaptive.causal(slices)
        crux = jno.core([sum((w[i] * s for i, s in enumerate(slices[1:], 1)),
                             w[0] * slices[0]).name("pde")])
        assert module.layers[0].kernel[...].dtype == jnp.float64
        h = crux.solve(5, precision="32-true", **QUIET)
        assert _float_dtypes(crux.state) == {jnp.dtype("float32")}
        assert module.layers[0].kernel[...].dtype == jnp.float32
        crux.solve(5, precision="64-true", **QUIET)
        assert _float_dtypes(crux.state) == {jnp.dtype("float64")}
        assert module.layers[0].kernel[...].dtype == jnp.float64
        assert len(crux.history.steps) == 10 and h.total_loss[-1] > 0
