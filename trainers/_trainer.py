"""The Lightning-style trainer: fused, compiled chunks of steps driven by callbacks."""

from __future__ import annotations

import inspect
import signal
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jno_flax._balancer import AdaptiveWeight
from jno_flax._checks import optax_transform, positive_int
from jno_flax._evaluate import Evaluator
from jno_flax._expr import is_mean_square
from jno_flax._problem import Problem
from jno_flax._seed import default_seed
from jno_flax._warnings import warn
from jno_flax.optimizers import Objective
from jno_flax.callbacks._callback import (Callback, ChunkMetrics, InGraph, StateUpdate,
                                          StepMetrics)
from jno_flax.callbacks._logger import Logger
from jno_flax.callbacks._periodic import EveryNSteps
from jno_flax.callbacks._resample import ResamplePoints
from jno_flax.callbacks._restore import fingerprint, restore
from jno_flax.callbacks._switch import SwitchOptimizer
from jno_flax.trainers._batches import check_batch_size, draw_minibatch, resolve_batch_sizes
from jno_flax.trainers._chunk import ChunkProgram
from jno_flax.trainers._devices import PointSharding, resolve_devices
from jno_flax.trainers._history import History
from jno_flax.trainers._precision import (cast_floats, cast_module_constants, check_available,
                                          resolve_precision)
from jno_flax.trainers._lightning import LightningAttributes, unsupported
from jno_flax.trainers._processes import (Processes, digest_arrays, digest_json,
                                          probe_transform)
from jno_flax.trainers._signals import SIGNALS, DeferredSignals
from jno_flax.trainers._state import TrainState, copy_tree
from jno_flax.callbacks._timer import Timer, parse_max_time

DEFAULT_CHUNK = 1000
DEFAULT_LEARNING_RATE = 1e-3


class _Launch(NamedTuple):
    """A chunk dispatched to the device: steps ``s0 .. end - 1``, its (future) state and
    records, and for an early stop a copy of its first state (``start``) and ``replay(first,
    limit)``, the same compiled chunk run from ``first`` with the steps from ``limit`` on
    changing nothing (so the state after step ``limit - 1`` is bit-identical)."""

    s0: int
    end: int
    program: ChunkProgram
    state: TrainState
    records: Any
    start: TrainState | None
    replay: Callable[[TrainState, int], TrainState]


def _deleted(state: TrainState) -> bool:
    """True when the state's buffers were donated to a chunk that did not return."""
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state))


def owned(tree: Any) -> Any:
    """Copies of ``tree``'s leaves with strong dtypes: distinct buffers (the state is donated
    to the compiled chunks, and some transforms share arrays between leaves) and no weak
    types (optax's line-search info starts weakly typed and would leave the first chunk
    strongly typed, so the next chunk would compile again)."""
    def own(x):
        x = jnp.asarray(x)
        return jnp.array(x, dtype=x.dtype, copy=True)
    return jax.tree.map(own, tree)


class Trainer(LightningAttributes):
    """Trains a :class:`~jno_flax.Problem` in compiled chunks of fused steps.

    Steps run inside one ``jax.jit`` per chunk (``lax.scan``, state buffers donated); the
    host sees the per-step losses and in-graph quantities only after a chunk, in step order.
    Chunks end at ``chunk_size`` steps, at ``max_steps``, and wherever a callback asks for
    the state at a step (:meth:`Callback.sync_every`).

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
            one, so host work overlaps device work (see :meth:`_run`); the numbers are the
            same either way.
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

    A step whose loss or updated parameters are not finite is recorded (its loss in the
    History) but not applied: the parameters, optimizer and balancer states stay as they were.

    Override points for research code (see ``examples/03_custom_trainer.py``):
    :meth:`configure_optimizers`, :meth:`compute_losses`, :meth:`aggregate_loss`,
    :meth:`apply_gradients` and :meth:`training_step`.
    """

    #: exit status of a run stopped by SIGTERM after saving (a clean, resumable stop)
    SIGTERM_EXIT_CODE = 0

    def __init__(self, max_steps: int, callbacks: Sequence[Callback] = (),
                 logger: bool | Logger | Sequence[Logger] | None = True,
                 seed: int | None = None,
                 default_root_dir: str | None = None, max_time: Any = None,
                 chunk_size: int | None = None, log_every_n_steps: int = 100,
                 enable_progress_bar: bool = True, enable_model_summary: bool = True,
                 max_record_bytes: int = 256 * 2**20, handle_signals: bool = True,
                 overlap_callbacks: bool = True, batch_size: Any = None,
                 devices: Any = "auto", enable_checkpointing: bool = True,
                 precision: str | int | None = None, **unknown: Any):
        if unknown:
            raise unsupported(unknown, sorted(set(inspect.signature(Trainer.__init__).parameters)
                                              - {"self", "unknown"}))
        self.max_steps = positive_int("max_steps", max_steps)
        if not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"`callbacks` must be a list of Callback instances, got "
                            f"{type(callbacks).__name__}.")
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(f"`callbacks[{i}]` must be a jno_flax.callbacks.Callback "
                                f"instance, got {type(cb).__name__}: {cb!r}.")
            if isinstance(cb, Logger):
                raise TypeError(f"`callbacks[{i}]` is a logger ({type(cb).__name__}); pass "
                                "loggers with `Trainer(logger=...)`, as in Lightning.")
        self.seed = default_seed(seed)
        self.enable_checkpointing = bool(enable_checkpointing)
        self.default_root_dir = default_root_dir or "runs"
        self.loggers: list[Logger] = self._loggers(logger)
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
        #: ``{point-set key: mini-batch size}`` of the current fit
        self.batch_sizes: dict[str, int] = {}
        #: entries of ``TrainState.extras`` changed inside the loop (resampled points)
        self.updates: list[StateUpdate] = []
        self._growing: list[ResamplePoints] = []
        self.received_signal: signal.Signals | None = None
        #: the checkpoint this fit resumed from (``None`` when it did not), as in Lightning
        self.ckpt_path: str | None = None
        self._callback_metrics: dict[str, float] = {}
        self.user_callbacks = list(callbacks)
        self.callbacks: list[Callback] = []
        self.should_stop = False
        self.stop_reason: str | None = None
        self.state: TrainState | None = None
        self.problem: Problem | None = None
        self.history: History | None = None
        self.quantities: list[InGraph] = []
        self.txs: dict[str, optax.GradientTransformation] = {}
        self._base_txs: dict[str, optax.GradientTransformation] = {}
        self._switches: list[SwitchOptimizer] = []
        #: interval quantities at the start of nested blocks instead of a per-step ``lax.cond``
        #: (see ``trainers/_chunk.py``); default: on accelerators, not on CPU
        self.nested_intervals = jax.default_backend() != "cpu"
        self._step = 0
        self._skipped_at_start = 0
        self._default_checkpoint = None
        self._cache: dict[Any, tuple[Any, Any, int]] = {}
        self._default_tx = optax.adam(DEFAULT_LEARNING_RATE)

    @staticmethod
    def _loggers(logger: Any) -> list[Logger]:
        from jno_flax.callbacks import TensorBoardLogger
        accepted = ("True (a TensorBoardLogger under `default_root_dir`), False/None, a "
                    "jno_flax.callbacks.Logger or a list of them")
        if logger is True:
            return [TensorBoardLogger()]
        if logger is False or logger is None:
            return []
        if isinstance(logger, Logger):
            return [logger]
        if isinstance(logger, (list, tuple)):
            for i, lg in enumerate(logger):
                if not isinstance(lg, Logger):
                    raise TypeError(f"`logger[{i}]` must be a jno_flax.callbacks.Logger, got "
                                    f"{type(lg).__name__}: {lg!r}; accepted: {accepted}.")
            return list(logger)
        raise TypeError(f"`logger` must be {accepted}; got {type(logger).__name__}: "
                        f"{logger!r}.")

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

    def logged_names(self) -> list[str]:
        """What ``fit`` records and callbacks may refer to (``monitor``, ``metrics``):
        ``"loss"``, the constraint names and the in-graph quantity names."""
        return (["loss"] + list(self.problem.constraints)
                + [q.name for q in self.quantities])

    def stop(self, reason: str) -> None:
        """Ask training to stop after the current chunk, recording ``reason``."""
        if not self.should_stop:
            self.should_stop = True
            self.stop_reason = reason

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
        for name, g in grads.items():
            extra = {}
            if value is not None and value_fn is not None:
                extra = {"value": value, "grad": g,
                         "value_fn": value_fn.restricted(trained, name)}
            tx = optax.with_extra_args_support(self.txs[name])
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
        every_step = self._dense_quantities()
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
        """``(residuals, why_not)``: the function ``{trained name: params} -> ρ`` with
        ``loss = ‖ρ‖²`` (every constraint's residual over ``√size``, stacked), or ``None`` and
        the reason when the loss is not a plain sum of mean squares."""
        advice = ("Gauss–Newton methods (`engd`) need every constraint to be a mean square "
                  "(`residual.mse`) and the loss their plain sum")
        if (type(self).compute_losses is not Trainer.compute_losses
                or type(self).aggregate_loss is not Trainer.aggregate_loss):
            return None, (f"{advice}; {type(self).__name__} overrides `compute_losses` or "
                          "`aggregate_loss`.")
        inner = {}
        for name, expr in problem.constraints.items():
            if not is_mean_square(expr):
                return None, (f"{advice}; constraint {name!r} is {expr!r}. Adaptive weights "
                              "are not supported; weight a term through its residual, "
                              "`(c**0.5 * r).mse`.")
            inner[name] = expr.children[0]

        def residuals(trained_params):
            ev = Evaluator.of_state(problem.registry, state, batch, list(inner.values()),
                                    params={**fixed, **trained_params})
            parts = [ev.value(e) for e in inner.values()]
            return jnp.concatenate([jnp.ravel(v) / np.sqrt(v.size) for v in parts])
        return residuals, ""

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

    def _fit(self, problem: Problem, ckpt_path: str | None, continue_run: bool) -> History:
        """``fit``; ``continue_run`` starts from ``problem.state`` and ``problem.history``
        (used by ``fit`` on the same problem and by ``Problem.solve``)."""
        if not isinstance(problem, Problem):
            raise TypeError(f"`problem` must be a jno_flax.Problem (from `jno.core([...])`), "
                            f"got {type(problem).__name__}.")
        problem.check_precision()
        continue_run = continue_run and problem.state is not None
        self.problem = problem
        self.ckpt_path = None
        self.should_stop, self.stop_reason, self.received_signal = False, None, None
        self.callbacks = self._assemble_callbacks(problem)
        started = time.perf_counter()
        stage = "fit"
        # several processes: SIGTERM is JAX's preemption notice (see trainers/_processes.py)
        signals = (signal.SIGINT,) if self.processes.several else SIGNALS
        with DeferredSignals(self, enabled=self.handle_signals, signals=signals):
            try:
                self._start(problem, continue_run, stage)
                if ckpt_path is not None:
                    self._restore(problem, ckpt_path)
                self._run(problem)
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
                self._call("teardown", stage)
        self._report_skipped()
        if self.received_signal == signal.SIGTERM:
            raise SystemExit(self.SIGTERM_EXIT_CODE)
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

    def _start(self, problem: Problem, continue_run: bool, stage: str) -> None:
        """Everything ``fit`` does before training: ``setup``, optimizers, the initial state,
        the History, the quantities, ``on_fit_start``. With several processes, they then
        compare what they built; an exception on one of them is re-raised there and reported
        by the others, so that none waits in a collective for a process that is gone."""
        failure = None
        try:
            if not self.is_global_zero:   # a logger's setup only chooses its version, which
                for lg in self.loggers:   # a default checkpoint directory derives from
                    lg.setup(self, problem, stage)
            self._call("setup", stage)
            self._base_txs = {n: optax_transform(f"configure_optimizers()[{n!r}]", tx)
                              for n, tx in self.configure_optimizers(problem).items()}
            self._switches = sorted((cb for cb in self.callbacks
                                     if isinstance(cb, SwitchOptimizer)),
                                    key=lambda cb: cb.at_step)
            self.batch_sizes = resolve_batch_sizes(self.batch_size, problem)
            self.updates = self._collect_updates(problem)
            start = int(problem.state.step) if continue_run else 0
            self.txs = self.transforms_at(start)
            check_available(self.precision)
            cast_module_constants(problem.trainables, self.precision)
            self.state = cast_floats(self._initial_state(problem, continue_run), self.precision)
            self._step = int(self.state.step)
            self.history = (problem.history if continue_run and problem.history is not None
                            else History(list(problem.constraints), run_id=History.new_run_id()))
            self.quantities = self._collect_quantities(problem)
            self._call("on_fit_start")
        except Exception as err:  # noqa: BLE001 - re-raised by check_start, on every process
            if not self.processes.several:
                raise
            failure = err
        if self.processes.several:
            self.processes.check_start(self._digest_names(),
                                       None if failure is not None else self._digests(problem),
                                       failure)
            self.history.run_id = self.processes.same_text(self.history.run_id or "")

    def _digests(self, problem: Problem) -> dict[str, bytes]:
        """What every process of a run must have built alike (see ``Processes.check_start``)."""
        callbacks = [(type(cb).__name__, cb.state_key, cb.sync_every(self))
                     for cb in self.callbacks]
        phases = sorted({0, *(cb.at_step for cb in self._switches)})
        probes = {f"{n}@{s}": probe_transform(tx, self.state.params[n])
                  for s in phases for n, tx in self.transforms_at(s).items()}
        out = {"problem": digest_json({"fingerprint": fingerprint(problem, self.state),
                                       "quantities": [(q.name, q.interval)
                                                      for q in self.quantities]}),
               "points": digest_arrays(problem.registry.batch()),
               "initial state": digest_arrays(self.state),
               "callbacks": digest_json({"callbacks": callbacks,
                                         "updates": [(u.name, u.interval)
                                                     for u in self.updates],
                                         "switches": phases}),
               "optimizers (their updates on a probe problem)": digest_arrays(probes)}
        settings = {**self.settings(), "devices": [d.id for d in self.sharding.devices],
                    "batch_size": self.batch_sizes}
        out.update({f"setting `{k}`": digest_json(v) for k, v in settings.items()})
        return out

    def _digest_names(self) -> list[str]:
        """The names of :meth:`_digests`, in order (known without building anything)."""
        return (["problem", "points", "initial state", "callbacks",
                 "optimizers (their updates on a probe problem)"]
                + [f"setting `{k}`" for k in [*self.settings(), "devices", "batch_size"]])

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
                "sigterm_exit_code": self.SIGTERM_EXIT_CODE}

    def _restore(self, problem: Problem, ckpt_path: str) -> None:
        """Assign the state, History and callback states a checkpoint holds."""
        def state_for(step: int, precision: str | None) -> TrainState:
            # the optimizers of the step before it, the floats of the checkpoint's precision
            txs = self.transforms_at(max(step - 1, 0))
            extras = dict(self.state.extras)
            for cb in self._growing:  # rar-d: the points trained on by the step before it
                points = extras[cb.initial_points().name]
                extras[cb.initial_points().name] = jax.ShapeDtypeStruct(
                    (cb.size_at(max(step - 1, 0)),) + points.shape[1:], points.dtype)
            state = self.state.replace(extras=extras, opt_state={
                n: (self.state.opt_state[n] if txs[n] is self.txs[n]
                    else jax.eval_shape(txs[n].init, self.state.params[n])) for n in txs})
            # several devices: orbax reads the state straight into its replicated layout
            return self.sharding.abstract(cast_floats(state, precision))

        if self.processes.several:
            self.processes.check_checkpoint(ckpt_path, self.callbacks)
        restored = restore(ckpt_path, self.callbacks, problem, state_for)
        if restored is None:  # "last" / "best" with no checkpoint yet: a fresh start
            return
        self.txs = self.transforms_at(max(int(restored.state.step) - 1, 0))
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

    # ------------------------------------------------------------------ internals
    def _assemble_callbacks(self, problem: Problem) -> list[Callback]:
        from jno_flax.callbacks import (AdaptiveWeightsCallback, ModelCheckpoint, ModelSummary,
                                        ProgressBar, TrackerCallback)
        cbs: list[Callback] = []
        if problem.trackers:
            cbs.append(TrackerCallback(list(problem.trackers.items())))
        if problem.registry.balancers:
            cbs.append(AdaptiveWeightsCallback())
        if self.enable_model_summary and not any(isinstance(c, ModelSummary)
                                                 for c in self.user_callbacks):
            cbs.append(ModelSummary())
        cbs += self.loggers
        if self.timer is not None:
            cbs.append(self.timer)
        cbs += self.user_callbacks
        if self.enable_checkpointing and not any(isinstance(c, ModelCheckpoint) for c in cbs):
            if self._default_checkpoint is None:   # kept: a continued run keeps its folder
                self._default_checkpoint = ModelCheckpoint()
            cbs.append(self._default_checkpoint)
        if self.enable_progress_bar and not any(isinstance(c, ProgressBar) for c in cbs):
            cbs.append(ProgressBar())
        keys = [c.state_key for c in cbs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"callbacks share the state key(s) {dupes}; give each callback "
                             "instance a distinct `state_key` (e.g. through its `name`).")
        return cbs

    def _active(self) -> list[Callback]:
        """The callbacks whose hooks run on this process: all on process 0; on the others,
        those not marked ``global_zero_only`` (loggers, figures, the progress bar)."""
        return [cb for cb in self.callbacks if self.is_global_zero or not cb.global_zero_only]

    def _call(self, hook: str, *args) -> None:
        for cb in self._active():
            getattr(cb, hook)(self, self.problem, *args)

    def _collect_quantities(self, problem: Problem) -> list[InGraph]:
        quantities: list[InGraph] = []
        taken = set(problem.constraints) | {"loss"}
        for cb in self.callbacks:
            for q in cb.in_graph(self, problem):
                if not isinstance(q, InGraph):
                    raise TypeError(f"{type(cb).__name__}.in_graph must return InGraph items, "
                                    f"got {q!r}.")
                if q.name in taken:
                    raise ValueError(f"the in-graph quantity name {q.name!r} (from "
                                     f"{type(cb).__name__}) is already used; names of "
                                     "constraints, trackers and quantities must be unique.")
                taken.add(q.name)
                quantities.append(q)
        return quantities

    def _collect_updates(self, problem: Problem) -> list[StateUpdate]:
        """The in-loop state updates of every callback (one per extras entry)."""
        self._growing = [cb for cb in self.callbacks
                         if isinstance(cb, ResamplePoints) and cb.grows]
        updates: list[StateUpdate] = []
        owners: dict[str, str] = {cb.initial_points().name: type(cb).__name__
                                  for cb in self._growing}
        balancer_keys = {problem.registry.balancer_key(b) for b in problem.registry.balancers}
        for cb in self.callbacks:
            for u in cb.state_updates(self, problem):
                if not isinstance(u, StateUpdate):
                    raise TypeError(f"{type(cb).__name__}.state_updates must return StateUpdate "
                                    f"items, got {u!r}.")
                if u.name in owners or u.name in balancer_keys:
                    raise ValueError(f"{type(cb).__name__} updates the state entry {u.name!r}, "
                                     f"which {owners.get(u.name, 'an adaptive weight')} owns "
                                     "already; one callback may change each entry (e.g. one "
                                     "ResamplePoints per point set).")
                owners[u.name] = type(cb).__name__
                updates.append(u)
        return updates

    def minibatch(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The points step ``state.step`` trains on: a random subset of each point set with a
        mini-batch size (``Trainer(batch_size=...)``), all points of the others."""
        return draw_minibatch(self.batch_sizes, state, batch)

    def transforms_at(self, step: int) -> dict[str, optax.GradientTransformation]:
        """The optax transform of every trained trainable at ``step``: those of
        :meth:`configure_optimizers`, replaced by every ``SwitchOptimizer`` whose ``at_step``
        is reached."""
        txs = dict(self._base_txs)
        for cb in self._switches:
            if step >= cb.at_step:
                txs.update(cb.transforms(list(self._base_txs)))
        return txs

    def _switch_transforms(self, state: TrainState, step: int) -> TrainState:
        """``state`` (whose optimizer states are those of ``self.txs``) ready for the
        transforms of ``step``: a transform that changed starts from a fresh state at the
        current weights."""
        txs = self.transforms_at(step)
        opt_state = dict(state.opt_state)
        for n, tx in txs.items():
            if tx is not self.txs[n]:
                opt_state[n] = owned(tx.init(state.params[n]))
        for cb in self._switches:
            cb.done = cb.done or step >= cb.at_step
        self.txs = txs
        return state.replace(opt_state=opt_state)

    def _initial_state(self, problem: Problem, continue_run: bool) -> TrainState:
        """The state to start from: the live modules' weights (so edits of ``model.module``
        or ``problem.load_weights`` between fits count); when continuing, the step, RNG,
        balancer states and the optimizer states whose structure still fits from
        ``problem.state``; otherwise a fresh state at step 0."""
        registry = problem.registry
        # copies: the state is donated to the compiled chunks; the modules and
        # ``problem.state`` stay usable (and consistent) if a chunk fails
        prev = owned(problem.state) if continue_run else None
        params = {registry.name(t): owned(t.params())
                  for t in registry.trainables}
        opt_state = {}
        for name, tx in self.txs.items():
            fresh = jax.eval_shape(tx.init, params[name])
            old = None if prev is None else prev.opt_state.get(name)
            if old is not None and jax.tree.structure(old) == jax.tree.structure(fresh):
                opt_state[name] = old
            else:  # distinct buffers: some transforms (lbfgs) share arrays between leaves
                opt_state[name] = owned(tx.init(params[name]))
        # distinct buffers for every leaf: the state is donated to the compiled chunks
        fresh_extras = owned({
            **registry.initial_extras(), **{u.name: u.init() for u in self.updates},
            **{cb.initial_points().name: cb.initial_points().init() for cb in self._growing}})
        if prev is not None:
            return prev.replace(params=params, opt_state=opt_state,
                                extras={**fresh_extras, **prev.extras})
        return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=opt_state,
                          rng=jax.random.PRNGKey(self.seed), extras=fresh_extras)

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

    def _capacity(self, out_struct) -> int:
        per_step = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(out_struct))
        for q in self.quantities:
            if q not in self._dense_quantities():
                per_step += self._bytes_of(q) / q.interval
        cap = min(self.chunk_size, max(1, self.max_steps - self.global_step))
        return max(1, min(cap, int(self.max_record_bytes // max(per_step, 1))))

    def _compiled(self, problem: Problem, batch, state: TrainState
                  ) -> tuple[Any, ChunkProgram, int]:
        """The jitted chunk runner (one compilation per distinct chunk length and phase,
        reused by later ``fit`` calls), its program and the longest chunk the record memory
        bound allows."""
        quantities = tuple((q.name, q.expr.key if q.expr is not None else id(q.fn), q.interval)
                           for q in self.quantities)
        signature = (id(problem), quantities, self.nested_intervals,
                     tuple((n, id(tx)) for n, tx in self.txs.items()),
                     tuple((u.name, u.interval, id(u.update)) for u in self.updates),
                     tuple(sorted(self.batch_sizes.items())), jax.tree.structure(state))
        if signature not in self._cache:
            out_struct = jax.eval_shape(lambda s: self.training_step(s, batch)[1], state)
            program = ChunkProgram(self, self.quantities, self._dense_quantities(),
                                   nested=self.nested_intervals and not self.updates)
            run = jax.jit(program(), static_argnums=(2, 3), donate_argnums=0)
            self._cache = {signature: (run, program, out_struct)}  # one: old ones pin a problem
        run, program, out_struct = self._cache[signature]
        return run, program, self._capacity(out_struct)

    def _struct_of(self, q: InGraph) -> jax.ShapeDtypeStruct:
        if q.expr is not None:
            return jax.ShapeDtypeStruct(q.expr.value_shape, q.expr.dtype)
        return jax.eval_shape(q.fn, self.state)

    def _bytes_of(self, q: InGraph) -> int:
        st = self._struct_of(q)
        return int(np.prod(st.shape)) * jnp.dtype(st.dtype).itemsize

    def _dense_quantities(self) -> list[InGraph]:
        """Quantities computed in the loss's own forward pass: every-step expressions, and
        adaptive weights at any interval (so a tracked weight is exactly the one used)."""
        if self.batch_sizes:  # the loss pass sees a mini-batch; quantities see all points
            return [q for q in self.quantities if isinstance(q.expr, AdaptiveWeight)]
        return [q for q in self.quantities if q.expr is not None
                and (q.interval == 1 or isinstance(q.expr, AdaptiveWeight))]

    def _evaluate(self, quantities: list[InGraph], state: TrainState, batch) -> dict[str, Any]:
        """Quantities at ``state`` on the points ``batch`` (the state's current points)."""
        exprs = [q.expr for q in quantities if q.expr is not None]
        ev = Evaluator.of_state(self.problem.registry, state, batch, exprs)
        return {q.name: ev.value(q.expr) if q.expr is not None else q.fn(state)
                for q in quantities}

    def _run(self, problem: Problem) -> None:
        """Run chunks until ``max_steps`` or a stop.

        With ``overlap_callbacks``, chunk ``k + 1`` is dispatched (JAX runs it asynchronously)
        before chunk ``k``'s records are pulled and its callbacks run, so host work overlaps
        device work. Callbacks of chunk ``k`` see ``trainer.state`` as it was after chunk
        ``k`` (a copy). When they stop training or replace ``trainer.state``, the chunk in
        flight is discarded and training goes on from their state: the steps computed are
        exactly those of a run without overlap.
        """
        batch = self.sharding.place_points(cast_floats(problem.registry.batch(), self.precision))
        self.state = self.sharding.replicate(self.state)
        self._skipped_at_start = len(self.history.skipped_steps)
        if self.global_step >= self.max_steps:
            self._call("on_train_start")
            return
        sync = [EveryNSteps(f"{type(cb).__name__}.sync_every()", n)
                for cb in self.callbacks if (n := cb.sync_every(self)) is not None]
        switch_steps = [cb.at_step for cb in self._switches]
        per_step_hooks = [cb for cb in self._active()
                          if type(cb).on_train_batch_end is not Callback.on_train_batch_end]
        chunk_hooks = [cb for cb in self._active()
                       if type(cb).on_train_chunk_end is not Callback.on_train_chunk_end]

        stoppers = [cb for cb in self.callbacks
                    if type(cb).stopping_step is not Callback.stopping_step]

        def launch(state: TrainState, s0: int, copy: TrainState | None = None) -> _Launch:
            """Dispatch the chunk from step ``s0``; ``copy``: a copy of ``state`` already
            made (the state the callbacks see), reused as the replay's start."""
            given = state
            state = self._switch_transforms(state, s0)
            for cb in self._growing:
                state = cb.grow(state, batch, s0)
            run_chunk, program, capacity = self._compiled(problem, batch, state)
            end = min([s0 + capacity, self.max_steps] + [p.next_boundary(s0) for p in sync]
                      + [s for s in switch_steps if s > s0])
            args = (batch, end - s0, s0 % program.period)
            start = None   # for an early stop's replay: a copy of the chunk's first state
            if stoppers:
                start = copy if copy is not None and state is given else copy_tree(state)
            new_state, records = run_chunk(state, *args, np.int32(end))
            return _Launch(s0, end, program, new_state, records, start,
                           lambda first, limit: run_chunk(first, *args, np.int32(limit))[0])

        self._call("on_train_start")
        pending = None
        while not self.should_stop:
            if pending is None:
                if self.global_step >= self.max_steps:
                    break
                pending = launch(self.state, self.global_step)
            current, pending = pending, None
            end = current.end
            if self.overlap_callbacks and end < self.max_steps:
                seen = copy_tree(current.state)  # enqueued before the donation
                pending = launch(current.state, end, copy=seen)
            else:
                seen = current.state
            chunk = self._metrics(current, jax.device_get(current.records))
            last = min((s for cb in stoppers
                        if (s := cb.stopping_step(self, chunk)) is not None), default=None)
            if last is not None and last + 1 < end:  # stop right after that step
                end, chunk = last + 1, chunk.until(last + 1)
                # a copy: `start` may be the state the callbacks saw (and may hold)
                seen = current.replay(copy_tree(current.start), end)
                self._undo_launch(pending, end)
                pending = None
            self.state, self._step = seen, end
            self._append(chunk)
            self._update_metrics(chunk)
            self.publish_weights(problem)
            self._dispatch(chunk, per_step_hooks, chunk_hooks)
            replaced = self.state is not seen  # a callback replaced the state: go on from it
            if replaced:
                self._step = int(self.state.step)
            if self.processes.several:
                self.processes.stop_together(self, preemption=self.handle_signals)
            if replaced or self.should_stop:
                self._undo_launch(pending, self._step)
                pending = None

    def _undo_launch(self, pending: "_Launch | None", step: int) -> None:
        """The chunk in flight is dropped: undo any switch of transforms its launch made,
        back to those of the last step before ``step``."""
        if pending is not None:
            self.txs = self.transforms_at(max(step - 1, 0))

    def _metrics(self, launch: "_Launch", records: dict) -> ChunkMetrics:
        """A chunk's records (on the host) as arrays with their step indices."""
        s0, end, program = launch.s0, launch.end, launch.program
        steps = np.arange(s0, end)
        dense = records["dense"]
        losses = {k: np.asarray(v) for k, v in dense["losses"].items()}
        total = np.asarray(dense["loss"])
        recorded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        intervals = {q.name: q.interval for q in self.quantities}
        for name, v in dense["values"].items():
            keep = steps % intervals[name] == 0
            recorded[name] = (steps[keep], np.asarray(v)[keep])
        for key, group in program.groups.items():
            at = group.rows(s0, end)
            table = records["sparse"].get(key, {})  # absent: no row of it in this chunk
            for q in group.quantities:
                if q.name in table:
                    recorded[q.name] = (at, np.asarray(table[q.name][:len(at)]))
                else:
                    st = self._struct_of(q)
                    recorded[q.name] = (at, np.zeros((0,) + st.shape, st.dtype))
        recorded = {q.name: recorded[q.name] for q in self.quantities if q.name in recorded}
        losses = {name: losses[name] for name in self.problem.constraints}  # declared order
        return ChunkMetrics(steps, total, losses, recorded,
                            steps[~np.asarray(dense["applied"], bool)])

    def _append(self, chunk: ChunkMetrics) -> None:
        """Append a chunk's records to the History."""
        self.history.record_steps(chunk.steps, chunk.loss, chunk.losses)
        self.history.record_skipped(chunk.skipped)
        for name, (at, v) in chunk.values.items():
            self.history.record_values(name, at, v)

    def _dispatch(self, chunk: ChunkMetrics, per_step_hooks: list[Callback],
                  chunk_hooks: list[Callback]) -> None:
        if per_step_hooks:
            by_step: dict[int, dict[str, Any]] = {}
            for name, (at, v) in chunk.values.items():
                for j, s in enumerate(at):
                    val = v[j]
                    by_step.setdefault(int(s), {})[name] = (float(val) if np.ndim(val) == 0
                                                           else val)
            n = len(chunk.steps)
            for j, s in enumerate(chunk.steps):
                m = StepMetrics(step=int(s), loss=float(chunk.loss[j]),
                                losses={k: float(v[j]) for k, v in chunk.losses.items()},
                                values=by_step.get(int(s), {}), last_in_chunk=(j == n - 1))
                for cb in per_step_hooks:
                    cb.on_train_batch_end(self, self.problem, m)
        for cb in chunk_hooks:
            cb.on_train_chunk_end(self, self.problem, chunk)
