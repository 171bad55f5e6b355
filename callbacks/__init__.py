"""Trainer callbacks: hooks, in-graph quantities (trackers) and built-in behaviours."""

from jno_flax.callbacks._adaptive import AdaptiveWeightsCallback
from jno_flax.callbacks._callback import (Callback, ChunkMetrics, InGraph, StateUpdate,
                                          StepMetrics)
from jno_flax.callbacks._checkpoint import ModelCheckpoint
from jno_flax.callbacks._csv_logger import CSVLogger
from jno_flax.callbacks._diagnostics import GradientConflict, NTKDiagnostics
from jno_flax.callbacks._logger import Logger
from jno_flax.callbacks._lr_monitor import LearningRateMonitor, learning_rate_of
from jno_flax.callbacks._periodic import EveryNSteps, PeriodicCallback
from jno_flax.callbacks._plot import PlotCallback
from jno_flax.callbacks._progress import ProgressBar
from jno_flax.callbacks._resample import ResamplePoints
from jno_flax.callbacks._strategies import R3, RAD, RARD, Draw, ResamplingStrategy, Uniform
from jno_flax.callbacks._stopping import EarlyStopping, TerminateOnNaN, early_stopping_decision
from jno_flax.callbacks._summary import ModelSummary
from jno_flax.callbacks._switch import SwitchOptimizer
from jno_flax.callbacks._tensorboard import TensorBoardLogger
from jno_flax.callbacks._timer import Timer
from jno_flax.callbacks._tracker import TrackerCallback

__all__ = [
    "AdaptiveWeightsCallback", "CSVLogger", "Callback", "ChunkMetrics", "Draw", "EarlyStopping",
    "EveryNSteps", "GradientConflict", "InGraph", "LearningRateMonitor", "Logger",
    "ModelCheckpoint", "ModelSummary", "NTKDiagnostics", "PeriodicCallback", "PlotCallback",
    "ProgressBar",
    "R3", "RAD", "RARD", "ResamplePoints", "ResamplingStrategy", "StateUpdate", "StepMetrics",
    "SwitchOptimizer", "TensorBoardLogger",
    "TerminateOnNaN", "Timer", "TrackerCallback", "Uniform",
    "early_stopping_decision", "learning_rate_of",
]
