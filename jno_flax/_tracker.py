"""Trackers: expressions logged at an interval, never part of the loss."""

from __future__ import annotations

from jno_flax._checks import name as check_name
from jno_flax._checks import positive_int
from jno_flax._expr import Expr


class Tracker:
    """``expr`` recorded at every step ``s`` with ``s % interval == 0``.

    The value is computed from the parameters used by step ``s`` (like the loss of step
    ``s``). A tracker is not an expression: it cannot enter a loss term.

    >>> val_error = tracker(jnn.mean(jnn.abs(u - u_exact)), interval=100)
    """

    def __init__(self, expr: Expr, interval: int = 1, name: str | None = None):
        if not isinstance(expr, Expr):
            raise TypeError(f"`expr` of a tracker must be an expression, got "
                            f"{type(expr).__name__}: {expr!r}.")
        check_name("name", name, allow_none=True)
        self.expr = expr
        self.interval = positive_int("interval", interval, steps=True)
        self._name = name

    def name(self, name: str) -> "Tracker":
        """Name the tracker; returns ``self``."""
        check_name("name", name)
        self._name = name
        return self

    @property
    def given_name(self) -> str | None:
        return self._name or self.expr.given_name

    def __repr__(self) -> str:
        return f"<Tracker {self.given_name or ''} every {self.interval} of {self.expr!r}>"

    def _refuse(self, *_):
        raise TypeError(
            f"a tracker ({self!r}) is only logged; it cannot be used inside a loss term or "
            "another expression. Use the tracked expression (`tracker.expr`) instead."
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = _refuse
    __neg__ = _refuse


def tracker(expr: Expr, interval: int = 1, name: str | None = None) -> Tracker:
    """Log ``expr`` every ``interval`` steps; pass the result to ``jno.core`` with the losses."""
    return Tracker(expr, interval=interval, name=name)
