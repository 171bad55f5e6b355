"""The model summary printed when ``fit`` starts (``Trainer(enable_model_summary=True)``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from clu import parameter_overview

from jno_flax._masks import param_paths
from jno_flax.callbacks._callback import Callback

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


def summary_tables(problem: "Problem") -> dict[str, tuple[str, int, bool]]:
    """``{trainable name: (table, parameter count, frozen)}``: one ``clu.parameter_overview``
    table (path, shape, dtype, size, total) per trainable."""
    out = {}
    for t in problem.trainables:
        name = problem.registry.name(t)
        arrays = {"/".join(str(p) for p in path): v[...] for path, v in param_paths(t.params())}
        table = parameter_overview.get_parameter_overview(arrays, include_stats=False)
        out[name] = (table, parameter_overview.count_parameters(arrays), bool(t.frozen))
    return out


class ModelSummary(Callback):
    """Prints one parameter table per trainable, and the totals, when ``fit`` starts.

    Args:
        stream: where to print (default ``sys.stdout``).

    With several ``jax.distributed`` processes, only process 0 prints.
    """

    global_zero_only = True

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.text = ""

    def on_fit_start(self, trainer: "Trainer", problem: "Problem") -> None:
        if trainer.global_step > 0:   # a continued run (``solve`` again): shown already
            return
        lines = []
        total = trainable = 0
        for name, (table, count, frozen) in summary_tables(problem).items():
            lines += [f"{name}{' (frozen)' if frozen else ''}", table, ""]
            total += count
            trainable += 0 if frozen else count
        lines.append(f"Trainable params: {trainable:,}  Non-trainable params: "
                     f"{total - trainable:,}  Total params: {total:,}")
        self.text = "\n".join(lines)
        print(self.text, file=self.stream or sys.stdout)
