"""Trainer callbacks: hooks, in-graph quantities (trackers) and built-in behaviours."""

from jno_flax.callbacks._callback import Callback, InGraph, StepMetrics
from jno_flax.callbacks._progress import ProgressBar
from jno_flax.callbacks._tracker import TrackerCallback

__all__ = ["Callback", "InGraph", "StepMetrics", "ProgressBar", "TrackerCallback"]
