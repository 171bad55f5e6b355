"""Families of input functions: the instances of an operator-learning problem.

A :class:`FunctionSet` holds ``n`` input functions (source terms, coefficients, initial
conditions, parameter vectors), each as its values at a set of sensors. A field that depends on
one evaluates per instance and per point, to ``(B, N, D)``; reductions such as ``.mse``
average over both axes. ``Trainer(batch_size={f: 64})`` trains each step on 64 of them.

>>> f = jno.functions.grf(100, x_range=(0, 1), n_sensors=50, length_scale=0.2, seed=0)
>>> f.values.shape
(100, 50)

In expressions, ``f`` itself is the per-instance vector of sensor values (the input of a
DeepONet's branch or an FNO), ``f(x)`` its value at the points of ``x`` (interpolated on the
sensor grid) and ``f.paired(u_data, x)`` per-instance data at those points (paired solution
samples for data-driven training).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jno_flax.geometry import check_range
from jno_flax._checks import positive_int, positive_number
from jno_flax._function_nodes import FunctionAt, FunctionValues, PairedData, PairedValues

__all__ = ["FunctionSet", "grf", "array", "parameters"]


class FunctionSet:
    """``n`` input functions, each given by its values at the same sensors.

    Args:
        values: ``(n, n_sensors)`` (or ``(n, *shape)``) values, one row per function.
        axes: for functions on a uniform sensor grid, the grid's coordinates per axis (1-D
            arrays; the rows flatten the grid with the first axis slowest). Needed by
            ``f(x)``.
        label: a short description for messages.
        sampler: for a family drawn afresh at every training step, the ``(S, S)`` factor
            ``L`` of its covariance: step ``s`` trains on ``z @ Lᵀ`` with ``z`` standard
            normal from the step's key (``values`` is the draw used outside training).
    """

    def __init__(self, values: Any, axes: Sequence[np.ndarray] | None = None,
                 label: str = "functions", sampler: np.ndarray | None = None):
        arr = np.asarray(values, dtype=float)
        if arr.ndim < 2 or arr.shape[0] < 1:
            raise ValueError(f"`values` must have shape (n_functions, n_sensors) with at least "
                             f"one function, got {arr.shape}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError("`values` must be finite; it contains NaN or inf.")
        self.values = arr
        self.axes = None if axes is None else tuple(np.asarray(a, float) for a in axes)
        for i, a in enumerate(self.axes or ()):
            steps = np.diff(a)
            if a.ndim != 1 or len(a) < 2 or not np.allclose(steps, steps[0]) or steps[0] <= 0:
                raise ValueError(f"`axes[{i}]` must be an increasing uniform grid of at least "
                                 f"two points, got {a!r}.")
        if self.axes is not None and arr.ndim == 2 and \
                arr.shape[1] != int(np.prod([len(a) for a in self.axes])):
            raise ValueError(f"`values` has {arr.shape[1]} sensors per function, but the grid "
                             f"{tuple(len(a) for a in self.axes)} has "
                             f"{int(np.prod([len(a) for a in self.axes]))}.")
        self.label = label
        self.sampler = None if sampler is None else np.asarray(sampler, float)
        self.paired_data: list[np.ndarray] = []
        self._expr = FunctionValues(self)

    @property
    def n(self) -> int:
        """The number of functions (instances)."""
        return int(self.values.shape[0])

    @property
    def n_sensors(self) -> int:
        return int(np.prod(self.values.shape[1:]))

    def describe(self) -> str:
        return f"{self.label} ({self.n} functions, {self.n_sensors} sensors)"

    def __repr__(self) -> str:
        return f"<FunctionSet {self.describe()}>"

    def __jno_expr__(self) -> FunctionValues:
        """The per-instance sensor values as an expression (``(B, n_sensors)``)."""
        return self._expr

    def __getitem__(self, index):
        """A part of each instance's values (``p[0]``: the first parameter of each)."""
        return self._expr[index]

    def __call__(self, *coords) -> FunctionAt:
        """The functions' values at the points of ``coords`` (one variable per grid axis),
        interpolated linearly on the sensor grid: a field ``(B, N, 1)``."""
        if self.axes is None:
            raise ValueError(f"{self.describe()} has no sensor grid, so it has no value between "
                             "its sensors; build it with `x_range=` (and `y_range=`) to "
                             "evaluate it at points.")
        if len(coords) != len(self.axes):
            raise ValueError(f"{self.describe()} lives on a {len(self.axes)}-D grid; give "
                             f"{len(self.axes)} coordinate(s), got {len(coords)}.")
        return FunctionAt(self, coords)

    def paired(self, values: Any, *coords):
        """Per-instance data: with ``coords``, an ``(n, N)`` or ``(n, N, D)`` array of values
        at the ``N`` points of their point set (a field, e.g. solution samples for
        ``(u - f.paired(u_data, x, t)).mse``); without, an ``(n, ...)`` array with one value
        per function (e.g. the solution on the sensor grid, for an FNO)."""
        if self.sampler is not None:
            raise ValueError(f"{self.describe()} draws new functions at every step "
                             "(`resample=True`); paired data belongs to fixed functions.")
        arr = np.asarray(values, dtype=float)
        if arr.ndim < 1 or arr.shape[0] != self.n:
            raise ValueError(f"`values` must have one row per function of {self.describe()}: "
                             f"shape ({self.n}, ...), got {arr.shape}.")
        if coords and arr.ndim == 2:
            arr = arr[..., None]                   # one component per point
        self.paired_data.append(arr)
        index = len(self.paired_data) - 1
        if not coords:
            return PairedValues(self, index)
        return PairedData(self, index, coords)


def _grid(x_range, y_range, n_sensors) -> tuple[np.ndarray, ...]:
    ranges = [check_range("x_range", x_range)]
    if y_range is not None:
        ranges.append(check_range("y_range", y_range))
    counts = n_sensors if isinstance(n_sensors, (tuple, list)) else (n_sensors,) * len(ranges)
    if len(counts) != len(ranges):
        raise ValueError(f"`n_sensors` gives {len(counts)} counts for {len(ranges)} axes.")
    counts = [positive_int("n_sensors", c) for c in counts]
    return tuple(np.linspace(lo, hi, c) for (lo, hi), c in zip(ranges, counts))


def grf(n_functions: int, x_range=(0.0, 1.0), y_range=None, n_sensors: int | tuple = 100,
        length_scale: float = 0.2, variance: float = 1.0, seed: int = 0,
        resample: bool = False) -> FunctionSet:
    """Samples of a zero-mean Gaussian random field with the RBF kernel
    ``k(x, x') = variance · exp(-|x - x'|² / (2 length_scale²))`` on a uniform sensor grid
    (1-D, or 2-D with ``y_range``), drawn with ``seed`` (Cholesky factor of the kernel matrix
    with a 1e-10 relative jitter).

    With ``resample=True`` every training step draws ``n_functions`` new samples inside the
    compiled step (from the step's key, so a resumed run draws the same, and trackers recorded
    at a step see that step's functions); ``crux.eval`` uses the draw of ``seed``.
    """
    n = positive_int("n_functions", n_functions)
    length_scale = positive_number("length_scale", length_scale)
    variance = positive_number("variance", variance)
    axes = _grid(x_range, y_range, n_sensors)
    mesh = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    sq = np.sum((mesh[:, None, :] - mesh[None, :, :]) ** 2, axis=-1)
    kernel = variance * np.exp(-sq / (2.0 * length_scale ** 2))
    chol = np.linalg.cholesky(kernel + 1e-10 * variance * np.eye(len(mesh)))
    z = np.random.default_rng(seed).standard_normal((n, len(mesh)))
    if not isinstance(resample, bool):
        raise TypeError(f"`resample` must be True or False, got {resample!r}.")
    return FunctionSet(z @ chol.T, axes, label=f"GRF(l={length_scale:g})",
                       sampler=chol if resample else None)


def array(values: Any, x_range=None, y_range=None) -> FunctionSet:
    """Your own functions: ``values`` of shape ``(n_functions, n_sensors)``; with ``x_range``
    (and ``y_range``) the sensors are a uniform grid over it (so ``f(x)`` interpolates)."""
    arr = np.asarray(values, dtype=float)
    axes = None
    if x_range is not None:
        if arr.ndim != 2:
            raise ValueError(f"`values` on a sensor grid must have shape (n_functions, "
                             f"n_sensors), got {arr.shape}.")
        if y_range is None:
            axes = _grid(x_range, None, arr.shape[1])
        else:
            raise ValueError("a 2-D sensor grid needs its shape: use "
                             "`jno.functions.FunctionSet(values, axes=(xs, ys))`.")
    return FunctionSet(arr, axes, label="functions")


def parameters(values: Any) -> FunctionSet:
    """A parameter vector per instance: ``values`` of shape ``(n_instances, k)``."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"`values` must have shape (n_instances, k), got {arr.shape}.")
    return FunctionSet(arr, None, label=f"parameters (k={arr.shape[1]})")
