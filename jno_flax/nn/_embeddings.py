"""Input embeddings placed in front of a network: random Fourier features and exact periodic
embeddings. Each is an ``nnx.Module`` with ``in_features`` and ``out_features``."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jno_flax._checks import positive_number
from jno_flax.nn._layers import check_sizes, check_width, default_rngs, float_dtype


class FourierFeatures(nnx.Module):
    """Random Fourier features (Tancik et al. 2020, arXiv:2006.10739; Wang, Wang & Perdikaris
    2021, arXiv:2012.10047)::

        γ(x) = [cos(x B), sin(x B)],    B ∈ R^{in_features × n_features/2},  B_ij ~ N(0, scale²)

    ``out_features = n_features`` (even). ``B`` is fixed (an ``nnx.Variable``, not an
    ``nnx.Param``: it is not trained and not in parameter Jacobians) unless ``trainable=True``.
    ``scale`` sets the frequencies (Tancik's σ times 2π); ``kernel=`` gives ``B`` directly.
    ``include_input=True`` puts the coordinates themselves in front, ``[x, cos(x B),
    sin(x B)]`` (``out_features = in_features + n_features``, as NeRF's positional encoding
    does): the network keeps a direct path to the coordinates.

    >>> emb = FourierFeatures(2, 128, scale=2.0, rngs=nnx.Rngs(0))   # (..., 2) -> (..., 128)
    """

    def __init__(self, in_features: int, n_features: int = 128, *, scale: float = 1.0,
                 kernel=None, trainable: bool = False, include_input: bool = False,
                 param_dtype=None, rngs: nnx.Rngs | None = None):
        check_sizes(in_features=in_features, n_features=n_features)
        if not isinstance(include_input, bool):
            raise TypeError(f"`include_input` must be True or False, got {include_input!r}.")
        if n_features % 2:
            raise ValueError(f"`n_features` must be even (cos and sin of each frequency), "
                             f"got {n_features!r}.")
        dtype = float_dtype(param_dtype)
        if kernel is None:
            scale = positive_number("scale", scale)
            kernel = scale * jax.random.normal(default_rngs(rngs).params(),
                                               (in_features, n_features // 2))
        kernel = jnp.asarray(kernel, dtype)
        if kernel.shape != (in_features, n_features // 2):
            raise ValueError(f"`kernel` must have shape (in_features, n_features // 2) = "
                             f"{(in_features, n_features // 2)}, got {tuple(kernel.shape)}.")
        self.kernel = nnx.Param(kernel) if trainable else nnx.Variable(kernel)
        self.include_input = include_input
        self.in_features = in_features
        self.out_features = n_features + (in_features if include_input else 0)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_width(self, self.in_features, x)
        z = x @ self.kernel[...]
        parts = [x] if self.include_input else []
        return jnp.concatenate([*parts, jnp.cos(z), jnp.sin(z)], axis=-1)


class PeriodicEmbedding(nnx.Module):
    """Exact periodicity along some input axes (Dong & Ni 2021, arXiv:2007.07442)::

        x_i  ->  (cos(2π x_i / L_i), sin(2π x_i / L_i))    for i in ``axes``

    the other coordinates pass through, in their order; ``out_features = in_features +
    len(axes)``. Any network after it is exactly ``L_i``-periodic in ``x_i``, with all its
    derivatives. ``periods`` are fixed, or ``nnx.Param``s (trained) with ``trainable=True``.

    >>> emb = PeriodicEmbedding(2, axes=(1,), periods=(2.0,))   # (t, x): period 2 in x
    """

    def __init__(self, in_features: int, *, axes: Sequence[int], periods: Sequence[float],
                 trainable: bool = False, param_dtype=None):
        check_sizes(in_features=in_features)
        axes, periods = tuple(axes), tuple(periods)
        if not axes or len(axes) != len(periods):
            raise ValueError(f"`axes` and `periods` must be non-empty and of one length, got "
                             f"axes={axes!r} and periods={periods!r}.")
        for a in axes:
            if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < in_features:
                raise ValueError(f"`axes` must hold input axes in [0, {in_features}), got "
                                 f"{axes!r}.")
        if len(set(axes)) != len(axes):
            raise ValueError(f"`axes` must not repeat an axis, got {axes!r}.")
        for i, p in enumerate(periods):
            positive_number(f"periods[{i}]", p)
        value = jnp.asarray(periods, float_dtype(param_dtype))
        self.period = nnx.Param(value) if trainable else nnx.Variable(value)
        self.axes = axes
        self.in_features, self.out_features = in_features, in_features + len(axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_width(self, self.in_features, x)
        omega = 2 * np.pi / self.period[...]
        parts = []
        for i in range(self.in_features):
            if i in self.axes:
                angle = omega[self.axes.index(i)] * x[..., i:i + 1]
                parts += [jnp.cos(angle), jnp.sin(angle)]
            else:
                parts.append(x[..., i:i + 1])
        return jnp.concatenate(parts, axis=-1)
