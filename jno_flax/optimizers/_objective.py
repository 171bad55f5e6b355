"""The loss as optax's ``value_fn``, with the residuals Gauss–Newton methods need."""

from __future__ import annotations

from typing import Any, Callable

import jax


class Objective:
    """``value_fn`` for optax's extra arguments: ``objective(params)`` is the loss; for a loss
    that is a sum of mean squares, ``objective.residuals(params)`` is the vector ``ρ`` with
    ``loss = ‖ρ‖²`` (what :func:`~jno_flax.optimizers.engd` uses).

    Args:
        value: ``params -> ()`` loss.
        residuals: ``params -> (M,)`` residual vector, or ``None`` when the loss is not a sum
            of mean squares.
        why_not: when ``residuals`` is ``None``, the reason (shown by :meth:`residuals`).
    """

    def __init__(self, value: Callable[[Any], jax.Array],
                 residuals: Callable[[Any], jax.Array] | None = None, why_not: str = ""):
        self._value = value
        self._residuals = residuals
        self._why_not = why_not

    def __call__(self, params: Any) -> jax.Array:
        return self._value(params)

    def residuals(self, params: Any) -> jax.Array:
        if self._residuals is None:
            raise ValueError(self._why_not or "this loss has no residual form: a Gauss–Newton "
                             "method (`engd`) needs a sum of mean squares.")
        return self._residuals(params)

    def restricted(self, fixed: dict[str, Any], name: str) -> "Objective":
        """The objective of trainable ``name`` alone (``params -> loss``), the others fixed
        at ``fixed``: the ``value_fn`` of that trainable's transform."""
        residuals = (None if self._residuals is None
                     else lambda p: self._residuals({**fixed, name: p}))
        return Objective(lambda p: self._value({**fixed, name: p}), residuals, self._why_not)
