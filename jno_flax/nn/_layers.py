"""Building blocks of the networks: activations by name, dense layers with optional random
weight factorisation, the default float dtype and input-width checks."""

from __future__ import annotations

import numbers
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jno_flax._dtypes import default_float as default_float_dtype
from jno_flax._checks import positive_number
from jno_flax._seed import default_seed

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh, "sin": jnp.sin, "gelu": jax.nn.gelu, "silu": jax.nn.silu,
    "swish": jax.nn.silu, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
}


def activation(value: str | Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The activation ``value`` names (one of :data:`ACTIVATIONS`), or ``value`` if callable."""
    if callable(value):
        return value
    if isinstance(value, str) and value in ACTIVATIONS:
        return ACTIVATIONS[value]
    raise ValueError(f"`activation` must be a callable or one of {sorted(ACTIVATIONS)}, "
                     f"got {value!r}.")


def float_dtype(param_dtype=None):
    """``param_dtype``, or the default float dtype (float64 under ``jax_enable_x64``)."""
    return param_dtype or default_float_dtype()


def default_rngs(rngs: nnx.Rngs | None) -> nnx.Rngs:
    """``rngs``, or ``nnx.Rngs`` of ``jno_flax.seed_everything``'s seed (0 until it is called)."""
    return nnx.Rngs(default_seed(None)) if rngs is None else rngs


def check_sizes(**sizes: int) -> None:
    """Each keyword must be a positive integer; the error names the argument."""
    for arg, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")


def check_width(module: nnx.Module, expected: int, x: jax.Array) -> None:
    """Raise if the last axis of ``x`` is not ``expected`` wide (shapes are static)."""
    if x.ndim == 0 or x.shape[-1] != expected:
        raise ValueError(
            f"{type(module).__name__} expects inputs with {expected} features on the last "
            f"axis (`in_features={expected}`), got shape {tuple(x.shape)}; give it as many "
            "coordinates as it was built for.")


def check_rwf(rwf) -> tuple[float, float] | None:
    """``None`` or ``(mean, std)`` with ``std > 0``."""
    if rwf is None:
        return None
    if not (isinstance(rwf, (tuple, list)) and len(rwf) == 2):
        raise ValueError(f"`rwf` must be None or (mean, std), got {rwf!r}.")
    mean, std = rwf
    if isinstance(mean, bool) or not isinstance(mean, numbers.Real):
        raise ValueError(f"`rwf` mean must be a number, got {mean!r}.")
    return float(mean), positive_number("rwf std", std)


class RWFLinear(nnx.Module):
    """A dense layer with random weight factorisation (Wang et al. 2022, arXiv:2210.01274)::

        y = x @ (V · diag(exp(s))) + b        (W = diag(exp(s)) V in the ``W x`` convention)

    ``V`` (``kernel``) and ``s`` (``scale``, one per output unit) are trained. At
    initialisation ``s ~ N(mean, std)`` and ``V = W₀ / exp(s)`` for the kernel ``W₀`` the plain
    ``nnx.Linear`` would draw with the same ``rngs``, so the layer starts as that plain layer.
    """

    def __init__(self, in_features: int, out_features: int, *, rwf: tuple[float, float],
                 kernel_init=None, param_dtype=None, rngs: nnx.Rngs):
        mean, std = check_rwf(rwf)
        dtype = float_dtype(param_dtype)
        kernel_key, _ = rngs.params(), rngs.params()   # the keys nnx.Linear draws
        init = kernel_init or nnx.initializers.glorot_normal()
        w = init(kernel_key, (in_features, out_features), dtype)
        scale_key = jax.random.fold_in(kernel_key, 1)
        s = (mean + std * jax.random.normal(scale_key, (out_features,))).astype(dtype)
        self.kernel = nnx.Param(w / jnp.exp(s))
        self.scale = nnx.Param(s)
        self.bias = nnx.Param(jnp.zeros((out_features,), dtype))
        self.in_features, self.out_features = in_features, out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ (self.kernel[...] * jnp.exp(self.scale[...])) + self.bias[...]


def dense_kwargs(rwf, param_dtype, rngs: nnx.Rngs | None) -> dict:
    """The checked keyword arguments of :func:`dense` a network passes to all its layers
    (``rngs=None``: ``nnx.Rngs`` of ``jno_flax.seed_everything``'s seed)."""
    return dict(rwf=check_rwf(rwf), param_dtype=param_dtype, rngs=default_rngs(rngs))


def dense(in_features: int, out_features: int, *, rwf, param_dtype, rngs: nnx.Rngs):
    """A Glorot-normal ``nnx.Linear``, or an :class:`RWFLinear` when ``rwf`` is given."""
    if rwf is not None:
        return RWFLinear(in_features, out_features, rwf=rwf, param_dtype=param_dtype, rngs=rngs)
    return nnx.Linear(in_features, out_features, kernel_init=nnx.initializers.glorot_normal(),
                      param_dtype=float_dtype(param_dtype), rngs=rngs)


def set_affine(layer: nnx.Module, kernel: jax.Array, bias: jax.Array) -> None:
    """Make ``layer`` (an ``nnx.Linear`` or :class:`RWFLinear`) the map ``x @ kernel + bias``."""
    if isinstance(layer, RWFLinear):
        kernel = kernel / jnp.exp(layer.scale[...])
    layer.kernel[...] = jnp.asarray(kernel, layer.kernel[...].dtype)
    layer.bias[...] = jnp.asarray(bias, layer.bias[...].dtype)


def widths(module: nnx.Module, arg: str) -> tuple[int, int]:
    """``(in_features, out_features)`` a module declares; the error names ``arg``."""
    found = (getattr(module, "in_features", None), getattr(module, "out_features", None))
    if not all(isinstance(w, int) and w > 0 for w in found):
        raise ValueError(f"`{arg}` must declare integer `in_features` and `out_features` "
                         f"(as jno.nn embeddings and networks do), got {type(module).__name__} "
                         f"with in_features={found[0]!r}, out_features={found[1]!r}.")
    return found


class Sequential(nnx.Module):
    """Modules applied in order (``layers``), e.g. an embedding in front of a network::

        Sequential(PeriodicEmbedding(2, axes=(1,), periods=(2.0,)),
                   FourierFeatures(3, 128, scale=1.0), MLP(128, 1))

    Consecutive widths are checked at construction: each module's ``out_features`` must equal
    the next one's ``in_features`` (every ``jno.nn`` module declares both).
    """

    def __init__(self, *modules: nnx.Module):
        if not modules:
            raise ValueError("`Sequential` needs at least one module, got none.")
        sizes = [widths(m, f"modules[{i}]") for i, m in enumerate(modules)]
        for i in range(1, len(sizes)):
            if sizes[i - 1][1] != sizes[i][0]:
                raise ValueError(
                    f"widths do not chain: modules[{i - 1}] ({type(modules[i - 1]).__name__}) "
                    f"gives {sizes[i - 1][1]} features, modules[{i}] "
                    f"({type(modules[i]).__name__}) takes in_features={sizes[i][0]}.")
        self.layers = nnx.List(list(modules))
        self.in_features, self.out_features = sizes[0][0], sizes[-1][1]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x
