"""A progress bar (tqdm): step, steps/s after compilation and the chosen metrics."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np
from tqdm.auto import tqdm

from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer

BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class ProgressBar(Callback):
    """tqdm bar over the steps of ``fit``.

    Shows ``steps/s`` averaged from the end of the first chunk on (so compilation does not
    count) and the latest value of each of ``metrics``. Steps advance once per fused chunk;
    in between, a background thread redraws the bar every ``refresh_seconds`` so the elapsed
    time keeps running, and until the first chunk is back it says ``compiling``: a long
    compilation or a slow chunk (an L-BFGS phase) never looks hung.

    Args:
        metrics: names to show: ``"loss"``, constraint names, tracker and in-graph quantity
            names (checked when ``fit`` starts).
        leave: keep the bar on screen after training.

    With several ``jax.distributed`` processes, only process 0 shows it.
    """

    global_zero_only = True

    def __init__(self, metrics: Sequence[str] = ("loss",), leave: bool = True,
                 refresh_seconds: float = 1.0):
        if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
            raise TypeError(f"`metrics` must be a list of names, got {metrics!r}.")
        if (isinstance(refresh_seconds, bool) or not isinstance(refresh_seconds, (int, float))
                or not 0 < refresh_seconds < float("inf")):
            raise ValueError(f"`refresh_seconds` must be a positive number, got "
                             f"{refresh_seconds!r}.")
        self.metrics = list(metrics)
        self.leave = leave
        self.refresh_seconds = float(refresh_seconds)
        self._ticker: threading.Thread | None = None
        self._stop_ticking = threading.Event()
        self.steps_per_second: float | None = None
        self._bar: tqdm | None = None
        self._since: tuple[float, int] | None = None
        self._latest: dict[str, float] = {}

    def on_fit_start(self, trainer: "Trainer", problem: "Problem") -> None:
        available = trainer.logged_names()
        unknown = [m for m in self.metrics if m not in available]
        if unknown:
            raise ValueError(f"ProgressBar `metrics` {unknown} are not logged; available: "
                             f"{available}.")
        arrays = [q.name for q in trainer.trackers.items
                  if q.name in self.metrics and trainer.trackers.struct(q, trainer.state).shape]
        if arrays:
            raise ValueError(f"ProgressBar `metrics` {arrays} are arrays; the bar shows "
                             "scalars (loss, constraints, scalar trackers).")

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        self._bar = tqdm(total=trainer.max_steps, initial=trainer.global_step, unit="step",
                         leave=self.leave, dynamic_ncols=True, bar_format=BAR_FORMAT)
        self._bar.set_postfix_str("compiling", refresh=True)
        self._since, self._latest = None, {}
        self._stop_ticking.clear()
        self._ticker = threading.Thread(target=self._tick, name="jno_flax-progress",
                                        daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        """Redraw the bar (its elapsed time) until training ends."""
        while not self._stop_ticking.wait(self.refresh_seconds):
            bar = self._bar
            if bar is not None:
                bar.refresh()

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        now, done = time.perf_counter(), chunk.last_step + 1
        if self._since is None:
            self._since = (now, done)
        elif done > self._since[1]:  # the mean since the first chunk: with overlapped chunks,
            # one chunk's callbacks may run right after the previous one's
            self.steps_per_second = (done - self._since[1]) / (now - self._since[0])
        for name in self.metrics:
            series = chunk.series(name)
            if series is not None and len(series[1]) and np.ndim(series[1][-1]) == 0:
                self._latest[name] = float(series[1][-1])
        if self._bar is not None:
            postfix = {} if self.steps_per_second is None else {
                "steps/s": f"{self.steps_per_second:.1f}"}
            postfix.update({k: f"{v:.3e}" for k, v in self._latest.items()})
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(done - self._bar.n)

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        self._stop_ticking.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
