"""The fused training step and its override points for research code (see
``examples/03_custom_trainer.py``): :meth:`configure_optimizers`, :meth:`compute_losses`,
:meth:`aggregate_loss`, :meth:`apply_gradients` and :meth:`training_step`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import optax

from jno_flax._evaluate import Evaluator
from jno_flax.optimizers import Objective
from jno_flax.trainers._batches import draw_minibatch
from jno_flax.trainers._residuals import constraint_residuals
from jno_flax.trainers._state import TrainState

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem

DEFAULT_LEARNING_RATE = 1e-3


class TrainingStep:
    """The step a :class:`~jno_flax.trainers.Trainer` compiles, method by method; each
    method is an override point. ``self.txs`` holds the transforms of the chunk being
    compiled, ``self.trackers.dense`` the quantities computed in the loss pass."""

    _default_tx = optax.adam(DEFAULT_LEARNING_RATE)

    def configure_optimizers(self, problem: "Problem") -> dict[str, optax.GradientTransformation]:
        """One optax transform per trainable name (frozen ones are left out).

        Default: each trainable's own ``.optimizer(tx)``, else ``optax.adam(1e-3)``, combined
        with the parameter groups of its masked views (``model.mask(f).optimizer(tx)``).
        """
        txs = {}
        for t in problem.trainables:
            if not t.frozen:
                txs[problem.registry.name(t)] = t.transform(self._default_tx)
        return txs

    def compute_losses(self, problem: "Problem", ev: Evaluator) -> dict[str, jax.Array]:
        """Constraint losses by name, evaluated with ``ev`` (inside the fused step)."""
        return {name: ev.value(expr) for name, expr in problem.constraints.items()}

    def aggregate_loss(self, losses: dict[str, jax.Array]) -> jax.Array:
        """Total loss from the constraint losses; default: their sum."""
        return sum(losses.values())

    def apply_gradients(self, state: TrainState, grads: dict[str, Any],
                        value: jax.Array | None = None,
                        value_fn: Callable[[dict[str, Any]], jax.Array] | None = None
                        ) -> TrainState:
        """Optimizer update of every trained trainable; returns the new state (step unchanged).

        ``value`` is the step's total loss and ``value_fn(params)`` the total loss of the
        current batch as a function of the trained parameters ``{name: params}`` (trackers
        left out). Both reach every transform's ``update`` as optax's extra arguments
        (``value``, ``grad``, ``value_fn``; ``optax.with_extra_args_support``), so
        ``optax.lbfgs()`` and ``optax.scale_by_zoom_linesearch`` chains work; for the
        transform of trainable ``n``, ``value_fn`` varies ``n``'s parameters only. An
        :class:`~jno_flax.optimizers.Objective` ``value_fn`` also carries the residuals of a
        mean-square loss (``value_fn.residuals``) for Gauss–Newton transforms (``engd``).
        """
        params, opt_state = dict(state.params), dict(state.opt_state)
        trained = {n: state.params[n] for n in grads}
        if value_fn is not None and not isinstance(value_fn, Objective):
            value_fn = Objective(value_fn)
        txs = self.txs
        for name, g in grads.items():
            extra = {}
            if value is not None and value_fn is not None:
                extra = {"value": value, "grad": g,
                         "value_fn": value_fn.restricted(trained, name)}
            tx = optax.with_extra_args_support(txs[name])
            updates, opt_state[name] = tx.update(g, state.opt_state[name], state.params[name],
                                                 **extra)
            params[name] = optax.apply_updates(state.params[name], updates)
        return state.replace(params=params, opt_state=opt_state)

    def training_step(self, state: TrainState, batch: dict[str, jax.Array]
                      ) -> tuple[TrainState, dict[str, Any]]:
        """One step inside the fused chunk: losses, gradients, update.

        Returns the new state and this step's outputs ``{"loss", "losses", "values"}``, where
        ``values`` holds the every-step in-graph quantities (computed from the same forward
        pass as the loss).
        """
        problem = self.problem
        every_step = self.trackers.dense
        outputs = list(problem.constraints.values()) + [q.expr for q in every_step]
        trained = {n: p for n, p in state.params.items() if n in self.txs}
        fixed = {n: p for n, p in state.params.items() if n not in self.txs}

        def loss_fn(trained_params):
            ev = Evaluator.of_state(problem.registry, state, batch, outputs,
                                    params={**fixed, **trained_params})
            losses = self.compute_losses(problem, ev)
            values = {q.name: jax.lax.stop_gradient(ev.value(q.expr)) for q in every_step}
            return self.aggregate_loss(losses), (losses, values, ev.updates)

        (total, (losses, values, updates)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(trained)
        residuals, why_not = self._residuals(problem, state, batch, fixed)
        state = self.apply_gradients(state, grads, value=total, value_fn=Objective(
            lambda p: loss_fn(p)[0], residuals, why_not))
        return state.replace(step=state.step + 1, extras={**state.extras, **updates}), {
            "loss": total, "losses": losses, "values": values}

    def _residuals(self, problem: "Problem", state: TrainState, batch: dict[str, jax.Array],
                   fixed: dict[str, Any]) -> tuple[Callable | None, str]:
        """The residuals of a plain sum of mean squares (``trainers/_residuals.py``), or
        ``None`` and the reason."""
        if (type(self).compute_losses is not TrainingStep.compute_losses
                or type(self).aggregate_loss is not TrainingStep.aggregate_loss):
            return None, ("Gauss–Newton methods (`engd`) need every constraint to be a mean "
                          f"square and the loss their plain sum; {type(self).__name__} "
                          "overrides `compute_losses` or `aggregate_loss`.")
        return constraint_residuals(problem, state, batch, fixed)

    def minibatch(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The points step ``state.step`` trains on: a random subset of each point set with a
        mini-batch size (``Trainer(batch_size=...)``), all points of the others."""
        return draw_minibatch(self.batch_sizes, state, batch)
