"""Devices of a run: collocation points sharded along a ``"points"`` mesh axis.

With more than one device, the state (parameters, optimizer, RNG and adaptive-weight states)
is replicated and every point set is sharded along one mesh axis named ``"points"``
(``jax.sharding.Mesh`` + ``NamedSharding``); the compiled chunk asks for that layout with
``jax.lax.with_sharding_constraint`` and XLA's SPMD partitioner inserts the reductions. A
point count that the device count does not divide is padded by XLA itself, which keeps every
mean, sum and Jacobian over the points exact: no point is dropped and none is counted twice.
With one device nothing is placed or constrained.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jno_flax.trainers._state import copy_tree

ACCEPTED = '"auto" (every device), a positive int (the first n devices) or a list of jax devices'


def resolve_devices(devices: Any) -> list[jax.Device]:
    """The devices ``Trainer(devices=...)`` names (global: across ``jax.distributed``
    processes)."""
    available = jax.devices()
    if isinstance(devices, str):
        if devices != "auto":
            raise ValueError(f"`devices` must be {ACCEPTED}; got {devices!r}.")
        return list(available)
    if isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(f"`devices` asks for {devices} devices, but {len(available)} "
                             f"exist ({available}); accepted: {ACCEPTED}.")
        return list(available[:int(devices)])
    if isinstance(devices, Sequence) and devices:
        for i, d in enumerate(devices):
            if not isinstance(d, jax.Device):
                raise TypeError(f"`devices[{i}]` must be a jax device (from `jax.devices()`), "
                                f"got {type(d).__name__}: {d!r}.")
            if d not in available:
                raise ValueError(f"`devices[{i}]` {d!r} is not one of this run's devices "
                                 f"{available}.")
        if len(set(devices)) != len(devices):
            raise ValueError(f"`devices` names a device twice: {list(devices)}.")
        return list(devices)
    raise TypeError(f"`devices` must be {ACCEPTED}; got {type(devices).__name__}: {devices!r}.")


class PointSharding:
    """The layout of a run over ``devices``: points sharded, everything else replicated.

    With several processes (``jax.distributed``), every process holds the same host values
    (the same problem, built from the same seeds) and places only what its own devices hold:
    arrays are assembled with ``jax.make_array_from_callback``, never sent between hosts.
    """

    def __init__(self, devices: list[jax.Device]):
        self.devices = devices
        self.mesh = Mesh(np.array(devices), ("points",)) if len(devices) > 1 else None

    @property
    def sharded(self) -> bool:
        return self.mesh is not None

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def points(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("points"))

    def _place(self, x: Any, sharding: NamedSharding) -> jax.Array:
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(x)  # a local array, or a global one whose every shard is whole
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def replicate(self, tree: Any) -> Any:
        """``tree`` placed whole on every device (no-op with one device)."""
        if not self.sharded:
            return tree
        return jax.tree.map(lambda x: self._place(x, self.replicated), tree)

    def place_points(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The stored ``(N, C)`` point arrays, each device given its own rows when the device
        count divides ``N`` (each process then reads only its shard), else whole on every
        device (the compiled step shards them, with XLA's padding). The arrays of a family
        of input functions (a dict) are whole on every device: the point axis is the sharded
        one, each device evaluating every instance at its points."""
        if not self.sharded:
            return batch
        n = len(self.devices)
        return {k: self.replicate(v) if isinstance(v, dict) else
                self._place(v, self.points if np.shape(v)[0] % n == 0 else self.replicated)
                for k, v in batch.items()}

    def abstract(self, tree: Any) -> Any:
        """``jax.ShapeDtypeStruct`` leaves placed as :meth:`replicate` places them: a restore
        target that orbax reads straight onto the devices (unchanged with one device)."""
        if not self.sharded:
            return tree
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=self.replicated), tree)

    def local(self, tree: Any) -> Any:
        """A copy of a replicated ``tree`` on this process's first device: what the modules
        and ``problem.state`` hold, so ``problem.eval`` and plots run on one process alone."""
        if not self.sharded:
            return copy_tree(tree)
        return copy_tree(jax.tree.map(lambda x: x.addressable_data(0)
                                      if isinstance(x, jax.Array) else x, tree))

    def constrain_points(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Inside ``jit``: each ``(N, C)`` point array sharded along its first axis."""
        if not self.sharded:
            return batch
        return {k: jax.lax.with_sharding_constraint(
                    v, self.replicated if isinstance(v, dict) else self.points)
                for k, v in batch.items()}

    def constrain_replicated(self, tree: Any) -> Any:
        """Inside ``jit``: ``tree`` replicated (the state and records a chunk returns)."""
        if not self.sharded:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.replicated)
