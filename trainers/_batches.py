"""Mini-batches: each step trains on a random subset of the collocation points and functions.

``Trainer(batch_size=...)`` sets the subset size for every point set (an int) or for the point
sets of some variables and the instances of families of input functions
(``{x: 1024, f: 64}``). The subset of step ``s`` is drawn inside the compiled step, without
replacement, from the key of step ``s`` (``fold_in(rng, s)``, one stream per point set or
family), so the mean of a loss over the subset is an unbiased estimate of the mean over all
points and a resumed run draws the same subsets.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import jax

from jno_flax._expr import Expr
from jno_flax.functions import FunctionSet
from jno_flax._sampling import point_data_users, step_key

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import TrainState

ACCEPTED = ("None, a positive int, or {variable or function family: positive int} "
            "(e.g. {x: 1024, f: 64})")


def _size(arg: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{arg}` must be a positive integer (points or functions per step), "
                         f"got {value!r}.")
    return int(value)


def _label(var: Any) -> str:
    return getattr(var, "symbol", None) or repr(var)


def _is_family(key: Any) -> bool:
    return isinstance(key, FunctionSet)


def check_batch_size(batch_size: Any) -> int | dict | None:
    """Validate ``Trainer(batch_size=...)`` on its own (point counts are checked at fit)."""
    if batch_size is None:
        return None
    if isinstance(batch_size, dict):
        for var, size in batch_size.items():
            if not _is_family(var) and (not isinstance(var, Expr) or var.pointset is None):
                raise TypeError(f"`batch_size` keys must be variables of a point set (e.g. "
                                f"`x` from `dom.variable('interior')`), got {var!r}; "
                                f"accepted: {ACCEPTED}.")
            _size(f"batch_size[{_label(var)}]", size)
        return dict(batch_size)
    if isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool):
        return _size("batch_size", batch_size)
    raise TypeError(f"`batch_size` must be {ACCEPTED}; got {type(batch_size).__name__}: "
                    f"{batch_size!r}.")


def resolve_batch_sizes(batch_size: int | dict | None, problem: "Problem") -> dict[str, int]:
    """``{point-set key: size}`` for the point sets of ``problem`` that get mini-batches."""
    if batch_size is None:
        return {}
    registry = problem.registry
    if isinstance(batch_size, int):
        chosen = [ps for ps in registry.pointsets if ps.n > batch_size]
        sizes = {registry.key(ps): batch_size for ps in chosen}
    else:
        sizes, chosen = {}, []
        for var, size in batch_size.items():
            if _is_family(var):
                sizes[_family_size(registry, var, size)] = int(size)
                continue
            ps = var.pointset
            if all(ps is not p for p in registry.pointsets):
                raise ValueError(f"`batch_size` names {_label(var)} on {ps.describe()}, which this "
                                 "problem does not use.")
            if size > ps.n:
                raise ValueError(f"`batch_size[{_label(var)}]` is {size}, more than the {ps.n} "
                                 f"points of {ps.describe()}; a mini-batch is a subset.")
            if registry.key(ps) in sizes and sizes[registry.key(ps)] != size:
                raise ValueError(f"`batch_size` gives {ps.describe()} two sizes "
                                 f"({sizes[registry.key(ps)]} and {size}); give one.")
            sizes[registry.key(ps)] = int(size)
            chosen.append(ps)
    for ps in chosen:
        users = point_data_users(problem.outputs, ps)
        if users:
            raise ValueError(f"`batch_size`: the problem matches fields on {ps.describe()} with "
                             f"per-point data arrays ({users}); their rows belong to all points "
                             "and cannot follow a mini-batch.")
    return sizes


def _family_size(registry, fam, size: int) -> str:
    """The batch key of a family given a mini-batch ``size`` (checked)."""
    if all(fam is not f for f in registry.families):
        raise ValueError(f"`batch_size` names {fam.describe()}, which this problem does not use.")
    if fam.sampler is not None:
        raise ValueError(f"`batch_size` names {fam.describe()}, which draws {fam.n} new "
                         "functions at every step (`resample=True`); set `n_functions` to "
                         "the number per step instead.")
    if size > fam.n:
        raise ValueError(f"`batch_size[{fam!r}]` is {size}, more than the {fam.n} functions of "
                         "the family; a mini-batch of instances is a subset.")
    return registry.key(fam)


def draw_minibatch(sizes: dict[str, int], state: "TrainState",
                   batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``batch`` with the point sets of ``sizes`` replaced by step ``state.step``'s subsets."""
    if not sizes:
        return batch
    out = dict(batch)
    for key, size in sizes.items():
        n = jax.tree.leaves(batch[key])[0].shape[0]
        if size < n:
            pick = jax.random.choice(step_key(state, f"minibatch/{key}"), n, (size,),
                                     replace=False)
            out[key] = jax.tree.map(lambda a: a[pick], batch[key])
    return out
