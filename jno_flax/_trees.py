"""Pytree utilities the trainer and the callbacks share (usable inside ``jit``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def all_finite(tree: Any) -> jax.Array:
    """``()`` bool: every float leaf of ``tree`` is finite (usable inside ``jit``)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


@jax.jit
def copy_tree(tree: Any) -> Any:
    """A copy of every array leaf of ``tree`` in new buffers, in one dispatch (a copy leaf by
    leaf costs one dispatch per leaf, and past the in-flight limit a dispatch waits for the
    running chunk: the host would no longer overlap the device)."""
    return jax.tree.map(jnp.copy, tree)
