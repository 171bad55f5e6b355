"""Adaptive loss weights: balancers whose weights are expressions with state in the TrainState.

A :class:`Balancer` owns a list of scalar loss expressions and returns one
:class:`AdaptiveWeight` expression per loss. It is extended like an optax transform::

    class MyScheme(Balancer):
        scheme = "mine"
        def init(self):                        # state before the first step
            return {"count": jnp.zeros((), jnp.int32)}
        def update(self, state, losses, key):  # losses (m,), key: this step's PRNG key
            return jnp.ones_like(losses), {"count": state["count"] + 1}

Inside the fused training step the weights come from that step's loss values and the
balancer's state; they enter the loss as constants unless the scheme is itself trainable. The
state lives in ``TrainState.extras[<key>]`` (``<key>`` = ``<scheme><k>``, e.g. ``relobralo0``)
together with the weights the step used; only a training step commits it, so evaluating or
tracking a weight never advances it, and ``crux.eval(w)`` after training returns the weight
the last step used.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp

from jno_flax._dtypes import default_float as float_dtype
from jno_flax._expr import Constant, Expr, is_op

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax._evaluate import Evaluator


class Balancer:
    """Base class of the weighting schemes; subclasses define :meth:`init` and :meth:`update`.

    Args:
        losses: the scalar loss expressions to balance (at least two).
    """

    scheme = "balancer"
    #: gradients flow through the weights (only for trainable schemes)
    differentiable = False

    def __init__(self, losses: Sequence[Expr]):
        if not isinstance(losses, (list, tuple)):
            raise TypeError(f"`losses` must be a list of scalar loss expressions, got "
                            f"{type(losses).__name__}.")
        if len(losses) < 2:
            raise ValueError(f"`losses` needs at least two loss terms to balance, got "
                             f"{len(losses)}.")
        for i, loss in enumerate(losses):
            if not isinstance(loss, Expr) or loss.is_field or loss.shape != ():
                shown = loss if not isinstance(loss, Expr) else f"{loss!r}"
                raise ValueError(f"`losses[{i}]` must be a scalar loss expression (e.g. "
                                 f"`pde.mse`), got {shown}.")
        self.losses = tuple(losses)
        self.m = len(losses)
        self.weights = [AdaptiveWeight(self, i) for i in range(self.m)]

    # ------------------------------------------------------------------ to override
    def init(self) -> dict[str, jax.Array]:
        """The scheme's state before the first step (a pytree of arrays)."""
        return {}

    def update(self, state: dict[str, jax.Array], losses: jax.Array, key: jax.Array
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Weights ``(m,)`` for this step from its losses ``(m,)`` and the state; the state
        after the step. ``key`` is this step's PRNG key for the balancer."""
        raise NotImplementedError  # pragma: no cover

    def required_terms(self) -> dict[str, Expr]:
        """Terms the loss must contain for this scheme to work, by the attribute that holds
        them (e.g. ``{"penalty": ...}`` for trainable weights); ``jno.core`` checks them."""
        return {}

    def extra_children(self) -> tuple[Expr, ...]:
        """Further expressions the weights depend on (e.g. trainable log-variances)."""
        return ()

    @property
    def refresh_period(self) -> int | None:
        """Schemes refreshed every ``n`` steps by :meth:`refresh` (before the steps ``0, n,
        2n, ...``, outside the loss): ``n``; ``None`` for schemes updated every step."""
        return None

    def refresh(self, ev: "Evaluator", state: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The scheme's state after a periodic refresh at ``ev``'s step (with its
        parameters and points)."""
        return state

    def refreshed_slot(self, registry: Any, state: Any, batch: dict[str, jax.Array]
                       ) -> dict[str, Any]:
        """This balancer's ``TrainState.extras`` entry after a refresh before the step of
        ``state`` on the points ``batch``: what the trainer's periodic event writes."""
        from jno_flax._evaluate import Evaluator
        slot = state.extras[registry.balancer_key(self)]
        ev = Evaluator.of_state(registry, state, batch, list(self.losses))
        new = self.refresh(ev, slot["state"])
        return {**slot, "state": jax.tree.map(_like, new, slot["state"])}

    def weights_from(self, ev: "Evaluator", state: dict[str, jax.Array], losses: jax.Array,
                     key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The step's weights and new state; schemes that need more than the losses
        (parameter gradients, trainable values) read them from ``ev`` here."""
        return self.update(state, losses, key)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, ev: "Evaluator") -> jax.Array:
        """This step's weights, computed once per evaluator; records the new state.

        Outside training (``ev.training`` false) a balancer that has trained returns the
        weights its last step used."""
        memo = ("balancer", id(self))
        if memo not in ev.memo:
            values = jnp.stack([ev.value(loss) for loss in self.losses])
            if not self.differentiable:
                values = jax.lax.stop_gradient(values)
            name = ev.registry.balancer_key(self)
            slot = ev.extras.get(name) or self.initial_slot()
            base = ev.rng if ev.rng is not None else jax.random.PRNGKey(0)
            key = jax.random.fold_in(base, 1 + ev.registry.balancers.index(self))
            weights, new_state = self.weights_from(ev, slot["state"], values, key)
            # the run's float dtype (its precision), whatever the scheme's arithmetic promoted to
            weights = weights.astype(values.dtype)
            new_state = jax.tree.map(_like, new_state, slot["state"])
            if not self.differentiable:
                weights = jax.lax.stop_gradient(weights)
            if not ev.training:
                weights = jnp.where(slot["steps"] > 0, slot["used"], weights)
            ev.updates[name] = {"state": new_state, "used": jax.lax.stop_gradient(weights),
                                "steps": slot["steps"] + 1}
            ev.memo[memo] = weights
        return ev.memo[memo]

    def initial_slot(self) -> dict[str, Any]:
        """What ``TrainState.extras`` holds for this balancer before training."""
        return {"state": self.init(), "used": jnp.ones((self.m,), float_dtype()),
                "steps": jnp.zeros((), jnp.int32)}

    def __iter__(self):
        return iter(self.weights)

    def __len__(self) -> int:
        return self.m

    def __getitem__(self, i: int) -> "AdaptiveWeight":
        return self.weights[i]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.m} losses>"


def _like(new: Any, old: Any) -> Any:
    """``new`` in the dtype of ``old`` (a balancer's state keeps the dtypes it started the
    step with, so a float32 phase of an x64 run stays float32)."""
    return jnp.asarray(new).astype(old.dtype) if hasattr(old, "dtype") else new


class AdaptiveWeight(Expr):
    """Weight ``index`` of a balancer: a global scalar expression (use ``w * loss``)."""

    def __init__(self, balancer: Balancer, index: int):
        self.balancer = balancer
        self.index = index
        children = balancer.losses + balancer.extra_children()
        super().__init__(children, None, (), float_dtype(), f"{balancer.scheme}[{index}]",
                         (balancer, index))
        self.balancers = (balancer,)

    @property
    def loss(self) -> Expr:
        """The loss this weight is meant to multiply."""
        return self.balancer.losses[self.index]

    def global_eval(self, ev: "Evaluator") -> jax.Array:
        return self.balancer.evaluate(ev)[self.index]


def _factors(node: Expr) -> list[Expr]:
    """Operands of a product chain ``a * b * c`` (through nested products)."""
    if is_op(node, operator.mul, 2):
        return _factors(node.children[0]) + _factors(node.children[1])
    return [node]


def check_weight_usage(constraints: dict[str, Expr]) -> None:
    """A weight must multiply its own loss (or constants), never another loss.

    Losses compare structurally: ``w_pde * pde.mse`` is accepted for any ``pde.mse`` built
    like the one given to the balancer."""
    from jno_flax._evaluate import walk
    for name, expr in constraints.items():
        for node in walk([expr], hidden=False):
            if not is_op(node, operator.mul, 2):
                continue
            factors = _factors(node)
            weights = [f for f in factors if isinstance(f, AdaptiveWeight)]
            others = [f for f in factors if not isinstance(f, (AdaptiveWeight, Constant))]
            for w in weights:
                if others and all(o.key is not w.loss.key for o in others):
                    raise ValueError(
                        f"constraint {name!r}: weight {w.index} of {w.balancer!r} balances "
                        f"{w.loss!r} but multiplies {others[0]!r}, a different expression; a "
                        "weight must be used with the loss it was created for (same balancer, "
                        "same position, the same expression built the same way)."
                    )
