"""Namespace kept for jNO-style code: ``jno.fn.adaptive`` is :mod:`jno_flax.adaptive`."""

from jno_flax import adaptive

__all__ = ["adaptive"]
