"""The training state: one pytree with everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


def all_finite(tree: Any) -> jax.Array:
    """``()`` bool: every float leaf of ``tree`` is finite (usable inside ``jit``)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


@struct.dataclass
class TrainState:
    """Everything that training advances, as one pytree (checkpointed whole).

    Attributes:
        step: ``()`` int32, the number of steps done.
        params: ``{trainable name: nnx.State}`` of the ``nnx.Param`` leaves of each model and
            parameter (frozen ones included, unchanged by training).
        opt_state: ``{trainable name: optax state}`` for every trainable that is not frozen.
        rng: base PRNG key; step ``s`` uses ``jax.random.fold_in(rng, s)``.
        extras: further state owned by features (adaptive weights, samplers), by name.
    """

    step: jax.Array
    params: dict[str, Any]
    opt_state: dict[str, Any]
    rng: jax.Array
    extras: dict[str, Any] = struct.field(default_factory=dict)
