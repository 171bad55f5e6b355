"""Warnings that point at the user's line, not at the library's."""

from __future__ import annotations

import sys
import warnings


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside ``jno_flax`` (the user's
    script: the line that called ``fit``, ``solve``, ...)."""
    level, frame = 2, sys._getframe(1)   # stacklevel 2: the caller of this function
    while frame is not None and frame.f_globals.get("__name__", "").startswith("jno_flax"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
