"""Lowering expressions to JAX: discovery of what a graph uses, and its evaluation.

:class:`Graph` finds the trainables and point sets that a list of expressions uses and plans
their evaluation; :class:`Evaluator` computes values inside a JAX trace, given the parameters
of every trainable and the points of every point set.

All pointwise nodes of one point set and level that a global node needs (the *roots* of that
group) are evaluated together in one ``jax.vmap`` over the points, with a per-point memo, so a
shared sub-expression (say ``u``, used by the PDE residual and by a tracker) runs once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jno_flax._expr import Expr
from jno_flax._pointset import PointSet
from jno_flax._trainable import Trainable


def walk(outputs: Iterable[Expr], hidden: bool = True) -> list[Expr]:
    """All nodes reachable from ``outputs``.

    With ``hidden``, operands that a node evaluates on its own (the expression of a parameter
    Jacobian) are included too: they matter for discovery, not for planning.
    """
    seen: set[int] = set()
    order: list[Expr] = []
    stack = list(reversed(list(outputs)))
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        more = node.children + (getattr(node, "hidden", ()) if hidden else ())
        stack.extend(reversed(more))
    return order


class Registry:
    """Names of the trainables and keys of the point sets that a problem uses."""

    def __init__(self, outputs: Sequence[Expr]):
        from jno_flax._balancer import AdaptiveWeight
        self.trainables: list[Trainable] = []
        self.pointsets: list[PointSet] = []
        self.balancers: list[Any] = []
        for node in walk(outputs):
            if isinstance(node, AdaptiveWeight) and all(node.balancer is not b
                                                        for b in self.balancers):
                self.balancers.append(node.balancer)
            for t in _trainables_of(node):
                if all(t is not s for s in self.trainables):
                    self.trainables.append(t)
            if node.pointset is not None and all(node.pointset is not p for p in self.pointsets):
                self.pointsets.append(node.pointset)
        self._names: dict[int, str] = {}
        used: dict[str, Trainable] = {}
        counters: dict[str, int] = defaultdict(int)
        for t in self.trainables:
            name = t.user_name
            if name is None:
                prefix = "param" if t.kind == "parameter" else "model"
                while f"{prefix}_{counters[prefix]}" in used or any(
                        s.user_name == f"{prefix}_{counters[prefix]}" for s in self.trainables):
                    counters[prefix] += 1
                name = f"{prefix}_{counters[prefix]}"
                counters[prefix] += 1
            if name in used:
                raise ValueError(
                    f"two different trainables are both named {name!r} ({used[name]!r} and "
                    f"{t!r}); give each model and parameter a unique `name`."
                )
            used[name] = t
            self._names[id(t)] = name
        self._keys = {id(ps): f"points_{i}" for i, ps in enumerate(self.pointsets)}
        self._balancer_keys = {id(b): f"adaptive/{i}" for i, b in enumerate(self.balancers)}

    def name(self, t: Trainable) -> str:
        try:
            return self._names[id(t)]
        except KeyError:
            raise ValueError(f"{t!r} is not used by this problem; its trainables are "
                             f"{list(self._names.values())}.") from None

    def key(self, ps: PointSet) -> str:
        try:
            return self._keys[id(ps)]
        except KeyError:
            raise ValueError(f"the points {ps.describe()} are not used by this problem.") from None

    def balancer_key(self, balancer) -> str:
        """Key of a balancer's state in ``TrainState.extras``."""
        try:
            return self._balancer_keys[id(balancer)]
        except KeyError:
            raise ValueError(f"{balancer!r} is not used by this problem.") from None

    def initial_extras(self) -> dict[str, Any]:
        """The state of every balancer before training."""
        return {self.balancer_key(b): b.init_state() for b in self.balancers}

    def params(self) -> dict[str, nnx.State]:
        """Current parameters of every trainable (from the live modules)."""
        return {self.name(t): t.params() for t in self.trainables}

    def batch(self) -> dict[str, jax.Array]:
        """The stored points of every point set, as float arrays ``(N, C)``."""
        dtype = jnp.zeros(()).dtype
        return {self.key(ps): jnp.asarray(ps.array, dtype) for ps in self.pointsets}


def _trainables_of(node: Expr) -> list[Trainable]:
    from jno_flax._trainable import ModelCall
    if isinstance(node, Trainable):
        return [node]
    if isinstance(node, ModelCall):
        return [node.model]
    return list(getattr(node, "trainables", ()))


class Plan:
    """Which pointwise nodes each (point set, level) group must produce for ``outputs``."""

    def __init__(self, outputs: Sequence[Expr]):
        self.roots: dict[tuple[int, int], list[Expr]] = defaultdict(list)
        self.global_deps: dict[int, list[tuple[Expr, int]]] = defaultdict(list)
        root_ids: set[int] = set()

        def add_root(node: Expr) -> None:
            if id(node) not in root_ids:
                root_ids.add(id(node))
                self.roots[(id(node.pointset), node.level)].append(node)

        for out in outputs:
            if out.pointset is not None:
                add_root(out)
        for node in walk(outputs, hidden=False):
            for child in node.children:
                if node.pointset is None and child.pointset is not None:
                    add_root(child)
                if node.pointset is not None and child.pointset is None:
                    self.global_deps[id(node.pointset)].append((child, node.level))


class Evaluator:
    """Evaluates expressions inside a JAX trace.

    Args:
        registry: names of trainables and keys of point sets.
        params: ``{trainable name: nnx.State of its nnx.Param leaves}``.
        batch: ``{point-set key: (N, C) array}``.
        outputs: the expressions that will be asked for (for planning).
    """

    def __init__(self, registry: Registry, params: dict[str, Any], batch: dict[str, jax.Array],
                 outputs: Sequence[Expr], rng: jax.Array | None = None, step=None,
                 extras: dict[str, Any] | None = None):
        self.registry = registry
        self.params = params
        self.batch = batch
        self.rng = rng
        self.step = step
        self.extras = extras or {}
        self.plan = Plan(outputs)
        self.cache: dict[int, jax.Array] = {}
        self.memo: dict[Any, Any] = {}      # side computations shared by several nodes
        self.updates: dict[str, Any] = {}   # new feature state (adaptive weights) of this step
        self._modules: dict[int, nnx.Module] = {}

    def module(self, t: Trainable) -> nnx.Module:
        """The trainable's module with this evaluation's parameters."""
        if id(t) not in self._modules:
            graphdef, _, rest = t.split()
            self._modules[id(t)] = nnx.merge(graphdef, self.params[self.registry.name(t)], rest)
        return self._modules[id(t)]

    def value(self, node: Expr) -> jax.Array:
        """The value of ``node``: fields as ``(1, N, *shape)``, global nodes as themselves."""
        key = id(node)
        if key not in self.cache:
            if node.pointset is None:
                self.cache[key] = node.global_eval(self)
            else:
                group = (id(node.pointset), node.level)
                if all(r is not node for r in self.plan.roots[group]):
                    self.plan.roots[group].append(node)
                self._eval_group(node.pointset, node.level)
        return self.cache[key]

    def _eval_group(self, ps: PointSet, level: int) -> None:
        for g, parent_level in self.plan.global_deps[id(ps)]:
            if parent_level <= level:
                self.value(g)
        roots = [r for r in self.plan.roots[(id(ps), level)] if id(r) not in self.cache]
        if not roots:
            return
        known = [n for (pid, lvl), group in self.plan.roots.items() if pid == id(ps)
                 and lvl < level for n in group if id(n) in self.cache]
        points = self.batch[self.registry.key(ps)]

        def per_point(row, known_values):
            memo = {id(n): v for n, v in zip(known, known_values)}
            ctx = PointContext(self, ps, tuple(row[i] for i in range(row.shape[0])), memo)
            return [ctx.value(r) for r in roots]

        outs = jax.vmap(per_point)(points, [self.cache[id(n)][0] for n in known])
        for r, o in zip(roots, outs):
            self.cache[id(r)] = o[None]


class PointContext:
    """The evaluation of pointwise nodes at one point (inside ``vmap``)."""

    def __init__(self, ev: Evaluator, ps: PointSet, columns: tuple, memo: dict[int, Any]):
        self.ev = ev
        self.ps = ps
        self.columns = columns
        self.memo = memo

    def column(self, ps: PointSet, i: int) -> jax.Array:
        if ps is not self.ps:  # guarded at construction; kept as a safety net
            raise ValueError(f"a field on {ps.describe()} was evaluated on {self.ps.describe()}.")
        return self.columns[i]

    def module(self, t: Trainable) -> nnx.Module:
        return self.ev.module(t)

    def value(self, node: Expr) -> jax.Array:
        if node.pointset is None:
            return self.ev.value(node)
        key = id(node)
        if key not in self.memo:
            self.memo[key] = node.point_eval(self)
        return self.memo[key]

    def remember(self, node: Expr, value: jax.Array) -> None:
        """Record a value computed on the side (a primal from ``jvp``) for reuse."""
        self.memo.setdefault(id(node), value)

    def with_columns(self, replace: dict[int, jax.Array]) -> "PointContext":
        """A fresh context at the same point with some coordinates replaced (for AD)."""
        cols = tuple(replace.get(i, c) for i, c in enumerate(self.columns))
        return PointContext(self.ev, self.ps, cols, {})
