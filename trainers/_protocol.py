"""The boundary protocol's answers, checked where the trainer asks for them.

A callback's :meth:`~jno_flax.callbacks.Callback.next_boundary`,
:meth:`~jno_flax.callbacks.Callback.enter_chunk`,
:meth:`~jno_flax.callbacks.Callback.restore_target`,
:meth:`~jno_flax.callbacks.Callback.stopping_step` and
:meth:`~jno_flax.callbacks.Callback.optimizer_phases` return values the trainer builds on;
each answer is checked here, and a wrong one is an error that names the callback, the method,
what it returned and what is expected (not an ``IndexError`` or ``AttributeError`` deep in
the loop). Steps given as NumPy or JAX integers are accepted as Python ints.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from jno_flax.trainers._state import TrainState

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.callbacks import Callback
    from jno_flax.trainers import Trainer


def _as_step(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (NumPy and 0-d JAX ones too)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if getattr(value, "shape", None) == () and np.issubdtype(getattr(value, "dtype", float),
                                                             np.integer):
        return int(value)
    return None


def _wrong(cb: "Callback", call: str, got: Any, expected: str) -> str:
    return f"{type(cb).__name__}.{call} returned {got!r}; expected {expected}."


def next_boundary(cb: "Callback", trainer: "Trainer", step: int) -> int | None:
    """``cb.next_boundary(trainer, step)``: ``None`` or a step after ``step``."""
    got = cb.next_boundary(trainer, step)
    if got is None:
        return None
    at = _as_step(got)
    if at is None or at <= step:
        raise ValueError(_wrong(cb, f"next_boundary(trainer, {step})", got,
                                f"None or an integer step after {step}"))
    return at


def _state(cb: "Callback", call: str, got: Any, given: str) -> TrainState:
    """``got`` when it is a ``TrainState``; else an error naming ``call``."""
    if not isinstance(got, TrainState):
        raise TypeError(_wrong(cb, call, got, f"a TrainState (the `{given}` given, or "
                                              f"`{given}.replace(...)`)"))
    return got


def enter_chunk(cb: "Callback", trainer: "Trainer", state: TrainState, step: int
                ) -> TrainState:
    """``cb.enter_chunk(trainer, state, step)``: a ``TrainState``."""
    return _state(cb, f"enter_chunk(trainer, state, {step})",
                  cb.enter_chunk(trainer, state, step), "state")


def restore_target(cb: "Callback", trainer: "Trainer", target: TrainState, step: int
                   ) -> TrainState:
    """``cb.restore_target(trainer, target, step)``: a ``TrainState``."""
    return _state(cb, f"restore_target(trainer, target, {step})",
                  cb.restore_target(trainer, target, step), "target")


def stopping_step(cb: "Callback", trainer: "Trainer", chunk: Any) -> int | None:
    """``cb.stopping_step(trainer, chunk)``: ``None`` or a step of ``chunk``."""
    got = cb.stopping_step(trainer, chunk)
    if got is None:
        return None
    at = _as_step(got)
    first, last = int(chunk.steps[0]), int(chunk.steps[-1])
    if at is None or not first <= at <= last:
        raise ValueError(_wrong(cb, "stopping_step(trainer, chunk)", got,
                                f"None or a step of the chunk, {first} to {last}"))
    return at


def optimizer_phases(cb: "Callback", trainer: "Trainer", trained: list[str]
                     ) -> list[tuple[int, dict[str, Any]]]:
    """``cb.optimizer_phases(trainer, trained)``: ``[(at_step, {name: transform}), ...]``
    (the steps as ints; the transforms are checked by ``OptimizerPhases``)."""
    got = cb.optimizer_phases(trainer, trained)
    expected = "a list of (at_step, {trainable name: optax transform}) pairs"
    if not isinstance(got, Sequence) or isinstance(got, (str, bytes)):
        raise TypeError(_wrong(cb, "optimizer_phases(trainer, trained)", got, expected))
    out = []
    for item in got:
        if not (isinstance(item, Sequence) and len(item) == 2 and isinstance(item[1], dict)):
            raise TypeError(_wrong(cb, "optimizer_phases(trainer, trained)", got, expected))
        at = _as_step(item[0])
        if at is None or at <= 0:
            raise ValueError(_wrong(cb, "optimizer_phases(trainer, trained)", got,
                                    f"{expected}, each step a positive integer"))
        out.append((at, item[1]))
    return out
