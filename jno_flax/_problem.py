"""The problem: constraints and trackers collected from expressions (``jno.core``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jno_flax._dtypes import default_float, x64_enabled
from jno_flax._checks import fmt_shape
from jno_flax._evaluate import Evaluator, Registry, walk
from jno_flax._expr import Expr, as_expr
from jno_flax._function_nodes import FunctionAt, PairedData, PairedValues
from jno_flax.functions import FunctionSet
from jno_flax._pointset import PointSet, Variable
from jno_flax._tracker import Tracker
from jno_flax._trainable import Model, Parameter, Trainable

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import History, TrainState


def _term_name(expr: Expr) -> str | None:
    """The name of the term a weighted constraint balances: ``w * pde`` (``w`` an adaptive
    weight or a constant) is named like ``pde`` — or like the loss ``w`` was created for —
    when that has a name."""
    from jno_flax._balancer import AdaptiveWeight, _factors
    from jno_flax._expr import Constant
    factors = _factors(expr)
    if len(factors) < 2:
        return None
    terms = [f for f in factors if not isinstance(f, (AdaptiveWeight, Constant))]
    weights = [f for f in factors if isinstance(f, AdaptiveWeight)]
    names = {t.given_name for t in terms} | {w.loss.given_name for w in weights}
    names.discard(None)
    return names.pop() if len(terms) <= 1 and len(names) == 1 else None


class Problem:
    """Constraints (scalar loss terms) and trackers, with the models they train.

    Build it with :func:`core`. ``solve(steps)`` trains (continuing from where the last
    ``solve``/``fit`` stopped); ``eval`` evaluates any expression with the current weights.

    Attributes:
        constraints: ``{name: scalar expression}``; the total loss is their sum.
        trackers: ``{name: Tracker}``.
        registry: names of the trainables and point sets used.
        state: the latest ``TrainState`` (``None`` before training).
        history: the ``History`` of all training so far (``None`` before training).
    """

    def __init__(self, items: Sequence[Expr | Tracker]):
        if isinstance(items, (Expr, Tracker)):
            items = [items]
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"`constraints` must be a list of scalar expressions and trackers, "
                            f"got {type(items).__name__}.")
        if not items:
            raise ValueError("`constraints` is empty: pass at least one scalar loss term, "
                             "e.g. `jno.core([pde.mse, bc.mse])`.")
        self.constraints: dict[str, Expr] = {}
        self.trackers: dict[str, Tracker] = {}
        for i, item in enumerate(items):
            if isinstance(item, Tracker):
                self._add(self.trackers, item.given_name or f"tracker_{len(self.trackers)}",
                          item)
            elif isinstance(item, Expr):
                if item.pointset is not None or item.shape != ():
                    raise ValueError(
                        f"`constraints[{i}]` must be a scalar loss term, got {item!r} of shape "
                        f"{fmt_shape(item.value_shape)}. Reduce it, e.g. `residual.mse`."
                    )
                self._add(self.constraints, item.given_name or _term_name(item)
                          or f"loss_{len(self.constraints)}", item)
            else:
                raise TypeError(f"`constraints[{i}]` must be an expression or a tracker, got "
                                f"{type(item).__name__}: {item!r}.")
        if not self.constraints:
            raise ValueError("`constraints` holds only trackers; at least one loss term is "
                             "needed to train.")
        self.registry = Registry(self.outputs)
        self._check_balancers()
        #: ``jax_enable_x64`` when the problem was built (its dtypes follow it)
        self.x64 = x64_enabled()
        self.state: "TrainState | None" = None
        self.history: "History | None" = None
        self._eval_cache: dict[Any, Any] = {}
        self._solver: tuple[dict, Any] | None = None

    def _check_balancers(self) -> None:
        from jno_flax._balancer import check_weight_usage
        check_weight_usage(self.constraints)
        in_loss = {n.key for n in walk(list(self.constraints.values()))}
        for b in self.registry.balancers:
            for attr, term in b.required_terms().items():
                if term.key not in in_loss:
                    raise ValueError(
                        f"{b!r} needs its `{attr}` in the loss: add its `{attr}` to the "
                        f"constraints, e.g. `jno.core([w[0] * l0, w[1] * l1, w.{attr}])`; "
                        "without it the weights collapse to zero.")

    def check_precision(self) -> None:
        """Raise if ``jax_enable_x64`` changed since the problem was built: its points,
        parameters and traced dtypes would then disagree inside the compiled step."""
        now = x64_enabled()
        if now != self.x64:
            raise ValueError(f"`jax_enable_x64` is {now} but was {self.x64} when this problem "
                             "was built; its points and parameters have the dtypes of that "
                             "setting. Set `jax.config.update(\"jax_enable_x64\", ...)` once, "
                             "before building domains, networks and `jno.core`.")

    def _add(self, table: dict, name: str, item) -> None:
        if name == "loss":
            raise ValueError("the name 'loss' is reserved for the total loss (what "
                             "`monitor=\"loss\"` and the logs call it); give this constraint "
                             "or tracker another name with `.name(...)`.")
        if name in self.constraints or name in self.trackers:
            raise ValueError(f"the name {name!r} is used twice among constraints and trackers; "
                             "names must be unique (use `.name(...)`).")
        table[name] = item

    # ------------------------------------------------------------------ description
    @property
    def outputs(self) -> list[Expr]:
        return list(self.constraints.values()) + [t.expr for t in self.trackers.values()]

    @property
    def trainables(self) -> list[Trainable]:
        return list(self.registry.trainables)

    @property
    def models(self) -> dict[str, Model]:
        return {self.registry.name(t): t for t in self.registry.trainables
                if isinstance(t, Model)}

    @property
    def parameters(self) -> dict[str, Parameter]:
        return {self.registry.name(t): t for t in self.registry.trainables
                if isinstance(t, Parameter)}

    @property
    def global_step(self) -> int:
        """Steps trained so far."""
        return 0 if self.state is None else int(self.state.step)

    def __repr__(self) -> str:
        return (f"<Problem constraints={list(self.constraints)} trackers={list(self.trackers)} "
                f"trainables={[self.registry.name(t) for t in self.trainables]}>")

    # ------------------------------------------------------------------ training
    def solve(self, steps: int, **trainer_kwargs) -> "History":
        """Train ``steps`` more steps, continuing the run: the step count, optimizer states,
        RNG, adaptive weights and History go on (unlike a new ``Trainer(...).fit``, which
        starts a new run from the live weights). ``trainer_kwargs`` go to the ``Trainer``."""
        from jno_flax.trainers import Trainer
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps <= 0:
            raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
        target = self.global_step + int(steps)
        last = self._solver
        if last is not None and last[0] == trainer_kwargs:
            trainer = last[1]  # same settings: reuse it and its compiled chunks
            trainer.max_steps = target
        else:
            trainer = Trainer(max_steps=target, **trainer_kwargs)
            self._solver = (dict(trainer_kwargs), trainer)
        return trainer.continue_fit(self)

    # ------------------------------------------------------------------ weights
    def save_weights(self, path: str) -> str:
        """Save every trainable's parameters (orbax) to the new directory ``path``."""
        from jno_flax._model_params import save_weights
        return save_weights(self, path)

    def load_weights(self, path: str) -> None:
        """Load parameters for evaluation from ``save_weights`` output or a checkpoint."""
        from jno_flax._model_params import load_weights
        load_weights(self, path)

    # ------------------------------------------------------------------ evaluation
    def eval(self, exprs, inputs: dict[Variable, Any] | None = None):
        """Evaluate expressions with the current weights, on the current points (those a
        ``ResamplePoints`` callback drew last, for a resampled point set).

        Args:
            exprs: an expression (or tracker, or trainable parameter) or a list of them.
            inputs: optional ``{variable: array}`` giving other points for the variables of a
                point set (every coordinate of that set), each ``(N, 1)`` or ``(1, N, 1)``;
                ``{f: values}`` gives a family of input functions other functions (e.g. a
                test set), ``(n, n_sensors)``.

        Returns:
            One array (fields ``(B, N, D)``) or a list of arrays, like ``exprs``.
        """
        single = not isinstance(exprs, (list, tuple))
        items = [exprs] if single else list(exprs)
        nodes = [it.expr if isinstance(it, Tracker) else as_expr(it, "exprs") for it in items]
        registry = Registry(self.outputs + nodes)
        batch = registry.batch()
        if self.state is not None:  # resampled point sets: the points training reached
            batch.update({registry.key(ps): self.state.extras[self.registry.key(ps)]
                          for ps in self.registry.pointsets
                          if self.registry.key(ps) in self.state.extras})
        batch.update(self._input_batch(registry, nodes, inputs or {}))
        key = tuple(n.key for n in nodes) + tuple(sorted(batch))
        fn = self._eval_cache.get(key)
        if fn is None:
            def fn(params, batch, extras):
                ev = Evaluator(registry, params, batch, nodes, extras=extras, training=False)
                return [ev.value(n) for n in nodes]
            fn = jax.jit(fn)
            self._eval_cache[key] = fn
        extras = registry.initial_extras()
        if self.state is not None:
            extras.update(self.state.extras)
        values = fn(registry.params(), batch, extras)
        return values[0] if single else values

    def _input_batch(self, registry: Registry, nodes: list[Expr], inputs: dict) -> dict:
        if not isinstance(inputs, dict):
            raise TypeError(f"`inputs` must be a dict {{variable: array}}, got "
                            f"{type(inputs).__name__}.")
        by_set: dict[int, tuple[PointSet, dict[int, np.ndarray]]] = {}
        out = {}
        for var, arr in inputs.items():
            if isinstance(var, FunctionSet):
                out[registry.key(var)] = _function_inputs(var, arr, nodes)
                continue
            if not isinstance(var, Variable):
                raise TypeError(f"`inputs` keys must be variables from `domain.variable(...)` "
                                f"or families of input functions, got {var!r}.")
            a = np.asarray(arr)
            if a.ndim == 3 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 2 or a.shape[1] != 1:
                raise ValueError(f"`inputs[{var.symbol}]` must have shape (N, 1) or (1, N, 1), "
                                 f"got {a.shape}.")
            by_set.setdefault(id(var.pointset), (var.pointset, {}))[1][var.column] = a[:, 0]
        used_columns: dict[int, set[int]] = {}
        for node in walk(nodes):
            if isinstance(node, Variable):
                used_columns.setdefault(id(node.pointset), set()).add(node.column)
        dtype = default_float()
        for pid, (ps, cols) in by_set.items():
            sizes = {c: len(v) for c, v in cols.items()}
            if len(set(sizes.values())) > 1:
                shown = {ps.variables()[c].symbol if c < ps.n_coords else c: n
                         for c, n in sizes.items()}
                raise ValueError(f"`inputs` for {ps.describe()} disagree in their number of "
                                 f"points: {shown}; give every variable the same N.")
            needed = set(range(ps.n_coords)) | used_columns.get(pid, set())
            missing = sorted(needed - set(cols))
            if missing:
                names = [ps.variables()[c].symbol if c < ps.n_coords else f"column {c}"
                         for c in missing]
                raise ValueError(f"`inputs` for {ps.describe()} miss {names}; give every "
                                 "coordinate of that point set (and any normals used).")
            for node in walk(nodes):
                if isinstance(node, FunctionAt) and node.pointset is ps:
                    node.check_within({c: (float(np.min(v)), float(np.max(v)))
                                       for c, v in cols.items()}, "the `inputs` points")
            n = next(iter(sizes.values()))
            full = np.zeros((n, ps.array.shape[1]))
            for c, v in cols.items():
                full[:, c] = v
            out[registry.key(ps)] = jnp.asarray(full, dtype)
        return out


def _function_inputs(fam: FunctionSet, values: Any, nodes: list[Expr]) -> dict:
    """The batch entry of ``fam`` for other functions (``crux.eval(u, inputs={f: F})``)."""
    arr = np.asarray(values)
    if arr.ndim != fam.values.ndim or arr.shape[1:] != fam.values.shape[1:] or not len(arr):
        raise ValueError(f"`inputs[{fam!r}]` must have shape (n_functions, "
                         f"{', '.join(map(str, fam.values.shape[1:]))}) like the family's "
                         f"values, got {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"`inputs[{fam!r}]` must be finite numbers (as the family's own "
                         "values); it contains NaN or inf.")
    paired = [n for n in walk(nodes) if isinstance(n, (PairedData, PairedValues))
              and n.instances is fam]
    if paired:
        raise ValueError(f"`inputs` gives {fam.describe()} new functions, but the expressions "
                         "use its paired data, which belongs to its own functions; evaluate "
                         "expressions without `paired` data, or compare with your own.")
    return {"values": jnp.asarray(arr, default_float())}


def core(constraints: Sequence[Expr | Tracker]) -> Problem:
    """Collect scalar loss terms and trackers into a :class:`Problem`.

    >>> crux = jno.core([pde.mse, bc.mse, tracker(err, interval=100)])
    """
    return Problem(constraints)
