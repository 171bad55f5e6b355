"""Selecting parameter leaves of a module: NNX filters or boolean pytrees, and masked views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import optax
from flax import nnx

from jno_flax._checks import optax_transform

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax._trainable import Trainable


def key_name(k) -> Any:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return str(k)


def param_paths(state: nnx.State) -> list[tuple[tuple, nnx.Variable]]:
    """``[(path, variable)]`` of a ``Param`` state, in ``jax.tree.leaves`` order."""
    pairs = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    return [(tuple(key_name(k) for k in path), var) for path, var in pairs]


def _show(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def mask_leaves(module: nnx.Module, selector: Any, what: str = "mask") -> list[bool]:
    """One bool per ``nnx.Param`` leaf of ``module`` (``jax.tree.leaves`` order).

    ``selector`` is an NNX filter (``nnx.PathContains(...)``, ``nnx.All(...)``, a Variable
    type, a string, a predicate ``(path, variable) -> bool``) or a boolean pytree shaped like
    ``nnx.state(module, nnx.Param)`` (or its ``to_pure_dict()``).
    """
    paths = param_paths(nnx.state(module, nnx.Param))
    available = [_show(p) for p, _ in paths]
    if isinstance(selector, (nnx.State, dict)):
        mask_pairs = jax.tree_util.tree_flatten_with_path(selector)[0]
        mask = {}
        for path, leaf in mask_pairs:
            names = tuple(key_name(k) for k in path)
            if names and names[-1] == "value" and names[:-1] in {p for p, _ in paths}:
                names = names[:-1]
            if not isinstance(leaf, bool):
                raise TypeError(f"`{what}` leaves must be Python bools; at {_show(names)!r} "
                                f"got {type(leaf).__name__}: {leaf!r}.")
            mask[names] = leaf
        expected = [p for p, _ in paths]
        for p in expected:
            if p not in mask:
                raise ValueError(f"`{what}` does not match the module's parameters: it has no "
                                 f"entry for {_show(p)!r}. Build it from "
                                 "`jax.tree.map(lambda _: False, nnx.state(module, nnx.Param))`.")
        extra = [p for p in mask if p not in set(expected)]
        if extra:
            raise ValueError(f"`{what}` does not match the module's parameters: {_show(extra[0])!r}"
                             f" is not a parameter path; available: {available}.")
        selected = [mask[p] for p in expected]
    else:
        try:
            predicate = nnx.filterlib.to_predicate(selector)
        except (TypeError, ValueError) as err:
            raise TypeError(f"`{what}` must be an NNX filter or a boolean pytree shaped like "
                            f"nnx.state(module, nnx.Param); got {selector!r} ({err}).") from None
        selected = [bool(predicate(p, v)) for p, v in paths]
    if not any(selected):
        raise ValueError(f"`{what}` {selector!r} selects no parameter; available parameter "
                         f"paths: {available}.")
    return selected


class MaskedView:
    """A view of some parameters of a model: ``model.mask(filter)``.

    The model itself is unchanged. ``expr.grad(view)`` is the Jacobian over the selected
    leaves only; ``view.optimizer(tx)`` trains them with their own transform and
    ``view.freeze()`` keeps them fixed (both register a parameter group on the model).
    """

    def __init__(self, trainable: "Trainable", selector: Any):
        self.trainable = trainable
        self.selector = selector
        self.selected = mask_leaves(trainable.module, selector)

    @property
    def num_params(self) -> int:
        leaves = jax.tree.leaves(self.trainable.params())
        return sum(int(leaf.size) for leaf, s in zip(leaves, self.selected) if s)

    def optimizer(self, tx: optax.GradientTransformation) -> "MaskedView":
        self.trainable.add_group(self.selected, optax_transform("tx", tx))
        return self

    def freeze(self) -> "MaskedView":
        self.trainable.add_group(self.selected, None)
        return self

    def __repr__(self) -> str:
        return f"<MaskedView of {self.trainable!r}: {self.num_params} params via {self.selector!r}>"
