"""Learning rates of every optimizer, recorded in-graph at log steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from jno_flax._checks import positive_int
from jno_flax.callbacks._callback import Callback, InGraph

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


def learning_rate_of(opt_state: Any) -> jax.Array | None:
    """The learning rate stored by ``optax.inject_hyperparams`` in ``opt_state``, if any."""
    found = [leaf for leaf in jax.tree.leaves(
        opt_state, is_leaf=lambda x: hasattr(x, "hyperparams"))
        if hasattr(leaf, "hyperparams") and "learning_rate" in leaf.hyperparams]
    return found[0].hyperparams["learning_rate"] if found else None


class LearningRateMonitor(Callback):
    """Records ``lr/<trainable>`` every ``logging_interval`` steps (default: the trainer's
    ``log_every_n_steps``): the learning rate each step actually used, schedules included.

    The rate is read from the optimizer state, so build optimizers with
    ``optax.inject_hyperparams``, e.g.
    ``net.optimizer(optax.inject_hyperparams(optax.adam)(learning_rate=schedule))``;
    optimizers without it are reported in an error that names them. After a
    ``SwitchOptimizer`` to a transform without a learning rate (``optax.lbfgs()``), the
    recorded rate is NaN.
    """

    def __init__(self, logging_interval: int | None = None):
        self.logging_interval = positive_int("logging_interval", logging_interval, steps=True,
                                             allow_none=True)

    def in_graph(self, trainer: "Trainer", problem: "Problem") -> list[InGraph]:
        interval = self.logging_interval or trainer.log_every_n_steps
        missing = [name for name, tx in trainer.txs.items()
                   if learning_rate_of(jax.eval_shape(tx.init, trainer.state.params[name]))
                   is None]
        if missing:
            raise ValueError(
                f"LearningRateMonitor cannot read the learning rate of {missing}: build their "
                "optimizers with `optax.inject_hyperparams(optax.adam)(learning_rate=...)`."
            )
        return [InGraph(f"lr/{name}", fn=lambda s, n=name: _rate(s.opt_state[n]),
                        interval=interval, after_step=True)
                for name in trainer.txs]


def _rate(opt_state: Any) -> jax.Array:
    """The injected learning rate, or NaN for a transform without one (a later phase's
    ``optax.lbfgs()``, whose step length comes from its line search)."""
    lr = learning_rate_of(opt_state)
    return jnp.asarray(jnp.nan if lr is None else lr, jnp.float32)
