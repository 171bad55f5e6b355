"""Adaptive loss weights: balancers whose weights are expressions with state in the TrainState.

A :class:`Balancer` owns a list of scalar loss expressions and returns one
:class:`AdaptiveWeight` expression per loss. Inside the fused training step the weights are
computed from that step's loss values (and the balancer's state, kept in
``TrainState.extras["adaptive/<k>"]``); they enter the loss as constants unless the scheme is
itself trainable. Only a training step commits the new state: evaluating or tracking a weight
never advances it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp

from jno_flax._expr import Constant, Expr

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax._evaluate import Evaluator


class Balancer:
    """Base class of the weighting schemes; subclasses define the state and the update.

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
    def init_state(self) -> dict[str, jax.Array]:
        """The state before the first step."""
        return {}

    def update(self, state: dict[str, jax.Array], losses: jax.Array, ev: "Evaluator"
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Weights ``(m,)`` for this step from its losses ``(m,)``, and the state after it."""
        raise NotImplementedError  # pragma: no cover

    def extra_children(self) -> tuple[Expr, ...]:
        """Further expressions the weights depend on (e.g. trainable log-variances)."""
        return ()

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, ev: "Evaluator") -> jax.Array:
        """This step's weights, computed once per evaluator; records the new state."""
        key = ("balancer", id(self))
        if key not in ev.memo:
            values = jnp.stack([ev.value(loss) for loss in self.losses])
            if not self.differentiable:
                values = jax.lax.stop_gradient(values)
            name = ev.registry.balancer_key(self)
            state = ev.extras.get(name)
            if state is None:
                state = self.init_state()
            weights, new_state = self.update(state, values, ev)
            if not self.differentiable:
                weights = jax.lax.stop_gradient(weights)
            ev.updates[name] = new_state
            ev.memo[key] = weights
        return ev.memo[key]

    def __iter__(self):
        return iter(self.weights)

    def __len__(self) -> int:
        return self.m

    def __getitem__(self, i: int) -> "AdaptiveWeight":
        return self.weights[i]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.m} losses>"


class AdaptiveWeight(Expr):
    """Weight ``index`` of a balancer: a global scalar expression (use ``w * loss``)."""

    def __init__(self, balancer: Balancer, index: int):
        self.balancer = balancer
        self.index = index
        children = balancer.losses + balancer.extra_children()
        dtype = jnp.result_type(*[c.dtype for c in balancer.losses])
        super().__init__(children, None, (), dtype, f"{balancer.scheme}[{index}]")

    @property
    def loss(self) -> Expr:
        """The loss this weight is meant to multiply."""
        return self.balancer.losses[self.index]

    def global_eval(self, ev: "Evaluator") -> jax.Array:
        return self.balancer.evaluate(ev)[self.index]


def _factors(node: Expr) -> list[Expr]:
    """Operands of a product chain ``a * b * c`` (through nested products)."""
    if getattr(node, "label", None) == "*" and len(node.children) == 2:
        return _factors(node.children[0]) + _factors(node.children[1])
    return [node]


def check_weight_usage(constraints: dict[str, Expr]) -> None:
    """A weight must multiply its own loss (or constants), never another loss."""
    from jno_flax._evaluate import walk
    for name, expr in constraints.items():
        for node in walk([expr], hidden=False):
            if getattr(node, "label", None) != "*":
                continue
            factors = _factors(node)
            weights = [f for f in factors if isinstance(f, AdaptiveWeight)]
            others = [f for f in factors if not isinstance(f, (AdaptiveWeight, Constant))]
            for w in weights:
                if others and all(o is not w.loss for o in others):
                    raise ValueError(
                        f"constraint {name!r}: weight {w.index} of {w.balancer!r} balances "
                        f"{w.loss!r} but multiplies {others[0]!r}; a weight must be used with "
                        "the loss it was created for (same balancer, same position)."
                    )
