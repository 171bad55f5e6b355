"""Symbolic expressions: the nodes of a problem's computation graph.

Every node is either *pointwise* or *global*:

* a **pointwise** node (a field) lives on one point set (a sampled tag of a domain). It is
  evaluated per collocation point, which is what makes derivatives with respect to coordinates
  exact and cheap; its ``shape`` is the per-point shape ``(D,)`` and its evaluated value is
  ``(B, N, D)`` with ``B = 1``;
* a **global** node (a reduction, a trainable parameter, a constant, a matrix product) has one
  value; its ``shape`` is the shape of that value.

Each node also has a ``level``: ``-1`` for values that depend on no point set, otherwise the
number of pointwise -> global -> pointwise hops below it. The evaluator evaluates all pointwise
nodes of one point set and level in a single ``vmap`` so shared sub-expressions run once.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jno_flax._checks import name as check_name

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax._evaluate import Evaluator, PointContext
    from jno_flax._pointset import PointSet


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Expr:
    """A node of the symbolic graph. Build them with operators and :mod:`jno_flax.numpy`."""

    __array_priority__ = 1000  # make numpy defer to our reflected operators
    __hash__ = object.__hash__

    def __init__(self, children: Sequence["Expr"], pointset: "PointSet | None",
                 shape: tuple[int, ...], dtype: Any, label: str):
        self.children: tuple[Expr, ...] = tuple(children)
        self.pointset = pointset
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.label = label
        self._name: str | None = None
        if pointset is None:
            self.level = max((c.level for c in self.children), default=-1)
        else:
            self.level = max(
                [c.level for c in self.children if c.pointset is not None]
                + [c.level + 1 for c in self.children if c.pointset is None]
                + [0]
            )

    # ------------------------------------------------------------------ evaluation protocol
    def point_eval(self, ctx: "PointContext") -> jax.Array:  # pragma: no cover - abstract
        """Value at one point (pointwise nodes); ``ctx.value(child)`` gives children."""
        raise NotImplementedError(type(self).__name__)

    def global_eval(self, ev: "Evaluator") -> jax.Array:  # pragma: no cover - abstract
        """Value of a global node; ``ev.value(child)`` gives children."""
        raise NotImplementedError(type(self).__name__)

    # ------------------------------------------------------------------ description
    @property
    def is_field(self) -> bool:
        """True when the expression is a field on a point set (evaluates to ``(B, N, D)``)."""
        return self.pointset is not None

    @property
    def value_shape(self) -> tuple[int, ...]:
        """Shape of the evaluated value: ``(1, N, *shape)`` for fields, ``shape`` otherwise."""
        if self.pointset is None:
            return self.shape
        return (1, self.pointset.n) + self.shape

    def name(self, name: str) -> "Expr":
        """Name this expression (used for constraints and trackers); returns ``self``."""
        check_name("name", name)
        self._name = name
        return self

    @property
    def given_name(self) -> str | None:
        return self._name

    def __repr__(self) -> str:
        where = f" on {self.pointset.describe()}" if self.pointset is not None else ""
        nm = f" {self._name!r}" if self._name else ""
        return f"<Expr{nm} {self.label} shape={_fmt_shape(self.value_shape)}{where}>"

    def __bool__(self) -> bool:
        raise TypeError(
            "an expression has no truth value: it is symbolic. Use `jno.np.where(cond, a, b)` "
            "instead of `if`/`and`/`or` on expressions."
        )

    def __iter__(self):
        raise TypeError("expressions are not iterable; index them explicitly, e.g. `J[0]`.")

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, o): return elementwise(operator.add, [self, o], "+")
    def __radd__(self, o): return elementwise(operator.add, [o, self], "+")
    def __sub__(self, o): return elementwise(operator.sub, [self, o], "-")
    def __rsub__(self, o): return elementwise(operator.sub, [o, self], "-")
    def __mul__(self, o): return elementwise(operator.mul, [self, o], "*")
    def __rmul__(self, o): return elementwise(operator.mul, [o, self], "*")
    def __truediv__(self, o): return elementwise(operator.truediv, [self, o], "/")
    def __rtruediv__(self, o): return elementwise(operator.truediv, [o, self], "/")
    def __pow__(self, o): return elementwise(operator.pow, [self, o], "**")
    def __rpow__(self, o): return elementwise(operator.pow, [o, self], "**")
    def __mod__(self, o): return elementwise(operator.mod, [self, o], "%")
    def __neg__(self): return elementwise(operator.neg, [self], "neg")
    def __pos__(self): return self
    def __abs__(self): return elementwise(jnp.abs, [self], "abs")
    def __lt__(self, o): return elementwise(operator.lt, [self, o], "<")
    def __le__(self, o): return elementwise(operator.le, [self, o], "<=")
    def __gt__(self, o): return elementwise(operator.gt, [self, o], ">")
    def __ge__(self, o): return elementwise(operator.ge, [self, o], ">=")
    def __eq__(self, o): return elementwise(operator.eq, [self, o], "==")  # type: ignore[override]
    def __ne__(self, o): return elementwise(operator.ne, [self, o], "!=")  # type: ignore[override]

    def __matmul__(self, o): return global_op(jnp.matmul, [self, o], "@")
    def __rmatmul__(self, o): return global_op(jnp.matmul, [o, self], "@")

    def __getitem__(self, index) -> "Expr":
        return getitem(self, index)

    @property
    def T(self) -> "Expr":
        """Transpose (reverses all axes of the evaluated value, like ``jnp.ndarray.T``)."""
        return global_op(jnp.transpose, [self], "T")

    # ------------------------------------------------------------------ reductions
    @property
    def mse(self) -> "Expr":
        """Mean of the squares over all entries: a scalar."""
        return reduction(lambda v: jnp.mean(jnp.square(v)), self, "mse")

    @property
    def mae(self) -> "Expr":
        """Mean of the absolute values over all entries: a scalar."""
        return reduction(lambda v: jnp.mean(jnp.abs(v)), self, "mae")

    @property
    def mean(self) -> "Expr":
        return reduction(jnp.mean, self, "mean")

    @property
    def sum(self) -> "Expr":
        return reduction(jnp.sum, self, "sum")

    @property
    def min(self) -> "Expr":
        return reduction(jnp.min, self, "min")

    @property
    def max(self) -> "Expr":
        return reduction(jnp.max, self, "max")

    @property
    def std(self) -> "Expr":
        return reduction(jnp.std, self, "std")

    @property
    def stop_gradient(self) -> "Expr":
        """The same value, treated as a constant by every derivative (coordinates and params)."""
        return elementwise(jax.lax.stop_gradient, [self], "stop_gradient")

    # ------------------------------------------------------------------ derivatives
    def d(self, var: "Expr") -> "Expr":
        """First derivative with respect to the coordinate ``var``, per point."""
        from jno_flax._derivatives import Derivative
        return Derivative(self, var, order=1)

    def d2(self, var: "Expr") -> "Expr":
        """Second derivative with respect to the coordinate ``var``, per point."""
        from jno_flax._derivatives import Derivative
        return Derivative(self, var, order=2)

    def laplacian(self, *vars: "Expr") -> "Expr":
        """Sum of second derivatives over the coordinates ``vars`` (forward Laplacian)."""
        from jno_flax._derivatives import Laplacian
        return Laplacian(self, vars)

    def hessian(self, *vars: "Expr") -> "Expr":
        """Hessian over ``vars``: per point ``(k, k)`` (1-component field) or ``(D, k, k)``."""
        from jno_flax._derivatives import Hessian
        return Hessian(self, vars)

    def grad(self, *wrt) -> "Expr":
        """Spatial gradient ``u.grad(x, y)`` or parameter Jacobian ``u.grad(model)``.

        With coordinates: per point ``(k,)`` for a 1-component field, else ``(D, k)``.
        With a model or parameter: the Jacobian with respect to its trainable parameters.
        """
        from jno_flax._derivatives import Gradient
        from jno_flax._masks import MaskedView
        from jno_flax._trainable import Trainable
        if len(wrt) == 1 and isinstance(wrt[0], (Trainable, MaskedView)):
            from jno_flax._jacobian import ParameterJacobian
            return ParameterJacobian(self, wrt[0])
        return Gradient(self, wrt)

    # ------------------------------------------------------------------ trackers
    def tracker(self, interval: int = 1, name: str | None = None):
        """Log this expression every ``interval`` steps without adding it to the loss."""
        from jno_flax._tracker import Tracker
        return Tracker(self, interval=interval, name=name)


# ---------------------------------------------------------------------- leaves
class Constant(Expr):
    """A fixed value (python number or array). Global."""

    def __init__(self, value):
        if isinstance(value, (bool, int, float, complex)) and not isinstance(value, np.ndarray):
            shape, dtype = (), jnp.result_type(value)
        else:
            value = jnp.asarray(value)
            shape, dtype = value.shape, value.dtype
        self.value = value
        super().__init__((), None, shape, dtype, "const")

    def global_eval(self, ev):
        return self.value


def as_expr(value, argname: str = "operand") -> Expr:
    """Turn numbers and arrays into :class:`Constant`; reject anything else loudly."""
    if isinstance(value, Expr):
        return value
    from jno_flax._tracker import Tracker
    if isinstance(value, Tracker):
        raise TypeError(
            f"`{argname}` is a tracker ({value!r}); a tracker is only logged and must not be "
            "used inside a loss term or another expression. Use the tracked expression "
            "itself (`tracker.expr`) instead."
        )
    if isinstance(value, (bool, int, float, complex, np.ndarray, np.generic, jax.Array)):
        return Constant(value)
    raise TypeError(
        f"`{argname}` must be an expression, a number or an array; got {type(value).__name__}: "
        f"{value!r}."
    )


# ---------------------------------------------------------------------- operations
def _struct(e: Expr, as_field: bool) -> jax.ShapeDtypeStruct:
    shape = e.value_shape if as_field else e.shape
    return jax.ShapeDtypeStruct(shape, e.dtype)


def _infer(fn: Callable, children: Sequence[Expr], as_field: bool, label: str):
    structs = [c.value if isinstance(c, Constant) else _struct(c, as_field) for c in children]
    try:
        out = jax.eval_shape(fn, *structs)
    except (TypeError, ValueError) as err:
        shapes = ", ".join(_fmt_shape(c.value_shape) for c in children)
        raise ValueError(
            f"`{label}` cannot combine operands of shapes {shapes}: {err}"
        ) from None
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(f"`{label}` must return a single array, got {out!r}.")
    return out


def _common_pointset(children: Sequence[Expr], label: str):
    sets = []
    for c in children:
        if c.pointset is not None and all(c.pointset is not s for s in sets):
            sets.append(c.pointset)
    if len(sets) > 1:
        desc = " and ".join(f"{s.describe()} (N={s.n})" for s in sets)
        raise ValueError(
            f"`{label}` mixes fields on different point sets: {desc}. Pointwise operations need "
            "all fields on the same points; reduce one first (e.g. `.mse`) or use variables "
            "of one tag."
        )
    return sets[0] if sets else None


class Apply(Expr):
    """``fn(*children)`` evaluated per point (pointwise mode) or on whole values (global)."""

    def __init__(self, fn: Callable, children: Sequence[Expr], label: str, pointwise: bool,
                 pointset, shape, dtype):
        self.fn = fn
        super().__init__(children, pointset if pointwise else None, shape, dtype, label)

    def point_eval(self, ctx):
        return self.fn(*(ctx.value(c) for c in self.children))

    def global_eval(self, ev):
        return self.fn(*(ev.value(c) for c in self.children))


def elementwise(fn: Callable, operands: Sequence[Any], label: str) -> Expr:
    """An operation applied per point when a field is involved.

    Fields on one point set combine per point; global values of rank <= 1 (scalars, a
    parameter vector) are broadcast to every point. A field combined with a higher-rank global
    value (data of shape ``(1, N, D)``, a matrix) becomes a global operation on ``(B, N, D)``
    values, with the point count checked.
    """
    children = [as_expr(o, f"{label} operand") for o in operands]
    ps = _common_pointset(children, label)
    if ps is not None and all(c.pointset is not None or len(c.shape) <= 1 for c in children):
        out = _infer(fn, children, as_field=False, label=label)
        return Apply(fn, children, label, True, ps, out.shape, out.dtype)
    if ps is not None:
        for c in children:
            if c.pointset is None and len(c.shape) >= 2 and c.shape[-2] != ps.n:
                raise ValueError(
                    f"`{label}` combines a field on {ps.describe()} with N={ps.n} points and a "
                    f"value of shape {_fmt_shape(c.shape)}; its point axis (second to last) must "
                    f"be {ps.n}. Nothing is broadcast across point sets."
                )
    return global_op(fn, children, label)


def global_op(fn: Callable, operands: Sequence[Any], label: str) -> Expr:
    """An operation on whole values (fields enter as ``(B, N, D)``); the result is global."""
    children = [as_expr(o, f"{label} operand") for o in operands]
    out = _infer(fn, children, as_field=True, label=label)
    return Apply(fn, children, label, False, None, out.shape, out.dtype)


def reduction(fn: Callable, e: Any, label: str) -> Expr:
    return global_op(fn, [e], label)


def _index_is_trailing(index) -> bool:
    """True when ``index`` only selects on the last axis: ``u[..., k]`` or ``u[..., a:b]``."""
    return (isinstance(index, tuple) and len(index) == 2 and index[0] is Ellipsis
            and isinstance(index[1], (int, slice)))


def getitem(e: Expr, index) -> Expr:
    """Indexing: on a field, ``u[..., k]`` stays a field; other indices act on ``(B, N, D)``."""
    if isinstance(index, Expr):
        raise TypeError("`index` must be static (ints, slices, Ellipsis); got an expression.")
    if e.pointset is not None and _index_is_trailing(index):
        k = index[1]
        sel = slice(k, k + 1) if isinstance(k, int) else k
        if isinstance(k, int) and not -e.shape[-1] <= k < e.shape[-1]:
            raise IndexError(
                f"`index` {k} is out of range for a field with {e.shape[-1]} components."
            )
        return elementwise(lambda v: v[..., sel], [e], f"[...,{k}]")
    return global_op(lambda v: v[index], [e], "getitem")
