"""Runs over several JAX processes (``jax.distributed``): one problem, one stop, one step to
save at on preemption.

Every process runs the same ``fit``: it builds the same problem from the same seeds, compiles
the same chunks and calls the same hooks, so that all take part in the same collectives.
Three things would break that, silently or with a hang; here they become errors or
agreements:

* when ``fit`` starts, the processes compare digests of what they built (problem, points,
  initial state, every trainer setting, the callbacks and each one's constructor arguments,
  and the optimizers' updates on a probe problem at step counts spread up to ``max_steps``,
  which differ when a hyper-parameter or a schedule does). A difference is an error on every
  process naming what differs, and so is an exception that one process raised while starting
  (the others name it);
* a ``ckpt_path`` is resolved by every process, which must all find the same checkpoint (a
  directory that only some processes can read is an error on all);
* after each chunk, the step after which callbacks end it (``stopping_step``) is the earliest
  any process asks for, on all of them; then a stop asked on one process (a callback's
  ``trainer.stop``, SIGINT) stops every process at the same step, and SIGTERM on any process
  (a preemption notice, caught by JAX's preemption notifier) makes
  ``multihost_utils.reached_preemption_sync_point`` true on every process at the same chunk
  boundary: all save there and exit.

With one process none of this runs.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import signal
import warnings
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jno_flax._checkpoint_format import READ_ERRORS, fingerprint, read_metadata, resolve
from jno_flax.optimizers import Objective

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.trainers import Trainer

_DIGEST_BYTES = 32
_MESSAGE_BYTES = 512
#: the argument of ``reached_preemption_sync_point``: the number of calls so far in this
#: process. The sync point is the call after the highest count any process had reached when
#: the notice came, so the count must grow by one per call, across every fit, and nothing
#: else may call it with other ids (``ModelCheckpoint``'s orbax manager does not).
_SYNC_CALLS = itertools.count()


def digest_json(description: Any) -> bytes:
    """SHA-256 of a JSON-able description (other values by their ``str``)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).digest()


def digest_arrays(tree: Any) -> bytes:
    """SHA-256 of a pytree of arrays: every leaf's path, shape, dtype and bytes."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        host = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)} {host.shape} {host.dtype}".encode())
        h.update(host.tobytes())
    return h.digest()


def probe_counts(max_steps: int, starts: list[int]) -> list[int]:
    """The optimizer step counts :func:`probe_transform` looks at: the first few, powers of
    two, 33 evenly spaced ones and the phase starts, all below ``max_steps`` (a schedule
    that differs only late in the run differs at one of them)."""
    counts = {0, 1, 2, 3, max_steps - 1, *starts}
    counts |= {2**i for i in range(max(max_steps, 1).bit_length())}
    counts |= {int(round(c)) for c in np.linspace(0, max_steps - 1, 33)}
    return sorted(c for c in counts if 0 <= c < max_steps)


def _with_count(state: Any, count: int) -> Any:
    """``state`` with every integer scalar (optax's step counts) set to ``count``."""
    def at(x):
        x = jax.numpy.asarray(x)
        if x.shape == () and jax.numpy.issubdtype(x.dtype, jax.numpy.integer):
            return jax.numpy.asarray(count, x.dtype)
        return x
    return jax.tree.map(at, state)


def probe_transform(tx: Any, params: Any, counts: list[int] = (0,), steps: int = 2
                    ) -> list[np.ndarray]:
    """The updates ``tx`` makes on a fixed quadratic around ``params``: ``steps`` steps from
    its initial state, then one step from that state with its step counts set to each of
    ``counts`` (where a learning-rate schedule is read). Numbers that differ when its
    hyper-parameters differ (a learning rate, a schedule's values anywhere in the run, a
    momentum), where the transform's structure alone would not tell. Optax's extra arguments
    (``value``, ``grad``, ``value_fn`` with its residuals) are given, for line searches and
    Gauss–Newton methods."""
    import optax
    tx = optax.with_extra_args_support(tx)
    target = jax.tree.map(lambda p: p - 0.5 - 0.25 * jax.numpy.arange(p.size, dtype=p.dtype)
                          .reshape(p.shape) / max(p.size, 1), params)

    def residuals(q):
        return jax.numpy.concatenate([jax.numpy.ravel(a - b) / np.sqrt(2.0) for a, b in
                                      zip(jax.tree.leaves(q), jax.tree.leaves(target))])
    value_fn = Objective(lambda q: jax.numpy.sum(residuals(q) ** 2), residuals)

    @jax.jit
    def step(params, state):
        grad = jax.tree.map(lambda a, b: a - b, params, target)
        updates, state = tx.update(grad, state, params, value=value_fn(params), grad=grad,
                                   value_fn=value_fn)
        return optax.apply_updates(params, updates), updates, state

    state, out = tx.init(params), []
    for _ in range(steps):
        params, updates, state = step(params, state)
        out += [np.asarray(u) for u in jax.tree.leaves(updates)]
    for count in counts:
        out += [np.asarray(u) for u in jax.tree.leaves(step(params, _with_count(state,
                                                                                count))[1])]
    return out


def callback_settings(cb: Any) -> dict[str, Any]:
    """A callback's settings: the values of its constructor's arguments, read from the
    attributes of the same name (objects such as a resampling strategy by their own public
    attributes; optax transforms, expressions and functions by their type: the problem and
    optimizer digests compare those)."""
    params = [n for n, p in inspect.signature(type(cb).__init__).parameters.items()
              if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {n: _described(getattr(cb, n)) for n in params if hasattr(cb, n)}


def _described(value: Any, depth: int = 2) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_described(v, depth) for v in value]
    if isinstance(value, dict):
        return {str(k): _described(v, depth) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return f"array{tuple(value.shape)} {value.dtype} {digest_arrays(value).hex()[:16]}"
    module = type(value).__module__ or ""
    if depth > 0 and hasattr(value, "__dict__") and module.startswith("jno_flax.callbacks"):
        return {"type": type(value).__name__,
                **{k: _described(v, depth - 1) for k, v in vars(value).items()
                   if not k.startswith("_")}}
    return type(value).__name__


def digest_names(trainer: "Trainer") -> list[str]:
    """The names of :func:`run_digests`, in order (known without building anything)."""
    return (["problem", "points", "initial state", "callbacks",
             "optimizers (their updates on a probe problem)"]
            + [f"setting `{k}`" for k in [*trainer.settings(), "devices", "batch_size"]]
            + [f"settings of callback `{cb.state_key}`" for cb in trainer.callbacks])


def run_digests(trainer: "Trainer") -> dict[str, bytes]:
    """What every process of a run must have built alike (see ``Processes.check_start``)."""
    problem, state = trainer.problem, trainer.state
    callbacks = [(type(cb).__name__, cb.state_key, cb.sync_every(trainer))
                 for cb in trainer.callbacks]
    phases = [0, *trainer.phases.starts]
    counts = probe_counts(trainer.max_steps, phases)
    probes = {f"{n}@{s}": probe_transform(tx, state.params[n], counts)
              for s in phases for n, tx in trainer.transforms_at(s).items()}
    out = {"problem": digest_json({"fingerprint": fingerprint(problem, state),
                                   "quantities": [(q.name, q.interval)
                                                  for q in trainer.trackers.items]}),
           "points": digest_arrays(problem.registry.batch()),
           "initial state": digest_arrays(state),
           "callbacks": digest_json({"callbacks": callbacks,
                                     "updates": [(u.name, u.interval) for u in trainer.updates],
                                     "switches": phases}),
           "optimizers (their updates on a probe problem)": digest_arrays(probes)}
    settings = {**trainer.settings(), "devices": [d.id for d in trainer.sharding.devices],
                "batch_size": trainer.batch_sizes}
    out.update({f"setting `{k}`": digest_json(v) for k, v in settings.items()})
    out.update({f"settings of callback `{cb.state_key}`": digest_json(callback_settings(cb))
                for cb in trainer.callbacks})
    return out


def _text(row: np.ndarray) -> str:
    return bytes(row.astype(np.uint8)).rstrip(b"\0").decode(errors="replace")


class Processes:
    """This process's place among the processes of a ``jax.distributed`` run."""

    def __init__(self):
        self.count = jax.process_count()
        self.index = jax.process_index()

    @property
    def several(self) -> bool:
        return self.count > 1

    def gather(self, row: np.ndarray) -> np.ndarray:
        """``row`` of every process, stacked in process order (a collective: every process
        must call it at the same point)."""
        return np.asarray(multihost_utils.process_allgather(np.asarray(row, np.int32)))

    def same_text(self, text: str) -> str:
        """Process 0's ``text`` (ASCII, at most 64 characters) on every process (a
        collective)."""
        row = np.zeros(64, np.uint8)
        raw = text.encode("ascii")[:64]
        row[:len(raw)] = np.frombuffer(raw, np.uint8)
        return _text(self.gather(row)[0])

    # ------------------------------------------------------------------ fit start
    def check_start(self, names: list[str], digests: dict[str, bytes] | None,
                    failure: BaseException | None) -> None:
        """Compare ``digests`` (``{name: bytes}`` for each of ``names``, the same list on
        every process) across processes, or tell them that this process failed while
        starting (``failure``, re-raised here). Raises on every process when they differ or
        one failed, naming what differs."""
        counts = self.gather(np.array([len(names)]))[:, 0]
        if (counts != counts[0]).any():   # e.g. another number of callbacks
            differ = np.flatnonzero(counts != counts[0]).tolist()
            if failure is not None:
                raise failure
            here = [n.split("`")[1] for n in names if n.startswith("settings of callback")]
            raise ValueError(f"the {self.count} processes built different runs: the "
                             f"callbacks of process(es) {differ} differ from process 0's "
                             f"(here: {here}). Every process must build the same Trainer "
                             "(every setting), optimizers and callbacks.")
        table = np.zeros((len(names), _DIGEST_BYTES), np.uint8)
        for i, name in enumerate(names):
            if digests is not None:
                table[i] = np.frombuffer(digests[name], np.uint8)
        message = np.zeros(_MESSAGE_BYTES, np.uint8)
        if failure is not None:
            text = f"{type(failure).__name__}: {failure}".encode()[:_MESSAGE_BYTES]
            message[:len(text)] = np.frombuffer(text, np.uint8)
        rows = self.gather(np.concatenate([[failure is not None], table.ravel(), message]))
        if failure is not None:
            raise failure
        failed = np.flatnonzero(rows[:, 0])
        if failed.size:
            p = int(failed[0])
            raise RuntimeError(f"process {p} failed while `fit` started "
                               f"({_text(rows[p, 1 + table.size:])}); every process stops.")
        differences = []
        for i, name in enumerate(names):
            cols = rows[:, 1 + i * _DIGEST_BYTES: 1 + (i + 1) * _DIGEST_BYTES]
            differ = [p for p in range(self.count) if not np.array_equal(cols[p], cols[0])]
            if differ:
                differences.append(f"the {name} of process(es) {differ}")
        if differences:
            raise ValueError(f"the {self.count} processes built different runs: "
                             f"{'; '.join(differences)} differ from process 0's. Every process "
                             "must build the same problem (same seeds, points, networks, "
                             "constraints and trackers) and the same Trainer (every setting), "
                             "optimizers and callbacks.")

    # ------------------------------------------------------------------ resume
    def check_checkpoint(self, ckpt_path: Any, checkpoints: list[Any]) -> None:
        """Every process resolves ``ckpt_path`` among the checkpoints of ``callbacks``; all
        must find the same step. Raises on every process otherwise."""
        error = None
        try:
            with warnings.catch_warnings():  # "no checkpoint yet" is warned by the restore
                warnings.simplefilter("ignore")
                candidates = resolve(ckpt_path, checkpoints)
            row = [1, int(read_metadata(candidates[0])["step"]) if candidates else -1]
        except READ_ERRORS as err:
            error, row = err, [0, -1]
        rows = self.gather(np.array(row))
        readable = rows[:, 0].astype(bool)
        if not readable.any():
            raise error
        if not readable.all():
            here = f" (here: {type(error).__name__}: {error})" if error is not None else ""
            raise FileNotFoundError(
                f"`ckpt_path` {ckpt_path!r} can be read by process(es) "
                f"{np.flatnonzero(readable).tolist()} but not by "
                f"{np.flatnonzero(~readable).tolist()}{here}. Every process must see the same "
                "checkpoint directory (a file system shared by all hosts).")
        steps = rows[:, 1]
        if (steps != steps[0]).any():
            seen = ", ".join(f"process {p}: {'none' if s < 0 else f'step {s}'}"
                             for p, s in enumerate(steps.tolist()))
            raise ValueError(f"`ckpt_path={ckpt_path!r}` finds different checkpoints on the "
                             f"processes ({seen}). Every process must see the same checkpoint "
                             "directory (a file system shared by all hosts).")

    # ------------------------------------------------------------------ stopping
    def agree_stop(self, step: int | None) -> int | None:
        """The earliest step after which any process's callbacks stop training (``step``:
        this process's, or ``None``), the same on every process (a collective), so that all
        end the chunk at the same step."""
        rows = self.gather(np.array([-1 if step is None else step]))[:, 0]
        asked = rows[rows >= 0]
        return int(asked.min()) if asked.size else None

    def stop_together(self, trainer: "Trainer", preemption: bool) -> None:
        """After a chunk: if any process was preempted (SIGTERM), asked to stop, or received
        a signal, every process stops at this step, with the same signal."""
        step = trainer.global_step
        preempted = preemption and multihost_utils.reached_preemption_sync_point(
            next(_SYNC_CALLS))
        sig = trainer.received_signal
        rows = self.gather(np.array([trainer.should_stop, 0 if sig is None else int(sig),
                                     preempted]))
        if rows[:, 2].any():
            trainer.received_signal = signal.SIGTERM
            trainer.stop(f"received SIGTERM (preemption) on a process of {self.count}: every "
                         f"process stopped at step {step}")
        signals = rows[:, 1][rows[:, 1] > 0]
        if trainer.received_signal is None and signals.size:
            trainer.received_signal = signal.Signals(int(signals[0]))
        stopped = np.flatnonzero(rows[:, 0])
        if stopped.size and not trainer.should_stop:
            trainer.stop(f"process {int(stopped[0])} stopped training at step {step}")
