"""Training diagnostics from the parameter Jacobian: NTK spectrum and gradient conflict.

Both are in-graph quantities (computed inside the fused step at their interval from the
parameters that step used), recorded in ``History.trackers`` and logged by
``TensorBoardLogger``.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any, Sequence

import jax.numpy as jnp
import numpy as np

import jno_flax.numpy as jnn
from jno_flax._checks import positive_int
from jno_flax._expr import Expr
from jno_flax._jacobian import residual_field
from jno_flax._trainable import Model
from jno_flax.callbacks._callback import Callback, InGraph

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


def _target(problem: "Problem", model: Model | None, filter: Any, who: str):
    """The model (or its masked view) whose parameters the diagnostic differentiates."""
    if model is None:
        models = problem.models
        if len(models) != 1:
            raise ValueError(f"{who}: the problem has models {list(models)}; pass `model=` to "
                             "choose one.")
        model = next(iter(models.values()))
    return model if filter is None else model.mask(filter)


class NTKDiagnostics(Callback):
    """Neural-tangent-kernel spectrum of constraint residuals every ``interval`` steps.

    For each residual field ``r`` (``N`` points) with parameter Jacobian ``J`` (``N x P``),
    ``K = J Jᵀ``; for ``B`` instances of a family of input functions, ``J`` stacks the rows of
    all instances (``B·N x P``), so the kernel couples instances too. Recorded quantities, per
    name and for all residuals combined (``combined``):

    * ``ntk/<name>/trace``: ``tr K = ||J||_F²``;
    * ``ntk/<name>/eigs``: the ``top_k`` largest eigenvalues, descending;
    * ``ntk/<name>/effective_rank``: ``(Σλ)² / Σλ²`` (participation ratio; 1 = one direction);
    * ``ntk/<name>/condition``: ``λ_1 / λ_k`` with ``k = top_k``. The raw ``λ_max / λ_min`` of
      a rank-deficient float32 kernel is round-off noise, so it is not reported.

    Args:
        interval: period in steps.
        fields: ``{name: field}``; default: the residual field under each constraint.
        model: the model (default: the problem's only model).
        filter: restrict to some parameters (any ``model.mask`` selector).
        top_k: number of eigenvalues kept (and the ``k`` of the condition estimate).
        max_points: use at most this many points of each residual (evenly spaced), bounding
            the ``O(N² P + N³)`` cost.
        combined: also the NTK of all residuals stacked.
        name: optional namespace: quantities become ``<name>/ntk/...`` (for several instances).
    """

    def __init__(self, interval: int = 100, fields: dict[str, Expr] | None = None,
                 model: Model | None = None, filter: Any = None, top_k: int = 5,
                 max_points: int | None = None, combined: bool = True,
                 name: str | None = None):
        self.interval = positive_int("interval", interval, steps=True)
        self.fields = fields
        self.model, self.filter = model, filter
        self.top_k = positive_int("top_k", top_k)
        self.max_points = positive_int("max_points", max_points, allow_none=True)
        self.combined = combined
        self.prefix = f"{name}/" if name else ""

    @property
    def state_key(self) -> str:
        return f"NTKDiagnostics[{self.prefix}{self.interval}]"

    def _jacobian(self, field: Expr, target) -> Expr:
        J = field.grad(target)                         # (B, N, P) or (B, N, D, P)
        J = jnn.reshape(J, (-1, J.shape[-1]))          # all instances' rows together
        if self.max_points is None:
            return J

        def subset(j, m=self.max_points):  # by the traced row count (B may be a mini-batch)
            if j.shape[0] <= m:
                return j
            return j[np.linspace(0, j.shape[0] - 1, m).round().astype(int)]
        return jnn.function(subset, [J], pointwise=False)

    def in_graph(self, trainer: "Trainer", problem: "Problem") -> list[InGraph]:
        target = _target(problem, self.model, self.filter, "NTKDiagnostics")
        hint = " Pass `fields={name: field}` to NTKDiagnostics instead."
        fields = self.fields or {n: residual_field(e, f"constraint {n!r}", hint)
                                 for n, e in problem.constraints.items()}
        jacobians = {name: self._jacobian(f, target) for name, f in fields.items()}
        if self.combined and len(jacobians) > 1:
            jacobians["all"] = jnn.concat(list(jacobians.values()), axis=0)
        out = []
        for name, J in jacobians.items():
            k = min(self.top_k, J.shape[0])
            eig = jnn.eigvalsh(J @ J.T)                  # ascending
            top = jnn.function(lambda e, k=k: jnp.flip(e[-k:]), [eig], pointwise=False)
            effective = jnn.sum(eig) ** 2 / (jnn.sum(eig * eig) + 1e-30)
            condition = top[0] / jnn.maximum(top[k - 1], 1e-30)
            for suffix, expr in (("trace", jnn.sum(J * J)), ("eigs", top),
                                 ("effective_rank", effective), ("condition", condition)):
                out.append(InGraph(f"{self.prefix}ntk/{name}/{suffix}", expr, self.interval))
        return out


class GradientConflict(Callback):
    """Cosine similarity between the parameter gradients of constraints, and their norms.

    Records ``grad_norm/<name>`` for each constraint and ``cos/<a>|<b>`` for each pair
    (``+1``: the terms push the weights the same way; ``-1``: they conflict), every
    ``interval`` steps.

    Args:
        interval: period in steps.
        constraints: names to compare (default: all constraints).
        model: the model (default: the problem's only model).
        filter: restrict to some parameters (any ``model.mask`` selector).
        name: optional namespace: quantities become ``<name>/cos/...`` (for several instances).
    """

    def __init__(self, interval: int = 100, constraints: Sequence[str] | None = None,
                 model: Model | None = None, filter: Any = None, name: str | None = None):
        self.interval = positive_int("interval", interval, steps=True)
        self.constraints = None if constraints is None else list(constraints)
        self.model, self.filter = model, filter
        self.prefix = f"{name}/" if name else ""

    @property
    def state_key(self) -> str:
        return f"GradientConflict[{self.prefix}{self.interval}]"

    def in_graph(self, trainer: "Trainer", problem: "Problem") -> list[InGraph]:
        target = _target(problem, self.model, self.filter, "GradientConflict")
        names = self.constraints or list(problem.constraints)
        unknown = [n for n in names if n not in problem.constraints]
        if unknown or len(names) < 2:
            raise ValueError(f"GradientConflict `constraints` must name at least two of "
                             f"{list(problem.constraints)}; got {names}.")
        grads = {n: problem.constraints[n].grad(target) for n in names}
        norms = {n: jnn.norm(g) for n, g in grads.items()}
        out = [InGraph(f"{self.prefix}grad_norm/{n}", norms[n], self.interval) for n in names]
        for a, b in combinations(names, 2):
            cos = jnn.dot(grads[a], grads[b]) / (norms[a] * norms[b] + 1e-30)
            out.append(InGraph(f"{self.prefix}cos/{a}|{b}", cos, self.interval))
        return out
