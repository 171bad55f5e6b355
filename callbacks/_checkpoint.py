"""Orbax checkpoints of the whole training state, exact resume and preemption safety.

A checkpoint (one directory per step under ``dirpath``, written by an orbax
``CheckpointManager``) holds four items, none pickled:

* ``state``: the whole ``TrainState`` (every trainable's ``nnx.Param`` state, every optimizer
  state, step, PRNG key, adaptive-weight state), restored exactly into a target built from the
  live state;
* ``callbacks``: every callback's ``state_dict`` by its ``state_key`` (JSON);
* ``history``: the ``History`` so far (JSON, arrays as base64 of their raw bytes: exact);
* ``metadata``: step, losses, library versions and a fingerprint of the problem (JSON).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jno_flax._checks import positive_int
from jno_flax.callbacks._callback import Callback, ChunkMetrics

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.trainers import History, Trainer

MODES = ("min", "max")
#: what a damaged checkpoint raises when read (truncated or missing files, bad JSON)
READ_ERRORS = (ValueError, OSError, KeyError, TypeError, json.JSONDecodeError)


# ---------------------------------------------------------------------- serialisation helpers
def encode_array(a) -> dict[str, Any]:
    a = np.ascontiguousarray(np.asarray(a))
    return {"dtype": a.dtype.str, "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["data"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def history_to_json(history: "History") -> dict[str, Any]:
    d = history.to_dict()
    return {"steps": encode_array(d["steps"]), "total_loss": encode_array(d["total_loss"]),
            "losses": {k: encode_array(v) for k, v in d["losses"].items()},
            "trackers": {k: {"steps": encode_array(s["steps"]), "values": encode_array(s["values"])}
                         for k, s in d["trackers"].items()},
            "wall_time": d["wall_time"], "stop_reason": d["stop_reason"]}


def history_from_json(d: dict[str, Any]) -> "History":
    from jno_flax.trainers import History
    return History.from_dict({
        "steps": decode_array(d["steps"]), "total_loss": decode_array(d["total_loss"]),
        "losses": {k: decode_array(v) for k, v in d["losses"].items()},
        "trackers": {k: {"steps": decode_array(s["steps"]), "values": decode_array(s["values"])}
                     for k, s in d["trackers"].items()},
        "wall_time": d["wall_time"], "stop_reason": d.get("stop_reason")})


def fingerprint(problem: "Problem") -> dict[str, Any]:
    """What a checkpoint must agree with to be restored into ``problem``."""
    from jno_flax._masks import param_paths
    trainables = {}
    for t in problem.trainables:
        trainables[problem.registry.name(t)] = {
            "/".join(str(p) for p in path): list(var.shape)
            for path, var in param_paths(t.params())}
    return {"trainables": trainables, "constraints": list(problem.constraints),
            "trackers": list(problem.trackers),
            "balancers": [f"{problem.registry.balancer_key(b)}:{b.scheme}"
                          for b in problem.registry.balancers]}


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when compatible)."""
    problems = []
    for name in sorted(set(saved["trainables"]) | set(current["trainables"])):
        a, b = saved["trainables"].get(name), current["trainables"].get(name)
        if a is None or b is None:
            where = "problem" if a is None else "checkpoint"
            problems.append(f"trainable {name!r} only in the {where}")
            continue
        for path in sorted(set(a) | set(b)):
            if a.get(path) != b.get(path):
                problems.append(f"{name}/{path}: checkpoint {a.get(path)} vs problem {b.get(path)}")
    for key in ("constraints", "trackers", "balancers"):
        if saved[key] != current[key]:
            problems.append(f"{key}: checkpoint {saved[key]} vs problem {current[key]}")
    return problems


def _versions() -> dict[str, str]:
    import flax
    import optax

    import jno_flax
    return {"jno_flax": jno_flax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "orbax-checkpoint": getattr(ocp, "__version__", "?")}


# ---------------------------------------------------------------------- the callback
class ModelCheckpoint(Callback):
    """Saves the whole training state every ``every_n_steps`` steps with orbax.

    Args:
        dirpath: directory of the checkpoints (one sub-directory per step).
        every_n_steps: saving period; chunk boundaries are placed there.
        max_to_keep: number of checkpoints kept (the newest, or the best by ``monitor``).
        monitor: optional name (``"loss"``, a constraint, a tracker) ranking checkpoints.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        save_last: also save when training ends (so ``ckpt_path="last"`` is the end).
        handle_signals: on SIGTERM/SIGINT, finish the running chunk, save, and exit cleanly
            (``SystemExit(0)``) with a message naming the checkpoint.
        async_save: write in the background (always finished before ``fit`` returns).

    Resume with ``Trainer(..., callbacks=[ModelCheckpoint(dirpath)]).fit(problem,
    ckpt_path="last")`` (the newest valid checkpoint) or with the path of a step directory.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 1000, max_to_keep: int | None = 3,
                 monitor: str | None = None, mode: str = "min", save_last: bool = True,
                 handle_signals: bool = True, async_save: bool = True):
        if not isinstance(dirpath, (str, os.PathLike)):
            raise TypeError(f"`dirpath` must be a path, got {dirpath!r}.")
        self.dirpath = os.path.abspath(os.fspath(dirpath))
        self.every_n_steps = positive_int("every_n_steps", every_n_steps, steps=True)
        self.max_to_keep = positive_int("max_to_keep", max_to_keep, allow_none=True)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a name (str) or None, got {monitor!r}.")
        self.monitor, self.mode = monitor, mode
        self.save_last = bool(save_last)
        self.handle_signals = bool(handle_signals)
        self.async_save = bool(async_save)
        self._manager: ocp.CheckpointManager | None = None
        self._latest: dict[str, float] = {}
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self.last_saved_step: int | None = None

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint[{self.dirpath}]"

    # ------------------------------------------------------------------ orbax
    @property
    def manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            best = None
            if self.monitor is not None:
                best = lambda metrics: metrics[self.monitor]  # noqa: E731
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep, best_fn=best,
                best_mode=self.mode, keep_checkpoints_without_metrics=False,
                enable_async_checkpointing=self.async_save, create=True)
            self._manager = ocp.CheckpointManager(self.dirpath, options=options)
        return self._manager

    def all_steps(self) -> list[int]:
        """Steps with a finished checkpoint, oldest first."""
        if not os.path.isdir(self.dirpath):
            return []
        return sorted(self.manager.all_steps())

    def step_path(self, step: int) -> str:
        return os.path.join(self.dirpath, str(step))

    def wait(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    # ------------------------------------------------------------------ hooks
    def sync_every(self, trainer: "Trainer") -> int | None:
        return self.every_n_steps

    def setup(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        try:
            os.makedirs(self.dirpath, exist_ok=True)
        except OSError as err:
            raise PermissionError(f"ModelCheckpoint `dirpath` {self.dirpath!r} cannot be "
                                  f"created: {err}.") from None
        if not os.access(self.dirpath, os.W_OK | os.X_OK):
            raise PermissionError(f"ModelCheckpoint `dirpath` {self.dirpath!r} is not "
                                  "writable; choose a directory you can write to.")

    def on_fit_start(self, trainer: "Trainer", problem: "Problem") -> None:
        if self.monitor is not None:
            available = (["loss"] + list(problem.constraints)
                         + [q.name for q in trainer.quantities])
            if self.monitor not in available:
                raise ValueError(f"ModelCheckpoint `monitor` {self.monitor!r} is not a logged "
                                 f"quantity; available: {available}.")

    def on_train_start(self, trainer: "Trainer", problem: "Problem") -> None:
        self._signal = None
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous_handlers[signum] = signal.signal(
                    signum, lambda s, f, t=trainer: self._on_signal(s, t))

    def _on_signal(self, signum: int, trainer: "Trainer") -> None:
        if self._signal is not None:  # a second signal: give up waiting
            self._restore_handlers()
            raise KeyboardInterrupt
        self._signal = signum
        trainer.stop(f"received {signal.Signals(signum).name}: stopping after the running chunk")

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_chunk_end(self, trainer: "Trainer", problem: "Problem",
                           chunk: ChunkMetrics) -> None:
        self._latest["loss"] = float(chunk.loss[-1])
        self._latest.update({k: float(v[-1]) for k, v in chunk.losses.items()})
        for name, (_, values) in chunk.values.items():
            if len(values) and np.ndim(values[-1]) == 0:
                self._latest[name] = float(values[-1])
        done = chunk.last_step + 1
        if done % self.every_n_steps == 0 or self._signal is not None:
            self.save(trainer, problem)

    def on_train_end(self, trainer: "Trainer", problem: "Problem") -> None:
        if ((self.save_last or self._signal is not None)
                and self.last_saved_step != trainer.global_step and trainer.global_step > 0):
            self.save(trainer, problem)
        self.wait()
        if self._signal is not None:
            name = signal.Signals(self._signal).name
            path = self.step_path(self.last_saved_step)
            print(f"\n{name} received: saved checkpoint {path} at step {self.last_saved_step}; "
                  "resume with `trainer.fit(problem, ckpt_path=\"last\")`.", file=sys.stderr)
            raise SystemExit(0)

    def on_exception(self, trainer: "Trainer", problem: "Problem",
                     exception: BaseException) -> None:
        self.wait()

    def teardown(self, trainer: "Trainer", problem: "Problem", stage: str) -> None:
        self._restore_handlers()
        self.close()

    # ------------------------------------------------------------------ save / restore
    def save(self, trainer: "Trainer", problem: "Problem") -> str:
        """Write a checkpoint of the live state at ``trainer.global_step``."""
        step = trainer.global_step
        metadata = {"step": step, "losses": {k: v for k, v in self._latest.items()},
                    "versions": _versions(), "fingerprint": fingerprint(problem)}
        callbacks = {cb.state_key: cb.state_dict() for cb in trainer.callbacks}
        checkpoint = {"metadata": metadata, "callbacks": callbacks}
        for cb in trainer.callbacks:
            cb.on_save_checkpoint(trainer, problem, checkpoint)
        metrics = None
        if self.monitor is not None:
            if self.monitor not in self._latest:
                raise ValueError(f"ModelCheckpoint: `monitor` {self.monitor!r} has no value yet "
                                 f"at step {step}; its first value comes at its interval.")
            metrics = {self.monitor: float(self._latest[self.monitor])}
        # a copy: the live state's buffers are donated to the next chunk while orbax writes
        state = jax.tree.map(jnp.copy, trainer.state)
        if step in self.manager.all_steps():
            # a run resumed from an older checkpoint supersedes what was saved after it
            self.manager.wait_until_finished()
            self.manager.delete(step)
        self.manager.save(step, metrics=metrics, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            callbacks=ocp.args.JsonSave(checkpoint["callbacks"]),
            history=ocp.args.JsonSave(history_to_json(trainer.history)),
            metadata=ocp.args.JsonSave(checkpoint["metadata"])), force=True)
        self.last_saved_step = step
        return self.step_path(step)


# ---------------------------------------------------------------------- resuming
def _read(directory: str, step: int, target) -> dict[str, Any]:
    """Read every item of one checkpoint (raises READ_ERRORS when damaged)."""
    mgr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        restored = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            callbacks=ocp.args.JsonRestore(), history=ocp.args.JsonRestore(),
            metadata=ocp.args.JsonRestore()))
        return {"state": restored.state, "callbacks": restored.callbacks,
                "history": restored.history, "metadata": restored.metadata}
    finally:
        mgr.close()


def _read_metadata(directory: str, step: int) -> dict[str, Any]:
    path = os.path.join(directory, str(step), "metadata", "metadata")
    with open(path) as f:
        return json.load(f)


def resolve(ckpt_path: str, callbacks: list[Callback]) -> list[tuple[str, int]]:
    """Candidate ``(directory, step)`` pairs for ``ckpt_path``, preferred first."""
    ckpts = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
    if ckpt_path == "last":
        if not ckpts:
            raise ValueError("`ckpt_path='last'` needs a ModelCheckpoint callback on the "
                             "trainer to know where checkpoints are.")
        cb = ckpts[0]
        steps = cb.all_steps()
        if not steps:
            raise FileNotFoundError(f"`ckpt_path='last'`: no checkpoint in {cb.dirpath!r}.")
        return [(cb.dirpath, s) for s in reversed(steps)]
    path = os.path.abspath(os.fspath(ckpt_path))
    parent, leaf = os.path.split(path)
    if not (leaf.isdigit() and os.path.isdir(path)):
        known = []
        for cb in ckpts:
            known += [cb.step_path(s) for s in cb.all_steps()]
        if os.path.isdir(parent):
            known += sorted(os.path.join(parent, d) for d in os.listdir(parent) if d.isdigit())
        raise FileNotFoundError(f"`ckpt_path` {path!r} is not a checkpoint; existing "
                                f"checkpoints: {sorted(set(known)) or 'none'}.")
    return [(parent, int(leaf))]


def restore_into(trainer: "Trainer", problem: "Problem", ckpt_path: str) -> dict[str, Any]:
    """Restore state, history and callback states from ``ckpt_path`` into ``trainer``.

    With ``"last"``, a damaged or incomplete newest checkpoint is reported with a warning and
    the next older one is tried. A checkpoint of another problem (different trainables,
    parameter shapes, constraints, trackers or balancers) is an error; nothing is restored.
    """
    candidates = resolve(ckpt_path, trainer.callbacks)
    current = fingerprint(problem)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, trainer.state)

    def damaged(i: int, path: str, err: BaseException) -> None:
        if i + 1 == len(candidates):
            raise ValueError(f"checkpoint {path!r} cannot be read ({type(err).__name__}: {err}) "
                             "and no older valid checkpoint exists.") from err
        older = os.path.join(*map(str, candidates[i + 1]))
        warnings.warn(f"checkpoint {path!r} is damaged or incomplete ({type(err).__name__}: "
                      f"{err}); falling back to {older!r}.", RuntimeWarning, stacklevel=3)

    for i, (directory, step) in enumerate(candidates):
        path = os.path.join(directory, str(step))
        try:
            saved = _read_metadata(directory, step)["fingerprint"]
        except READ_ERRORS as err:
            damaged(i, path, err)
            continue
        mismatch = fingerprint_mismatch(saved, current)
        if mismatch:
            raise ValueError(f"checkpoint {path!r} does not match this problem; nothing was "
                             f"restored. Differences: {mismatch}")
        try:
            checkpoint = _read(directory, step, target)
        except READ_ERRORS as err:
            damaged(i, path, err)
            continue
        trainer.state = checkpoint["state"]
        problem.state = trainer.state
        trainer.history = history_from_json(checkpoint["history"])
        problem.history = trainer.history
        for cb in trainer.callbacks:
            if cb.state_key in checkpoint["callbacks"]:
                cb.load_state_dict(checkpoint["callbacks"][cb.state_key])
        return checkpoint
    raise AssertionError("unreachable: the last candidate returns or raises")
