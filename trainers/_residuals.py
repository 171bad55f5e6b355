"""The residual vector of a least-squares loss, for Gauss–Newton transforms (``engd``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jno_flax._evaluate import Evaluator
from jno_flax._expr import is_mean_square

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import TrainState

ADVICE = ("Gauss–Newton methods (`engd`) need every constraint to be a mean square "
          "(`residual.mse`) and the loss their plain sum")


def constraint_residuals(problem: "Problem", state: "TrainState", batch: dict[str, jax.Array],
                         fixed: dict[str, Any]) -> tuple[Callable | None, str]:
    """``(residuals, why_not)``: the function ``{trained name: params} -> ρ`` with
    ``loss = ‖ρ‖²`` (every constraint's residual over ``√size``, stacked), or ``None`` and
    the reason when a constraint is not a mean square."""
    inner = {}
    for name, expr in problem.constraints.items():
        if not is_mean_square(expr):
            return None, (f"{ADVICE}; constraint {name!r} is {expr!r}. Adaptive weights are "
                          "not supported; weight a term through its residual, "
                          "`(c**0.5 * r).mse`.")
        inner[name] = expr.children[0]

    def residuals(trained_params):
        ev = Evaluator.of_state(problem.registry, state, batch, list(inner.values()),
                                params={**fixed, **trained_params})
        parts = [ev.value(e) for e in inner.values()]
        return jnp.concatenate([jnp.ravel(v) / np.sqrt(v.size) for v in parts])
    return residuals, ""
