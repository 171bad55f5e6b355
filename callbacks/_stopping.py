"""Stopping rules: early stopping on a monitored quantity, and stopping on non-finite losses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jno_flax._checks import integer, positive_int
from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

MODES = ("min", "max")


@dataclass(frozen=True)
class Decision:
    """Outcome of one early-stopping check; ``reason`` says why it stops (``None``: go on)."""

    best: float
    wait: int
    stop: bool
    improved: bool
    reason: str | None = None


def early_stopping_decision(current: float, best: float, wait: int, *, mode: str,
                            min_delta: float, patience: int,
                            stopping_threshold: float | None = None,
                            divergence_threshold: float | None = None,
                            check_finite: bool = True) -> Decision:
    """Pure rule, checked in Lightning's order: a non-finite value (``check_finite``), the
    ``stopping_threshold`` reached, the ``divergence_threshold`` passed, then ``patience``
    checks without beating ``best`` by more than ``min_delta``."""
    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    if not math.isfinite(current):
        if check_finite:
            return Decision(best, wait, True, False, f"the value is {current} (not finite)")
    elif stopping_threshold is not None and better(current, stopping_threshold):
        op = "<" if mode == "min" else ">"
        return Decision(current if better(current, best) else best, 0, True, True,
                        f"stopping_threshold reached: {current:.6g} {op} "
                        f"{stopping_threshold:.6g}")
    elif divergence_threshold is not None and better(divergence_threshold, current):
        op = ">" if mode == "min" else "<"
        return Decision(best, wait, True, False, f"divergence_threshold passed: {current:.6g} "
                        f"{op} {divergence_threshold:.6g}")
    elif better(current, best - min_delta if mode == "min" else best + min_delta):
        return Decision(current, 0, False, True)
    stop = wait + 1 >= patience
    return Decision(best, wait + 1, stop, False,
                    f"did not improve for {patience} checks (best {best:.6g})" if stop else None)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` checks, or reached
    ``stopping_threshold``, or passed ``divergence_threshold``, or is not finite.

    A check happens at every step ``>= start_step`` where ``monitor`` has a value: every step
    for ``"loss"`` and constraint names, at its interval for a tracker. Training ends right
    after the step of the decision, as in Lightning: the returned state, History and last
    checkpoint are those of that step (the trainer replays the fused chunk up to it; see
    :meth:`Callback.stopping_step`). ``trainer.stop_reason`` (and ``History.stop_reason``)
    names the rule, the value and the step.

    Args:
        monitor: ``"loss"`` (total), a constraint name or a tracker/quantity name.
        patience: checks without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: ``"min"`` or ``"max"``.
        stopping_threshold: stop as soon as ``monitor`` is better than this.
        divergence_threshold: stop as soon as ``monitor`` is worse than this.
        check_finite: stop when ``monitor`` is NaN or infinite (else such a value is simply
            no improvement).
        start_step: warm-up: steps before it are not checked.
    """

    def __init__(self, monitor: str = "loss", patience: int = 1000, min_delta: float = 0.0,
                 mode: str = "min", stopping_threshold: float | None = None,
                 divergence_threshold: float | None = None, check_finite: bool = True,
                 start_step: int = 0):
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        if not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a name (str), got {monitor!r}.")
        if not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ValueError(f"`min_delta` must be a non-negative number, got {min_delta!r}.")
        for arg, value in (("stopping_threshold", stopping_threshold),
                           ("divergence_threshold", divergence_threshold)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise TypeError(f"`{arg}` must be a finite number or None, got {value!r}.")
        if (stopping_threshold is not None and divergence_threshold is not None
                and not (stopping_threshold < divergence_threshold if mode == "min"
                         else stopping_threshold > divergence_threshold)):
            raise ValueError(f"`stopping_threshold` {stopping_threshold} must be "
                             f"{'below' if mode == 'min' else 'above'} `divergence_threshold` "
                             f"{divergence_threshold} for mode={mode!r}.")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.patience = positive_int("patience", patience)
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.check_finite = bool(check_finite)
        self.start_step = integer("start_step", start_step)
        if self.start_step < 0:
            raise ValueError(f"`start_step` must be a non-negative integer, got {start_step!r}.")
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.stopped_step: int | None = None
        #: why it stopped (``trainer.stop_reason`` of the stop)
        self.stop_reason: str | None = None
        self._stopped_in_fit = False

    @property
    def state_key(self) -> str:
        return f"EarlyStopping[{self.monitor}]"

    def on_fit_start(self, trainer: "Trainer", problem: "Problem") -> None:
        available = trainer.logged_names()
        if self.monitor not in available:
            raise ValueError(f"EarlyStopping `monitor` {self.monitor!r} is not a logged "
                             f"quantity; available: {available}.")
        self._stopped_in_fit = False

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        """A checkpoint written where this callback stopped (a signal in the same chunk
        saves the state of the stop) resumes stopped, as the uninterrupted run ended."""
        if (trainer.ckpt_path is not None and self.stopped_step is not None
                and trainer.global_step == self.stopped_step + 1):
            self._stopped_in_fit = True
            trainer.stop(self.stop_reason or f"EarlyStopping: stopped at step "
                         f"{self.stopped_step}.")

    def _scan(self, chunk: ChunkMetrics) -> tuple[float, int, int | None, str | None]:
        """The checks of ``chunk`` from the current state, without side effects: the new
        ``best`` and ``wait``, and the step and reason of a stop (``None``: go on)."""
        best, wait = self.best, self.wait
        series = chunk.series(self.monitor)
        for step, value in zip(*(series if series is not None else ((), ()))):
            if step < self.start_step:
                continue
            d = early_stopping_decision(
                float(value), best, wait, mode=self.mode, min_delta=self.min_delta,
                patience=self.patience, stopping_threshold=self.stopping_threshold,
                divergence_threshold=self.divergence_threshold, check_finite=self.check_finite)
            best, wait = d.best, d.wait
            if d.stop:
                return best, wait, int(step), d.reason
        return best, wait, None, None

    # Whatever else stops the fit (a signal, max_time, another callback), the checks of every
    # step the state went through are counted: a checkpoint of that state holds them.
    def stopping_step(self, trainer: "Trainer", chunk: ChunkMetrics) -> int | None:
        return None if self._stopped_in_fit else self._scan(chunk)[2]

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        if self._stopped_in_fit:
            return
        self.best, self.wait, step, reason = self._scan(chunk)
        if step is not None:
            self._stopped_in_fit = True
            self.stopped_step = step
            self.stop_reason = f"EarlyStopping: `{self.monitor}` {reason} at step {step}."
            trainer.stop(self.stop_reason)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_step": self.stopped_step,
                "stop_reason": self.stop_reason}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])
        self.wait = int(state_dict["wait"])
        self.stopped_step = state_dict["stopped_step"]
        self.stop_reason = state_dict.get("stop_reason")


class TerminateOnNaN(Callback):
    """Stop at the first step whose total loss is not finite, naming the culprit constraints."""

    def __init__(self):
        self.bad_step: int | None = None

    def stopping_step(self, trainer: "Trainer", chunk: ChunkMetrics) -> int | None:
        bad = np.nonzero(~np.isfinite(chunk.loss))[0]
        return None if self.bad_step is not None or not len(bad) else int(chunk.steps[bad[0]])

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
