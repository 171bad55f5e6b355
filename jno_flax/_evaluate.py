"""Lowering expressions to JAX: discovery of what a graph uses, and its evaluation.

:class:`Graph` finds the trainables and point sets that a list of expressions uses and plans
their evaluation; :class:`Evaluator` computes values inside a JAX trace, given the parameters
of every trainable and the points of every point set.

All pointwise nodes of one point set and level that a global node needs (the *roots* of that
group) are evaluated together in one ``jax.vmap`` over the points, with a per-point memo keyed
by structural identity (:class:`~jno_flax._expr.Key`), so a shared sub-expression (say ``u``,
used by the PDE residual and by a tracker, even when built twice) runs once. The coordinate
derivatives of one operand are computed together (:mod:`jno_flax._derivatives`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jno_flax._dtypes import default_float
from jno_flax._derivatives import CoordinateDerivative, DerivativePlan, Request
from jno_flax._expr import Expr, Key
from jno_flax._function_nodes import PairedData
from jno_flax._pointset import PointSet
from jno_flax._trainable import Trainable


def walk(outputs: Iterable[Expr], hidden: bool = True) -> list[Expr]:
    """All nodes reachable from ``outputs``.

    With ``hidden``, operands that a node evaluates on its own (the expression of a parameter
    Jacobian) are included too: they matter for discovery, not for planning.
    """
    seen: set[Key] = set()
    order: list[Expr] = []
    stack = list(reversed(list(outputs)))
    while stack:
        node = stack.pop()
        if node.key in seen:
            continue
        seen.add(node.key)
        order.append(node)
        more = node.children + (node.hidden if hidden else ())
        stack.extend(reversed(more))
    return order


class Registry:
    """Names of the trainables and keys of the point sets that a problem uses."""

    def __init__(self, outputs: Sequence[Expr]):
        self.trainables: list[Trainable] = []
        self.pointsets: list[PointSet] = []
        self.balancers: list[Any] = []
        self.families: list[Any] = []
        for node in walk(outputs):
            for b in node.balancers:
                if all(b is not other for other in self.balancers):
                    self.balancers.append(b)
            for t in node.trainables:
                if all(t is not s for s in self.trainables):
                    self.trainables.append(t)
            if node.pointset is not None and all(node.pointset is not p for p in self.pointsets):
                self.pointsets.append(node.pointset)
            if node.instances is not None and all(node.instances is not f
                                                  for f in self.families):
                self.families.append(node.instances)
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
        self._keys.update({id(f): f"functions_{i}" for i, f in enumerate(self.families)})
        self._balancer_keys = {id(b): f"{b.scheme}{i}" for i, b in enumerate(self.balancers)}

    def name(self, t: Trainable) -> str:
        try:
            return self._names[id(t)]
        except KeyError:
            raise ValueError(f"{t!r} is not used by this problem; its trainables are "
                             f"{list(self._names.values())}.") from None

    def key(self, ps: Any) -> str:
        """The batch key of a point set (``points_<k>``) or a family of input functions
        (``functions_<k>``)."""
        try:
            return self._keys[id(ps)]
        except KeyError:
            raise ValueError(f"{ps.describe()} is not used by this problem.") from None

    def balancer_key(self, balancer) -> str:
        """A balancer's one key: ``<scheme><k>`` (``relobralo0``), its state's key in
        ``TrainState.extras`` and the middle of its weights' names ``weights/<key>/<loss>``."""
        try:
            return self._balancer_keys[id(balancer)]
        except KeyError:
            raise ValueError(f"{balancer!r} is not used by this problem.") from None

    def initial_extras(self) -> dict[str, Any]:
        """The state of every balancer before training."""
        return {self.balancer_key(b): b.initial_slot() for b in self.balancers}

    def params(self) -> dict[str, nnx.State]:
        """Current parameters of every trainable (from the live modules)."""
        return {self.name(t): t.params() for t in self.trainables}

    def batch(self) -> dict[str, Any]:
        """The stored points of every point set, as float arrays ``(N, C)``, and the arrays of
        every family of input functions (``{"values": (n, S), "paired_<k>": ...}``)."""
        dtype = default_float()
        out: dict[str, Any] = {self.key(ps): jnp.asarray(ps.array, dtype)
                               for ps in self.pointsets}
        for fam in self.families:
            entry = {"values": jnp.asarray(fam.values, dtype)}
            if fam.sampler is not None:
                entry["sampler"] = jnp.asarray(fam.sampler, dtype)
            entry.update({f"paired_{i}": jnp.asarray(a, dtype)
                          for i, a in enumerate(fam.paired_data)})
            out[self.key(fam)] = entry
        return out


def group_of(node: Expr) -> tuple[int, int, int | None]:
    """The evaluation group of a field: its point set, level and instance set."""
    inst = None if node.instances is None else id(node.instances)
    return id(node.pointset), node.level, inst


class Plan:
    """How ``outputs`` are evaluated.

    Attributes:
        roots: the pointwise nodes each ``(point set, level, instance set)`` group must
            produce.
        global_deps: the global values each point set's fields read, with their levels.
        derivatives: every coordinate-derivative request per operand (by key), so that all
            derivatives of one operand come out of one pass.
    """

    def __init__(self, outputs: Sequence[Expr]):
        self.roots: dict[tuple[int, int], list[Expr]] = defaultdict(list)
        self.global_deps: dict[int, list[tuple[Expr, int]]] = defaultdict(list)
        self.derivatives: dict[Key, set[Request]] = defaultdict(set)
        self._root_keys: set[Key] = set()
        for out in outputs:
            if out.pointset is not None:
                self.add_root(out)
        for node in walk(outputs, hidden=False):
            if isinstance(node, CoordinateDerivative):
                self.derivatives[node.base.key].update(node.requests())
            for child in node.children:
                if node.pointset is None and child.pointset is not None:
                    self.add_root(child)
                if node.pointset is not None and child.pointset is None:
                    self.global_deps[id(node.pointset)].append((child, node.level))

    def add_root(self, node: Expr) -> None:
        """Evaluate ``node`` with its group (nodes asked for later join their group; their
        derivative requests join the plan when first met, see ``PointContext.derivatives``)."""
        if node.key not in self._root_keys:
            self._root_keys.add(node.key)
            self.roots[group_of(node)].append(node)


class Evaluator:
    """Evaluates expressions inside a JAX trace.

    Args:
        registry: names of trainables and keys of point sets.
        params: ``{trainable name: nnx.State of its nnx.Param leaves}``.
        batch: ``{point-set key: (N, C) array}``.
        outputs: the expressions that will be asked for (for planning).
        rng: the step's PRNG key (balancers draw from it).
        step: the step index.
        extras: feature state (``TrainState.extras``: balancer states by key).
        training: inside a training step (balancers compute this step's weights); outside,
            a trained balancer's weights are those its last step used.
    """

    def __init__(self, registry: Registry, params: dict[str, Any], batch: dict[str, jax.Array],
                 outputs: Sequence[Expr], rng: jax.Array | None = None, step=None,
                 extras: dict[str, Any] | None = None, training: bool = True):
        self.registry = registry
        self.training = training
        self.params = params
        self.batch = batch
        self.rng = rng
        self.step = step
        self.extras = extras or {}
        self.plan = Plan(outputs)
        self.cache: dict[Key, jax.Array] = {}
        self.memo: dict[Any, Any] = {}      # side computations shared by several nodes
        self.updates: dict[str, Any] = {}   # new feature state (adaptive weights) of this step
        self._modules: dict[int, nnx.Module] = {}

    @classmethod
    def of_state(cls, registry: Registry, state: Any, batch: dict[str, jax.Array],
                 outputs: Sequence[Expr], params: dict[str, Any] | None = None) -> "Evaluator":
        """An evaluator for the step ``state.step`` of a ``TrainState``: its parameters (or
        ``params``), its balancer states and the step's key ``fold_in(state.rng, step)``."""
        return cls(registry, state.params if params is None else params, batch, outputs,
                   rng=jax.random.fold_in(state.rng, state.step), step=state.step,
                   extras=state.extras)

    def child(self, outputs: Sequence[Expr], params: dict[str, Any] | None = None
              ) -> "Evaluator":
        """A fresh evaluator of the same step (for differentiating with other parameters)."""
        return Evaluator(self.registry, self.params if params is None else params, self.batch,
                         outputs, rng=self.rng, step=self.step, extras=self.extras,
                         training=self.training)

    def module(self, t: Trainable) -> nnx.Module:
        """The trainable's module with this evaluation's parameters."""
        if id(t) not in self._modules:
            graphdef, _, rest = t.split()
            self._modules[id(t)] = nnx.merge(graphdef, self.params[self.registry.name(t)], rest)
        return self._modules[id(t)]

    def value(self, node: Expr) -> jax.Array:
        """The value of ``node``: fields as ``(B, N, *shape)``, per-instance values as
        ``(B, *shape)``, global nodes as themselves."""
        if node.key not in self.cache:
            if node.pointset is None:
                self.cache[node.key] = node.global_eval(self)
            else:
                self.plan.add_root(node)
                self._eval_group(node.pointset, node.level, node.instances)
        return self.cache[node.key]

    def _eval_group(self, ps: PointSet, level: int, instances: Any) -> None:
        for g, parent_level in self.plan.global_deps[id(ps)]:
            if parent_level <= level:
                self.value(g)
        group = (id(ps), level, None if instances is None else id(instances))
        roots = [r for r in self.plan.roots[group] if r.key not in self.cache]
        if not roots:
            return
        known = [n for (pid, lvl, inst), nodes in self.plan.roots.items() if pid == id(ps)
                 and lvl < level and inst in (None, group[2]) for n in nodes
                 if n.key in self.cache]
        points = self.batch[self.registry.key(ps)]
        if instances is None:
            outs = jax.vmap(self._per_point(ps, roots, known, ()))(
                points, [self.cache[n.key][0] for n in known])
            for r, o in zip(roots, outs):
                self.cache[r.key] = o[None]
            return
        reads: dict[Key, Expr] = {}  # the per-instance values the group's fields read
        for node in walk(roots, hidden=False):
            if isinstance(node, PairedData) and all(node.key is not n.key for n in known):
                self.cache.setdefault(node.key, node.whole(self))
                known.append(node)
            if node.pointset is not None:
                reads.update({c.key: c for c in node.children
                              if c.pointset is None and c.instances is instances})
        rows = list(reads.values())
        for g in rows:
            self.value(g)
        per_point = self._per_point(ps, roots, known, rows)

        def per_instance(row_values, known_values):
            return jax.vmap(per_point, in_axes=(0, 0, None))(points, known_values, row_values)

        axes = [0 if n.instances is not None else None for n in known]
        outs = jax.vmap(per_instance, in_axes=(0, axes))(
            [self.cache[g.key] for g in rows],
            [self.cache[n.key] if n.instances is not None else self.cache[n.key][0]
             for n in known])
        for r, o in zip(roots, outs):
            self.cache[r.key] = o

    def _per_point(self, ps: PointSet, roots: list[Expr], known: list[Expr],
                   rows: Sequence[Expr]):
        """The evaluation of ``roots`` at one point, given the values of ``known`` there and
        the instance's rows of the per-instance nodes ``rows``."""
        def per_point(point, known_values, row_values=()):
            memo = {n.key: v for n, v in zip(known, known_values)}
            ctx = PointContext(self, ps, tuple(point[i] for i in range(point.shape[0])), memo,
                               {g.key: v for g, v in zip(rows, row_values)})
            return [ctx.value(r) for r in roots]
        return per_point


class PointContext:
    """The evaluation of pointwise nodes at one point (inside ``vmap``)."""

    def __init__(self, ev: Evaluator, ps: PointSet, columns: tuple, memo: dict[Any, Any],
                 rows: dict[Key, jax.Array] | None = None):
        self.ev = ev
        self.ps = ps
        self.columns = columns
        self.memo = memo
        #: the evaluated instance's values of per-instance nodes, by key
        self.rows = rows or {}

    def column(self, i: int) -> jax.Array:
        """Column ``i`` of this point (a scalar)."""
        return self.columns[i]

    def module(self, t: Trainable) -> nnx.Module:
        return self.ev.module(t)

    def value(self, node: Expr, direct: bool = False) -> jax.Array:
        """The node's value at this point. An operand with coordinate derivatives comes out of
        their shared pass unless ``direct`` (which that pass itself uses)."""
        if node.pointset is None:
            if node.instances is not None:
                return self.rows[node.key]
            return self.ev.value(node)
        if node.key in self.memo:
            return self.memo[node.key]
        if not direct and node.key in self.ev.plan.derivatives:
            return self.derivatives(node, [()])[()]
        value = node.point_eval(self)
        if not direct:
            self.memo[node.key] = value
        return value

    def derivatives(self, base: Expr, requests: Sequence[Request]) -> dict[Request, jax.Array]:
        """The requested derivatives of ``base`` at this point, all operand's requests in one
        pass (planned with the evaluator's plan)."""
        planned = self.ev.plan.derivatives[base.key]
        planned.update(requests)
        slot = ("derivatives", base.key)
        parts = self.memo.get(slot, {})
        missing = [r for r in requests if r not in parts]
        if missing:
            todo = planned if not parts else set(missing)
            parts = {**parts, **DerivativePlan(set(todo)).evaluate(self, base)}
            self.memo[slot] = parts
            self.memo.setdefault(base.key, parts[()])
        return parts

    def with_columns(self, replace: dict[int, jax.Array]) -> "PointContext":
        """A fresh context at the same point with some coordinates replaced (for AD)."""
        cols = tuple(replace.get(i, c) for i, c in enumerate(self.columns))
        return PointContext(self.ev, self.ps, cols, {}, self.rows)
