"""Exact derivatives with respect to coordinates, computed per point and planned together.

A field's value at one point is a function of that point's coordinates, so its coordinate
derivatives are forward-mode AD of that function under the ``vmap`` over points. Every
derivative node names an *operand* (the field differentiated, its ``base``) and asks for
partial derivatives of it, as multi-indices over coordinate columns: ``u.d(x)`` asks for
``(x,)``, ``u.d2(x)`` and ``u.d(x).d(x)`` for ``(x, x)``, ``u.d(x).d(y)`` for ``(x, y)``,
``u.grad(x, y)`` for ``(x,)`` and ``(y,)``, ``u.hessian(x, y)`` for all pairs, and
``u.laplacian(x, y)`` for the Laplacian over ``{x, y}``.

All requests for one operand at a point are computed by one :class:`DerivativePlan`, in one
nested pass that also yields the operand's value, so nothing is computed twice:

* the innermost layer is ``folx.forward_laplacian`` over the Laplacian's coordinates when a
  Laplacian is asked for and no single second derivative along those coordinates is (one
  forward pass carrying the value, the first derivatives and the Laplacian), else the
  operand itself;
* around it, one layer per remaining coordinate, highest order innermost: a ``jax.jvp``
  for first order, two nested ``jvp`` for second order, a Taylor-mode
  ``jax.experimental.jet`` for order three and more (one pass gives every order along that
  coordinate; nested ``jvp`` where ``jet`` lacks a rule for an operation of the operand). An
  outer layer differentiates everything inside it, so mixed derivatives (``u_xt``) come out
  of the same pass; what no request uses is removed by XLA.

Measured on 2 CPU cores (``bench/pdes.py --rounds 5``, steps/s of the whole training step
with a ``jet`` / nested ``jvp`` for the second order along ``x``): Burgers 82 / 113, Allen–Cahn
92 / 98, Allen–Cahn with a modified MLP 68 / 70; for KdV's third order ``jet`` 60 / 58.
``folx`` is the fastest Laplacian.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import TYPE_CHECKING, Callable, Sequence

import folx
import jax
import jax.numpy as jnp
from jax.experimental import jet

from jno_flax._expr import Expr
from jno_flax._pointset import Variable

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax._evaluate import PointContext

#: a request: a multi-index (sorted tuple of coordinate columns, ``()`` is the value) or a
#: Laplacian ``("laplacian", columns)``
Request = tuple


def _check_operand(expr: Expr, what: str) -> Expr:
    if not isinstance(expr, Expr):
        raise TypeError(f"`{what}` needs an expression, got {type(expr).__name__}.")
    if expr.pointset is None:
        raise ValueError(
            f"`{what}` differentiates per point, but {expr!r} is not a field on a point set "
            "(it is a reduction, a parameter or a constant). Differentiate the field first, "
            "then reduce."
        )
    return expr


def _check_coordinates(expr: Expr, vars: Sequence, what: str) -> tuple[Variable, ...]:
    if not vars:
        raise ValueError(f"`{what}` needs at least one coordinate variable, got none.")
    out = []
    for v in vars:
        if not isinstance(v, Variable) or not v.is_coordinate:
            raise TypeError(
                f"`{what}` differentiates with respect to coordinate variables (from "
                f"`domain.variable(tag)`), got {v!r}. To differentiate with respect to a "
                "model's parameters use `expr.grad(model)`."
            )
        if v.pointset is not expr.pointset:
            raise ValueError(
                f"`{what}`: the variable {v.symbol!r} belongs to {v.pointset.describe()}, but the "
                f"expression is a field on {expr.pointset.describe()}. Use the variables of the "
                "same tag (e.g. `u_net(xb, yb).d(xb)` on the boundary)."
            )
        out.append(v)
    cols = [v.column for v in out]
    if len(set(cols)) != len(cols):
        raise ValueError(f"`{what}` got a coordinate twice: {[v.symbol for v in out]}.")
    return tuple(out)


def _multi(*columns: int) -> Request:
    return tuple(sorted(columns))


class CoordinateDerivative(Expr):
    """Base of the derivative nodes: an operand ``base``, a ``prefix`` multi-index already
    applied to it (``u.d(x).d2(y)`` is ``base=u, prefix=(x,)``) and the node's requests."""

    def __init__(self, expr: Expr, vars: Sequence, what: str, extra_shape: tuple[int, ...]):
        _check_operand(expr, what)
        self.vars = _check_coordinates(expr, vars, what)
        if isinstance(expr, Derivative):
            self.base, self.prefix = expr.base, expr.index
        else:
            self.base, self.prefix = expr, ()
        shape = expr.shape + extra_shape
        label = f"{what}({', '.join(v.symbol for v in self.vars)})"
        super().__init__((self.base,), expr.pointset, shape, expr.dtype, label,
                         (what, self.prefix, tuple(v.column for v in self.vars)))

    @property
    def columns(self) -> tuple[int, ...]:
        return tuple(v.column for v in self.vars)

    def requests(self) -> list[Request]:  # pragma: no cover - abstract
        """The partial derivatives of ``base`` this node is assembled from."""
        raise NotImplementedError

    def assemble(self, parts: dict[Request, jax.Array]) -> jax.Array:  # pragma: no cover
        """This node's per-point value from the computed requests."""
        raise NotImplementedError

    def point_eval(self, ctx: "PointContext") -> jax.Array:
        return self.assemble(ctx.derivatives(self.base, self.requests()))


class Derivative(CoordinateDerivative):
    """``expr.d(x)`` (``order=1``), ``expr.d2(x)`` (``order=2``) and chains of them; same shape
    as ``expr``. ``index`` is the multi-index of the whole chain."""

    def __init__(self, expr: Expr, var, order: int):
        self.order = order
        super().__init__(expr, [var], "d" if order == 1 else "d2", ())
        self.index = _multi(*self.prefix, *(self.vars[0].column,) * order)

    def requests(self):
        return [self.index]

    def assemble(self, parts):
        return parts[self.index]


class Laplacian(CoordinateDerivative):
    """``expr.laplacian(*xs)``: the sum of second derivatives; same shape as ``expr``."""

    def __init__(self, expr: Expr, vars: Sequence):
        super().__init__(expr, vars, "laplacian", ())

    def requests(self):
        if self.prefix:
            return [_multi(*self.prefix, c, c) for c in self.columns]
        return [("laplacian", tuple(sorted(self.columns)))]

    def assemble(self, parts):
        if self.prefix:
            return functools.reduce(jnp.add, [parts[r] for r in self.requests()])
        return parts[self.requests()[0]]


def _field_axes(expr: Expr) -> int:
    """1-component fields drop their component axis in gradients and Hessians."""
    return 0 if expr.shape == (1,) else 1


class Gradient(CoordinateDerivative):
    """``expr.grad(*xs)``: per point ``(k,)`` for a 1-component field, else ``(D, k)``."""

    def __init__(self, expr: Expr, vars: Sequence):
        k = len(vars)
        super().__init__(expr, vars, "grad", (k,))
        if _field_axes(expr) == 0:
            self.shape = (k,)

    def requests(self):
        return [_multi(*self.prefix, c) for c in self.columns]

    def assemble(self, parts):
        return jnp.stack([parts[r] for r in self.requests()], axis=-1).reshape(self.shape)


class Hessian(CoordinateDerivative):
    """``expr.hessian(*xs)``: per point ``(k, k)`` for a 1-component field, else ``(D, k, k)``."""

    def __init__(self, expr: Expr, vars: Sequence):
        k = len(vars)
        super().__init__(expr, vars, "hessian", (k, k))
        if _field_axes(expr) == 0:
            self.shape = (k, k)

    def requests(self):
        return [_multi(*self.prefix, a, b) for a in self.columns for b in self.columns]

    def assemble(self, parts):
        k = len(self.columns)
        rows = [jnp.stack([parts[_multi(*self.prefix, a, b)] for b in self.columns], axis=-1)
                for a in self.columns]
        return jnp.stack(rows, axis=-2).reshape(self.shape[:-2] + (k, k))


# ---------------------------------------------------------------------- planning
def _sub_indices(index: tuple[int, ...]) -> set[tuple[int, ...]]:
    """Every sub-multiset of a multi-index (the lower orders a pass goes through)."""
    counts = Counter(index)
    out = {()}
    for col, n in counts.items():
        out = {_multi(*s, *(col,) * j) for s in out for j in range(n + 1)}
    return out


def _jet(fn: Callable, x0: jax.Array, order: int):
    """``fn(x0)`` and its derivatives of orders ``1..order`` along one coordinate, in one
    Taylor-mode pass; ``None`` when an operation of ``fn`` has no Taylor rule."""
    one = jnp.ones_like(x0)
    try:
        primal, terms = jet.jet(fn, (x0,), ([one] + [jnp.zeros_like(x0)] * (order - 1),))
    except KeyError as err:  # jet looks up its rules by primitive
        if err.args and isinstance(err.args[0], jax.extend.core.Primitive):
            return None
        raise
    return primal, [tuple(t[j] for t in terms) for j in range(order)]


class DerivativePlan:
    """How to compute a set of requests for one operand.

    Coordinates that appear together in a request (``u_xt``), or that are only needed to
    first order, share one nested pass; coordinates needed to second or higher order that
    never mix with each other (``u_tt`` and ``u_xx`` of the wave equation) get a pass each,
    which computes the same but compiles much smaller than a Taylor pass nested in another.

    Attributes:
        laplacian: the columns of the innermost folx Laplacian (in the first pass), or ``None``.
        passes: per pass, ``[(column, order)]`` from the innermost layer outwards.
        needed: every multi-index a layer must carry (requests and their lower orders).
    """

    def __init__(self, requests: set[Request]):
        multi = {r for r in requests if not _is_laplacian(r)}
        laps = {r[1] for r in requests if _is_laplacian(r)}
        self.laplacian: tuple[int, ...] | None = None
        if len(laps) == 1:
            cols = next(iter(laps))
            if all(sum(Counter(m)[c] for c in cols) <= 1 for m in multi):
                self.laplacian = cols
        for cols in laps:
            if cols != self.laplacian:  # computed from single second derivatives
                multi |= {_multi(c, c) for c in cols}
        self.requests = frozenset(requests)
        self.needed = set().union(*(_sub_indices(m) for m in multi | {()}))
        order: dict[int, int] = {}
        for m in multi:
            for col, n in Counter(m).items():
                if self.laplacian is None or col not in self.laplacian:
                    order[col] = max(order.get(col, 0), n)
        groups = _mixing_groups(order, multi)
        if self.laplacian is not None:  # what mixes with the Laplacian's columns joins its pass
            mixed = {c for m in multi if set(m) & set(self.laplacian) for c in m if c in order}
            joined = [g for g in groups if g & mixed]
            groups = ([set().union(*joined)] if joined else []) + [g for g in groups
                                                                  if not g & mixed]
        high = [g for g in groups if max(order[c] for c in g) >= 2]
        low = [c for g in groups if max(order[c] for c in g) < 2 for c in g]
        columns = [sorted(g) for g in high] or [[]]
        columns[0] += [c for c in low if c not in columns[0]]
        self.passes = [sorted(((c, order[c]) for c in cols), key=lambda item: (-item[1], item[0]))
                       for cols in columns]

    def evaluate(self, ctx: "PointContext", base: Expr) -> dict[Request, jax.Array]:
        """Every request (and the operand's value, under ``()``) at the context's point."""
        parts: dict[Request, jax.Array] = {}
        for i, layers in enumerate(self.passes):
            keys, fn = self._innermost(ctx, base, with_laplacian=i == 0)
            for col, order in layers:
                keys, fn = self._layer(ctx, keys, fn, col, order)
            parts = {**dict(zip(keys, fn({}))), **parts}
        if self.laplacian is None:
            for cols in {r[1] for r in self.requests if _is_laplacian(r)}:
                parts[("laplacian", cols)] = functools.reduce(
                    jnp.add, [parts[_multi(c, c)] for c in cols])
        return parts

    def _innermost(self, ctx, base, with_laplacian: bool):
        def value(replaced):
            return (ctx.with_columns(replaced).value(base, direct=True),)
        if self.laplacian is None or not with_laplacian:
            return [()], value
        cols = self.laplacian
        firsts = [c for c in cols if (c,) in self.needed]

        def forward_laplacian(replaced):
            def f(p):
                return value({**replaced, **{c: p[i] for i, c in enumerate(cols)}})[0]
            out = folx.forward_laplacian(f)(jnp.stack([ctx.column(c) for c in cols]))
            jac = out.jacobian.dense_array  # (len(cols), *value shape)
            return (out.x, *(jac[cols.index(c)] for c in firsts), out.laplacian)
        return [(), *((c,) for c in firsts), ("laplacian", cols)], forward_laplacian

    def _layer(self, ctx, keys, fn, col: int, order: int):
        """Differentiate every entry of ``fn`` along ``col`` up to ``order``."""
        carried = [(i, j, _multi(*k, *(col,) * j)) for j in range(1, order + 1)
                   for i, k in enumerate(keys) if not _is_laplacian(k)
                   and _multi(*k, *(col,) * j) in self.needed]
        new_keys = list(keys) + [k for _, _, k in carried]

        def layered(replaced):
            x0 = ctx.column(col)
            along = lambda s: fn({**replaced, col: s})  # noqa: E731
            if order == 1:
                primal, tangent = jax.jvp(along, (x0,), (jnp.ones_like(x0),))
                series = [tangent]
            elif order == 2:
                primal, series = _nested_jvp(along, x0, order)
            else:
                primal, series = _jet(along, x0, order) or _nested_jvp(along, x0, order)
            return tuple(primal) + tuple(series[j - 1][i] for i, j, _ in carried)
        return new_keys, layered


def _mixing_groups(order: dict[int, int], multi: set[tuple[int, ...]]) -> list[set[int]]:
    """The columns of ``order`` grouped by appearing together in a multi-index."""
    groups: list[set[int]] = [{c} for c in sorted(order)]
    for m in multi:
        cols = {c for c in m if c in order}
        joined = [g for g in groups if g & cols]
        if len(joined) > 1:
            groups = [g for g in groups if not g & cols] + [set().union(*joined)]
    return sorted(groups, key=min)


def _nested_jvp(fn: Callable, x0: jax.Array, order: int):
    """``fn(x0)`` and its derivatives of orders ``1..order`` by nested ``jax.jvp``."""
    one = jnp.ones_like(x0)

    def derivs(x, n):
        if n == 0:
            return (fn(x),)
        primal, tangent = jax.jvp(lambda s: derivs(s, n - 1), (x,), (one,))
        return primal + (tangent[-1],)
    out = derivs(x0, order)
    return out[0], list(out[1:])


def _is_laplacian(request: Request) -> bool:
    return bool(request) and request[0] == "laplacian"
