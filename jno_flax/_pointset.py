"""Point sets (one sampled tag of a domain) and the variables that read their columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from jno_flax._dtypes import default_float
from jno_flax._expr import Expr

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.domain import Domain


class PointSet:
    """The points of one tag of a domain: an ``(N, C)`` array.

    The first ``n_coords`` columns are coordinates (differentiable variables); further
    columns carry per-point data such as outward normals.
    """

    def __init__(self, domain: "Domain", tag: str, coord_names: tuple[str, ...],
                 points: np.ndarray, data: dict[str, np.ndarray] | None = None):
        cols = [points] + [np.asarray(v) for v in (data or {}).values()]
        self.domain = domain
        self.tag = tag
        self.coord_names = tuple(coord_names)
        self.array = np.concatenate(cols, axis=1) if len(cols) > 1 else points
        self.data_columns: dict[str, slice] = {}
        start = points.shape[1]
        for key, value in (data or {}).items():
            self.data_columns[key] = slice(start, start + value.shape[1])
            start += value.shape[1]
        self._variables: tuple[Variable, ...] | None = None

    @property
    def n(self) -> int:
        return int(self.array.shape[0])

    @property
    def n_coords(self) -> int:
        return len(self.coord_names)

    def describe(self) -> str:
        return f"'{self.tag}' of {self.domain.describe()}"

    def column_range(self, column: int) -> tuple[float, float]:
        """The range a coordinate column's points may take: the domain's bounding box (its
        time range for ``t``), which points drawn during training also stay in."""
        values = self.array[:, column]
        lo, hi = float(values.min()), float(values.max())
        domain = self.domain
        if domain.time is not None and column == self.n_coords - 1:
            return min(lo, domain.time[0]), max(hi, domain.time[1])
        box_lo, box_hi = domain.geometry.bounds
        return min(lo, float(box_lo[column])), max(hi, float(box_hi[column]))

    def variables(self) -> tuple["Variable", ...]:
        if self._variables is None:
            self._variables = tuple(Variable(self, i, name)
                                    for i, name in enumerate(self.coord_names))
        return self._variables

    def data_fields(self, key: str) -> tuple["Variable", ...]:
        cols = self.data_columns[key]
        return tuple(Variable(self, i, f"{key}{i - cols.start}", coordinate=False)
                     for i in range(cols.start, cols.stop))


class Variable(Expr):
    """A column of a point set: a coordinate (``x``, ``t``) or per-point data (a normal).

    Evaluates to ``(B, N, 1)``; per point it is a ``(1,)`` vector.
    """

    def __init__(self, pointset: PointSet, column: int, symbol: str, coordinate: bool = True):
        self.column = column
        self.symbol = symbol
        self.is_coordinate = coordinate
        super().__init__((), pointset, (1,), default_float(), symbol,
                         (pointset, column, coordinate))

    def point_eval(self, ctx):
        return ctx.column(self.column)[None]
