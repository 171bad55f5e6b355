"""Optimizer phases: the optax transform of every trained trainable as a function of the step.

The transforms of :meth:`Trainer.configure_optimizers` hold from step 0; every callback's
:meth:`~jno_flax.callbacks.Callback.optimizer_phases` replaces some of them from a step on
(``SwitchOptimizer``). Nothing here changes while a run goes on: a compiled chunk is built for
the transforms of its first step (chunks start at every phase start), a transform that changed
at a step starts from a fresh state there, and a checkpoint of step ``s`` holds the optimizer
states of the transforms of step ``s - 1``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from jno_flax._checks import optax_transform, positive_int

Transforms = dict[str, optax.GradientTransformation]


def owned(tree: Any) -> Any:
    """Copies of ``tree``'s leaves with strong dtypes: distinct buffers (the state is donated
    to the compiled chunks, and some transforms share arrays between leaves) and no weak
    types (optax's line-search info starts weakly typed and would leave the first chunk
    strongly typed, so the next chunk would compile again)."""
    def own(x):
        x = jnp.asarray(x)
        return jnp.array(x, dtype=x.dtype, copy=True)
    return jax.tree.map(own, tree)


class OptimizerPhases:
    """The transforms of a fit, step by step.

    Args:
        base: ``{trained trainable name: transform}`` from step 0.
        phases: ``(owner, [(at_step, {name: transform}), ...])`` per declaring callback.
    """

    def __init__(self, base: Transforms,
                 phases: Sequence[tuple[str, Sequence[tuple[int, Transforms]]]] = ()):
        self.base = {n: optax_transform(f"configure_optimizers()[{n!r}]", tx)
                     for n, tx in base.items()}
        trained = list(self.base)
        checked: list[tuple[int, Transforms]] = []
        #: ``(owner, at_step, name, transform)`` of every declared phase transform
        self.declared: list[tuple[str, int, str, optax.GradientTransformation]] = []
        for owner, declared in phases:
            for at, txs in declared:
                at = positive_int(f"{owner}.optimizer_phases() step", at, steps=True)
                unknown = sorted(set(txs) - set(trained))
                if unknown:
                    raise ValueError(f"{owner}.optimizer_phases() names {unknown}, which are "
                                     f"not trained trainables; trained: {trained}.")
                txs = {n: optax_transform(f"{owner} transform of {n!r}", tx)
                       for n, tx in txs.items()}
                checked.append((at, txs))
                self.declared += [(owner, at, n, tx) for n, tx in txs.items()]
        #: ``[(at_step, {name: transform})]`` in step order (stable for equal steps)
        self.phases = sorted(checked, key=lambda p: p[0])

    def check(self, params: dict[str, Any]) -> None:
        """Initialise every transform of every phase abstractly (``jax.eval_shape``, no
        memory), so that one that cannot start on its trainable (a dense quasi-Newton method
        over ``max_params``) fails when ``fit`` starts, not after the steps before its
        phase."""
        for owner, at, name, tx in self.declared:
            try:
                jax.eval_shape(tx.init, params[name])
            except (ValueError, TypeError) as err:
                raise type(err)(f"{owner}: the transform of {name!r} from step {at} cannot "
                                f"start on its parameters (checked before training): "
                                f"{err}") from err

    @property
    def starts(self) -> list[int]:
        """The steps at which some transform changes."""
        return sorted({at for at, _ in self.phases})

    def at(self, step: int) -> Transforms:
        """The transform of every trained trainable at ``step``."""
        txs = dict(self.base)
        for at, changed in self.phases:
            if step >= at:
                txs.update(changed)
        return txs

    def next_boundary(self, step: int) -> int | None:
        """The first phase start after ``step``, or ``None``."""
        return min((s for s in self.starts if s > step), default=None)

    def initial(self, params: dict[str, Any], step: int, previous: dict[str, Any] | None
                ) -> dict[str, Any]:
        """The optimizer states to start a fit at ``step`` with: those of ``previous`` whose
        structure still fits the transforms of ``step``, fresh ones for the others."""
        opt_state = {}
        for name, tx in self.at(step).items():
            old = None if previous is None else previous.get(name)
            fresh = jax.eval_shape(tx.init, params[name])
            if old is not None and jax.tree.structure(old) == jax.tree.structure(fresh):
                opt_state[name] = old
            else:
                opt_state[name] = owned(tx.init(params[name]))
        return opt_state

    def enter(self, params: dict[str, Any], opt_state: dict[str, Any], step: int
              ) -> dict[str, Any]:
        """The optimizer states a chunk starting at ``step`` begins with: a transform that
        changed at ``step`` starts from a fresh state at the current weights."""
        if step == 0 or step not in self.starts:
            return opt_state          # the same object: nothing changed
        now, before = self.at(step), self.at(step - 1)
        return {n: (owned(tx.init(params[n])) if tx is not before[n] else opt_state[n])
                for n, tx in now.items()}

    def target(self, params: dict[str, Any], opt_state: dict[str, Any], start: int, step: int
               ) -> dict[str, Any]:
        """The structure of the optimizer states in a checkpoint of step ``step`` (those of
        the transforms of ``step - 1``), given ``opt_state``, the states for the transforms of
        ``start``."""
        then, now = self.at(max(step - 1, 0)), self.at(start)
        return {n: (opt_state[n] if tx is now[n]
                    else jax.eval_shape(lambda p, tx=tx: owned(tx.init(p)), params[n]))
                for n, tx in then.items()}
