"""``jno_flax.numpy`` (also ``jno.np``): NumPy-like functions that build expressions.

Elementwise functions act per point on fields and keep them fields; reductions take
``axis=`` (``None`` reduces everything) and act on the evaluated value (``(B, N, D)`` for a
field). Arguments may mix expressions, numbers and arrays.

>>> import jno_flax.numpy as jnn
>>> r = jnn.sin(jnn.pi * x) * jnn.exp(-y) - u
>>> loss = jnn.mean(r ** 2)
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jno_flax._expr import Expr, as_expr, elementwise, freeze, global_op
from jno_flax._tracker import Tracker, tracker
from jno_flax._trainable import parameter

__all__ = [
    "pi", "e", "function", "tracker", "Tracker", "parameter",
    # elementwise
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "exp", "expm1",
    "log", "log1p", "sqrt", "square", "abs", "sign", "floor", "ceil", "sigmoid", "relu",
    "softplus", "maximum", "minimum", "power", "arctan2", "where", "clip", "stop_gradient",
    # reductions
    "mean", "sum", "max", "min", "std", "var", "prod", "norm",
    # linear algebra and shapes
    "dot", "matmul", "concat", "concatenate", "stack", "reshape", "transpose", "einsum",
    "trace", "eigvalsh",
]

pi = float(jnp.pi)
e = float(jnp.e)


def _unary(fn: Callable, label: str) -> Callable[[object], Expr]:
    def op(x) -> Expr:
        return elementwise(fn, [x], label)
    op.__name__ = label
    op.__doc__ = f"Elementwise ``{label}``; a field stays a field."
    return op


sin = _unary(jnp.sin, "sin")
cos = _unary(jnp.cos, "cos")
tan = _unary(jnp.tan, "tan")
arcsin = _unary(jnp.arcsin, "arcsin")
arccos = _unary(jnp.arccos, "arccos")
arctan = _unary(jnp.arctan, "arctan")
sinh = _unary(jnp.sinh, "sinh")
cosh = _unary(jnp.cosh, "cosh")
tanh = _unary(jnp.tanh, "tanh")
exp = _unary(jnp.exp, "exp")
expm1 = _unary(jnp.expm1, "expm1")
log = _unary(jnp.log, "log")
log1p = _unary(jnp.log1p, "log1p")
sqrt = _unary(jnp.sqrt, "sqrt")
square = _unary(jnp.square, "square")
abs = _unary(jnp.abs, "abs")  # noqa: A001 - mirrors numpy
sign = _unary(jnp.sign, "sign")
floor = _unary(jnp.floor, "floor")
ceil = _unary(jnp.ceil, "ceil")
sigmoid = _unary(jax.nn.sigmoid, "sigmoid")
relu = _unary(jax.nn.relu, "relu")
softplus = _unary(jax.nn.softplus, "softplus")
stop_gradient = _unary(jax.lax.stop_gradient, "stop_gradient")


def maximum(a, b) -> Expr:
    return elementwise(jnp.maximum, [a, b], "maximum")


def minimum(a, b) -> Expr:
    return elementwise(jnp.minimum, [a, b], "minimum")


def power(a, b) -> Expr:
    return elementwise(jnp.power, [a, b], "power")


def arctan2(a, b) -> Expr:
    return elementwise(jnp.arctan2, [a, b], "arctan2")


def where(cond, a, b) -> Expr:
    """``a`` where ``cond`` holds, else ``b`` (elementwise)."""
    return elementwise(jnp.where, [cond, a, b], "where")


def clip(x, lo=None, hi=None) -> Expr:
    """Clip ``x`` to ``[lo, hi]`` (either bound may be ``None``)."""
    return elementwise(lambda v: jnp.clip(v, lo, hi), [x], "clip", ("clip", freeze(lo), freeze(hi)))


# ---------------------------------------------------------------------- reductions
def _check_axis(axis) -> None:
    ok = axis is None or isinstance(axis, int) or (
        isinstance(axis, tuple) and all(isinstance(a, int) for a in axis))
    if not ok or isinstance(axis, bool):
        raise TypeError(f"`axis` must be None, an int or a tuple of ints, got {axis!r}.")


def _reduction(fn: Callable, label: str) -> Callable[..., Expr]:
    def op(x, axis=None, keepdims: bool = False) -> Expr:
        _check_axis(axis)
        return global_op(lambda v: fn(v, axis=axis, keepdims=keepdims), [x], label,
                         (fn, axis, bool(keepdims)))
    op.__name__ = label
    op.__doc__ = (f"``{label}`` over ``axis`` (``None``: all entries) of the evaluated value "
                  "(``(B, N, D)`` for a field).")
    return op


mean = _reduction(jnp.mean, "mean")
sum = _reduction(jnp.sum, "sum")  # noqa: A001
max = _reduction(jnp.max, "max")  # noqa: A001
min = _reduction(jnp.min, "min")  # noqa: A001
std = _reduction(jnp.std, "std")
var = _reduction(jnp.var, "var")
prod = _reduction(jnp.prod, "prod")


def norm(x, axis=None, ord=None, keepdims: bool = False) -> Expr:
    """``jnp.linalg.norm``; with ``axis=None`` the 2-norm of all entries (flattened)."""
    _check_axis(axis)

    def fn(v):
        if axis is None and ord is None:
            return jnp.sqrt(jnp.sum(jnp.square(v)))
        return jnp.linalg.norm(v, ord=ord, axis=axis, keepdims=keepdims)
    return global_op(fn, [x], "norm", ("norm", axis, ord, bool(keepdims)))


# ---------------------------------------------------------------------- linear algebra
def _same_field(exprs: Sequence[Expr]) -> bool:
    ps = exprs[0].pointset
    return ps is not None and all(e.pointset is ps for e in exprs)


def _field_dot(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.sum(u * v, axis=-1, keepdims=True)


def dot(a, b) -> Expr:
    """``jnp.dot`` of global values; for two fields on one point set, the per-point dot
    product of their components (a ``(B, N, 1)`` field)."""
    ea, eb = as_expr(a, "a"), as_expr(b, "b")
    if _same_field([ea, eb]):
        return elementwise(_field_dot, [ea, eb], "dot")
    return global_op(jnp.dot, [ea, eb], "dot")


def matmul(a, b) -> Expr:
    return global_op(jnp.matmul, [a, b], "matmul")


def concat(exprs: Sequence, axis: int = -1) -> Expr:
    """Concatenate; fields on one point set along ``axis=-1`` give a field with more components."""
    if not isinstance(exprs, (list, tuple)) or not exprs:
        raise TypeError(f"`exprs` must be a non-empty list of expressions, got {exprs!r}.")
    es = [as_expr(x, "exprs") for x in exprs]
    if axis == -1 and _same_field(es):
        return elementwise(lambda *v: jnp.concatenate(v, axis=-1), es, "concat", ("concat", -1))
    return global_op(lambda *v: jnp.concatenate(v, axis=axis), es, "concat", ("concat", axis))


concatenate = concat


def stack(exprs: Sequence, axis: int = 0) -> Expr:
    if not isinstance(exprs, (list, tuple)) or not exprs:
        raise TypeError(f"`exprs` must be a non-empty list of expressions, got {exprs!r}.")
    return global_op(lambda *v: jnp.stack(v, axis=axis), list(exprs), "stack", ("stack", axis))


def reshape(x, shape: tuple[int, ...]) -> Expr:
    return global_op(lambda v: jnp.reshape(v, shape), [x], "reshape", ("reshape", freeze(shape)))


def transpose(x, axes: tuple[int, ...] | None = None) -> Expr:
    return global_op(lambda v: jnp.transpose(v, axes), [x], "transpose",
                     ("transpose", freeze(axes)))


def einsum(subscripts: str, *operands) -> Expr:
    return global_op(lambda *v: jnp.einsum(subscripts, *v), list(operands), "einsum",
                     ("einsum", subscripts))


def trace(x) -> Expr:
    return global_op(jnp.trace, [x], "trace")


def eigvalsh(x) -> Expr:
    """Eigenvalues (ascending) of a symmetric matrix, e.g. an NTK ``J @ J.T``."""
    return global_op(jnp.linalg.eigvalsh, [x], "eigvalsh")


# ---------------------------------------------------------------------- custom functions
def function(fn: Callable, args: Sequence, pointwise: bool = True, name: str | None = None
             ) -> Expr:
    """Put any JAX function into the graph; gradients (coordinates and parameters) flow.

    Args:
        fn: a JAX-traceable function of ``len(args)`` arrays returning one array.
        args: expressions (or numbers/arrays) passed to ``fn``.
        pointwise: when the arguments are fields, ``fn`` receives per-point values (each
            ``(D,)``) and is applied at every point, so derivatives with respect to
            coordinates work through it. With ``pointwise=False`` it receives whole values
            (``(B, N, D)`` for fields) and may mix points (e.g. reduce over them).

    >>> result = function(lambda x, y: jnp.exp(-x**2) * jnp.sin(y), [x, y])
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}: {fn!r}.")
    if not isinstance(args, (list, tuple)):
        raise TypeError(f"`args` must be a list of expressions, got {type(args).__name__}.")
    label = name or getattr(fn, "__name__", "function")
    if pointwise:
        return elementwise(fn, list(args), label)
    return global_op(fn, list(args), label)
