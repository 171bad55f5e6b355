"""Recording adaptive loss weights: the weights every step used, as in-graph quantities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jno_flax.callbacks._callback import Callback, InGraph

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


class AdaptiveWeightsCallback(Callback):
    """Records every adaptive weight of the problem at every step, as
    ``weights/<balancer key>/<loss name or index>`` (e.g. ``weights/relobralo0/pde``).

    The values are those the step's loss used (computed in the same forward pass). The trainer
    adds one of these when the problem has balancers.
    """

    @property
    def state_key(self) -> str:
        return "AdaptiveWeightsCallback"

    def in_graph(self, trainer: "Trainer", problem: "Problem") -> list[InGraph]:
        out = []
        for balancer in problem.registry.balancers:
            key = problem.registry.balancer_key(balancer)
            for w in balancer.weights:
                out.append(InGraph(f"weights/{key}/{w.loss.given_name or w.index}", w, 1))
        return out
