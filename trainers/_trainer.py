"""The Lightning-style trainer: fused, compiled chunks of steps driven by callbacks."""

from __future__ import annotations

import contextlib
import inspect
import signal
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jno_flax._checks import positive_int
from jno_flax._evaluate import Evaluator
from jno_flax._problem import Problem
from jno_flax._seed import default_seed
from jno_flax._warnings import warn
from jno_flax.optimizers import Objective
from jno_flax.callbacks._callback import Callback, ChunkMetrics, StateUpdate
from jno_flax.callbacks._logger import Logger
from jno_flax.callbacks._timer import Timer, parse_max_time
from jno_flax.trainers._batches import check_batch_size, draw_minibatch, resolve_batch_sizes
from jno_flax._checkpoint_format import restore
from jno_flax.trainers._chunk import ChunkProgram
from jno_flax.trainers._devices import PointSharding, resolve_devices
from jno_flax.trainers._history import History
from jno_flax.trainers._hooks import (assemble, check_callbacks, collect_updates,
                                      resolve_loggers)
from jno_flax.trainers._lightning import LightningAttributes, unsupported
from jno_flax.trainers._loop import Loop
from jno_flax.trainers._phases import OptimizerPhases, owned
from jno_flax.trainers._precision import (cast_floats, cast_module_constants, check_available,
                                          resolve_precision)
from jno_flax.trainers._processes import Processes, digest_names, run_digests
from jno_flax.trainers._quantities import Quantities, collect
from jno_flax.trainers._residuals import constraint_residuals
from jno_flax.trainers._signals import SIGNALS, DeferredSignals
from jno_flax.trainers._state import TrainState

DEFAULT_CHUNK = 1000
DEFAULT_LEARNING_RATE = 1e-3


def _deleted(state: TrainState) -> bool:
    """True when the state's buffers were donated to a chunk that did not return."""
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))


class Trainer(LightningAttributes):
    """Trains a :class:`~jno_flax.Problem` in compiled chunks of fused steps.

    Steps run inside one ``jax.jit`` per chunk (``lax.scan``, state buffers donated); the
    host sees the per-step losses and in-graph quantities only after a chunk, in step order.
    Chunks end at ``chunk_size`` steps, at ``max_steps``, and wherever a callback asks for a
    boundary (:meth:`Callback.sync_every`, :meth:`Callback.next_boundary`, an optimizer
    phase). The Trainer coordinates: callbacks declare what happens inside the chunks
    (``trainers/_quantities.py``, ``trainers/_chunk.py``) and at their boundaries
    (``trainers/_phases.py``, :meth:`Callback.enter_chunk`); ``trainers/_loop.py`` runs them.

    Args:
        max_steps: total number of steps of the run (see :meth:`fit` for new runs and
            continued ones).
        callbacks: :class:`~jno_flax.callbacks.Callback` instances.
        logger: ``True`` (a :class:`~jno_flax.callbacks.TensorBoardLogger` writing to
            ``<default_root_dir>/default/version_<n>``), ``False``/``None``, a
            :class:`~jno_flax.callbacks.Logger` or a list of them (``trainer.loggers``).
        seed: seed of the state's PRNG key, which draws mini-batches, resampled points and
            stochastic balancers; a full-batch run without those does not depend on it (the
            initial weights come from the networks' ``nnx.Rngs``, the points from the
            domains' ``seed``). Default: the seed of ``jno_flax.seed_everything`` (0).
        default_root_dir: where loggers, checkpoints and figures go by default; ``"runs"``.
        max_time: stop once this much training time has passed (a ``timedelta``, seconds,
            ``"DD:HH:MM:SS"`` or a dict of ``timedelta`` arguments), at a chunk boundary,
            counted across resumes (:class:`~jno_flax.callbacks.Timer`).
        chunk_size: longest fused chunk (default 1000 steps).
        log_every_n_steps: logging period used by loggers and monitors.
        enable_progress_bar: add a :class:`~jno_flax.callbacks.ProgressBar`.
        enable_model_summary: print the parameter tables when ``fit`` starts
            (:class:`~jno_flax.callbacks.ModelSummary`).
        max_record_bytes: memory bound for the per-chunk records of in-graph quantities; long
            chunks are shortened to respect it.
        handle_signals: defer SIGTERM and SIGINT to the end of the running chunk (checkpoint
            callbacks save, every end hook runs), then exit: ``SystemExit(SIGTERM_EXIT_CODE)``
            for SIGTERM, ``KeyboardInterrupt`` for SIGINT (see ``trainers/_signals.py``).
            With several processes, SIGTERM on any of them stops all at the same step
            (JAX's preemption sync point; see ``trainers/_processes.py``).
        overlap_callbacks: dispatch the next chunk before running the callbacks of the last
            one, so host work overlaps device work (see ``trainers/_loop.py``); the numbers
            are the same either way.
        batch_size: mini-batches: every step trains on a random subset of the points, drawn
            inside the step from the state's PRNG key (without replacement). An int applies
            to every point set with more points; ``{variable: size}`` to the point set of each
            variable (``{x: 1024}``). Trackers, diagnostics and ``crux.eval`` use all points.
        enable_checkpointing: as in Lightning, add a ``ModelCheckpoint()`` when the callbacks
            hold none: the last checkpoint of every fit in the run's version folder
            (``runs/default/version_<n>/checkpoints``), which ``fit(..., ckpt_path="last")``
            resumes from (also from a new Trainer: it finds the newest version).
        precision: ``"32-true"`` or ``"64-true"`` (also ``32``, ``64``): the float dtype of
            the fit's points, parameters and optimizer states, cast when it starts (see
            ``trainers/_precision.py``); ``None``: the dtypes the problem was built with.
        devices: ``"auto"`` (every device of ``jax.devices()``: of every process after
            ``jax.distributed.initialize()``), a number of devices or a list of jax devices.
            With several, the points are sharded along a ``"points"`` mesh axis and the state
            is replicated (see ``trainers/_devices.py``); the losses equal the one-device
            run's to float round-off. With several processes, every process runs the same
            script; only process 0 writes logs, figures and the progress bar, and every
            process returns the same History (see ``trainers/_processes.py``).
        nested_intervals: place periodic in-graph events (interval quantities, resampling) at
            the starts of nested blocks instead of a per-step ``lax.cond`` (see
            ``trainers/_chunk.py``); ``None`` (default): on accelerators, not on CPU.
        sigterm_exit_code: the exit status of a run stopped by SIGTERM after saving (a
            clean, resumable stop); default 0.

    A step whose loss or updated parameters are not finite is recorded (its loss in the
    History) but not applied: the parameters, optimizer and balancer states stay as they were.

    Override points for research code (see ``examples/03_custom_trainer.py``):
    :meth:`configure_optimizers`, :meth:`compute_losses`, :meth:`aggregate_loss`,
    :meth:`apply_gradients` and :meth:`training_step`.
    """

    def __init__(self, max_steps: int, callbacks: Sequence[Callback] = (),
                 logger: bool | Logger | Sequence[Logger] | None = True,
                 seed: int | None = None,
                 default_root_dir: str | None = None, max_time: Any = None,
                 chunk_size: int | None = None, log_every_n_steps: int = 100,
                 enable_progress_bar: bool = True, enable_model_summary: bool = True,
                 max_record_bytes: int = 256 * 2**20, handle_signals: bool = True,
                 overlap_callbacks: bool = True, batch_size: Any = None,
                 devices: Any = "auto", enable_checkpointing: bool = True,
                 precision: str | int | None = None, nested_intervals: bool | None = None,
                 sigterm_exit_code: int = 0, **unknown: Any):
        if unknown:
            raise unsupported(unknown, sorted(set(inspect.signature(Trainer.__init__).parameters)
                                              - {"self", "unknown"}))
        self.max_steps = positive_int("max_steps", max_steps)
        self.user_callbacks = check_callbacks(callbacks)
        self.seed = default_seed(seed)
        self.enable_checkpointing = bool(enable_checkpointing)
        self.default_root_dir = default_root_dir or "runs"
        self.loggers: list[Logger] = resolve_loggers(logger)
        #: the time limit of ``max_time`` (counted across fits of this trainer and resumes)
        self.timer = None if max_time is None else Timer(parse_max_time("max_time", max_time))
        self.chunk_size = positive_int("chunk_size", chunk_size, allow_none=True) or DEFAULT_CHUNK
        self.log_every_n_steps = positive_int("log_every_n_steps", log_every_n_steps)
        self.enable_progress_bar = bool(enable_progress_bar)
        self.enable_model_summary = bool(enable_model_summary)
        self.max_record_bytes = positive_int("max_record_bytes", max_record_bytes)
        self.handle_signals = bool(handle_signals)
        self.overlap_callbacks = bool(overlap_callbacks)
        self.batch_size = check_batch_size(batch_size)
        #: ``"32-true"``, ``"64-true"`` or ``None`` (the problem's dtypes)
        self.precision = resolve_precision(precision)
        #: where the run's points and state live (``devices``)
        self.sharding = PointSharding(resolve_devices(devices))
        #: the processes of a ``jax.distributed`` run (one without it)
        self.processes = Processes()
        #: interval events at the start of nested blocks instead of a per-step ``lax.cond``
        self.nested_intervals = (jax.default_backend() != "cpu" if nested_intervals is None
                                 else bool(nested_intervals))
        if isinstance(sigterm_exit_code, bool) or not isinstance(sigterm_exit_code, int):
            raise TypeError(f"`sigterm_exit_code` must be an int exit status, got "
                            f"{sigterm_exit_code!r}.")
        #: the exit status of a run stopped by SIGTERM after saving
        self.sigterm_exit_code = sigterm_exit_code
        # ---- per fit (see `_start`)
        self.problem: Problem | None = None
        self.callbacks: list[Callback] = []
        self.state: TrainState | None = None
        self.history: History | None = None
        #: the in-graph quantities of the fit (``trainers/_quantities.py``)
        self.quantities = Quantities(())
        #: entries of ``TrainState.extras`` the callbacks own (resampled points)
        self.updates: list[StateUpdate] = []
        #: the optimizer transforms of the fit, step by step (``trainers/_phases.py``)
        self.phases = OptimizerPhases({})
        #: ``{point-set key: mini-batch size}`` of the current fit
        self.batch_sizes: dict[str, int] = {}
        #: the fit's points by point-set key, placed on the devices
        self.points: dict[str, jax.Array] = {}
        self.should_stop = False
        self.stop_reason: str | None = None
        self.received_signal: signal.Signals | None = None
        #: the checkpoint this fit resumed from (``None`` when it did not), as in Lightning
        self.ckpt_path: str | None = None
        self._callback_metrics: dict[str, float] = {}
        self._step = 0
        self._skipped_at_start = 0
        self._checkpoint = None
        self._cache: dict[Any, tuple[Any, Any, int]] = {}
        self._tracing: dict[str, optax.GradientTransformation] | None = None
        self._default_tx = optax.adam(DEFAULT_LEARNING_RATE)

    @property
    def SIGTERM_EXIT_CODE(self) -> int:  # noqa: N802 - the name before `sigterm_exit_code`
        """Deprecated spelling of :attr:`sigterm_exit_code`."""
        return self.sigterm_exit_code

    @property
    def logger(self) -> Logger | None:
        """The first logger (``None`` without loggers), as in Lightning."""
        return self.loggers[0] if self.loggers else None

    # ------------------------------------------------------------------ public state
    @property
    def global_step(self) -> int:
        """Steps done (of the live state); known on the host without waiting for the device."""
        return self._step

    @property
    def global_rank(self) -> int:
        """This process's index among the ``jax.distributed`` processes (0 without them)."""
        return self.processes.index

    @property
    def world_size(self) -> int:
        """The number of processes of the run (``jax.process_count()``)."""
        return self.processes.count

    @property
    def is_global_zero(self) -> bool:
        """True on process 0, the one that writes logs, figures and the progress bar."""
        return self.processes.index == 0

    @property
    def txs(self) -> dict[str, optax.GradientTransformation]:
        """The optax transform of every trained trainable: inside :meth:`training_step`,
        those of the chunk being compiled; elsewhere those of :attr:`global_step`."""
        return self._tracing if self._tracing is not None else self.transforms_at(self._step)

    def transforms_at(self, step: int) -> dict[str, optax.GradientTransformation]:
        """The optax transform of every trained trainable at ``step``: those of
        :meth:`configure_optimizers`, replaced by the callbacks' optimizer phases
        (``SwitchOptimizer``) whose step is reached."""
        return self.phases.at(step)

    def logged_names(self) -> list[str]:
        """What ``fit`` records and callbacks may refer to (``monitor``, ``metrics``):
        ``"loss"``, the constraint names and the in-graph quantity names."""
        return ["loss"] + list(self.problem.constraints) + self.quantities.names

    def stop(self, reason: str) -> None:
        """Ask training to stop after the current chunk, recording ``reason``."""
        if not self.should_stop:
            self.should_stop = True
            self.stop_reason = reason

    def active_callbacks(self) -> list[Callback]:
        """The callbacks whose hooks run on this process: all on process 0; on the others,
        those not marked ``global_zero_only`` (loggers, figures, the progress bar)."""
        return [cb for cb in self.callbacks if self.is_global_zero or not cb.global_zero_only]

    def default_checkpoint(self) -> Callback:
        """The ``ModelCheckpoint`` of ``enable_checkpointing`` (kept across the fits of this
        trainer, so a continued run keeps its folder)."""
        from jno_flax.callbacks import ModelCheckpoint
        if self._checkpoint is None:
            self._checkpoint = ModelCheckpoint()
        return self._checkpoint

    # ------------------------------------------------------------------ override points
    def configure_optimizers(self, problem: Problem) -> dict[str, optax.GradientTransformation]:
        """One optax transform per trainable name (frozen ones are left out).

        Default: each trainable's own ``.optimizer(tx)``, else ``optax.adam(1e-3)``, combined
        with the parameter groups of its masked views (``model.mask(f).optimizer(tx)``).
        """
        txs = {}
        for t in problem.trainables:
            if not t.frozen:
                txs[problem.registry.name(t)] = t.transform(self._default_tx)
        return txs

    def compute_losses(self, problem: Problem, ev: Evaluator) -> dict[str, jax.Array]:
        """Constraint losses by name, evaluated with ``ev`` (inside the fused step)."""
        return {name: ev.value(expr) for name, expr in problem.constraints.items()}

    def aggregate_loss(self, losses: dict[str, jax.Array]) -> jax.Array:
        """Total loss from the constraint losses; default: their sum."""
        return sum(losses.values())

    def apply_gradients(self, state: TrainState, grads: dict[str, Any],
                        value: jax.Array | None = None,
                        value_fn: Callable[[dict[str, Any]], jax.Array] | None = None
                        ) -> TrainState:
        """Optimizer update of every trained trainable; returns the new state (step unchanged).

        ``value`` is the step's total loss and ``value_fn(params)`` the total loss of the
        current batch as a function of the trained parameters ``{name: params}`` (trackers
        left out). Both reach every transform's ``update`` as optax's extra arguments
        (``value``, ``grad``, ``value_fn``; ``optax.with_extra_args_support``), so
        ``optax.lbfgs()`` and ``optax.scale_by_zoom_linesearch`` chains work; for the
        transform of trainable ``n``, ``value_fn`` varies ``n``'s parameters only. An
        :class:`~jno_flax.optimizers.Objective` ``value_fn`` also carries the residuals of a
        mean-square loss (``value_fn.residuals``) for Gauss–Newton transforms (``engd``).
        """
        params, opt_state = dict(state.params), dict(state.opt_state)
        trained = {n: state.params[n] for n in grads}
        if value_fn is not None and not isinstance(value_fn, Objective):
            value_fn = Objective(value_fn)
        txs = self.txs
        for name, g in grads.items():
            extra = {}
            if value is not None and value_fn is not None:
                extra = {"value": value, "grad": g,
                         "value_fn": value_fn.restricted(trained, name)}
            tx = optax.with_extra_args_support(txs[name])
            updates, opt_state[name] = tx.update(g, state.opt_state[name], state.params[name],
                                                 **extra)
            params[name] = optax.apply_updates(state.params[name], updates)
        return state.replace(params=params, opt_state=opt_state)

    def training_step(self, state: TrainState, batch: dict[str, jax.Array]
                      ) -> tuple[TrainState, dict[str, Any]]:
        """One step inside the fused chunk: losses, gradients, update.

        Returns the new state and this step's outputs ``{"loss", "losses", "values"}``, where
        ``values`` holds the every-step in-graph quantities (computed from the same forward
        pass as the loss).
        """
        problem = self.problem
        every_step = self.quantities.dense
        outputs = list(problem.constraints.values()) + [q.expr for q in every_step]
        trained = {n: p for n, p in state.params.items() if n in self.txs}
        fixed = {n: p for n, p in state.params.items() if n not in self.txs}

        def loss_fn(trained_params):
            ev = Evaluator.of_state(problem.registry, state, batch, outputs,
                                    params={**fixed, **trained_params})
            losses = self.compute_losses(problem, ev)
            values = {q.name: jax.lax.stop_gradient(ev.value(q.expr)) for q in every_step}
            return self.aggregate_loss(losses), (losses, values, ev.updates)

        (total, (losses, values, updates)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(trained)
        residuals, why_not = self._residuals(problem, state, batch, fixed)
        state = self.apply_gradients(state, grads, value=total, value_fn=Objective(
            lambda p: loss_fn(p)[0], residuals, why_not))
        return state.replace(step=state.step + 1, extras={**state.extras, **updates}), {
            "loss": total, "losses": losses, "values": values}

    def _residuals(self, problem: Problem, state: TrainState, batch: dict[str, jax.Array],
                   fixed: dict[str, Any]) -> tuple[Callable | None, str]:
        """The residuals of a plain sum of mean squares (``trainers/_residuals.py``), or
        ``None`` and the reason."""
        if (type(self).compute_losses is not Trainer.compute_losses
                or type(self).aggregate_loss is not Trainer.aggregate_loss):
            return None, ("Gauss–Newton methods (`engd`) need every constraint to be a mean "
                          f"square and the loss their plain sum; {type(self).__name__} "
                          "overrides `compute_losses` or `aggregate_loss`.")
        return constraint_residuals(problem, state, batch, fixed)

    def minibatch(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The points step ``state.step`` trains on: a random subset of each point set with a
        mini-batch size (``Trainer(batch_size=...)``), all points of the others."""
        return draw_minibatch(self.batch_sizes, state, batch)

    # ------------------------------------------------------------------ fit
    def fit(self, problem: Problem, ckpt_path: str | None = None) -> History:
        """Train ``problem`` up to ``max_steps`` and return its :class:`History`.

        As in Lightning, a new Trainer starts a new run: step 0, fresh optimizer states, RNG
        and adaptive-weight states, a new History, from the problem's live weights (a trained
        problem's weights, or ``problem.load_weights(...)``). Calling ``fit`` again on the same
        Trainer and problem continues that run (raise ``max_steps`` first); the step, optimizer
        states and History come back from a checkpoint only through ``ckpt_path``.
        ``problem.solve(n)`` instead always continues (``n`` more steps).

        Args:
            problem: from ``jno.core([...])``.
            ckpt_path: resume from a checkpoint first: ``"last"`` (the newest valid one of the
                trainer's ``ModelCheckpoint``; none yet: a warning and a fresh start),
                ``"best"`` (by its monitor) or the path of a checkpoint step directory.
        """
        return self._fit(problem, ckpt_path, continue_run=self.problem is problem)

    def continue_fit(self, problem: Problem) -> History:
        """Train ``problem`` on from its live run (``problem.state`` and ``problem.history``,
        when it has one) up to ``max_steps``: what ``problem.solve`` does."""
        return self._fit(problem, None, continue_run=True)

    def _fit(self, problem: Problem, ckpt_path: str | None, continue_run: bool) -> History:
        if not isinstance(problem, Problem):
            raise TypeError(f"`problem` must be a jno_flax.Problem (from `jno.core([...])`), "
                            f"got {type(problem).__name__}.")
        problem.check_precision()
        self.problem, self.ckpt_path = problem, None
        self.should_stop, self.stop_reason, self.received_signal = False, None, None
        self.callbacks = assemble(self, problem)
        started = time.perf_counter()
        # several processes: SIGTERM is JAX's preemption notice (see trainers/_processes.py)
        signals = (signal.SIGINT,) if self.processes.several else SIGNALS
        with DeferredSignals(self, enabled=self.handle_signals, signals=signals):
            try:
                self._start(problem, continue_run and problem.state is not None)
                if ckpt_path is not None:
                    self._restore(problem, ckpt_path)
                self._train(problem)
                self._call("on_train_end")
                self.publish_weights(problem)
                self._call("on_fit_end")
            except BaseException as exc:
                self._call("on_exception", exc)
                raise
            finally:
                if self.history is not None:
                    self.history.wall_time += time.perf_counter() - started
                    self.history.stop_reason = self.stop_reason
                if self.state is not None and not _deleted(self.state):
                    self.publish_weights(problem)
                self._call("teardown", "fit")
        self._report_skipped()
        if self.received_signal == signal.SIGTERM:
            raise SystemExit(self.sigterm_exit_code)
        if self.received_signal == signal.SIGINT:
            raise KeyboardInterrupt
        return self.history

    def _report_skipped(self) -> None:
        """Warn about steps of this fit that were not applied (non-finite loss or update)."""
        skipped = self.history.skipped_steps[self._skipped_at_start:]
        if len(skipped):
            warn(f"{len(skipped)} step(s) of this fit had a non-finite loss or update and were "
                 f"not applied (first: step {int(skipped[0])}); every trainable kept its "
                 "values on those steps. See `history.skipped_steps`, and `TerminateOnNaN` "
                 "to stop at the first.", RuntimeWarning)

    def _start(self, problem: Problem, continue_run: bool) -> None:
        """Everything ``fit`` does before training: ``setup``, optimizers, the initial state,
        the History, the quantities, ``on_fit_start``. With several processes, they then
        compare what they built; an exception on one of them is re-raised there and reported
        by the others, so that none waits in a collective for a process that is gone."""
        failure = None
        try:
            self._build(problem, continue_run)
            self._call("on_fit_start")
        except Exception as err:  # noqa: BLE001 - re-raised by check_start, on every process
            if not self.processes.several:
                raise
            failure = err
        if self.processes.several:
            self.processes.check_start(digest_names(self),
                                       None if failure is not None else run_digests(self),
                                       failure)
            self.history.run_id = self.processes.same_text(self.history.run_id or "")

    def _build(self, problem: Problem, continue_run: bool) -> None:
        """``setup``, then what the callbacks declare, the initial state and the History."""
        if not self.is_global_zero:   # a logger's setup only chooses its version, which
            for lg in self.loggers:   # a default checkpoint directory derives from
                lg.setup(self, problem, "fit")
        self._call("setup", "fit")
        base = self.configure_optimizers(problem)
        self.phases = OptimizerPhases(base, [
            (type(cb).__name__, cb.optimizer_phases(self, list(base))) for cb in self.callbacks])
        self.batch_sizes = resolve_batch_sizes(self.batch_size, problem)
        self.updates = collect_updates(self.callbacks, self, problem)
        check_available(self.precision)
        cast_module_constants(problem.trainables, self.precision)
        self.state = cast_floats(self._initial_state(problem, continue_run), self.precision)
        self._step = int(self.state.step)
        self.history = (problem.history if continue_run and problem.history is not None
                        else History(list(problem.constraints), run_id=History.new_run_id()))
        self.quantities = Quantities(collect(self.callbacks, self, problem),
                                     minibatched=bool(self.batch_sizes))

    def settings(self) -> dict[str, Any]:
        """The trainer's settings (every process of a run must have the same)."""
        return {"max_steps": self.max_steps, "seed": self.seed, "chunk_size": self.chunk_size,
                "log_every_n_steps": self.log_every_n_steps,
                "enable_progress_bar": self.enable_progress_bar,
                "enable_model_summary": self.enable_model_summary,
                "max_record_bytes": self.max_record_bytes,
                "handle_signals": self.handle_signals,
                "overlap_callbacks": self.overlap_callbacks,
                "nested_intervals": self.nested_intervals,
                "default_root_dir": self.default_root_dir,
                "max_time": None if self.timer is None else self.timer.duration.total_seconds(),
                "precision": self.precision,
                "sigterm_exit_code": self.sigterm_exit_code}

    # ------------------------------------------------------------------ state
    def _initial_state(self, problem: Problem, continue_run: bool) -> TrainState:
        """The state to start from: the live modules' weights (so edits of ``model.module``
        or ``problem.load_weights`` between fits count); when continuing, the step, RNG,
        balancer states and the optimizer states whose structure still fits from
        ``problem.state``; otherwise a fresh state at step 0. Every leaf is a distinct
        buffer: the state is donated to the compiled chunks, and the modules and
        ``problem.state`` stay usable (and consistent) if a chunk fails."""
        registry = problem.registry
        prev = owned(problem.state) if continue_run else None
        params = {registry.name(t): owned(t.params()) for t in registry.trainables}
        start = 0 if prev is None else int(prev.step)
        opt_state = self.phases.initial(params, start, None if prev is None else prev.opt_state)
        extras = owned({**registry.initial_extras(), **{u.name: u.init() for u in self.updates}})
        if prev is not None:
            return prev.replace(params=params, opt_state=opt_state,
                                extras={**extras, **prev.extras})
        return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=opt_state,
                          rng=jax.random.PRNGKey(self.seed), extras=extras)

    def enter_chunk(self, state: TrainState, step: int) -> TrainState:
        """The state a chunk starting at ``step`` begins with: the optimizer states of a
        phase that starts there, then every callback's :meth:`Callback.enter_chunk`."""
        state = state.replace(opt_state=self.phases.enter(state.params, state.opt_state, step))
        for cb in self.callbacks:
            state = cb.enter_chunk(self, state, step)
        return state

    def restore_target(self, step: int, precision: str | None) -> TrainState:
        """The structure of the state in a checkpoint of ``step`` written in ``precision``:
        the optimizer states of the step before it, the callbacks' entries
        (:meth:`Callback.restore_target`), the checkpoint's float dtypes."""
        state = self.state.replace(opt_state=self.phases.target(
            self.state.params, self.state.opt_state, self.global_step, step))
        for cb in self.callbacks:
            state = cb.restore_target(self, state, step)
        # several devices: orbax reads the state straight into its replicated layout
        return self.sharding.abstract(cast_floats(state, precision))

    def _restore(self, problem: Problem, ckpt_path: str) -> None:
        """Assign the state, History and callback states a checkpoint holds."""
        if self.processes.several:
            self.processes.check_checkpoint(ckpt_path, self.callbacks)
        restored = restore(ckpt_path, self.callbacks, problem, self.restore_target)
        if restored is None:  # "last" / "best" with no checkpoint yet: a fresh start
            return
        # restored exactly in the checkpoint's precision, then cast to this fit's
        self.state = cast_floats(restored.state, self.precision)
        self.history = restored.history
        self._step = int(self.state.step)
        self.ckpt_path = restored.path
        if self._step > self.max_steps:
            warn(f"`max_steps` is {self.max_steps}, below the step {self._step} of the "
                 f"checkpoint {restored.path!r}: nothing is trained, and `fit` returns the "
                 f"checkpoint's state at step {self._step}. Raise `max_steps` to train on.",
                 UserWarning)
        for cb in self.callbacks:
            if cb.state_key in restored.callbacks:
                cb.load_state_dict(restored.callbacks[cb.state_key])
        self._call("on_load_checkpoint", restored.checkpoint)
        self.publish_weights(problem)

    def publish_weights(self, problem: Problem) -> None:
        """Make the problem reflect the live run: a copy of the state in ``problem.state``,
        its parameters in the modules (``model.module``, so ``problem.eval`` sees them) and the
        History in ``problem.history``. The one place that writes them: after every chunk,
        after a restore, and when ``fit`` ends or is interrupted, so the three always agree.
        A copy, because the live state's buffers are donated to the next chunk; with several
        devices, a copy on this process's first device, so that ``problem.eval`` and plotting
        callbacks run on one process alone."""
        state = self.sharding.local(self.state)
        problem.state, problem.history = state, self.history
        for t in problem.trainables:
            nnx.update(t.module, state.params[problem.registry.name(t)])

    def advance(self, state: TrainState, step: int, chunk: ChunkMetrics | None = None) -> None:
        """The live state is ``state`` after ``step`` steps; ``chunk``: the records of the
        chunk that led there (appended to the History, the metrics and the problem)."""
        self.state, self._step = state, step
        if chunk is not None:
            self.history.record_chunk(chunk)
            self._update_metrics(chunk)
            self.publish_weights(self.problem)

    # ------------------------------------------------------------------ compiled chunks
    @contextlib.contextmanager
    def _transforms(self, txs: dict[str, optax.GradientTransformation]) -> Iterator[None]:
        """:attr:`txs` is ``txs`` while a chunk's step is traced."""
        self._tracing = txs
        try:
            yield
        finally:
            self._tracing = None

    def compiled(self, state: TrainState, s0: int) -> tuple[Any, ChunkProgram, int]:
        """The jitted chunk runner for a chunk from ``s0`` with ``state`` (one compilation per
        distinct chunk length and phase, reused by later ``fit`` calls), its program and the
        longest chunk the record memory bound allows."""
        txs = self.transforms_at(s0)
        signature = (id(self.problem), self.quantities.signature(), self.nested_intervals,
                     tuple((n, id(tx)) for n, tx in txs.items()),
                     tuple((u.name, u.interval, id(u.update)) for u in self.updates),
                     tuple(sorted(self.batch_sizes.items())), jax.tree.structure(state))
        if signature not in self._cache:
            def step(st: TrainState, points: dict) -> tuple[TrainState, dict]:
                with self._transforms(txs):
                    return self.training_step(st, self.minibatch(st, points))
            out_struct = jax.eval_shape(lambda st: step(st, self.points)[1], state)
            program = ChunkProgram(
                step, lambda qs, st, pts: Quantities.evaluate(self.problem, qs, st, pts),
                self.quantities.sparse, [u for u in self.updates if u.in_loop],
                lambda q: Quantities.struct(q, state), self.sharding, self.nested_intervals)
            run = jax.jit(program(), static_argnums=(2, 3), donate_argnums=0)
            self._cache = {signature: (run, program, out_struct)}  # one: old ones pin a problem
        run, program, out_struct = self._cache[signature]
        longest = min(self.chunk_size, max(1, self.max_steps - s0))
        return run, program, self.quantities.capacity(out_struct, state, self.max_record_bytes,
                                                      longest)

    def _train(self, problem: Problem) -> None:
        """Run chunks until ``max_steps`` or a stop (``trainers/_loop.py``)."""
        self.points = self.sharding.place_points(cast_floats(problem.registry.batch(),
                                                             self.precision))
        self.state = self.sharding.replicate(self.state)
        self._skipped_at_start = len(self.history.skipped_steps)
        loop = Loop(self)
        self._call("on_train_start")
        if self.global_step < self.max_steps:
            loop.run()

    def _call(self, hook: str, *args) -> None:
        for cb in self.active_callbacks():
            getattr(cb, hook)(self, self.problem, *args)
