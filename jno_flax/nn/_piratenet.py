"""PirateNet: adaptive residual blocks that start as identities (Wang, Li, Chen & Perdikaris
2024, arXiv:2402.00326)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jno_flax.nn._embeddings import FourierFeatures
from jno_flax.nn._layers import activation as _activation
from jno_flax.nn._layers import (check_sizes, check_width, dense, dense_kwargs, float_dtype,
                              set_affine, widths)
from jno_flax.nn._mlp import Activation


class PirateBlock(nnx.Module):
    """One adaptive residual block of :class:`PirateNet` (``width`` in and out)."""

    def __init__(self, width: int, hidden: int, *, act, kw: dict):
        self.dense_1 = dense(width, hidden, **kw)
        self.dense_2 = dense(hidden, hidden, **kw)
        self.dense_3 = dense(hidden, width, **kw)
        self.alpha = nnx.Param(jnp.zeros((), float_dtype(kw["param_dtype"])))
        self.act = act

    def __call__(self, x: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
        f = self.act(self.dense_1(x))
        z = f * u + (1 - f) * v
        g = self.act(self.dense_2(z))
        z = g * u + (1 - g) * v
        h = self.act(self.dense_3(z))
        alpha = self.alpha[...]
        return alpha * h + (1 - alpha) * x


class PirateNet(nnx.Module):
    """Physics-informed residual adaptive network::

        Φ = embedding(x),   U = σ(Φ W_u + b_u),   V = σ(Φ W_v + b_v),   x¹ = Φ
        f = σ(x^l W₁ + b₁),  z₁ = f ⊙ U + (1 - f) ⊙ V
        g = σ(z₁ W₂ + b₂),   z₂ = g ⊙ U + (1 - g) ⊙ V
        h = σ(z₂ W₃ + b₃),   x^{l+1} = α_l h + (1 - α_l) x^l          (l = 1 .. depth)
        u(x) = x^{depth+1} W + b

    The gates ``α_l`` (``blocks[l].alpha``) start at zero, so at initialisation the network is
    the linear map ``Φ W + b`` of its embedding, and :meth:`pi_init` can fit ``W, b`` to data
    by least squares (the paper's physics-informed initialisation). ``embedding`` is any module
    declaring ``in_features``/``out_features`` (default: ``FourierFeatures(in_features,
    hidden, scale=1.0)``); ``activation`` and ``rwf`` as in :class:`~jno_flax.nn.MLP`.

    >>> net = PirateNet(2, 1, hidden=64, depth=2, rngs=nnx.Rngs(0))
    """

    def __init__(self, in_features: int, out_features: int, *, hidden: int = 256,
                 depth: int = 3, embedding: nnx.Module | None = None,
                 activation: Activation = jnp.tanh, rwf: tuple[float, float] | None = None,
                 param_dtype=None, rngs: nnx.Rngs | None = None):
        check_sizes(in_features=in_features, out_features=out_features, hidden=hidden,
                    depth=depth)
        kw = dense_kwargs(rwf, param_dtype, rngs)
        if embedding is None:
            embedding = FourierFeatures(in_features, hidden + hidden % 2, param_dtype=param_dtype,
                                        rngs=kw["rngs"])
        emb_in, width = widths(embedding, "embedding")
        if emb_in != in_features:
            raise ValueError(f"widths do not chain: the PirateNet takes in_features="
                             f"{in_features} but its embedding ({type(embedding).__name__}) "
                             f"takes in_features={emb_in}.")
        act = _activation(activation)
        self.embedding = embedding
        self.encoder_u = dense(width, hidden, **kw)
        self.encoder_v = dense(width, hidden, **kw)
        self.blocks = nnx.List([PirateBlock(width, hidden, act=act, kw=kw) for _ in range(depth)])
        self.output_layer = dense(width, out_features, **kw)
        self.activation = act
        self.in_features, self.out_features = in_features, out_features

    def features(self, x: jax.Array) -> jax.Array:
        """The last hidden state ``x^{depth+1}`` (``Φ(x)`` while every gate is zero)."""
        check_width(self, self.in_features, x)
        phi = self.embedding(x)
        u = self.activation(self.encoder_u(phi))
        v = self.activation(self.encoder_v(phi))
        for block in self.blocks:
            phi = block(phi, u, v)
        return phi

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_layer(self.features(x))

    def pi_init(self, points, targets) -> float:
        """Set the output layer to the least-squares fit of ``targets`` from the current
        :meth:`features` at ``points`` (``(N, in_features)`` and ``(N, out_features)``; a 1-D
        target is one output). Returns the relative residual ``‖F W + b - Y‖ / ‖Y‖``.

        Typical use: the initial condition held constant in time over the domain's points,
        ``net.pi_init(xt, u0(xt[:, 0]))``. Fitted at ``t = 0`` alone, the least-squares
        weights are free in directions the features take only for ``t > 0`` and can be huge
        there (a relative error of 1e5 on Burgers).
        """
        p = np.asarray(points, np.float64)
        y = np.asarray(targets, np.float64)
        y = y[:, None] if y.ndim == 1 else y
        if p.ndim != 2 or p.shape[1] != self.in_features:
            raise ValueError(f"`points` must have shape (N, {self.in_features}), got "
                             f"{p.shape}.")
        if y.ndim != 2 or y.shape[1] != self.out_features:
            raise ValueError(f"`targets` must have shape (N, {self.out_features}) or (N,), got "
                             f"{np.shape(targets)}.")
        if len(p) != len(y):
            raise ValueError(f"`points` and `targets` must have the same length, got "
                             f"{len(p)} points and {len(y)} targets.")
        dtype = self.output_layer.kernel[...].dtype
        feats = np.asarray(self.features(jnp.asarray(p, dtype)), np.float64)
        design = np.concatenate([feats, np.ones((len(p), 1))], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        set_affine(self.output_layer, jnp.asarray(coef[:-1]), jnp.asarray(coef[-1]))
        return float(np.linalg.norm(design @ coef - y) / max(np.linalg.norm(y), 1e-300))
