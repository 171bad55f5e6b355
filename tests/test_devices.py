"""Points sharded over devices: equal losses, trackers and Jacobians; bad `devices` refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jno_flax.trainers import Trainer

SCRIPT = Path(__file__).parent / "scripts" / "sharded_run.py"


@pytest.mark.parametrize("n_interior, n_boundary, extra", [
    (1001, 201, []), pytest.param(1000, 200, ["schemes"], marks=pytest.mark.slow)])
def test_four_devices_train_like_one(n_interior, n_boundary, extra):
    """50 steps on 4 forced CPU devices (a subprocess: the device count is fixed at start):
    losses, adaptive weights, an error tracker, a Jacobian-norm tracker and `crux.eval` equal
    the one-device run within rtol 1e-5, and the step's point arrays span the 4 devices along
    the "points" axis; 1001 + 201 points are not divisible by 4. The slow case also trains
    every other adaptive scheme (SoftAdapt, DWA, gradient-norm, NTK, uncertainty, causal) on
    1 and 4 devices: equal losses and weights."""
    run = subprocess.run([sys.executable, str(SCRIPT), str(n_interior), str(n_boundary),
                          *extra], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


def test_bad_devices_are_refused():
    n = len(jax.devices())
    with pytest.raises(ValueError, match=f"`devices` asks for {n + 1} devices, but {n} exist"):
        Trainer(max_steps=1, devices=n + 1)
    with pytest.raises(ValueError, match="`devices` asks for 0 devices"):
        Trainer(max_steps=1, devices=0)
    with pytest.raises(TypeError, match=r"`devices\[0\]` must be a jax device.*got str: 'cpu'"):
        Trainer(max_steps=1, devices=["cpu"])
    with pytest.raises(ValueError, match="`devices` must be \"auto\""):
        Trainer(max_steps=1, devices="gpu")
    with pytest.raises(ValueError, match="names a device twice"):
        Trainer(max_steps=1, devices=[jax.devices()[0]] * 2)
    assert Trainer(max_steps=1, devices=[jax.devices()[0]]).sharding.sharded is False
