"""The Trainer, its state and the History it returns."""

from jno_flax.trainers._history import History, Series
from jno_flax.trainers._state import TrainState
from jno_flax.trainers._trainer import Trainer

__all__ = ["History", "Series", "TrainState", "Trainer"]
