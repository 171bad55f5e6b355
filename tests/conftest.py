"""Shared fixtures: a tiny Poisson-like problem that trains in well under a second; and one
persistent JAX compilation cache for the whole test session.

Many tests compile the same programs (the tiny problem's chunks, the same optimizers): with
the cache, a second compilation of a program is a read. The cache lives in a fresh temporary
folder for this session only (removed at exit), and the processes the tests start (examples,
several processes) share it through ``JAX_COMPILATION_CACHE_DIR``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn


def _compilation_cache() -> str:
    """A fresh persistent compilation cache for this session (and the processes it starts)."""
    folder = tempfile.mkdtemp(prefix="jno-flax-tests-jax-cache-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


_CACHE = _compilation_cache()


class TinyProblem:
    """A 2-D Poisson problem on 64 + 32 points with a 2-8-8-1 MLP."""

    def __init__(self, seed: int = 0, lr: float = 1e-2):
        self.dom = jno.domain.rect((0, 1), (0, 1), n_interior=64, n_boundary=32, seed=seed)
        self.x, self.y = self.dom.variable("interior")
        self.xb, self.yb = self.dom.variable("boundary")
        self.net = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=8, depth=2, rngs=nnx.Rngs(seed)),
                               name="u").optimizer(optax.adam(lr))
        self.u = self.net(self.x, self.y)
        self.u_exact = jnn.sin(jnp.pi * self.x) * jnn.sin(jnp.pi * self.y)
        self.pde = (self.u.laplacian(self.x, self.y)
                    + 2 * jnp.pi**2 * self.u_exact).mse.name("pde")
        self.bc = self.net(self.xb, self.yb).mse.name("bc")
        self.error = jnn.mean(jnn.abs(self.u - self.u_exact))

    def core(self, *extra):
        return jno.core([self.pde, self.bc, *extra])


@pytest.fixture
def tiny() -> TinyProblem:
    return TinyProblem()


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path, monkeypatch):
    """Every test runs in its own directory: default loggers write to ``./runs``."""
    monkeypatch.chdir(tmp_path)


def primitives(jaxpr) -> set[str]:
    """The names of the primitives of ``jaxpr`` and of every sub-jaxpr (scan and cond bodies)."""
    import jax
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.core.jaxprs_in_params(eqn.params):
            names |= primitives(sub)
    return names
