"""Neural operators: :class:`DeepONet` (per point) and :class:`FNO` (per instance, on a grid)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jno_flax.nn._layers import activation as _activation
from jno_flax.nn._layers import check_sizes, default_rngs, float_dtype


class DeepONet(nnx.Module):
    """An unstacked DeepONet (Lu, Jin, Pang, Zhang & Karniadakis, Nat. Mach. Intell. 2021)::

        G(f)(y)_k = Σ_{i<p} b_{k,i}(f(s_1), ..., f(s_m)) · t_{k,i}(y) + β_k

    ``branch`` maps the ``m = n_sensors`` sensor values of the input function to
    ``p · n_outputs`` coefficients, ``trunk`` maps the ``n_coords`` coordinates to as many basis
    values; ``β`` is a trained bias per output (``bias=True``). Called, per point, on the sensor
    values followed by the coordinates (``wrap(deeponet)(f, x, t)``), it returns
    ``(n_outputs,)``. Under the per-point ``vmap`` the branch depends on no point, so it runs
    once per instance.
    """

    def __init__(self, branch: nnx.Module, trunk: nnx.Module, p: int, *, n_sensors: int,
                 n_coords: int, n_outputs: int = 1, bias: bool = True, param_dtype=None):
        check_sizes(p=p, n_sensors=n_sensors, n_coords=n_coords, n_outputs=n_outputs)
        for arg, module in (("branch", branch), ("trunk", trunk)):
            if not isinstance(module, nnx.Module):
                raise TypeError(f"`{arg}` must be an nnx.Module, got {type(module).__name__}.")
        self.branch, self.trunk = branch, trunk
        self.p, self.n_sensors, self.n_coords, self.n_outputs = p, n_sensors, n_coords, n_outputs
        self.bias = (nnx.Param(jnp.zeros((n_outputs,), float_dtype(param_dtype)))
                     if bias else None)

    #: ``wrap(deeponet)(f, x, t)`` hands the module its inputs apart, not concatenated, so the
    #: trunk never sees the instance axis (it runs once per point, not once per instance)
    takes_separate_inputs = True

    def _part(self, name: str, module: nnx.Module, z: jax.Array) -> jax.Array:
        out = module(z)
        if out.shape != (self.p * self.n_outputs,):
            raise ValueError(f"DeepONet's {name} must return p · n_outputs = "
                             f"{self.p * self.n_outputs} values, got shape {tuple(out.shape)}.")
        return out.reshape(self.n_outputs, self.p)

    def __call__(self, *inputs: jax.Array) -> jax.Array:
        """``deeponet(f, y)`` (sensor values, then coordinates, possibly in several parts) or
        ``deeponet(z)`` with both concatenated."""
        if len(inputs) == 1:
            f, y = inputs[0][:self.n_sensors], inputs[0][self.n_sensors:]
            shapes = (tuple(inputs[0].shape),)
        else:
            f = inputs[0]
            y = jnp.concatenate([jnp.reshape(v, v.shape or (1,)) for v in inputs[1:]], axis=-1)
            shapes = tuple(tuple(v.shape) for v in inputs)
        if f.shape != (self.n_sensors,) or y.shape != (self.n_coords,):
            raise ValueError(
                f"DeepONet expects per point n_sensors={self.n_sensors} sensor values and "
                f"n_coords={self.n_coords} coordinates, got inputs of shapes {shapes}; check "
                "that the input function family has as many sensors as the branch net takes "
                "and that every coordinate is given.")
        b = self._part("branch", self.branch, f)
        t = self._part("trunk", self.trunk, y)
        out = jnp.sum(b * t, axis=-1)
        return out if self.bias is None else out + self.bias[...]


class SpectralConv(nnx.Module):
    """A Fourier layer's spectral convolution (Li et al., ICLR 2021) on a 1-D or 2-D grid::

        (K v)(x) = IFFT( R · FFT(v) )(x),   R: in × out complex weights per kept mode

    keeping the lowest ``modes`` frequencies per axis (in 2-D the positive and negative
    frequencies of the first axis, each with its own weights). Weights are stored as real and
    imaginary parts, drawn uniformly in ``[0, 1/(in·out))`` as in the paper's code.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int], *,
                 rngs: nnx.Rngs | None = None, param_dtype=None):
        check_sizes(in_channels=in_channels, out_channels=out_channels)
        modes = tuple(modes)
        if len(modes) not in (1, 2):
            raise ValueError(f"`modes` must give 1 or 2 axes, got {modes!r}.")
        check_sizes(**{f"modes[{i}]": m for i, m in enumerate(modes)})
        rngs, dtype = default_rngs(rngs), float_dtype(param_dtype)
        self.modes = modes
        corners = 1 if len(modes) == 1 else 2
        shape = (corners, in_channels, out_channels) + modes
        scale = 1.0 / (in_channels * out_channels)
        self.real = nnx.Param(scale * jax.random.uniform(rngs.params(), shape, dtype))
        self.imag = nnx.Param(scale * jax.random.uniform(rngs.params(), shape, dtype))

    def __call__(self, v: jax.Array) -> jax.Array:
        grid = v.shape[:-1]
        if len(grid) != len(self.modes):
            raise ValueError(f"SpectralConv has {len(self.modes)} axes of modes; got an input "
                             f"of shape {tuple(v.shape)} (grid + channels).")
        for n, m in zip(grid, self.modes):
            if m > n // 2 + 1:
                raise ValueError(f"`modes` {self.modes} exceed the grid {grid}: at most "
                                 "n // 2 + 1 modes per axis.")
        w = self.real[...] + 1j * self.imag[...]
        axes = tuple(range(len(grid)))
        vf = jnp.fft.rfftn(v, axes=axes)
        out = jnp.zeros(vf.shape[:-1] + (w.shape[2],), vf.dtype)
        if len(grid) == 1:
            (m,) = self.modes
            out = out.at[:m].set(jnp.einsum("ki,iok->ko", vf[:m], w[0]))
        else:
            m1, m2 = self.modes
            out = out.at[:m1, :m2].set(jnp.einsum("abi,ioab->abo", vf[:m1, :m2], w[0]))
            out = out.at[-m1:, :m2].set(jnp.einsum("abi,ioab->abo", vf[-m1:, :m2], w[1]))
        return jnp.fft.irfftn(out, s=grid, axes=axes).astype(v.dtype)


class FNO(nnx.Module):
    """A Fourier neural operator (Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart &
    Anandkumar, ICLR 2021) on one instance's grid::

        v₀ = P(a(x), x),   v_{l+1} = σ(K_l v_l + W_l v_l),   u = Q(v_L)

    with ``P`` a dense lift of the input channels and the grid coordinates (in ``[0, 1]``) to
    ``width`` channels, ``K_l`` a :class:`SpectralConv`, ``W_l`` a pointwise dense layer, no
    ``σ`` after the last layer, and ``Q`` a two-layer dense projection. ``grid`` is the sensor
    grid's shape; the input is one instance's values, flat ``(prod(grid),)`` or
    ``(*grid, in_channels)``, and so is the output (flat when ``out_channels`` is 1 and the
    input was flat). Applied to a family ``wrap(fno)(f)``, it runs once per instance.
    """

    def __init__(self, in_channels: int, out_channels: int, *, grid: Sequence[int],
                 modes: int | Sequence[int], width: int = 32, depth: int = 4,
                 activation: str | Callable = "gelu", rngs: nnx.Rngs | None = None,
                 param_dtype=None):
        self.grid = tuple(int(g) for g in (grid if isinstance(grid, (tuple, list)) else (grid,)))
        check_sizes(in_channels=in_channels, out_channels=out_channels, width=width,
                    depth=depth, **{f"grid[{i}]": g for i, g in enumerate(self.grid)})
        modes = tuple(modes) if isinstance(modes, (tuple, list)) else (modes,) * len(self.grid)
        if len(modes) != len(self.grid):
            raise ValueError(f"`modes` {modes} must give one count per grid axis {self.grid}.")
        rngs, dtype = default_rngs(rngs), float_dtype(param_dtype)
        kw = dict(rngs=rngs, param_dtype=dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation = _activation(activation)
        self.lift = nnx.Linear(in_channels + len(self.grid), width, **kw)
        self.spectral = nnx.List([SpectralConv(width, width, modes, **kw) for _ in range(depth)])
        self.pointwise = nnx.List([nnx.Linear(width, width, **kw) for _ in range(depth)])
        self.project = nnx.Linear(width, 4 * width, **kw)
        self.output = nnx.Linear(4 * width, out_channels, **kw)

    def __call__(self, a: jax.Array) -> jax.Array:
        flat = a.shape == (math.prod(self.grid),) and self.in_channels == 1
        if not flat and a.shape != self.grid + (self.in_channels,):
            raise ValueError(
                f"FNO expects one instance on the grid {self.grid} with {self.in_channels} "
                f"channel(s): shape {self.grid + (self.in_channels,)}"
                + (f" or ({math.prod(self.grid)},)" if self.in_channels == 1 else "")
                + f"; got {tuple(a.shape)}.")
        v = a.reshape(self.grid + (self.in_channels,))
        coords = jnp.meshgrid(*(jnp.linspace(0.0, 1.0, n, dtype=v.dtype) for n in self.grid),
                              indexing="ij")
        v = self.lift(jnp.concatenate([v] + [c[..., None] for c in coords], axis=-1))
        for i, (k, w) in enumerate(zip(self.spectral, self.pointwise)):
            v = k(v) + w(v)
            if i < len(self.spectral) - 1:
                v = self.activation(v)
        u = self.output(self.activation(self.project(v)))
        return u.reshape(-1) if flat and self.out_channels == 1 else u
