"""The Lightning-style trainer: fused, compiled chunks of steps driven by callbacks."""

from __future__ import annotations

import contextlib
import inspect
import signal
import time
from typing import Any, Iterator, Sequence

import jax
import optax
from flax import nnx

from jno_flax._checkpoint_format import callback_states, restore
from jno_flax._checks import positive_int
from jno_flax._problem import Problem
from jno_flax._seed import default_seed
from jno_flax._warnings import warn
from jno_flax.callbacks._callback import Callback, ChunkMetrics, StateUpdate
from jno_flax.callbacks._logger import Logger
from jno_flax.callbacks._timer import Timer
from jno_flax.trainers._batches import check_batch_size, resolve_batch_sizes
from jno_flax.trainers import _protocol as protocol
from jno_flax.trainers._boundaries import initial_state, restore_target
from jno_flax.trainers._compiled import CompiledChunks
from jno_flax.trainers._devices import PointSharding, resolve_devices
from jno_flax.trainers._history import History
from jno_flax.trainers._hooks import (assemble, check_callbacks, collect_updates,
                                      resolve_loggers)
from jno_flax.trainers._lightning import LightningAttributes, unsupported
from jno_flax.trainers._loop import Loop
from jno_flax.trainers._phases import OptimizerPhases
from jno_flax.trainers._precision import (cast_floats, cast_module_constants, check_available,
                                          resolve_precision)
from jno_flax.trainers._processes import Processes, digest_names, run_digests
from jno_flax.trainers._trackers import Trackers, collect
from jno_flax.trainers._signals import SIGNALS, DeferredSignals
from jno_flax.trainers._state import TrainState
from jno_flax.trainers._step import TrainingStep

DEFAULT_CHUNK = 1000


def _deleted(state: TrainState) -> bool:
    """True when the state's buffers were donated to a chunk that did not return."""
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))


class Trainer(TrainingStep, LightningAttributes):
    """Trains a :class:`~jno_flax.Problem` in compiled chunks of fused steps.

    Steps run inside one ``jax.jit`` per chunk (``lax.scan``, state buffers donated); the
    host sees the per-step losses and in-graph quantities only after a chunk, in step order.
    Chunks end at ``chunk_size`` steps, at ``max_steps``, and wherever a callback asks for a
    boundary (:meth:`Callback.sync_every`, :meth:`Callback.next_boundary`, an optimizer
    phase). The Trainer coordinates: callbacks declare what happens inside the chunks
    (``trainers/_trackers.py``, ``trainers/_chunk.py``) and at their boundaries
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
            variable (``{x: 1024}``), ``{f: size}`` to the functions of a family of input
            functions (``{f: 64}``: 64 instances per step). Trackers, diagnostics and
            ``crux.eval`` use all points and functions.
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
        self.timer = None if max_time is None else Timer.from_max_time(max_time)
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
        self._init_fit_attributes()

    def _init_fit_attributes(self) -> None:
        """The attributes of one fit, before any fit."""
        self.problem: Problem | None = None
        self.callbacks: list[Callback] = []
        self.state: TrainState | None = None
        self.history: History | None = None
        #: the in-graph quantities of the fit (``trainers/_trackers.py``)
        self.trackers = Trackers(())
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
        #: the compiled chunk of the live configuration
        self.chunks = CompiledChunks()
        #: the periodic balancer refreshes of the problem fitted last (``trainers/_hooks.py``)
        self.refreshes: tuple[Any, dict[str, StateUpdate]] = (lambda: None, {})
        self._tracing: dict[str, optax.GradientTransformation] | None = None

    @property
    def SIGTERM_EXIT_CODE(self) -> int:  # noqa: N802 - the earlier spelling, kept
        """Alias of :attr:`sigterm_exit_code` (also settable)."""
        return self.sigterm_exit_code

    @SIGTERM_EXIT_CODE.setter
    def SIGTERM_EXIT_CODE(self, code: int) -> None:  # noqa: N802
        self.sigterm_exit_code = code

    @property
    def quantities(self) -> None:
        """Renamed: see :attr:`trackers`."""
        raise AttributeError("`trainer.quantities` is now `trainer.trackers` (the recorded "
                             "in-graph values, named as in `History.trackers`).")

    # ------------------------------------------------------------------ public state
    @property
    def global_step(self) -> int:
        """Steps done (of the live state); known on the host without waiting for the device."""
        return self._step

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
        return ["loss"] + list(self.problem.constraints) + self.trackers.names

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
        self.history.warn_skipped(since=self._skipped_at_start)
        if self.received_signal == signal.SIGTERM:
            raise SystemExit(self.sigterm_exit_code)
        if self.received_signal == signal.SIGINT:
            raise KeyboardInterrupt
        return self.history

    def _start(self, problem: Problem, continue_run: bool) -> None:
        """Everything ``fit`` does before training: ``setup``, optimizers, the initial state,
        the History, the quantities, ``on_fit_start``. With several processes, they then
        compare what they built; an exception on one of them is re-raised there and reported
        by the others, so that none waits in a collective for a process that is gone."""
        failure = None
        try:
            self._build(problem, continue_run)
            self._call("on_fit_start")
            callback_states(self.callbacks)   # what every checkpoint writes: JSON
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
            (type(cb).__name__, protocol.optimizer_phases(cb, self, list(base)))
            for cb in self.callbacks])
        self.batch_sizes = resolve_batch_sizes(self.batch_size, problem)
        self.updates = collect_updates(self.callbacks, self, problem)
        check_available(self.precision)
        cast_module_constants(problem.trainables, self.precision)
        self.state = cast_floats(initial_state(self, problem, continue_run), self.precision)
        self._step = int(self.state.step)
        self.phases.check(self.state.params)
        self.history = (problem.history if continue_run and problem.history is not None
                        else History(list(problem.constraints), run_id=History.new_run_id()))
        self.trackers = Trackers(collect(self.callbacks, self, problem),
                                     minibatched=bool(self.batch_sizes))

    def settings(self) -> dict[str, Any]:
        """The trainer's settings (every process of a run must have the same)."""
        return {"max_steps": self.max_steps, "seed": self.seed, "chunk_size": self.chunk_size,
                "log_every_n_steps": self.log_every_n_steps,
                "enable_progress_bar": self.enable_progress_bar,
                "enable_model_summary": self.enable_model_summary,
                "enable_checkpointing": self.enable_checkpointing,
                "max_record_bytes": self.max_record_bytes,
                "handle_signals": self.handle_signals,
                "overlap_callbacks": self.overlap_callbacks,
                "nested_intervals": self.nested_intervals,
                "default_root_dir": self.default_root_dir,
                "max_time": None if self.timer is None else self.timer.duration.total_seconds(),
                "precision": self.precision,
                "sigterm_exit_code": self.sigterm_exit_code}

    # ------------------------------------------------------------------ state
    def _restore(self, problem: Problem, ckpt_path: str) -> None:
        """Assign the state, History and callback states a checkpoint holds."""
        if self.processes.several:
            self.processes.check_checkpoint(ckpt_path, self.checkpoint_callbacks)
        restored = restore(ckpt_path, self.checkpoint_callbacks, problem,
                           lambda step, p: restore_target(self, step, p))
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
    def compiling(self, txs: dict[str, optax.GradientTransformation]) -> Iterator[None]:
        """:attr:`txs` is ``txs`` while a chunk's step is traced."""
        self._tracing = txs
        try:
            yield
        finally:
            self._tracing = None

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
