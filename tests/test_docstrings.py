"""The ``>>>`` examples of the docstrings run, in a namespace with a small problem."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn


def _modules():
    names = []
    for package in ("jno_flax", "jno_flax.callbacks", "jno_flax.trainers", "jno_flax.optimizers"):
        mod = importlib.import_module(package)
        names.append(package)
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(mod.__path__)
                  if not m.ispkg]
    return sorted(set(names))


def _namespace():
    """What the examples use: the library's names and a small problem (``x``, ``y``, ``u``,
    ``net``, ``u_exact``, ``pde_residual``, ...)."""
    import jno_flax.callbacks as callbacks
    import jno_flax.nn as nn
    from jno_flax.trainers import Trainer
    dom = jno.domain.rect(n_interior=16, n_boundary=8, seed=0)
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(nn.MLP(2, 1, hidden=4, depth=1, rngs=nnx.Rngs(0)), name="doc_u")
    u = net(x, y)
    u_exact = jnn.sin(jnp.pi * x) * jnn.sin(jnp.pi * y)
    names = {name: getattr(callbacks, name) for name in callbacks.__all__}
    names.update({name: getattr(nn, name) for name in ("MLP", "ModifiedMLP", "PirateNet",
                                                         "FourierFeatures",
                                                         "PeriodicEmbedding")})
    return {**names, "Trainer": Trainer, "jno": jno, "jnn": jnn, "jnp": jnp, "nnx": nnx,
            "optax": optax, "dom": dom, "x": x, "y": y, "xb": xb, "yb": yb, "net": net,
            "u": u, "u_exact": u_exact, "err": jnn.mean(jnn.abs(u - u_exact)),
            "pde_residual": u.laplacian(x, y) + 2 * jnp.pi ** 2 * u_exact,
            "pde": u.laplacian(x, y) + 2 * jnp.pi ** 2 * u_exact, "bc": net(xb, yb),
            "wrap": jno.nn.wrap, "parameter": jno.np.parameter, "tracker": jnn.tracker,
            "function": jnn.function, "seed_everything": jno.seed_everything,
            "rect": jno.domain.rect}


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    finder, runner = doctest.DocTestFinder(exclude_empty=True), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS)
    for test in finder.find(mod, module, globs=_namespace()):
        if test.examples and test.filename and mod.__file__ == test.filename:
            result = runner.run(test)
            assert result.failed == 0, f"{test.name}: {result.failed} example(s) failed"
