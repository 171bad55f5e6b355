"""The training state: one pytree with everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

from jno_flax._trees import all_finite, copy_tree  # noqa: F401 - part of this module's API


def current_points(state: "TrainState", batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``batch`` (the stored points by point-set key) with the points a state holds instead
    (``extras["points_<k>"]``: resampled point sets)."""
    return {key: state.extras.get(key, points) for key, points in batch.items()}


@struct.dataclass
class TrainState:
    """Everything that training advances, as one pytree (checkpointed whole).

    Attributes:
        step: ``()`` int32, the number of steps done.
        params: ``{trainable name: nnx.State}`` of the ``nnx.Param`` leaves of each model and
            parameter (frozen ones included, unchanged by training).
        opt_state: ``{trainable name: optax state}`` for every trainable that is not frozen.
        rng: base PRNG key; step ``s`` uses ``jax.random.fold_in(rng, s)``.
        extras: further state owned by features, by name: adaptive-weight states, and the
            current points of resampled point sets under their point-set key (``points_<k>``).
    """

    step: jax.Array
    params: dict[str, Any]
    opt_state: dict[str, Any]
    rng: jax.Array
    extras: dict[str, Any] = struct.field(default_factory=dict)
