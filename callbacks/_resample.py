"""Collocation points that move during training: uniform resampling, RAD and RAR-D."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp

from jno_flax._checks import positive_int
from jno_flax._evaluate import Evaluator, walk
from jno_flax._expr import Expr
from jno_flax._pointset import PointSet, Variable
from jno_flax._sampling import (check_resamplable, point_data_users, rad_probabilities,
                                step_key, uniform_points)
from jno_flax.callbacks._callback import Callback, StateUpdate

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer, TrainState

STRATEGIES = ("uniform", "rad", "rar-d")


def _nonnegative(arg: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0
            or not math.isfinite(value)):
        raise ValueError(f"`{arg}` must be a non-negative number, got {value!r}; accepted: "
                         "finite values >= 0.")
    return float(value)


class ResamplePoints(Callback):
    """New collocation points for one point set every ``every_n_train_steps`` steps, drawn
    inside the compiled step from the state's PRNG key.

    The points live in ``TrainState.extras["points_<k>"]`` (checkpointed, so a resumed run
    continues bit-identically); trackers, diagnostics and ``crux.eval`` see the current points.
    Steps ``s = n, 2n, ...`` (``n = every_n_train_steps``) train on the new points.

    Strategies (Wu et al. 2023):

    * ``"uniform"``: ``N`` new points uniform in the region.
    * ``"rad"``: ``N`` points drawn without replacement from a fresh uniform pool of ``pool``
      candidates with probability ``p ∝ |r|^k / mean(|r|^k) + c``, ``r`` the residual
      ``target`` evaluated on the pool with the current weights.
    * ``"rar-d"``: the ``n_add`` points drawn that way are added to the current ones. The point
      set grows, so its shapes change: the trainer places a chunk boundary at each resample,
      draws the new points there (a jitted function of the state's key) and compiles the chunk
      for the new size.

    Args:
        target: a residual field (``rad``/``rar-d``), or any field or coordinate variable of
            the point set (``uniform``). Interior and ``"initial"`` tags can be resampled.
        every_n_train_steps: resampling period in steps.
        strategy: ``"uniform"``, ``"rad"`` or ``"rar-d"``.
        pool: candidates per draw for ``rad``/``rar-d`` (default ``10 N``; at least ``N``).
        k, c: the RAD exponent and offset (``k = 1, c = 1`` by default; both >= 0).
        n_add: points ``rar-d`` adds per resample (default ``N // 10``, at least 1).

    >>> ResamplePoints(pde_residual, every_n_train_steps=1000, strategy="rad", k=1.0, c=1.0)
    """

    def __init__(self, target: Any, every_n_train_steps: int, strategy: str = "uniform",
                 pool: int | None = None, k: float = 1.0, c: float = 1.0,
                 n_add: int | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}, got {strategy!r}.")
        if isinstance(target, PointSet):
            ps = target
        elif isinstance(target, Expr) and target.pointset is not None:
            ps = target.pointset
        else:
            raise TypeError(f"`target` must be a field on a point set (a residual, or a "
                            f"coordinate variable for 'uniform'), got {target!r}.")
        if strategy != "uniform" and (not isinstance(target, Expr)
                                      or isinstance(target, Variable)):
            raise TypeError(f"`target` must be a residual field for strategy={strategy!r} "
                            f"(its size sets the sampling density), got {target!r}; a "
                            "coordinate variable or point set suits strategy='uniform'.")
        check_resamplable(ps, "target")
        self.target, self.pointset, self.strategy = target, ps, strategy
        self.every_n_train_steps = positive_int("every_n_train_steps", every_n_train_steps,
                                                steps=True)
        self.k, self.c = _nonnegative("k", k), _nonnegative("c", c)
        n = ps.n
        self.pool = positive_int("pool", pool, allow_none=True) or 10 * n
        if strategy != "uniform" and self.pool < n:
            raise ValueError(f"`pool` must be at least the number of points ({n} in "
                             f"{ps.describe()}), got {pool!r}.")
        self.n_add = positive_int("n_add", n_add, allow_none=True) or max(1, n // 10)
        if n_add is not None and strategy != "rar-d":
            raise ValueError(f"`n_add` is for strategy='rar-d', got n_add={n_add!r} with "
                             f"strategy={strategy!r}.")
        self._key: str | None = None
        self._problem_id: int | None = None
        self._update: StateUpdate | None = None
        self._grow = None

    @property
    def state_key(self) -> str:
        return (f"ResamplePoints[{self.pointset.tag}:{self.strategy}"
                f"/{self.every_n_train_steps}]")

    @property
    def grows(self) -> bool:
        """The point set grows (``rar-d``), at chunk boundaries."""
        return self.strategy == "rar-d"

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        ps = self.pointset
        key = problem.registry.key(ps)  # raises when the problem does not use these points
        users = point_data_users(problem.outputs, ps)
        if users:
            raise ValueError(f"ResamplePoints: the problem matches fields on {ps.describe()} "
                             f"with per-point data arrays ({users}); those rows belong to the "
                             "stored points and cannot follow new ones.")
        if self.grows:
            for name, tracker in problem.trackers.items():
                if ps.n in tracker.expr.value_shape and _depends_on(tracker.expr, ps):
                    raise ValueError(f"ResamplePoints(strategy='rar-d') grows {ps.describe()}, "
                                     f"but the tracker {name!r} has a point axis "
                                     f"{tracker.expr.value_shape}; track a reduction of it.")
        if self._problem_id != id(problem):  # the draw functions close over the problem
            self._key, self._problem_id = key, id(problem)
            self._update = StateUpdate(name=key, interval=self.every_n_train_steps,
                                       init=lambda: jnp.asarray(ps.array, jnp.zeros(()).dtype),
                                       update=self._draw(problem, replace=True))
            self._grow = jax.jit(self._draw(problem, replace=False)) if self.grows else None

    def state_updates(self, trainer: "Trainer", problem: "Problem") -> Sequence[StateUpdate]:
        if self.grows:  # the entry changes at chunk boundaries (enter_chunk)
            return (StateUpdate(self._update.name, self.every_n_train_steps,
                                self._update.init),)
        return (self._update,)

    def initial_points(self) -> StateUpdate:
        """The state entry of the points (its ``init``), also for ``rar-d``."""
        return self._update

    def sync_every(self, trainer: "Trainer") -> int | None:
        return self.every_n_train_steps if self.grows else None

    # ------------------------------------------------------------------ drawing
    def size_at(self, step: int) -> int:
        """The number of points that train step ``step``."""
        if not self.grows:
            return self.pointset.n
        return self.pointset.n + self.n_add * (step // self.every_n_train_steps)

    def _draw(self, problem: "Problem", replace: bool):
        """``fn(state, batch) -> points``: the new points (``replace``) or the current ones
        with ``n_add`` more (``rar-d``)."""
        ps, key, strategy = self.pointset, problem.registry.key(self.pointset), self.strategy
        registry = problem.registry

        def draw(state: "TrainState", batch: dict[str, jax.Array]) -> jax.Array:
            current = batch[key]
            n = current.shape[0]  # static: a grown set draws with its own key
            rng = step_key(state, f"resample/{key}" + ("" if replace else f"/{n}"))
            if strategy == "uniform":
                return uniform_points(ps, rng, n, current.dtype)
            k_pool, k_pick = jax.random.split(rng)
            pool = uniform_points(ps, k_pool, self.pool, current.dtype)
            ev = Evaluator(registry, state.params, {**batch, key: pool}, [self.target],
                           extras=state.extras, training=False)
            residual = jax.lax.stop_gradient(ev.value(self.target))[0]
            p = rad_probabilities(residual, self.k, self.c)
            count = n if replace else self.n_add
            picked = pool[jax.random.choice(k_pick, self.pool, (count,), replace=False, p=p)]
            return picked if replace else jnp.concatenate([current, picked])

        return draw

    # ------------------------------------------------------------------ boundaries (rar-d)
    def enter_chunk(self, trainer: "Trainer", state: "TrainState", step: int) -> "TrainState":
        """``rar-d``: the state that starts step ``step``, with the points added by the
        resamples due up to it (none when the state has them already)."""
        if not self.grows:
            return state
        batch = trainer.points
        points = state.extras[self._key]
        while points.shape[0] < self.size_at(step):
            at = step - step % self.every_n_train_steps
            points = self._grow(state.replace(step=jnp.asarray(at, state.step.dtype)),
                                {**batch, self._key: points})
        return state.replace(extras={**state.extras, self._key: points})

    def restore_target(self, trainer: "Trainer", target: "TrainState", step: int
                       ) -> "TrainState":
        """``rar-d``: a checkpoint of step ``step`` holds the points of step ``step - 1``."""
        if not self.grows:
            return target
        points = target.extras[self._key]
        grown = jax.ShapeDtypeStruct((self.size_at(max(step - 1, 0)),) + points.shape[1:],
                                     points.dtype)
        return target.replace(extras={**target.extras, self._key: grown})


def _depends_on(expr: Expr, ps: PointSet) -> bool:
    return any(n.pointset is ps for n in walk([expr]))
