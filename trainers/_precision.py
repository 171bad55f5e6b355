"""``Trainer(precision=...)``: the float dtype of a fit, as Lightning spells it.

``"32-true"`` and ``"64-true"`` cast the run's floats — points, parameters, optimizer and
balancer states, resampled points, and the networks' fixed float variables (a Fourier feature
matrix) — to float32 or float64 when ``fit`` starts (a resumed checkpoint is read in the
precision it records, then cast), so one script can train a float32 Adam phase and continue
the same run (step, History) in a float64 quasi-Newton phase::

    jax.config.update("jax_enable_x64", True)          # before building anything
    ...
    crux.solve(5000, precision="32-true")
    net.optimizer(jno.optimizers.ssbroyden())
    crux.solve(2000, precision="64-true")

JAX holds float64 arrays only with ``jax_enable_x64``, so ``"64-true"`` without it is an error.
``None`` (the default) keeps the dtypes the problem was built with. Constants inside
expressions keep their own dtype (a float64 data array promotes a float32 run's arithmetic).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jno_flax._balancer import float_dtype

#: accepted spellings of each precision
PRECISIONS = {"32-true": ("32-true", "32", 32), "64-true": ("64-true", "64", 64)}
DTYPES = {"32-true": jnp.float32, "64-true": jnp.float64}


def resolve_precision(value: Any) -> str | None:
    """``"32-true"``, ``"64-true"`` or ``None`` from any accepted spelling."""
    if value is None:
        return None
    for name, spellings in PRECISIONS.items():
        if not isinstance(value, bool) and value in spellings:
            return name
    raise ValueError(f"`precision` must be one of {[s for v in PRECISIONS.values() for s in v]} "
                     f"or None (the problem's own dtypes), got {value!r}. Mixed and half "
                     "precision (\"16-mixed\", \"bf16-mixed\") are not supported.")


def check_available(precision: str | None) -> None:
    """Raise when ``precision`` cannot be honoured here (float64 without ``jax_enable_x64``)."""
    if precision == "64-true" and float_dtype() != jnp.float64:
        raise ValueError("`precision=\"64-true\"` needs float64 arrays, which JAX gives only "
                         "with `jax_enable_x64`: call `jax.config.update(\"jax_enable_x64\", "
                         "True)` at the top of the script, before building domains, networks "
                         "and `jno.core` (a float32 phase then uses `precision=\"32-true\"`).")


def cast_floats(tree: Any, precision: str | None) -> Any:
    """``tree`` with every real floating leaf in ``precision``'s dtype (integers, keys and
    booleans unchanged); ``tree`` itself for ``None``."""
    if precision is None:
        return tree
    dtype = DTYPES[precision]

    def cast(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return (jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
                    if jnp.issubdtype(x.dtype, jnp.floating) else x)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
            return jnp.asarray(x, dtype)
        return x
    return jax.tree.map(cast, tree)


def cast_module_constants(trainables, precision: str | None) -> None:
    """Cast, in place, the float variables of each trainable's module that are not
    ``nnx.Param`` (a fixed Fourier feature matrix): the compiled step takes them as constants,
    and one left in float64 would promote a float32 phase's arithmetic."""
    if precision is None:
        return
    for t in trainables:
        constants = nnx.state(t.module, nnx.Not(nnx.Param))
        if jax.tree.leaves(constants):
            nnx.update(t.module, cast_floats(constants, precision))
