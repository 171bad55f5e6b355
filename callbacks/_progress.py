"""A progress bar (tqdm) showing the step, steps/s and the total loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer


class ProgressBar(Callback):
    """tqdm bar over the steps of ``fit``; refreshed once per fused chunk.

    Args:
        leave: keep the bar on screen after training.
    """

    def __init__(self, leave: bool = True):
        self.leave = leave
        self._bar: tqdm | None = None

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        self._bar = tqdm(total=trainer.max_steps, initial=trainer.global_step, unit="step",
                         leave=self.leave, dynamic_ncols=True)

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{chunk.loss[-1]:.3e}", refresh=False)
            self._bar.update(chunk.last_step + 1 - self._bar.n)

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
