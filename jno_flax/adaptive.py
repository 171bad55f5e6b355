"""Adaptive loss weights (also ``jno.fn.adaptive``).

Each scheme takes a list of scalar loss expressions and returns one weight expression per
loss (a :class:`~jno_flax._balancer.Balancer`, which unpacks like a list)::

    w_pde, w_bc = jno.adaptive.relobralo([pde.mse, bc.mse])
    crux = jno.core([w_pde * pde.mse, w_bc * bc.mse, w_pde.tracker(), w_bc.tracker()])

Weights are computed inside the fused training step from that step's losses, enter the loss as
constants (except the trainable ``uncertainty`` weights), and keep their state in the
``TrainState`` (checkpointed, resumed exactly). Randomness comes from the trainer's key.
Every weight is recorded in ``History.trackers`` as ``weights/<scheme><k>/<loss name or i>``
(``<scheme><k>`` is also the key of the balancer's state in ``TrainState.extras``).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

import jno_flax.numpy as jnn
from jno_flax._balancer import AdaptiveWeight, Balancer, float_dtype
from jno_flax._checks import positive_int, positive_number, unit_interval
from jno_flax._evaluate import Evaluator
from jno_flax._expr import Expr
from jno_flax._jacobian import residual_field
from jno_flax._trainable import Model, parameter

__all__ = ["Balancer", "AdaptiveWeight", "relobralo", "softadapt", "dwa", "lr_annealing",
           "ntk", "uncertainty", "causal", "time_slices", "ReLoBRaLo", "SoftAdapt", "DWA",
           "LRAnnealing", "NTKWeights", "Uncertainty", "Causal"]

_EPS = 1e-12


def _count(state) -> jax.Array:
    return state["count"]


# ---------------------------------------------------------------------- ReLoBRaLo
class ReLoBRaLo(Balancer):
    """Relative Loss Balancing with Random Lookback (Bischof & Kraus, 2021).

    With ``bal(t, t') = m · softmax(L(t) / (τ · L(t')))``::

        λ(0) = 1
        λ(t) = α · [ρ λ(t-1) + (1 - ρ) bal(t, 0)] + (1 - α) · bal(t, t-1),  ρ ~ Bernoulli(E[ρ])

    so the weights always sum to ``m``. Defaults: ``alpha=0.99``, ``tau=0.1``,
    ``expected_rho=0.999``. ``ρ`` is drawn with ``jax.random.bernoulli`` from the step's key.
    """

    scheme = "relobralo"

    def __init__(self, losses, alpha: float = 0.99, tau: float = 0.1,
                 expected_rho: float = 0.999):
        super().__init__(losses)
        self.alpha = unit_interval("alpha", alpha)
        self.tau = positive_number("tau", tau)
        self.expected_rho = unit_interval("expected_rho", expected_rho)

    def init(self):
        ones = jnp.ones((self.m,), float_dtype())
        return {"count": jnp.zeros((), jnp.int32), "initial": ones, "previous": ones,
                "weights": ones}

    def update(self, state, losses, key):
        first = _count(state) == 0
        bal_prev = self.m * jax.nn.softmax(losses / (self.tau * state["previous"] + _EPS))
        bal_init = self.m * jax.nn.softmax(losses / (self.tau * state["initial"] + _EPS))
        rho = jax.random.bernoulli(key, self.expected_rho).astype(losses.dtype)
        hist = rho * state["weights"] + (1 - rho) * bal_init
        new = self.alpha * hist + (1 - self.alpha) * bal_prev
        dtype = float_dtype()
        weights = jnp.where(first, jnp.ones_like(new), new).astype(dtype)
        return weights, {"count": state["count"] + 1,
                         "initial": jnp.where(first, losses, state["initial"]).astype(dtype),
                         "previous": losses.astype(dtype), "weights": weights}


def relobralo(losses: Sequence[Expr], alpha: float = 0.99, tau: float = 0.1,
              expected_rho: float = 0.999) -> ReLoBRaLo:
    """ReLoBRaLo weights for ``losses``; see :class:`ReLoBRaLo`."""
    return ReLoBRaLo(losses, alpha=alpha, tau=tau, expected_rho=expected_rho)


# ---------------------------------------------------------------------- SoftAdapt
class SoftAdapt(Balancer):
    """SoftAdapt (Heydari, Thompson & Mehmood, 2019): favour the losses that decrease slowest.

    With rates ``s = L(t) - L(t-1)`` (divided by ``Σ|s|`` when ``normalize``, the paper's
    normalised variant)::

        λ(0) = 1,   λ(t) = m · softmax(β s)            (loss_weighted: ∝ L(t) · exp(β s))

    scaled to sum to ``m``. Defaults: ``beta=0.1``, ``normalize=True``, ``loss_weighted=False``.
    """

    scheme = "softadapt"

    def __init__(self, losses, beta: float = 0.1, normalize: bool = True,
                 loss_weighted: bool = False):
        super().__init__(losses)
        self.beta = positive_number("beta", beta)
        self.normalize, self.loss_weighted = bool(normalize), bool(loss_weighted)

    def init(self):
        return {"count": jnp.zeros((), jnp.int32), "previous": jnp.ones((self.m,), float_dtype())}

    def update(self, state, losses, key):
        s = losses - state["previous"]
        if self.normalize:
            s = s / (jnp.sum(jnp.abs(s)) + _EPS)
        z = jnp.exp(self.beta * (s - jnp.max(s)))
        if self.loss_weighted:
            z = z * losses
        new = self.m * z / (jnp.sum(z) + _EPS)
        weights = jnp.where(_count(state) == 0, jnp.ones_like(new), new).astype(float_dtype())
        return weights, {"count": state["count"] + 1, "previous": losses.astype(float_dtype())}


def softadapt(losses: Sequence[Expr], beta: float = 0.1, normalize: bool = True,
              loss_weighted: bool = False) -> SoftAdapt:
    """SoftAdapt weights for ``losses``; see :class:`SoftAdapt`."""
    return SoftAdapt(losses, beta=beta, normalize=normalize, loss_weighted=loss_weighted)


# ---------------------------------------------------------------------- DWA
class DWA(Balancer):
    """Dynamic Weight Average (Liu, Johns & Davison, 2019)::

        λ(t) = 1 for t < 2,   λ(t) = m · softmax(r / T),   r_i = L_i(t-1) / L_i(t-2)

    Default temperature ``T = 2``.
    """

    scheme = "dwa"

    def __init__(self, losses, temperature: float = 2.0):
        super().__init__(losses)
        self.temperature = positive_number("temperature", temperature)

    def init(self):
        ones = jnp.ones((self.m,), float_dtype())
        return {"count": jnp.zeros((), jnp.int32), "prev1": ones, "prev2": ones}

    def update(self, state, losses, key):
        r = state["prev1"] / (state["prev2"] + _EPS)
        new = self.m * jax.nn.softmax(r / self.temperature)
        weights = jnp.where(_count(state) < 2, jnp.ones_like(new), new).astype(float_dtype())
        return weights, {"count": state["count"] + 1, "prev1": losses.astype(float_dtype()),
                         "prev2": state["prev1"]}


def dwa(losses: Sequence[Expr], temperature: float = 2.0) -> DWA:
    """Dynamic-weight-average weights for ``losses``; see :class:`DWA`."""
    return DWA(losses, temperature=temperature)


# ---------------------------------------------------------------------- gradient based
class _Periodic(Balancer):
    """Weights recomputed every ``period`` steps from parameter derivatives, smoothed.

    The refresh is a periodic event of the training loop (:meth:`refresh`, run before the
    steps ``s = 0, period, 2 period, ...`` like resampling, so the compiled step has no
    ``lax.cond`` for it); between refreshes every step uses the stored weights."""

    def __init__(self, losses, period: int, alpha: float):
        super().__init__(losses)
        self.period = positive_int("period", period, steps=True)
        self.alpha = unit_interval("alpha", alpha)

    @property
    def refresh_period(self) -> int:
        return self.period

    def init(self):
        return {"count": jnp.zeros((), jnp.int32), "weights": jnp.ones((self.m,), float_dtype())}

    def targets(self, ev: Evaluator, params) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def refresh(self, ev, state):
        params = jax.lax.stop_gradient(ev.params)
        new = self.alpha * state["weights"] + (1 - self.alpha) * self.targets(ev, params)
        return {**state, "weights": new.astype(float_dtype())}

    def weights_from(self, ev, state, losses, key):
        return state["weights"], {"count": state["count"] + 1, "weights": state["weights"]}

    def _trained(self, ev: Evaluator) -> set[str]:
        return {ev.registry.name(t) for t in ev.registry.trainables if not t.frozen}


class LRAnnealing(_Periodic):
    """Learning-rate annealing / gradient-norm balancing (Wang, Teng & Perdikaris, 2021).

    Every ``period`` steps, from the parameter gradients ``g_i = ∇θ L_i``::

        mode="norm":      λ̂_i = Σ_j ||g_j|| / ||g_i||                 (gradient-norm balancing)
        mode="max_mean":  λ̂_i = max|g_0| / mean|g_i|,  λ̂_0 = 1         (the 2021 paper)
        λ ← α λ + (1 - α) λ̂

    Defaults: ``period=100``, ``alpha=0.9``, ``mode="norm"``; ``λ(0)`` is the first refresh.
    """

    scheme = "lr_annealing"
    MODES = ("norm", "max_mean")

    def __init__(self, losses, period: int = 100, alpha: float = 0.9, mode: str = "norm"):
        super().__init__(losses, period, alpha)
        if mode not in self.MODES:
            raise ValueError(f"`mode` must be one of {self.MODES}, got {mode!r}.")
        self.mode = mode

    def targets(self, ev, params):
        trained = self._trained(ev)

        def grad_of(loss):
            def f(p):
                sub = ev.child([loss], params={**params, **p})
                return sub.value(loss)
            g = jax.grad(f)({n: params[n] for n in trained})
            return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])

        grads = [grad_of(loss) for loss in self.losses]
        if self.mode == "norm":
            norms = jnp.stack([jnp.linalg.norm(g) for g in grads])
            return jnp.sum(norms) / (norms + _EPS)
        ref = jnp.max(jnp.abs(grads[0]))
        means = jnp.stack([jnp.mean(jnp.abs(g)) for g in grads])
        return (ref / (means + _EPS)).at[0].set(1.0)


def lr_annealing(losses: Sequence[Expr], period: int = 100, alpha: float = 0.9,
                 mode: str = "norm") -> LRAnnealing:
    """Gradient-norm (learning-rate annealing) weights; see :class:`LRAnnealing`."""
    return LRAnnealing(losses, period=period, alpha=alpha, mode=mode)


class NTKWeights(_Periodic):
    """NTK-based weights (Wang, Yu & Perdikaris, 2022).

    Every ``period`` steps, with ``tr K_i = mean_n ||∂r_i(x_n)/∂θ||²`` for the residual field
    ``r_i`` under each loss (``L_i = mean(r_i²)``)::

        λ̂_i = Σ_j tr K_j / tr K_i,    λ ← α λ + (1 - α) λ̂

    Defaults: ``period=100``, ``alpha=0`` (no smoothing, as in the paper). ``model`` selects
    whose parameters (default: the only model the losses use; a masked view works too).
    """

    scheme = "ntk"

    def __init__(self, losses, period: int = 100, alpha: float = 0.0, model: Any = None):
        super().__init__(losses, period, alpha)
        fields = [residual_field(loss, f"`losses[{i}]`") for i, loss in enumerate(self.losses)]
        if model is None:
            from jno_flax._evaluate import Registry
            models = [t for t in Registry(list(self.losses)).trainables if isinstance(t, Model)]
            if len(models) != 1:
                raise ValueError(f"`model` is needed: the losses use {len(models)} models.")
            model = models[0]
        self.jacobians = [f.grad(model) for f in fields]

    def targets(self, ev, params):
        sub = ev.child(self.jacobians, params=params)
        traces = jnp.stack([jnp.sum(jnp.square(sub.value(J))) / J.shape[1]
                            for J in self.jacobians])
        return jnp.sum(traces) / (traces + _EPS)


def ntk(losses: Sequence[Expr], period: int = 100, alpha: float = 0.0,
        model: Any = None) -> NTKWeights:
    """NTK-trace weights; see :class:`NTKWeights`."""
    return NTKWeights(losses, period=period, alpha=alpha, model=model)


# ---------------------------------------------------------------------- trainable weights
class Uncertainty(Balancer):
    """Learnable weights from homoscedastic uncertainty (Kendall, Gal & Cipolla, 2018).

    Trainable log-variances ``s`` (a parameter named ``name``, zeros initially, trained with
    ``optimizer``) give ``λ_i = exp(-s_i) / 2``; the loss must also contain
    ``balancer.penalty = Σ s_i / 2``, which ``jno.core`` checks::

        w = jno.adaptive.uncertainty([pde.mse, bc.mse])
        crux = jno.core([w[0] * pde.mse, w[1] * bc.mse, w.penalty])

    Gradients flow into ``s`` through the weights (this scheme is not a constant weighting).
    """

    scheme = "uncertainty"
    differentiable = True

    def __init__(self, losses, optimizer: optax.GradientTransformation | None = None,
                 name: str = "uncertainty_log_var"):
        m = len(losses) if isinstance(losses, (list, tuple)) else 0
        self.log_var = parameter((max(m, 1),), name=name)
        self.log_var.optimizer(optimizer or optax.adam(1e-3))
        super().__init__(losses)
        self.penalty = (0.5 * jnn.sum(self.log_var)).name(f"{name}_penalty")

    def extra_children(self):
        return (self.log_var,)

    def required_terms(self):
        return {"penalty": self.penalty}

    def weights_from(self, ev, state, losses, key):
        return 0.5 * jnp.exp(-ev.value(self.log_var)), state


def uncertainty(losses: Sequence[Expr], optimizer: optax.GradientTransformation | None = None,
                name: str = "uncertainty_log_var") -> Uncertainty:
    """Learnable uncertainty weights; see :class:`Uncertainty` (add ``.penalty`` to the loss)."""
    return Uncertainty(losses, optimizer=optimizer, name=name)


# ---------------------------------------------------------------------- causality
class Causal(Balancer):
    """Causal weights for time-sliced residual losses (Wang, Sankaran & Perdikaris, 2022).

    For losses ``L_1 .. L_M`` of consecutive time slices (earliest first)::

        λ_1 = 1,    λ_i = exp(-ε Σ_{k<i} L_k)

    recomputed every step from that step's losses (no state). Default ``epsilon=1.0``.
    Build the slices with :func:`time_slices`.
    """

    scheme = "causal"

    def __init__(self, losses, epsilon: float = 1.0):
        super().__init__(losses)
        self.epsilon = positive_number("epsilon", epsilon)

    def update(self, state, losses, key):
        earlier = jnp.concatenate([jnp.zeros((1,), losses.dtype), jnp.cumsum(losses)[:-1]])
        return jnp.exp(-self.epsilon * earlier), state


def causal(losses: Sequence[Expr], epsilon: float = 1.0) -> Causal:
    """Causal weights for time-slice losses; see :class:`Causal`."""
    return Causal(losses, epsilon=epsilon)


def time_slices(residual: Expr, t: Expr, n_slices: int,
                t_range: tuple[float, float] | None = None) -> list[Expr]:
    """Mean squared ``residual`` over ``n_slices`` equal time slices, earliest first.

    Args:
        residual: a field on a space-time point set.
        t: the time variable of that point set.
        n_slices: number of slices (at least two).
        t_range: ``(t0, t1)``; default: the domain's time range.
    """
    from jno_flax._pointset import Variable
    if not isinstance(t, Variable) or t.symbol != "t":
        raise TypeError(f"`t` must be the time variable of a space-time domain, got {t!r}.")
    n = positive_int("n_slices", n_slices, steps=True)
    if n < 2:
        raise ValueError(f"`n_slices` must be at least 2, got {n_slices!r}.")
    t0, t1 = t_range or t.pointset.domain.time
    edges = [t0 + (t1 - t0) * k / n for k in range(n + 1)]
    one = 0 * t + 1        # the indicator in t's dtype (a bare `* 1.0` is the default float)
    out = []
    for k in range(n):
        upper = (t <= edges[k + 1]) if k == n - 1 else (t < edges[k + 1])
        inside = (t >= edges[k]) * upper * one
        out.append((jnn.sum(residual**2 * inside) / jnn.maximum(jnn.sum(inside), 1.0))
                   .name(f"slice_{k}"))
    return out
