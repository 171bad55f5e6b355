"""One seed for a whole script, as Lightning's ``seed_everything``."""

from __future__ import annotations

import random

import numpy as np

from jno_flax._checks import integer

_SEED = 0


def seed_everything(seed: int) -> int:
    """Seed everything a run draws from: Python's ``random``, NumPy's global generator, and
    the defaults of this library — the points of every domain built without ``seed=``, the
    initial weights of ``jno.nn.MLP`` built without ``rngs=``, and the PRNG key of every
    ``Trainer`` built without ``seed=`` (mini-batches, resampling, stochastic balancers).

    Returns ``seed``, an integer from 0 to 2**32 - 1. Call it first, before building domains,
    networks and trainers.

    >>> seed_everything(1)
    1
    """
    global _SEED
    _SEED = check_seed(seed)
    random.seed(_SEED)
    np.random.seed(_SEED)
    return _SEED


#: the seeds accepted (as Lightning's ``seed_everything``: NumPy's global generator takes
#: unsigned 32-bit integers)
SEED_RANGE = (0, 2**32 - 1)


def check_seed(seed: int, arg: str = "seed") -> int:
    """``seed`` as an int in :data:`SEED_RANGE`."""
    value = integer(arg, seed)
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ValueError(f"`{arg}` must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]} "
                         f"(2**32 - 1), got {seed!r}.")
    return value


def default_seed(seed: int | None, arg: str = "seed") -> int:
    """``seed``, or the seed of :func:`seed_everything` (0 until it is called) for ``None``."""
    return _SEED if seed is None else check_seed(seed, arg)
