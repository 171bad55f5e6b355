"""Saving and loading the model parameters of a problem (its trainables' ``nnx.Param``
states, for evaluation) with orbax; ``load_weights`` also reads checkpoints."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from jno_flax._checkpoint_format import state_item
from jno_flax._masks import key_name

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax._problem import Problem


def _key(k) -> str:
    return str(key_name(k))


def save_weights(problem: "Problem", path: str) -> str:
    """Write every trainable's ``nnx.Param`` state to ``path`` (a new directory)."""
    path = os.path.abspath(os.fspath(path))
    params = {problem.registry.name(t): jax.tree.map(jnp.copy, t.params())
              for t in problem.trainables}
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, {"params": params})
        ckpt.wait_until_finished()
    return path


def load_weights(problem: "Problem", path: str) -> None:
    """Load weights into the problem's live modules from ``save_weights`` output, a
    ``ModelCheckpoint`` step directory, or a ``ModelCheckpoint`` directory (its newest step).
    Every trainable must be found with matching parameter paths and shapes."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"`path` {path!r} does not exist.")
    with ocp.StandardCheckpointer() as ckpt:
        raw = ckpt.restore(state_item(path))
    saved = raw.get("params") if isinstance(raw, dict) else None
    if saved is None:
        raise ValueError(f"`path` {path!r} holds no saved parameters.")
    updates = {}
    for t in problem.trainables:
        name = problem.registry.name(t)
        if name not in saved:
            raise ValueError(f"`path` {path!r} has no weights for {name!r}; it has "
                             f"{sorted(saved)}.")
        found = {tuple(_key(k) for k in p): leaf
                 for p, leaf in jax.tree_util.tree_flatten_with_path(saved[name])[0]}
        live = t.params()
        paths, treedef = jax.tree_util.tree_flatten_with_path(live)
        leaves = []
        for p, leaf in paths:
            key = tuple(_key(k) for k in p)
            if key not in found or tuple(found[key].shape) != tuple(leaf.shape):
                got = "missing" if key not in found else f"shape {tuple(found[key].shape)}"
                raise ValueError(f"`path` {path!r}: {name}/{'/'.join(key)} expects shape "
                                 f"{tuple(leaf.shape)}, the file has {got}.")
            leaves.append(jnp.asarray(found[key], leaf.dtype))
        updates[t] = jax.tree_util.tree_unflatten(treedef, leaves)
    for t, state in updates.items():
        nnx.update(t.module, state)
