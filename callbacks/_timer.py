"""A time limit for training, as Lightning's ``Trainer(max_time=...)`` / ``Timer`` callback."""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

_DD_HH_MM_SS = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")
TIMEDELTA_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")
ACCEPTED = ('a datetime.timedelta, a number of seconds, "DD:HH:MM:SS" (e.g. "00:12:00:00") '
            'or a dict of timedelta arguments (e.g. {"hours": 12})')


def parse_max_time(arg: str, value: Any) -> timedelta:
    """``value`` (see :data:`ACCEPTED`) as a positive ``timedelta``."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"`{arg}` must be a finite number of seconds, got {value!r}; "
                             f"accepted: {ACCEPTED}.")
        try:
            duration = timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"`{arg}` {value!r} is too long for a timedelta; accepted: "
                             f"{ACCEPTED}.") from None
    elif isinstance(value, str):
        m = _DD_HH_MM_SS.match(value.strip())
        if m is None:
            raise ValueError(f"`{arg}` {value!r} is not in the format \"DD:HH:MM:SS\"; "
                             f"accepted: {ACCEPTED}.")
        days, hours, minutes, seconds = map(int, m.groups())
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    elif isinstance(value, dict):
        unknown = sorted(set(value) - set(TIMEDELTA_KEYS), key=str)
        if unknown:
            raise ValueError(f"`{arg}` {value!r} has keys {unknown} that timedelta does not "
                             f"take; accepted keys: {list(TIMEDELTA_KEYS)}.")
        wrong = {k: v for k, v in value.items() if isinstance(v, bool)
                 or not isinstance(v, (int, float)) or not math.isfinite(v)}
        if wrong:
            raise ValueError(f"`{arg}` {value!r}: the values {wrong} are not finite numbers; "
                             f"accepted: {ACCEPTED}.")
        try:
            duration = timedelta(**value)
        except OverflowError:
            raise ValueError(f"`{arg}` {value!r} is too long for a timedelta; accepted: "
                             f"{ACCEPTED}.") from None
    else:
        raise TypeError(f"`{arg}` must be {ACCEPTED}, got {type(value).__name__}: {value!r}.")
    if duration <= timedelta(0):
        raise ValueError(f"`{arg}` must be a positive duration, got {value!r}.")
    return duration


class Timer(Callback):
    """Stops training once ``duration`` of training time has elapsed (``Trainer(max_time=...)``
    adds one).

    Time counts from the start of training (compilation included) and across resumes: the
    elapsed time is part of the checkpointed ``state_dict``, so a requeued job continues the
    same budget. The check happens after every fused chunk, so training stops at the first
    chunk boundary past the limit (at most one chunk late); checkpoint callbacks then save as
    at any stop.

    Args:
        duration: see :func:`parse_max_time`.
    """

    def __init__(self, duration: Any):
        self.duration = parse_max_time("duration", duration)
        self._elapsed_before = 0.0
        self._started: float | None = None

    @classmethod
    def from_max_time(cls, max_time: Any) -> "Timer":
        """The timer of ``Trainer(max_time=...)`` (errors name ``max_time``)."""
        return cls(parse_max_time("max_time", max_time))

    def time_elapsed(self) -> float:
        """Seconds of training so far (this run and the runs it resumed)."""
        running = 0.0 if self._started is None else time.monotonic() - self._started
        return self._elapsed_before + running

    def time_remaining(self) -> float:
        return self.duration.total_seconds() - self.time_elapsed()

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        self._started = time.monotonic()

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        if self.time_remaining() <= 0:
            trainer.stop(f"Timer: max_time {self.duration} reached after step "
                         f"{chunk.last_step} ({self.time_elapsed():.1f} s of training).")

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        self._elapsed_before = self.time_elapsed()
        self._started = None

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": self.time_elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._elapsed_before = float(state_dict.get("time_elapsed", 0.0))
