"""Multilayer perceptrons as ``nnx.Module``s: the plain MLP and the modified MLP."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jno_flax.nn._layers import activation as _activation
from jno_flax.nn._layers import check_sizes, check_width, dense, dense_kwargs

Activation = str | Callable[[jax.Array], jax.Array]


class MLP(nnx.Module):
    """``in_features -> hidden x depth -> out_features`` with an activation between layers.

    The hidden layers are ``self.layers`` and the last one is ``self.output_layer`` (so
    ``nnx.PathContains("output_layer")`` selects it). Weights use Glorot-normal
    initialisation, biases zeros; ``rwf=(mean, std)`` factorises every kernel
    (:class:`~jno_flax.nn._layers.RWFLinear`, jaxpi's default is ``(1.0, 0.1)``). ``activation``
    is a callable or a name (``"tanh"``, ``"sin"``, ``"gelu"``, ...). Accepts unbatched
    ``(in_features,)`` or batched ``(..., in_features)`` inputs. Parameters are
    ``param_dtype``, by default the default float dtype (float64 under ``jax_enable_x64``,
    float32 otherwise). Without ``rngs``, the weights come from ``nnx.Rngs(seed)`` with the seed
    of ``jno_flax.seed_everything`` (0 until it is called).

    >>> net = MLP(2, 1, hidden=64, depth=3, rngs=nnx.Rngs(0))   # 2-64-64-64-1
    """

    def __init__(self, in_features: int, out_features: int, *, hidden: int = 64,
                 depth: int = 3, activation: Activation = jnp.tanh,
                 rwf: tuple[float, float] | None = None, param_dtype=None,
                 rngs: nnx.Rngs | None = None):
        check_sizes(in_features=in_features, out_features=out_features, hidden=hidden,
                    depth=depth)
        kw = dense_kwargs(rwf, param_dtype, rngs)
        sizes = [in_features] + [hidden] * depth
        self.layers = nnx.List([dense(a, b, **kw) for a, b in zip(sizes[:-1], sizes[1:])])
        self.output_layer = dense(sizes[-1], out_features, **kw)
        self.activation = _activation(activation)
        self.in_features, self.out_features = in_features, out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        check_width(self, self.in_features, x)
        for layer in self.layers:
            x = self.activation(layer(x))
        return self.output_layer(x)


class ModifiedMLP(nnx.Module):
    """The modified MLP of Wang, Teng & Perdikaris 2021 (arXiv:2001.04536): two encoders of
    the input gate every hidden layer::

        U = σ(x W_u + b_u),   V = σ(x W_v + b_v),   H_1 = x
        Z_k = σ(H_k W_k + b_k),   H_{k+1} = Z_k ⊙ U + (1 - Z_k) ⊙ V     (k = 1 .. depth)
        f(x) = H_{depth+1} W + b

    (the form jaxpi uses; U and V swap roles against the paper's notation). Layers:
    ``encoder_u``, ``encoder_v``, ``layers``, ``output_layer``; ``activation`` and ``rwf`` as in
    :class:`MLP`.

    >>> net = ModifiedMLP(2, 1, hidden=64, depth=4, rngs=nnx.Rngs(0))
    """

    def __init__(self, in_features: int, out_features: int, *, hidden: int = 64,
                 depth: int = 4, activation: Activation = jnp.tanh,
                 rwf: tuple[float, float] | None = None, param_dtype=None,
                 rngs: nnx.Rngs | None = None):
        check_sizes(in_features=in_features, out_features=out_features, hidden=hidden,
                    depth=depth)
        kw = dense_kwargs(rwf, param_dtype, rngs)
        self.encoder_u = dense(in_features, hidden, **kw)
        self.encoder_v = dense(in_features, hidden, **kw)
        sizes = [in_features] + [hidden] * depth
        self.layers = nnx.List([dense(a, b, **kw) for a, b in zip(sizes[:-1], sizes[1:])])
        self.output_layer = dense(hidden, out_features, **kw)
        self.activation = _activation(activation)
        self.in_features, self.out_features = in_features, out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        check_width(self, self.in_features, x)
        u = self.activation(self.encoder_u(x))
        v = self.activation(self.encoder_v(x))
        for layer in self.layers:
            z = self.activation(layer(x))
            x = z * u + (1 - z) * v
        return self.output_layer(x)
