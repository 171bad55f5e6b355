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
import weakref
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jno_flax._checks import fmt_shape as _fmt_shape
from jno_flax._checks import name as check_name

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax._evaluate import Evaluator, PointContext
    from jno_flax._pointset import PointSet


class Key:
    """The structural identity of an expression.

    Two expressions built the same way from the same leaves (variables, models, parameters,
    equal constants) get the same :class:`Key` object, so ``a.key is b.key`` means "the same
    expression": the evaluator computes it once and a weight recognises its loss. Keys are
    interned from ``(node type, operation, children's keys)``; an entry lives as long as some
    expression holds its key.
    """

    __slots__ = ("__weakref__",)

    def __repr__(self) -> str:
        return f"<Key {id(self):#x}>"


_INTERNED: "weakref.WeakValueDictionary[tuple, Key]" = weakref.WeakValueDictionary()


def structural_key(parts: tuple) -> Key:
    """The interned :class:`Key` of ``parts`` (children enter as their keys). An operation
    that cannot be hashed (a callable object without ``__hash__``) gets a key of its own."""
    try:
        key = _INTERNED.get(parts)
    except TypeError:
        return Key()
    if key is None:
        key = Key()
        _INTERNED[parts] = key
    return key


def unique_op() -> Hashable:
    """An operation token equal only to itself: for leaves identified by their object."""
    return object()


def constant_op(value) -> Hashable:
    """A hashable description of a constant's value (type, shape, dtype and bytes)."""
    if isinstance(value, (bool, int, float, complex)) and not isinstance(value, np.ndarray):
        return (type(value).__name__, value)
    arr = np.asarray(value)
    return ("array", arr.shape, arr.dtype.str, arr.tobytes())


def freeze(value) -> Hashable:
    """A hashable stand-in for a static argument (``None``, numbers, sequences, arrays)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return constant_op(value)


def _mean_square(v: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(v))


def _mean_abs(v: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(v))


class Expr:
    """A node of the symbolic graph. Build them with operators and :mod:`jno_flax.numpy`."""

    __array_priority__ = 1000  # make numpy defer to our reflected operators
    __hash__ = object.__hash__

    #: expressions a node evaluates on its own, outside its children (the operand of a
    #: parameter Jacobian); discovery walks them, planning does not
    hidden: tuple["Expr", ...] = ()
    #: trainables (models, parameters) this node itself reads
    trainables: tuple[Any, ...] = ()
    #: balancers whose weights this node is
    balancers: tuple[Any, ...] = ()

    def __init__(self, children: Sequence["Expr"], pointset: "PointSet | None",
                 shape: tuple[int, ...], dtype: Any, label: str, op: Hashable):
        """``op`` describes the operation (with its static arguments) for the structural key;
        children enter the key through their own keys."""
        self.children: tuple[Expr, ...] = tuple(children)
        self.key = structural_key((type(self).__qualname__, op,
                                   tuple(c.key for c in self.children)))
        self.pointset = pointset
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.label = label
        self._name: str | None = None
        #: the instance set (a :class:`~jno_flax.functions.FunctionSet`) whose functions this
        #: node depends on, or ``None``; fields inherit it, global nodes that keep one value
        #: per instance set it themselves
        self.instances = (common_instances(self.children, label) if pointset is not None
                          else None)
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
    def batch_size(self) -> int:
        """``B``: the number of instances this node is evaluated for (1 without an instance
        set; all functions of its set otherwise, fewer with ``Trainer(batch_size=...)``)."""
        return 1 if self.instances is None else self.instances.n

    @property
    def value_shape(self) -> tuple[int, ...]:
        """Shape of the evaluated value: ``(B, N, *shape)`` for fields, ``(B, *shape)`` for
        per-instance values, ``shape`` otherwise."""
        if self.pointset is None:
            return self.shape if self.instances is None else (self.batch_size,) + self.shape
        return (self.batch_size, self.pointset.n) + self.shape

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
        return reduction(_mean_square, self, "mse")

    @property
    def mae(self) -> "Expr":
        """Mean of the absolute values over all entries: a scalar."""
        return reduction(_mean_abs, self, "mae")

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
        super().__init__((), None, shape, dtype, "const", constant_op(value))

    def global_eval(self, ev):
        return self.value


def as_expr(value, argname: str = "operand") -> Expr:
    """Turn numbers and arrays into :class:`Constant` (and objects with an expression, such as
    a family of input functions, into it); reject anything else loudly."""
    if isinstance(value, Expr):
        return value
    if hasattr(value, "__jno_expr__"):
        return value.__jno_expr__()
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


def common_instances(children: Sequence[Expr], label: str):
    """The one instance set among ``children`` (``None`` if there is none); two different
    sets cannot meet in one operation."""
    found = None
    for c in children:
        if c.instances is not None and found is None:
            found = c.instances
        elif c.instances is not None and c.instances is not found:
            raise ValueError(
                f"`{label}` combines values of two different instance sets: "
                f"{found.describe()} and {c.instances.describe()}. Instance b of one set has "
                "nothing to do with instance b of another; reduce each first (e.g. `.mse`) or "
                "build both from one family of input functions.")
    return found


class Apply(Expr):
    """``fn(*children)`` evaluated per point (pointwise mode) or on whole values (global)."""

    def __init__(self, fn: Callable, children: Sequence[Expr], label: str, pointwise: bool,
                 pointset, shape, dtype, op: Hashable = None):
        self.fn = fn
        self.op = fn if op is None else op  # the operation with its static arguments
        super().__init__(children, pointset if pointwise else None, shape, dtype, label,
                         (label, pointwise, fn if op is None else op))

    def point_eval(self, ctx):
        return self.fn(*(ctx.value(c) for c in self.children))

    def global_eval(self, ev):
        return self.fn(*(ev.value(c) for c in self.children))


class InstanceApply(Apply):
    """``fn(*children)`` per instance: the value of each instance from its own rows of the
    per-instance operands (other operands are shared), stacked to ``(B, *shape)``."""

    def __init__(self, fn: Callable, children: Sequence[Expr], label: str, op: Hashable = None):
        out = _infer(fn, children, as_field=False, label=label)
        super().__init__(fn, children, label, False, None, out.shape, out.dtype, op)
        self.instances = common_instances(self.children, label)

    def global_eval(self, ev):
        axes = [0 if c.instances is not None else None for c in self.children]
        return jax.vmap(self.fn, in_axes=axes)(*(ev.value(c) for c in self.children))


def _check_global_vector(c: Expr, fields: Sequence[Expr], ps, label: str) -> None:
    """A rank-1 global value combines with fields only as one value per component."""
    d = max(f.shape[-1] if f.shape else 1 for f in fields)
    length = c.shape[0]
    if length in (1, d):
        return
    hint = (f" It has one value per point (N={ps.n}): pass per-point data as an array of shape "
            f"(N, {d}) = ({ps.n}, {d}) (or (1, N, {d})), which is matched point by point."
            if length == ps.n else "")
    raise ValueError(
        f"`{label}` combines a field on {ps.describe()} (N={ps.n} points, {d} "
        f"component{'s' if d != 1 else ''} per point) with an array of shape "
        f"{_fmt_shape(c.shape)}; a 1-D array combines with a field only as a scalar (length 1) "
        f"or one value per component (length {d}). Nothing is broadcast silently.{hint}"
    )


def elementwise(fn: Callable, operands: Sequence[Any], label: str, op: Hashable = None) -> Expr:
    """An operation applied per point when a field is involved.

    Fields on one point set combine per point; scalars and 1-D global values with one entry per
    component (a parameter vector) apply at every point. A field combined with a higher-rank
    global value (data of shape ``(N, D)`` or ``(1, N, D)``) becomes a global operation on
    ``(B, N, D)`` values, with the point count checked. ``op`` identifies the operation with
    its static arguments (default: ``fn`` itself) for structural identity.
    """
    children = [as_expr(o, f"{label} operand") for o in operands]
    ps = _common_pointset(children, label)
    if ps is not None and all(c.pointset is not None or len(c.shape) <= 1 for c in children):
        fields = [c for c in children if c.pointset is not None]
        for c in children:
            if c.pointset is None and len(c.shape) == 1:
                _check_global_vector(c, fields, ps, label)
        out = _infer(fn, children, as_field=False, label=label)
        return Apply(fn, children, label, True, ps, out.shape, out.dtype, op)
    if ps is not None:
        fields = [c for c in children if c.pointset is not None]
        for c in children:
            if c.pointset is None and len(c.shape) >= 2:
                _check_point_data(c, fields, ps, label, isinstance(c, Constant))
    elif any(c.instances is not None for c in children):
        return InstanceApply(fn, children, label, op)
    return global_op(fn, children, label, op)


def _check_point_data(c: Expr, fields: Sequence[Expr], ps, label: str, data: bool) -> None:
    """A global value of rank >= 2 combines with fields on their points (second to last axis
    N). An array (``data``) does so only as per-point data: ``(N, D)`` or ``(B, N, D)`` with
    the fields' point count N, batch B and component count D; a computed global value (a
    parameter Jacobian ``(B, N, P)``) may have other trailing axes."""
    d = max(f.shape[-1] if f.shape else 1 for f in fields)
    b = max(f.value_shape[0] for f in fields)
    expected = f"({ps.n}, {d}) or ({b}, {ps.n}, {d})"
    problem = None
    if data and len(c.shape) > 3:
        problem = f"it has {len(c.shape)} axes"
    elif c.shape[-2] != ps.n:
        problem = (f"its point axis (second to last) has {c.shape[-2]} entries; it must be "
                   f"{ps.n} (N): nothing is broadcast across point sets")
    elif not data:
        pass
    elif c.shape[-1] != d:
        problem = (f"its last axis has {c.shape[-1]} entries, not the fields' {d} "
                   f"component{'s' if d != 1 else ''}")
    elif len(c.shape) == 3 and c.shape[0] != b:
        problem = f"its batch axis (first) has {c.shape[0]} entries, not the fields' B={b}"
    if problem is not None:
        raise ValueError(
            f"`{label}` combines a field on {ps.describe()} (B={b}, N={ps.n}, D={d}) with an "
            f"array of shape {_fmt_shape(c.shape)}: {problem}. Per-point data must have shape "
            f"{expected}, matched point by point; anything else combines with a field only as "
            "a scalar or one value per component. Nothing is broadcast silently.")


def global_op(fn: Callable, operands: Sequence[Any], label: str, op: Hashable = None) -> Expr:
    """An operation on whole values (fields enter as ``(B, N, D)``); the result is global.

    ``op`` identifies the operation with its static arguments (default: ``fn``)."""
    children = [as_expr(o, f"{label} operand") for o in operands]
    out = _infer(fn, children, as_field=True, label=label)
    return Apply(fn, children, label, False, None, out.shape, out.dtype, op)


def is_mean_square(e: Expr) -> bool:
    """True for ``r.mse`` (its residual is ``e.children[0]``)."""
    return isinstance(e, Apply) and e.op is _mean_square and len(e.children) == 1


def is_op(e: Any, fn: Callable, arity: int | None = None) -> bool:
    """True when ``e`` applies the operation ``fn`` (e.g. ``operator.mul`` for ``a * b``,
    ``jnp.square``), to ``arity`` operands when given: recognised by the operation itself,
    never by its display label."""
    return (isinstance(e, Apply) and e.op is fn
            and (arity is None or len(e.children) == arity))


def reduction(fn: Callable, e: Any, label: str, op: Hashable = None) -> Expr:
    return global_op(fn, [e], label, op)


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
        return elementwise(lambda v: v[..., sel], [e], f"[...,{k}]", ("getitem", repr(index)))
    if e.pointset is None and e.instances is not None:  # per instance
        return InstanceApply(lambda v: v[index], [e], "getitem", ("getitem", repr(index)))
    return global_op(lambda v: v[index], [e], "getitem", ("getitem", repr(index)))
