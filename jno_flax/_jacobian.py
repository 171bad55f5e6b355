"""The parameter Jacobian ``expr.grad(model)``: derivatives with respect to weights.

The selected ``nnx.Param`` leaves of the model (all, or those of a masked view) are flattened
to one vector of length ``P`` in ``jax.tree.leaves`` order of ``nnx.state(module, nnx.Param)``
(sorted paths: for ``jno.nn.MLP`` ``layers/0/bias, layers/0/kernel, ..., output_layer/bias,
output_layer/kernel``; kernels row-major).

* A field ``u`` (no reduction below it) gets one reverse-mode Jacobian per point, vmapped
  (and chunked with ``lax.map`` for large point sets): cost ~ ``N * D`` single-point backward
  passes and memory ~ the ``N x D x P`` result. Shape ``(B, N, P)``, or ``(B, N, D, P)`` for a
  ``D > 1`` component field.
* Anything else (a loss such as ``pde.mse``) is differentiated as a whole: ``jax.jacrev``, or
  ``jax.jacfwd`` when ``P`` is smaller than the output. Shape ``value_shape + (P,)``.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import jax
import jax.numpy as jnp

from jno_flax._evaluate import Evaluator, PointContext, walk
from jno_flax._expr import Apply, Constant, Expr, is_mean_square, is_op
from jno_flax._masks import MaskedView
from jno_flax._trainable import Trainable

POINT_CHUNK = 4096  # points per lax.map batch for per-point Jacobians


class ParameterJacobian(Expr):
    """``expr.grad(model)`` or ``expr.grad(model.mask(filter))``."""

    def __init__(self, expr: Expr, target: Trainable | MaskedView):
        view = target if isinstance(target, MaskedView) else None
        trainable = view.trainable if view else target
        used = [t for node in walk([expr]) for t in node.trainables]
        if all(t is not trainable for t in used):
            names = sorted({t.user_name or repr(t) for t in used}) or ["none"]
            raise ValueError(
                f"`grad`: {expr!r} does not depend on {trainable!r}; it depends on the "
                f"trainables {names}."
            )
        if trainable.frozen:
            raise ValueError(f"`grad`: {trainable!r} is frozen; unfreeze it (`.unfreeze()`) "
                             "to take its parameter Jacobian.")
        leaves = jax.tree.leaves(trainable.params())
        self.selected = tuple(view.selected) if view else (True,) * len(leaves)
        self.sizes = [int(leaf.size) for leaf in leaves]
        self.num_params = sum(n for n, s in zip(self.sizes, self.selected) if s)
        self.expr = expr
        self.trainable = trainable
        self.hidden = (expr,)
        self.trainables = (trainable,)
        self.per_point = (expr.pointset is not None and expr.level == 0
                          and expr.instances is None)
        if expr.pointset is not None:
            comp = () if expr.shape == (1,) else expr.shape
            shape = (expr.batch_size, expr.pointset.n) + comp + (self.num_params,)
        else:
            shape = expr.value_shape + (self.num_params,)
        super().__init__((), None, shape, expr.dtype, f"grad[{trainable.user_name or 'model'}]",
                         (trainable, self.selected, expr.key))

    # ------------------------------------------------------------------ flattening
    def _split(self, state) -> tuple[jax.Array, Any]:
        leaves, treedef = jax.tree.flatten(state)
        flat = jnp.concatenate([jnp.ravel(leaf) for leaf, s in zip(leaves, self.selected) if s])
        return flat, (leaves, treedef)

    def _merge(self, flat: jax.Array, aux) -> Any:
        leaves, treedef = aux
        out, offset = [], 0
        for leaf, sel in zip(leaves, self.selected):
            if sel:
                out.append(flat[offset:offset + leaf.size].reshape(leaf.shape))
                offset += leaf.size
            else:
                out.append(leaf)
        return jax.tree.unflatten(treedef, out)

    # ------------------------------------------------------------------ evaluation
    def global_eval(self, ev: Evaluator) -> jax.Array:
        name = ev.registry.name(self.trainable)
        flat, aux = self._split(ev.params[name])

        def evaluator(flat_params):
            return ev.child([self.expr], params={**ev.params, name: self._merge(flat_params, aux)})

        if self.per_point:
            ps = self.expr.pointset
            points = ev.batch[ev.registry.key(ps)]

            def at_point(flat_params, row):
                ctx = PointContext(evaluator(flat_params), ps,
                                   tuple(row[i] for i in range(row.shape[0])), {})
                return ctx.value(self.expr)

            jac_at = lambda row: jax.jacrev(at_point)(flat, row)  # noqa: E731
            if points.shape[0] > POINT_CHUNK:
                jac = jax.lax.map(jac_at, points, batch_size=POINT_CHUNK)
            else:
                jac = jax.vmap(jac_at)(points)
            return jac.reshape(self.shape)

        def whole(flat_params):
            return evaluator(flat_params).value(self.expr)
        out_size = max(1, math.prod(self.expr.value_shape))
        jac_fn = jax.jacfwd if self.num_params < out_size else jax.jacrev
        jac = jac_fn(whole)(flat)
        if self.expr.instances is not None:  # B: the instances evaluated
            return jac.reshape((jac.shape[0],) + self.shape[1:])
        return jac.reshape(self.shape)


def residual_field(loss: Expr, what: str = "loss", hint: str = "") -> Expr:
    """The residual ``r`` of a mean-square loss (for NTK computations).

    Accepted: ``r.mse``, ``jno.np.mean(r ** 2)`` and ``jno.np.mean(jno.np.square(r))`` for a
    field ``r``; anything else (``r.max``, ``jno.np.sum(r)``, ``jno.np.mean(jno.np.abs(r))``)
    has no residual whose NTK the loss follows, and is an error.
    """
    inner = loss.children[0] if isinstance(loss, Apply) and len(loss.children) == 1 else None
    found = None
    if is_mean_square(loss):
        found = inner
    elif inner is not None and loss.op == (jnp.mean, None, False):
        if is_op(inner, jnp.square, 1):
            found = inner.children[0]
        elif (is_op(inner, operator.pow, 2) and isinstance(inner.children[1], Constant)
              and inner.children[1].shape == () and float(inner.children[1].value) == 2.0):
            found = inner.children[0]
    if found is not None and found.is_field:
        return found
    raise ValueError(
        f"{what} {loss!r} is not the mean square of a residual field; NTK computations need "
        "the residual `r` of a loss written as `r.mse`, `jno.np.mean(r ** 2)` or "
        f"`jno.np.mean(jno.np.square(r))` (r a field on a point set).{hint}"
    )


