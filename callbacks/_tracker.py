"""Trackers as a callback: expressions computed inside the fused step at their intervals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from jno_flax._tracker import Tracker
from jno_flax.callbacks._callback import Callback, InGraph

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


class TrackerCallback(Callback):
    """Records tracker expressions in ``History.trackers`` (and for loggers) in-graph.

    A tracker named ``name`` with interval ``k`` is computed inside the compiled step at every
    step ``s`` with ``s % k == 0`` from the parameters that step used; it never enters the
    loss or its gradient. ``jno.core([..., tracker(...)])`` adds one of these automatically.

    Args:
        trackers: ``[(name, Tracker)]`` pairs or :class:`~jno_flax.Tracker` objects (named by
            their ``name`` or ``tracker_<k>``).
        name: distinguishes several instances in checkpoints.
    """

    def __init__(self, trackers: Sequence, name: str = "trackers"):
        pairs = []
        for i, item in enumerate(trackers):
            if isinstance(item, Tracker):
                item = (item.given_name or f"tracker_{i}", item)
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tracker)):
                raise TypeError(f"`trackers[{i}]` must be a Tracker or a (name, Tracker) pair, "
                                f"got {item!r}.")
            pairs.append(item)
        self.trackers = pairs
        self.name = name

    @property
    def state_key(self) -> str:
        return f"TrackerCallback[{self.name}]"

    def in_graph(self, trainer: "Trainer", problem: "Problem") -> list[InGraph]:
        return [InGraph(name, t.expr, t.interval) for name, t in self.trackers]
