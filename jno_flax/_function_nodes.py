"""The expression nodes of a family of input functions (:mod:`jno_flax.functions`).

A per-instance node (``pointset`` ``None``, ``instances`` set) evaluates to ``(B, *shape)``;
inside the evaluation of a field it reads the row of the instance being evaluated
(``PointContext.rows``). A field that depends on one evaluates to ``(B, N, D)``.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from jno_flax._dtypes import default_float
from jno_flax._expr import Expr, _common_pointset, unique_op

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.functions import FunctionSet


def family_entry(ev, fam: "FunctionSet") -> dict:
    """The family's arrays in the evaluator's batch (``{"values", "paired_<k>"}``)."""
    return ev.batch[ev.registry.key(fam)]


class FunctionValues(Expr):
    """The sensor values of each function of a family: ``(B, n_sensors)``."""

    def __init__(self, fam: "FunctionSet"):
        super().__init__((), None, fam.values.shape[1:], default_float(), "functions",
                         ("functions", unique_op()))
        self.instances = fam

    def global_eval(self, ev):
        entry = family_entry(ev, self.instances)
        if "sampler" not in entry or not ev.training or ev.rng is None:
            return entry["values"]
        key = jax.random.fold_in(ev.rng, zlib.crc32(ev.registry.key(self.instances).encode()))
        z = jax.random.normal(key, entry["values"].shape, entry["values"].dtype)
        return z @ entry["sampler"].T


class PairedValues(Expr):
    """Per-instance data without points (``f.paired(values)``): ``(B, *shape)``."""

    def __init__(self, fam: "FunctionSet", index: int):
        self.index = index
        super().__init__((), None, fam.paired_data[index].shape[1:], default_float(),
                         "paired", ("paired", unique_op()))
        self.instances = fam

    def global_eval(self, ev):
        return family_entry(ev, self.instances)[f"paired_{self.index}"]


def _check_coords(fam: "FunctionSet", coords: Sequence[Expr], what: str):
    from jno_flax._pointset import Variable
    for c in coords:
        if not isinstance(c, Variable) or not c.is_coordinate:
            raise TypeError(f"{what} takes coordinates from `domain.variable(...)`, got {c!r}.")
    return _common_pointset(coords, what)


class FunctionAt(Expr):
    """``f(x)``: each function at the points, linear interpolation on its uniform grid."""

    def __init__(self, fam: "FunctionSet", coords: Sequence[Expr]):
        ps = _check_coords(fam, coords, "a function family's value `f(x)`")
        self.axes, self.family = fam.axes, fam
        super().__init__((fam.__jno_expr__(), *coords), ps, (1,), default_float(),
                         "f(x)", "function_at")
        self.check_within({c.column: ps.column_range(c.column) for c in coords},
                          f"the points of {ps.describe()}")

    def check_within(self, ranges: dict[int, tuple[float, float]], what: str) -> None:
        """Raise unless the coordinate ranges ``{column: (lo, hi)}`` lie within the sensor
        grid: beyond it the interpolation would hold the last sensor's value."""
        for c, axis in zip(self.children[1:], self.axes):
            if c.column not in ranges:
                continue
            lo, hi = ranges[c.column]
            tol = 1e-9 * max(float(axis[-1] - axis[0]), 1.0)
            if lo < axis[0] - tol or hi > axis[-1] + tol:
                raise ValueError(
                    f"`f({c.symbol})`: {what} reach {c.symbol} in [{lo:g}, {hi:g}], outside "
                    f"the sensors of {self.family.describe()} ([{axis[0]:g}, {axis[-1]:g}]), "
                    "where f would hold its last sensor's value. Give the family a range "
                    "that covers them (`x_range=` / `y_range=`).")

    def point_eval(self, ctx):
        row = ctx.value(self.children[0])
        pos = [(ctx.value(c)[0] - a[0]) / (a[1] - a[0])
               for c, a in zip(self.children[1:], self.axes)]
        grid = jnp.reshape(row, tuple(len(a) for a in self.axes))
        return map_coordinates(grid, pos, order=1, mode="nearest")[None]


class PairedData(Expr):
    """Per-instance data at the points of a point set: ``(B, N, D)``.

    It is read whole (never per point): the evaluator hands each point its row, so it has no
    coordinate derivatives and its point set cannot be resampled or mini-batched.
    """

    def __init__(self, fam: "FunctionSet", index: int, coords: Sequence[Expr]):
        ps = _check_coords(fam, coords, "`paired` data")
        arr = fam.paired_data[index]
        if arr.ndim != 3 or arr.shape[1] != ps.n:
            raise ValueError(f"`values` of paired data at {ps.describe()} must have shape "
                             f"({fam.n}, {ps.n}) or ({fam.n}, {ps.n}, D): one row per function "
                             f"and one value per point; got {arr.shape}.")
        if len(coords) != ps.n_coords:
            raise ValueError(f"paired data at {ps.describe()} needs all its coordinates "
                             f"{ps.coord_names}, got {len(coords)}.")
        self.index = index
        super().__init__(tuple(coords), ps, arr.shape[2:], default_float(), "paired",
                         ("paired_at", unique_op()))
        self.instances = fam

    def whole(self, ev):
        """The data of the evaluated instances, ``(B, N, D)``."""
        return family_entry(ev, self.instances)[f"paired_{self.index}"]

    def point_eval(self, ctx):
        raise ValueError("paired data has no value at a point apart from its stored rows; "
                         "it cannot be differentiated with respect to coordinates.")
