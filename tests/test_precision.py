"""float64 end to end: with ``jax_enable_x64`` set before building, every array follows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import jno_flax as jno

SCRIPT = Path(__file__).parent / "scripts" / "float64_run.py"


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
