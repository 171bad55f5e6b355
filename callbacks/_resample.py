"""Collocation points that move during training, drawn by a resampling strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp

from jno_flax._dtypes import default_float
from jno_flax._checks import positive_int
from jno_flax._evaluate import Evaluator, walk
from jno_flax._expr import Expr
from jno_flax._pointset import PointSet, Variable
from jno_flax._sampling import (check_drawn, check_resamplable, point_data_users, step_key,
                                uniform_points)
from jno_flax.callbacks._callback import Callback, ChunkMetrics, StateUpdate
from jno_flax.callbacks._strategies import RAD, RARD, SHORTHANDS, Draw, ResamplingStrategy

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import Trainer, TrainState


class ResamplePoints(Callback):
    """New collocation points for one point set every ``every_n_train_steps`` steps, drawn
    inside the compiled step from the state's PRNG key by a resampling ``strategy``.

    The points live in ``TrainState.extras["points_<k>"]`` (checkpointed, so a resumed run
    continues bit-identically); trackers, diagnostics and ``crux.eval`` see the current points.
    Steps ``s = n, 2n, ...`` (``n = every_n_train_steps``) train on the new points.

    Strategies (``callbacks/_strategies.py``; a new one is a subclass of
    :class:`~jno_flax.callbacks.ResamplingStrategy`):

    * :class:`~jno_flax.callbacks.Uniform` (``"uniform"``): ``N`` new points uniform in the
      region.
    * :class:`~jno_flax.callbacks.RAD` (``"rad"``, Wu et al. 2023): ``N`` points drawn from
      a uniform pool with probability ``p ∝ |r|^k / mean(|r|^k) + c``, ``r`` the residual
      ``target`` on the pool with the current weights.
    * :class:`~jno_flax.callbacks.RARD` (``"rar-d"``): the points drawn that way are added
      to the current ones. The point set grows, so its shapes change: the trainer places a
      chunk boundary at each resample, draws the new points there (a jitted function of the
      state's key) and compiles the chunk for the new size.
    * :class:`~jno_flax.callbacks.R3` (``"r3"``, Daw et al. 2023): points whose residual is
      above the mean are retained, the others replaced by uniform ones.

    Args:
        target: a residual field (strategies that weigh by the residual), or any field or
            coordinate variable of the point set (``uniform``). Interior and ``"initial"``
            tags can be resampled.
        every_n_train_steps: resampling period in steps.
        strategy: a :class:`~jno_flax.callbacks.ResamplingStrategy`, or the shorthand
            ``"uniform"``, ``"rad"``, ``"rar-d"`` or ``"r3"``.
        pool, k, c, n_add: settings of the ``"rad"`` and ``"rar-d"`` shorthands (see
            :class:`~jno_flax.callbacks.RAD`); a strategy object takes its own.

    >>> resample = ResamplePoints(pde_residual, every_n_train_steps=1000, strategy=RAD(k=2.0))
    """

    def __init__(self, target: Any, every_n_train_steps: int,
                 strategy: str | ResamplingStrategy = "uniform", pool: int | None = None,
                 k: float | None = None, c: float | None = None, n_add: int | None = None):
        strategy = _strategy(strategy, pool=pool, k=k, c=c, n_add=n_add)
        if isinstance(target, PointSet):
            ps = target
        elif isinstance(target, Expr) and target.pointset is not None:
            ps = target.pointset
        else:
            raise TypeError(f"`target` must be a field on a point set (a residual, or a "
                            f"coordinate variable for 'uniform'), got {target!r}.")
        if strategy.needs_residual and (not isinstance(target, Expr)
                                        or isinstance(target, Variable)):
            raise TypeError(f"`target` must be a residual field for strategy="
                            f"{strategy.name!r} (its size sets the sampling density), got "
                            f"{target!r}; a coordinate variable or point set suits "
                            "strategy='uniform'.")
        check_resamplable(ps, "target")
        self.target, self.pointset = target, ps
        #: the resampling strategy, bound to the point set's size
        self.strategy = strategy.bind(ps.n, ps.describe())
        self.every_n_train_steps = positive_int("every_n_train_steps", every_n_train_steps,
                                                steps=True)
        self._key: str | None = None
        self._problem_id: int | None = None
        self._update: StateUpdate | None = None
        self._grow = None

    @property
    def state_key(self) -> str:
        return (f"ResamplePoints[{self.pointset.tag}:{self.strategy.name}"
                f"/{self.every_n_train_steps}]")

    @property
    def grows(self) -> bool:
        """The point set grows (``rar-d``), at chunk boundaries."""
        return self.strategy.grows

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
                    raise ValueError(f"ResamplePoints(strategy={self.strategy.name!r}) grows "
                                     f"{ps.describe()}, "
                                     f"but the tracker {name!r} has a point axis "
                                     f"{tracker.expr.value_shape}; track a reduction of it.")
        if self._problem_id != id(problem):  # the draw functions close over the problem
            self._key, self._problem_id = key, id(problem)
            self._update = StateUpdate(name=key, interval=self.every_n_train_steps,
                                       init=lambda: jnp.asarray(ps.array, default_float()),
                                       update=self._draw(problem, replace=True))
            self._grow = jax.jit(self._draw(problem, replace=False)) if self.grows else None

    @property
    def _rejects(self) -> bool:
        """New points come from rejection sampling (the region is not the image of the cube)."""
        return self.pointset.domain.geometry.acceptance < 1.0

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        """A region the rejection sampler cannot fill in the fit's precision (a polygon far
        from the origin in float32) is refused before the first step."""
        if self._rejects:
            points = trainer.state.extras[self._key]
            probe = jax.jit(lambda k: uniform_points(self.pointset, k, points.shape[0],
                                                     points.dtype))
            check_drawn(probe(jax.random.PRNGKey(0)), self.pointset, type(self).__name__)

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        if self._rejects:
            check_drawn(trainer.state.extras[self._key], self.pointset,
                        f"{type(self).__name__} (steps {int(chunk.steps[0])}.."
                        f"{int(chunk.steps[-1])})")

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
        return self.strategy.size_at(self.pointset.n, step // self.every_n_train_steps
                                     if self.grows else 0)

    def _draw(self, problem: "Problem", replace: bool):
        """``fn(state, batch) -> points``: the strategy's new points, inside the loop
        (``replace``) or at a chunk boundary (a growing set)."""
        ps, key, registry = self.pointset, problem.registry.key(self.pointset), problem.registry

        def draw(state: "TrainState", batch: dict[str, jax.Array]) -> jax.Array:
            current = batch[key]
            n = current.shape[0]  # static: a grown set draws with its own key
            rng = step_key(state, f"resample/{key}" + ("" if replace else f"/{n}"))

            def residual(points: jax.Array) -> jax.Array:
                ev = Evaluator(registry, state.params, {**batch, key: points}, [self.target],
                               extras=state.extras, training=False)
                return jax.lax.stop_gradient(ev.value(self.target))[0]
            new = self.strategy.draw(Draw(
                rng, current, lambda k, count: uniform_points(ps, k, count, current.dtype),
                residual))
            grown = self.strategy.size_at(n, 1) if self.grows else n
            if tuple(new.shape) != (grown,) + current.shape[1:]:
                raise ValueError(f"{self.strategy!r}.draw returned points of shape "
                                 f"{tuple(new.shape)} for {ps.describe()}; expected "
                                 f"{(grown,) + current.shape[1:]} (a strategy that changes the "
                                 "number of points declares `grows` and `size_at`).")
            return new

        return draw

    # ------------------------------------------------------------------ boundaries (rar-d)
    def enter_chunk(self, trainer: "Trainer", state: "TrainState", step: int) -> "TrainState":
        """``rar-d``: the state that starts step ``step``, with the points added by the
        resamples due up to it (none when the state has them already)."""
        if not self.grows:
            return state
        batch = trainer.points
        points = state.extras[self._key]
        if points.shape[0] >= self.size_at(step):
            return state
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


def _strategy(strategy: Any, **settings: Any) -> ResamplingStrategy:
    """``ResamplePoints(strategy=...)`` as a strategy object; the keyword ``settings`` belong
    to the ``"rad"`` and ``"rar-d"`` shorthands."""
    given = {k: v for k, v in settings.items() if v is not None}
    if isinstance(strategy, ResamplingStrategy):
        if given:
            raise ValueError(f"{sorted(given)} are settings of the string strategies; give "
                             f"them to the strategy object instead (e.g. RAD(k=2.0)), got "
                             f"strategy={strategy!r}.")
        return strategy
    if not isinstance(strategy, str) or strategy not in SHORTHANDS:
        raise ValueError(f"`strategy` must be one of {list(SHORTHANDS)} or a "
                         f"ResamplingStrategy, got {strategy!r}.")
    if "n_add" in given and strategy != "rar-d":
        raise ValueError(f"`n_add` is for strategy='rar-d', got n_add={given['n_add']!r} with "
                         f"strategy={strategy!r}.")
    kind = SHORTHANDS[strategy]
    if kind not in (RAD, RARD):
        if given:
            raise ValueError(f"{sorted(given)} are settings of strategy='rad' and 'rar-d', "
                             f"got them with strategy={strategy!r}.")
        return kind()
    return kind(**given)


def _depends_on(expr: Expr, ps: PointSet) -> bool:
    return any(n.pointset is ps for n in walk([expr]))
