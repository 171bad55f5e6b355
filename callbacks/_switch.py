"""Optimizer phases inside one fit: e.g. Adam, then L-BFGS from a given step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optax

from jno_flax._checks import optax_transform, positive_int
from jno_flax.callbacks._callback import Callback

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


class SwitchOptimizer(Callback):
    """From step ``at_step`` on, train with ``optimizer``.

    The trainer places a chunk boundary at ``at_step`` and starts the new transform with a
    fresh state from the weights reached there (as ``net.optimizer(tx)`` between two solves
    does). Checkpoints before and after the switch resume exactly: a checkpoint holds the
    optimizer state of the phase it was written in.

    Args:
        at_step: the first step that uses ``optimizer`` (a positive integer).
        optimizer: one optax transform for every trained trainable, or
            ``{trainable name: transform}`` for some of them.

    >>> switch = SwitchOptimizer(5000, optax.lbfgs())
    """

    def __init__(self, at_step: int, optimizer: Any):
        self.at_step = positive_int("at_step", at_step, steps=True)
        if isinstance(optimizer, dict):
            self.optimizer = {str(k): optax_transform(f"optimizer[{k!r}]", tx)
                              for k, tx in optimizer.items()}
        else:
            self.optimizer = optax_transform("optimizer", optimizer)
        self.done = False

    @property
    def state_key(self) -> str:
        return f"SwitchOptimizer[{self.at_step}]"

    def transforms(self, trained: list[str]) -> dict[str, optax.GradientTransformation]:
        """``{name: transform}`` this switch sets, for the trained trainables ``trained``."""
        if not isinstance(self.optimizer, dict):
            return {name: self.optimizer for name in trained}
        unknown = [n for n in self.optimizer if n not in trained]
        if unknown:
            raise ValueError(f"SwitchOptimizer `optimizer` names {unknown}, which are not "
                             f"trained trainables; trained: {trained}.")
        return dict(self.optimizer)

    def optimizer_phases(self, trainer: "Trainer", trained: list[str]
                         ) -> list[tuple[int, dict[str, optax.GradientTransformation]]]:
        return [(self.at_step, self.transforms(trained))]

    def enter_chunk(self, trainer: "Trainer", state: Any, step: int) -> Any:
        self.done = self.done or step >= self.at_step
        return state

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        if trainer.global_step > self.at_step and not self.done:
            raise ValueError(f"SwitchOptimizer `at_step` {self.at_step} has already passed: the "
                             f"run starts at step {trainer.global_step}; choose a later step "
                             "or change the optimizer with `model.optimizer(tx)` instead.")

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict.get("done", False))
