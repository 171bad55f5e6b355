"""The checkpoint format, in one place: what a checkpoint holds and how its directories are
named, found, written, checked and read back. ``ModelCheckpoint`` decides when to save and
what to keep; the trainer assigns what a restore returns.

A checkpoint is an orbax composite directory ``<dirpath>/[<filename>_]<step>`` of five items:

* ``state``: the whole ``TrainState`` (parameters, optimizer states, step, PRNG key, extras);
* ``history``: the History as arrays (:meth:`History.to_arrays`, the one serialisation, also
  used by ``History.save``);
* ``callbacks``: every callback's ``state_dict`` by ``state_key`` (JSON);
* ``extra``: the entries callbacks add in ``on_save_checkpoint`` (JSON);
* ``metadata`` (JSON): the step, run id, monitor and score, precision, library versions, the
  fingerprint of the state and problem, and the History's scalars.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from jno_flax._trees import copy_tree
from jno_flax._warnings import warn

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax import Problem
    from jno_flax.callbacks import ModelCheckpoint
    from jno_flax.trainers import History, Trainer, TrainState

#: what reading a damaged checkpoint raises (truncated or missing files, bad JSON)
READ_ERRORS = (ValueError, OSError, KeyError, TypeError, json.JSONDecodeError)
#: keys of the ``checkpoint`` dict handed to ``on_load_checkpoint`` that the trainer fills;
#: a callback's ``on_save_checkpoint`` may not use them
RESERVED_ENTRIES = ("metadata", "callbacks", "path", "skipped")


# ---------------------------------------------------------------------- step directories
def _step_names(prefix: str | None):
    return ocp.step.standard_name_format(step_prefix=prefix)


def step_dir(dirpath: str, step: int, prefix: str | None) -> str:
    """The directory of the checkpoint of ``step`` in ``dirpath``: ``[<prefix>_]<step>``."""
    return os.path.join(dirpath, str(step) if prefix is None else f"{prefix}_{step}")


@dataclass(frozen=True)
class Entry:
    """One complete checkpoint of a directory, as its metadata describes it.

    Attributes:
        step: the step it holds.
        path: its directory.
        run_id: the run that wrote it (``None``: unreadable metadata or an older version).
        monitor: the name its score ranks by (``None`` without a monitor).
        score: the monitored value when it was written.
        readable: False when its metadata could not be read (a damaged checkpoint).
    """

    step: int
    path: str
    run_id: str | None
    monitor: str | None
    score: float | None
    readable: bool


def list_entries(dirpath: str, prefix: str | None) -> list[Entry]:
    """Complete checkpoints in ``dirpath`` (step directories named ``[<prefix>_]<step>``),
    oldest first, read from the directory (no orbax manager: its creation is a collective of
    every process)."""
    if not dirpath or not os.path.isdir(dirpath):
        return []
    out = []
    for m in _step_names(prefix).find_all(dirpath):
        path = os.path.join(dirpath, str(m.path.name))
        try:
            meta = read_metadata(path)
        except READ_ERRORS:
            out.append(Entry(m.step, path, None, None, None, False))
            continue
        score = meta.get("score")
        out.append(Entry(m.step, path, meta.get("run_id"), meta.get("monitor"),
                         None if score is None else float(score), True))
    return sorted(out, key=lambda e: e.step)


def foreign(entries: list[Entry], run_id: str | None, start: int,
            replaceable: set[str]) -> list[Entry]:
    """The checkpoints a run must not touch: written by another run, or newer than the step
    ``start`` it (re)started from (another timeline of the same run), except the damaged
    ones in ``replaceable`` (skipped when it resumed ``"last"``)."""
    return [e for e in entries if e.path not in replaceable
            and (e.run_id != run_id or e.step > start)]


def state_item(path: str) -> str:
    """The directory of the ``state`` item for ``path``: a checkpoint step directory, a
    checkpoint directory (its newest step, whatever its prefix) or ``path`` itself (a
    ``save_weights`` directory)."""
    if os.path.isdir(os.path.join(path, "state")):
        return os.path.join(path, "state")
    steps = []
    for name in (os.listdir(path) if os.path.isdir(path) else []):
        number = name.rpartition("_")[2]     # step_dir's names: [<prefix>_]<step>
        if number.isdigit() and os.path.isdir(os.path.join(path, name, "state")):
            steps.append((int(number), name))
    return os.path.join(path, max(steps)[1], "state") if steps else path


# ---------------------------------------------------------------------- fingerprint
def _leaf_table(tree) -> dict[str, str]:
    """``{path: "shape dtype"}`` of a pytree's array leaves."""
    from jno_flax._masks import key_name
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(key_name(k)) for k in path if str(key_name(k)) != "value")
        out[name or "."] = f"{list(np.shape(leaf))} {np.dtype(getattr(leaf, 'dtype', float))}"
    return out


def _kinds(state) -> str:
    """The optax state's node types, e.g. ``(ScaleByAdamState, EmptyState)`` for adam."""
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return "(" + ", ".join(_kinds(s) for s in state) + ")"
    return type(state).__name__


def fingerprint(problem: "Problem", state: "TrainState") -> dict[str, Any]:
    """What a checkpoint must agree with to be restored into ``problem``: every leaf of the
    state (tree structure, shapes, dtypes) — trainables' parameters, optimizer states, the
    extras (point sets, balancer states), step and PRNG key — and the names of the
    constraints, trackers and balancers."""
    return {"trainables": {name: _leaf_table(p) for name, p in state.params.items()},
            "optimizers": {name: {"structure": str(jax.tree.structure(o)), "kinds": _kinds(o),
                                  "leaves": _leaf_table(o)}
                           for name, o in state.opt_state.items()},
            "extras": _leaf_table(state.extras),
            "counters": _leaf_table({"step": state.step, "rng": state.rng}),
            "constraints": list(problem.constraints), "trackers": list(problem.trackers),
            "balancers": [problem.registry.balancer_key(b) for b in problem.registry.balancers]}


def _table_diff(what: str, a: dict[str, str], b: dict[str, str]) -> list[str]:
    return [f"{what}{path}: checkpoint {a.get(path, 'missing')} vs problem "
            f"{b.get(path, 'missing')}" for path in sorted(set(a) | set(b))
            if a.get(path) != b.get(path)]


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when compatible).

    An optimizer state is compared only where its trainable's parameters agree (otherwise
    its leaves differ the same way)."""
    out = []
    params_a, params_b = saved.get("trainables", {}), current["trainables"]
    for name in sorted(set(params_a) | set(params_b)):
        if name not in params_a or name not in params_b:
            out.append(f"trainable {name!r} only in the "
                       f"{'problem' if name not in params_a else 'checkpoint'}")
        else:
            out += _table_diff(f"{name}/", params_a[name], params_b[name])
    opt_a, opt_b = saved.get("optimizers", {}), current["optimizers"]
    for name in sorted(set(opt_a) | set(opt_b)):
        if name not in opt_a or name not in opt_b:
            out.append(f"optimizer state of {name!r} only in the "
                       f"{'problem' if name not in opt_a else 'checkpoint'}")
        elif opt_a[name]["structure"] != opt_b[name]["structure"]:
            a, b = opt_a[name].get("kinds", "?"), opt_b[name]["kinds"]
            detail = f"{a} vs problem {b}" if a != b else f"{a} with another tree structure"
            out.append(f"optimizer state of {name!r}: checkpoint {detail} (another optax "
                       "transform?)")
        elif params_a.get(name) == params_b.get(name):
            out += _table_diff(f"optimizer state of {name!r} ", opt_a[name]["leaves"],
                               opt_b[name]["leaves"])
    for key in ("extras", "counters"):  # absent from checkpoints of older versions
        if key in saved:
            out += _table_diff("" if key == "counters" else "extras/", saved[key], current[key])
    for key in ("constraints", "trackers", "balancers"):
        if saved.get(key) != current[key]:
            out.append(f"{key}: checkpoint {saved.get(key)} vs problem {current[key]}")
    return out


# ---------------------------------------------------------------------- writing
def _versions() -> dict[str, str]:
    import flax
    import optax

    import jno_flax
    return {"jno_flax": jno_flax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "orbax-checkpoint": getattr(ocp, "__version__", "?")}


def callback_states(callbacks: list[Any]) -> dict[str, Any]:
    """Every callback's ``state_dict`` by its ``state_key``; one that JSON cannot write (an
    ndarray, a set, a NumPy scalar) is an error naming the callback and its key."""
    out = {}
    for cb in callbacks:
        state = cb.state_dict()
        try:
            json.dumps(state)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{type(cb).__name__}.state_dict() (state key {cb.state_key!r}) "
                            f"cannot be written to a checkpoint as JSON ({err}): return plain "
                            "numbers, strings, lists and dicts (`array.tolist()`, "
                            "`float(x)`, `sorted(a_set)`).") from err
        out[cb.state_key] = state
    return out


def checkpoint_items(trainer: "Trainer", problem: "Problem",
                     metadata: dict[str, Any]) -> ocp.args.Composite:
    """The five items of a checkpoint of ``trainer``'s live state at its step, with
    ``metadata`` added to the metadata item; every callback's ``on_save_checkpoint`` runs."""
    history_arrays, history_meta = trainer.history.to_arrays()
    metadata = {"step": trainer.global_step, "run_id": trainer.history.run_id,
                "saved_at": time.time(), "monitor": None, "score": None, "losses": {},
                **metadata, "precision": trainer.precision, "versions": _versions(),
                "fingerprint": fingerprint(problem, trainer.state), **history_meta}
    callbacks = callback_states(trainer.callbacks)
    checkpoint: dict[str, Any] = {"metadata": metadata, "callbacks": callbacks}
    for cb in trainer.callbacks:
        cb.on_save_checkpoint(trainer, problem, checkpoint)
    if checkpoint["metadata"] is not metadata or checkpoint["callbacks"] is not callbacks:
        raise ValueError("`on_save_checkpoint` replaced the checkpoint's 'metadata' or "
                         "'callbacks' entry; add entries under other names.")
    taken = sorted(k for k in checkpoint if k in RESERVED_ENTRIES[2:])
    if taken:
        raise ValueError(f"`on_save_checkpoint` added the entries {taken}, whose names "
                         f"are reserved ({list(RESERVED_ENTRIES)}); use other names.")
    extra = {k: v for k, v in checkpoint.items() if k not in RESERVED_ENTRIES}
    # a copy: the live state's buffers are donated to the next chunk while orbax writes
    return ocp.args.Composite(
        state=ocp.args.StandardSave(copy_tree(trainer.state)),
        history=ocp.args.StandardSave(history_arrays),
        callbacks=ocp.args.JsonSave(callbacks), extra=ocp.args.JsonSave(extra),
        metadata=ocp.args.JsonSave(metadata))


def write_checkpoint(trainer: "Trainer", problem: "Problem", path: str) -> str:
    """Write a checkpoint of ``trainer``'s state to the new directory ``path`` (synchronous);
    ``fit(problem, ckpt_path=path)`` resumes from it."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"`filepath` {path!r} exists; `save_checkpoint` writes a new "
                              "directory and never replaces one.")
    args = checkpoint_items(trainer, problem, {})
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=args)
    return path


# ---------------------------------------------------------------------- reading
#: the metadata entries every checkpoint has, with the types they must have
_METADATA_TYPES = {"step": (int, "an integer"), "fingerprint": (dict, "an object"),
                   "losses": (dict, "an object")}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _names(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(n, str) for n in v)


#: entries a checkpoint of an earlier version may lack, with their checks where present
_OPTIONAL_METADATA = {
    "wall_time": (lambda v: _number(v) and math.isfinite(v) and v >= 0,
                  "a finite number of seconds >= 0"),
    "skipped_steps": (lambda v: isinstance(v, list) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v),
        "a list of steps (integers >= 0)"),
    "history_order": (lambda v: isinstance(v, dict) and set(v) <= {"losses", "trackers"}
                      and all(_names(n) for n in v.values()),
                      "an object of name lists {\"losses\": [...], \"trackers\": [...]}"),
    "stop_reason": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "precision": (lambda v: v in (None, "32-true", "64-true"),
                  "null, \"32-true\" or \"64-true\""),
}


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata of the checkpoint at ``path``; raises ``ValueError`` (counted as damage,
    like an unreadable file) when entries are missing or of the wrong type."""
    with open(os.path.join(path, "metadata", "metadata")) as f:
        metadata = json.load(f)
    if not isinstance(metadata, dict):
        raise ValueError(f"the metadata of {path!r} is a {type(metadata).__name__}, not an "
                         "object")
    for key, (kind, expected) in _METADATA_TYPES.items():
        value = metadata.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"the metadata of {path!r} has {key}={value!r}; expected "
                             f"{expected}")
    if metadata["step"] < 0:
        raise ValueError(f"the metadata of {path!r} has a negative step {metadata['step']}")
    score = metadata.get("score")
    if score is not None and not _number(score):
        raise ValueError(f"the metadata of {path!r} has score={score!r}; expected a number "
                         "or null")
    run_id = metadata.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise ValueError(f"the metadata of {path!r} has run_id={run_id!r}; expected a string")
    for key, (valid, expected) in _OPTIONAL_METADATA.items():
        if key in metadata and not valid(metadata[key]):
            raise ValueError(f"the metadata of {path!r} has {key}={metadata[key]!r}; expected "
                             f"{expected}")
    return metadata


def resolve(ckpt_path: str, checkpoints: list["ModelCheckpoint"]) -> list[str]:
    """Candidate checkpoint directories for ``ckpt_path``, preferred first (empty: none yet).

    ``"last"``: the newest checkpoint of the first ``ModelCheckpoint`` (in its directory, or
    without a given one, in the newest version directory holding checkpoints), then older ones (a
    damaged newest one falls back); none yet warns and starts fresh, so a requeued job runs
    the same command every time. ``"best"``: the best by the ``ModelCheckpoint``'s monitor. A
    path: that step directory, which must exist.
    """
    ckpts = checkpoints
    if ckpt_path in ("last", "best"):
        if not ckpts:
            raise ValueError(f"`ckpt_path={ckpt_path!r}` needs a ModelCheckpoint callback on the "
                             "trainer to know where checkpoints are.")
        cb = ckpts[0]
        paths = []
        for directory in cb.search_dirs():   # the newest run's directory with checkpoints
            paths = [e.path for e in reversed(list_entries(directory, cb.filename))]
            if paths:
                break
        if not paths:
            where = " or ".join(repr(d) for d in cb.search_dirs())
            warn(f"`ckpt_path={ckpt_path!r}`: no checkpoint in {where} yet; training starts "
                 "from step 0.", UserWarning)
            return []
        if ckpt_path == "best":
            return [cb.best_path(paths)]
        return paths
    if not isinstance(ckpt_path, (str, os.PathLike)):
        raise TypeError(f"`ckpt_path` must be None, 'last', 'best' or a checkpoint path, got "
                        f"{ckpt_path!r}.")
    path = os.path.abspath(os.fspath(ckpt_path))
    if not os.path.isdir(os.path.join(path, "metadata")):
        known = [cb.step_path(s) for cb in ckpts for s in cb.all_steps()]
        raise FileNotFoundError(f"`ckpt_path` {path!r} is not a checkpoint; existing "
                                f"checkpoints: {known or 'none'}.")
    return [path]


@dataclass
class Restored:
    """What a checkpoint holds, for the trainer to assign."""

    path: str
    state: "TrainState"
    history: "History"
    callbacks: dict[str, Any]
    checkpoint: dict[str, Any]
    #: newer candidates of ``"last"`` that could not be read (damaged), newest first
    skipped: list[str]


def _read(path: str, target) -> dict[str, Any]:
    """Every item of one checkpoint (raises READ_ERRORS when damaged)."""
    handler = ocp.CompositeCheckpointHandler()
    with ocp.Checkpointer(handler) as ckptr:
        restored = ckptr.restore(path, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), history=ocp.args.StandardRestore(),
            callbacks=ocp.args.JsonRestore(), extra=ocp.args.JsonRestore(),
            metadata=ocp.args.JsonRestore()))
    return dict(restored.items())


class _Unreadable(Exception):
    """A checkpoint that cannot be read; its ``__cause__`` says why."""


@contextlib.contextmanager
def _reading():
    """Reading a checkpoint: what :data:`READ_ERRORS` holds becomes :class:`_Unreadable`."""
    try:
        yield
    except READ_ERRORS as err:
        raise _Unreadable from err


def _load(path: str, problem: "Problem", state_for: Callable[[int, str | None], "TrainState"]
          ) -> dict[str, Any]:
    """Every item of the checkpoint at ``path`` for ``problem`` (see :func:`restore`). What
    the reads raise is :class:`_Unreadable`; the problem's side (``state_for``, its
    fingerprint) raises its own errors, never counted as damage."""
    with _reading():
        metadata = read_metadata(path)
    state = state_for(int(metadata["step"]), metadata.get("precision"))
    current = fingerprint(problem, state)
    with _reading():   # a fingerprint of the wrong shape is damage too
        mismatch = fingerprint_mismatch(metadata["fingerprint"], current)
    if mismatch:
        raise ValueError(f"checkpoint {path!r} does not match this problem; nothing was "
                         f"restored. Differences: {mismatch}")
    with _reading():
        return _read(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, state))


def _denied(err: BaseException) -> bool:
    """``err`` (or an error it was raised from) is a refused permission (``EACCES``,
    ``EPERM``), also as orbax and TensorStore word it in their own exceptions."""
    while err is not None:
        if isinstance(err, PermissionError) or getattr(err, "errno", None) in (errno.EACCES,
                                                                                  errno.EPERM):
            return True
        if "PERMISSION_DENIED" in str(err) or "Permission denied" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _damaged(path: str, err: BaseException, older: list[str]) -> None:
    """Report the checkpoint at ``path`` that ``err`` kept from being read: a refused
    permission is an ``OSError`` (the checkpoint may be intact: it is neither skipped nor ever
    replaced); damage falls back to the next of ``older`` with a warning, or is an error
    when none is left."""
    if _denied(err):
        raise PermissionError(
            errno.EACCES, f"checkpoint {path!r} cannot be read: permission denied "
            f"({type(err).__name__}: {err}). Nothing was restored and the checkpoint is left "
            "as it is; give this user read access to it (or resume another checkpoint with "
            "`ckpt_path=<its path>`).") from err
    if not older:
        raise ValueError(f"checkpoint {path!r} cannot be read ({type(err).__name__}: "
                         f"{err}) and no older valid checkpoint exists.") from err
    warn(f"checkpoint {path!r} is damaged or incomplete ({type(err).__name__}: {err}); "
         f"falling back to {older[0]!r}.", RuntimeWarning)


def restore(ckpt_path: str, checkpoints: list["ModelCheckpoint"], problem: "Problem",
            state_for: Callable[[int, str | None], "TrainState"]) -> Restored | None:
    """Read the checkpoint ``ckpt_path`` names, for a run whose state at a checkpoint of step
    ``s`` written with precision ``p`` (its metadata's ``"precision"``) has the structure of
    ``state_for(s, p)`` (arrays or ``jax.ShapeDtypeStruct`` leaves; the optimizer states
    depend on the step when the optimizer is switched during a run). The state is restored
    in the checkpoint's own dtypes, exactly.

    A checkpoint of another problem or optimizer (the fingerprint differs) is an error listing
    the differences, and nothing is restored. Only a checkpoint that cannot be read (missing or
    truncated files, undecodable contents, metadata of the wrong types) counts as damaged:
    with ``"last"`` the next older one is tried, with a warning. A refused permission is not
    damage: it is raised as a ``PermissionError`` naming the checkpoint, which is left as it
    is. ``None`` when ``"last"``/``"best"`` finds no checkpoint yet.
    """
    candidates = resolve(ckpt_path, checkpoints)
    skipped: list[str] = []
    for i, path in enumerate(candidates):
        try:
            items = _load(path, problem, state_for)
        except _Unreadable as err:
            _damaged(path, err.__cause__, candidates[i + 1:])
            skipped.append(path)
            continue
        checkpoint = {**items["extra"], "metadata": items["metadata"],
                      "callbacks": items["callbacks"], "path": path, "skipped": list(skipped)}
        from jno_flax.trainers import History
        history = History.from_arrays(jax.tree.map(np.asarray, items["history"]),
                                      items["metadata"], run_id=items["metadata"].get("run_id"))
        return Restored(path, items["state"], history,
                        items["callbacks"], checkpoint, skipped)
    return None
