"""Argument validation shared by the whole package: one wording for every error.

Each check names the argument in backticks, shows what was received and says what is
accepted, e.g. ``ValueError: `interval` must be a positive integer (steps), got 0.``
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def positive_int(arg: str, value: Any, *, steps: bool = False,
                 allow_none: bool = False) -> int | None:
    """``value`` as an int > 0 (``None`` passes when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        accepted = ("a positive integer" + (" (steps)" if steps else "")
                    + (" or None" if allow_none else ""))
        raise ValueError(f"`{arg}` must be {accepted}, got {value!r}.")
    return int(value)


def integer(arg: str, value: Any) -> int:
    """``value`` as an int (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{arg}` must be an integer, got {value!r}.")
    return int(value)


def positive_number(arg: str, value: Any) -> float:
    """``value`` as a float > 0."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"`{arg}` must be a positive number, got {value!r}.")
    return float(value)


def learning_rate(arg: str, value: Any) -> Any:
    """``value`` as a learning rate: a finite number > 0, or a schedule (a callable of the
    step count, as optax takes)."""
    if callable(value):
        return value
    if (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0):
        return float(value)
    raise ValueError(f"`{arg}` must be a finite positive number or an optax schedule (a "
                     f"function of the step count), got {value!r}.")


def unit_interval(arg: str, value: Any) -> float:
    """``value`` as a float in [0, 1]."""
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and 0.0 <= value <= 1.0):
        raise ValueError(f"`{arg}` must be a number in [0, 1], got {value!r}.")
    return float(value)


def name(arg: str, value: Any, *, allow_none: bool = False) -> str | None:
    """``value`` as a non-empty string (``None`` passes when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        accepted = "a non-empty string" + (" or None" if allow_none else "")
        raise TypeError(f"`{arg}` must be {accepted}, got {value!r}.")
    return value


def fmt_shape(shape: tuple[int, ...]) -> str:
    """A shape as Python writes a tuple: ``(3,)``, ``(1, 16, 1)``."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def optax_transform(arg: str, tx: Any) -> Any:
    """``tx`` when it is an optax ``GradientTransformation`` (has ``init`` and ``update``)."""
    if not (hasattr(tx, "init") and hasattr(tx, "update") and callable(tx.init)
            and callable(tx.update)):
        raise TypeError(
            f"`{arg}` must be an optax GradientTransformation (e.g. `optax.adam(1e-3)`), got "
            f"{type(tx).__name__}: {tx!r}."
        )
    return tx
