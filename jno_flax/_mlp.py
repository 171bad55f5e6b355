"""A plain multilayer perceptron as an ``nnx.Module``."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jno_flax._seed import default_seed


class MLP(nnx.Module):
    """``in_features -> hidden x depth -> out_features`` with an activation between layers.

    The hidden layers are ``self.layers`` and the last one is ``self.output_layer`` (so
    ``nnx.PathContains("output_layer")`` selects it). Weights use Glorot-normal
    initialisation, biases zeros. Accepts unbatched ``(in_features,)`` or batched
    ``(..., in_features)`` inputs. Parameters are ``param_dtype``, by default the default float
    dtype (float64 under ``jax_enable_x64``, float32 otherwise). Without ``rngs``, the
    weights come from ``nnx.Rngs(seed)`` with the seed of ``jno_flax.seed_everything`` (0
    until it is called).

    >>> net = MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0))   # 2-64-64-64-1
    """

    def __init__(self, in_features: int, out_features: int, *, hidden: int = 64,
                 depth: int = 3, activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
                 param_dtype=None, rngs: nnx.Rngs | None = None):
        for arg, value in (("in_features", in_features), ("out_features", out_features),
                           ("hidden", hidden), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")
        rngs = nnx.Rngs(default_seed(None)) if rngs is None else rngs
        init = nnx.initializers.glorot_normal()
        dtype = param_dtype or jax.dtypes.canonicalize_dtype(jnp.float64)
        sizes = [in_features] + [hidden] * depth
        self.layers = nnx.List([nnx.Linear(a, b, kernel_init=init, param_dtype=dtype, rngs=rngs)
                                for a, b in zip(sizes[:-1], sizes[1:])])
        self.output_layer = nnx.Linear(sizes[-1], out_features, kernel_init=init,
                                       param_dtype=dtype, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = self.activation(layer(x))
        return self.output_layer(x)
