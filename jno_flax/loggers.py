"""Loggers, importable as in Lightning (``from jno_flax.loggers import CSVLogger``); the same
classes as in :mod:`jno_flax.callbacks`."""

from jno_flax.callbacks import CSVLogger, Logger, TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]
