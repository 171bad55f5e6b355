"""The default float dtype: float64 under ``jax_enable_x64`` (also inside
``jax.enable_x64()``), float32 otherwise. The one spelling used across the library."""

from __future__ import annotations

import jax
import numpy as np


def default_float() -> np.dtype:
    """The dtype a Python float becomes in JAX now."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def x64_enabled() -> bool:
    """Whether 64-bit types are on."""
    return default_float() == np.float64
