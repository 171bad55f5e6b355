"""Stopping rules: early stopping on a monitored quantity, and stopping on non-finite losses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jno_flax._checks import positive_int
from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

MODES = ("min", "max")


@dataclass(frozen=True)
class Decision:
    """Outcome of one early-stopping check."""

    best: float
    wait: int
    stop: bool
    improved: bool


def early_stopping_decision(current: float, best: float, wait: int, *, mode: str,
                            min_delta: float, patience: int) -> Decision:
    """Pure rule: improvement means beating ``best`` by more than ``min_delta``."""
    if not math.isfinite(current):
        return Decision(best, wait + 1, wait + 1 >= patience, False)
    improved = current < best - min_delta if mode == "min" else current > best + min_delta
    if improved:
        return Decision(current, 0, False, True)
    return Decision(best, wait + 1, wait + 1 >= patience, False)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` checks.

    A check happens at every step where ``monitor`` has a value: every step for ``"loss"`` and
    constraint names, at its interval for a tracker. Training ends after the fused chunk in
    which the decision was made; the reason names the step.

    Args:
        monitor: ``"loss"`` (total), a constraint name or a tracker/quantity name.
        patience: checks without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: ``"min"`` or ``"max"``.
    """

    def __init__(self, monitor: str = "loss", patience: int = 1000, min_delta: float = 0.0,
                 mode: str = "min"):
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        if not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a name (str), got {monitor!r}.")
        if not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ValueError(f"`min_delta` must be a non-negative number, got {min_delta!r}.")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.patience = positive_int("patience", patience)
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.stopped_step: int | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping[{self.monitor}]"

    def on_fit_start(self, trainer: "Trainer", problem: "Problem") -> None:
        available = ["loss"] + list(problem.constraints) + [q.name for q in trainer.quantities]
        if self.monitor not in available:
            raise ValueError(f"EarlyStopping `monitor` {self.monitor!r} is not a logged "
                             f"quantity; available: {available}.")

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        series = chunk.series(self.monitor)
        if series is None or trainer.should_stop:
            return
        for step, value in zip(*series):
            d = early_stopping_decision(float(value), self.best, self.wait, mode=self.mode,
                                        min_delta=self.min_delta, patience=self.patience)
            self.best, self.wait = d.best, d.wait
            if d.stop:
                self.stopped_step = int(step)
                trainer.stop(f"EarlyStopping: `{self.monitor}` did not improve for "
                             f"{self.patience} checks (best {self.best:.4g}) at step {step}.")
                return

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_step": self.stopped_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])
        self.wait = int(state_dict["wait"])
        self.stopped_step = state_dict["stopped_step"]


class TerminateOnNaN(Callback):
    """Stop at the first step whose total loss is not finite, naming the culprit constraints."""

    def __init__(self):
        self.bad_step: int | None = None

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        if self.bad_step is not None:
            return
        bad = np.nonzero(~np.isfinite(chunk.loss))[0]
        if len(bad) == 0:
            return
        j = int(bad[0])
        self.bad_step = int(chunk.steps[j])
        culprits = [k for k, v in chunk.losses.items() if not np.isfinite(v[j])]
        trainer.stop(f"TerminateOnNaN: non-finite loss {chunk.loss[j]} at step {self.bad_step}; "
                     f"non-finite constraint(s): {culprits or 'none (the aggregation)'}.")

    def state_dict(self) -> dict[str, Any]:
        return {"bad_step": self.bad_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.bad_step = state_dict["bad_step"]
