"""The record of a training run: every step's losses and every tracked quantity."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jno_flax._warnings import warn

if TYPE_CHECKING:  # pragma: no cover
    from jno_flax.callbacks import ChunkMetrics


@dataclass
class Series:
    """Values of one tracked quantity with the true step index of each value.

    Attributes:
        steps: ``(K,)`` int array of the steps at which the value was recorded.
        values: ``(K, *shape)`` array.
    """

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


class _Column:
    """An append-only column stored as chunks, concatenated on read."""

    def __init__(self):
        self._parts: list[np.ndarray] = []
        self._joined: np.ndarray | None = None

    def append(self, values: np.ndarray) -> None:
        self._parts.append(np.asarray(values))
        self._joined = None

    def array(self) -> np.ndarray:
        if self._joined is None:
            self._joined = (np.concatenate(self._parts) if self._parts
                            else np.zeros((0,), np.float32))
            self._parts = [self._joined] if self._parts else []
        return self._joined


class History:
    """Steps, total loss, per-constraint losses and tracked quantities of all training so far.

    Attributes:
        steps: ``(S,)`` every step run, in order.
        total_loss: ``(S,)`` total loss of each step.
        losses: ``{constraint name: (S,)}``.
        trackers: ``{name: Series}`` for trackers and other in-graph quantities.
        wall_time: seconds spent in ``fit`` (compilation included).
        stop_reason: why the last ``fit`` stopped early, if it did.
        run_id: the run this History records (a new ``Trainer`` run gets a new one; continued
            and resumed fits keep it). Every checkpoint of the run carries it, so a
            checkpoint directory knows which run wrote what.
        skipped_steps: ``(K,)`` the steps whose loss or update was not finite and that were
            therefore not applied (see :class:`~jno_flax.trainers.Trainer`).
    """

    def __init__(self, constraint_names: list[str], run_id: str | None = None):
        self._steps = _Column()
        self._total = _Column()
        self._losses = {name: _Column() for name in constraint_names}
        self._trackers: dict[str, tuple[_Column, _Column]] = {}
        self._skipped = _Column()
        self.wall_time = 0.0
        self.stop_reason: str | None = None
        self.run_id = run_id

    # ------------------------------------------------------------------ writing
    def record_steps(self, steps: np.ndarray, total: np.ndarray,
                     losses: dict[str, np.ndarray]) -> None:
        if losses.keys() != self._losses.keys():
            raise ValueError(f"losses {sorted(losses)} do not match the history's constraints "
                             f"{sorted(self._losses)}.")
        self._steps.append(steps)
        self._total.append(total)
        for name, col in self._losses.items():
            col.append(losses[name])

    def record_chunk(self, chunk: "ChunkMetrics") -> None:
        """Append a chunk's records: losses, skipped steps and in-graph quantities."""
        self.record_steps(chunk.steps, chunk.loss, chunk.losses)
        self.record_skipped(chunk.skipped)
        for name, (at, v) in chunk.trackers.items():
            self.record_values(name, at, v)

    def warn_skipped(self, since: int = 0) -> None:
        """Warn about the skipped steps from the ``since``-th on (a fit's: non-finite loss or
        update, not applied)."""
        skipped = self.skipped_steps[since:]
        if len(skipped):
            warn(f"{len(skipped)} step(s) of this fit had a non-finite loss or update and were "
                 f"not applied (first: step {int(skipped[0])}); every trainable kept its values "
                 "on those steps. See `history.skipped_steps`, and `TerminateOnNaN` to stop at "
                 "the first.", RuntimeWarning)

    def record_skipped(self, steps: np.ndarray) -> None:
        """Note steps that were not applied (non-finite loss or update)."""
        if len(steps):
            self._skipped.append(np.asarray(steps, np.int64))

    def record_values(self, name: str, steps: np.ndarray, values: np.ndarray) -> None:
        if len(steps) == 0:
            return
        steps_col, values_col = self._trackers.setdefault(name, (_Column(), _Column()))
        steps_col.append(steps)
        values_col.append(values)

    # ------------------------------------------------------------------ reading
    @property
    def steps(self) -> np.ndarray:
        return self._steps.array()

    @property
    def total_loss(self) -> np.ndarray:
        return self._total.array()

    @property
    def skipped_steps(self) -> np.ndarray:
        return self._skipped.array().astype(np.int64)

    @property
    def losses(self) -> dict[str, np.ndarray]:
        return {name: col.array() for name, col in self._losses.items()}

    @property
    def trackers(self) -> dict[str, Series]:
        return {name: Series(s.array(), v.array()) for name, (s, v) in self._trackers.items()}

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        last = f", final loss {self.total_loss[-1]:.4g}" if len(self) else ""
        return (f"<History {len(self)} steps{last}, losses={list(self._losses)}, "
                f"trackers={list(self._trackers)}>")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of numpy arrays (and the wall time)."""
        arrays, meta = self.to_arrays()
        return {**arrays, "skipped_steps": self.skipped_steps, "wall_time": self.wall_time,
                "stop_reason": self.stop_reason, "run_id": self.run_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        h = cls(list(data["losses"]), run_id=data.get("run_id"))
        if len(data["steps"]):
            h.record_steps(np.asarray(data["steps"]), np.asarray(data["total_loss"]),
                           {k: np.asarray(v) for k, v in data["losses"].items()})
        for name, s in data["trackers"].items():
            h.record_values(name, np.asarray(s["steps"]), np.asarray(s["values"]))
        h.record_skipped(np.asarray(data.get("skipped_steps", []), np.int64))
        h.wall_time = float(data["wall_time"])
        h.stop_reason = data.get("stop_reason")
        return h

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The History as ``(arrays, meta)``: the non-empty series as a pytree of arrays
        (``steps``, ``total_loss``, ``losses``, ``trackers``) and the rest as JSON-able values
        (the skipped steps, often none, the wall time, the stop reason and the order of the
        names). The one serialisation, for checkpoints and :meth:`save`."""
        d = {"steps": self.steps, "total_loss": self.total_loss, "losses": self.losses,
             "trackers": {k: {"steps": s.steps, "values": s.values}
                          for k, s in self.trackers.items()}}
        meta = {"wall_time": self.wall_time, "stop_reason": self.stop_reason,
                "skipped_steps": self.skipped_steps.tolist(),
                "history_order": {"losses": list(d["losses"]), "trackers": list(d["trackers"])}}
        return d, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], meta: dict[str, Any],
                    run_id: str | None = None) -> "History":
        """The History :meth:`to_arrays` described (names in their recorded order, whatever
        order a reader returns the dicts in)."""
        arrays = {k: (np.asarray(v) if not isinstance(v, dict) else v) for k, v in arrays.items()}
        order = meta.get("history_order", {})
        losses, trackers = arrays.get("losses", {}), arrays.get("trackers", {})
        losses = {k: losses[k] for k in order.get("losses", []) if k in losses} | losses
        trackers = {k: trackers[k] for k in order.get("trackers", []) if k in trackers} | trackers
        return cls.from_dict({"steps": arrays["steps"], "total_loss": arrays["total_loss"],
                              "losses": losses, "trackers": trackers,
                              "skipped_steps": meta.get("skipped_steps", []),
                              "wall_time": meta.get("wall_time", 0.0),
                              "stop_reason": meta.get("stop_reason"), "run_id": run_id})

    def save(self, path: str | os.PathLike) -> str:
        """Write the History to one ``.npz`` file (no pickling); returns the path written.

        ``History.load(path)`` reads it back equal (``np.load`` reads it without jno_flax:
        ``steps``, ``total_loss``, ``skipped_steps``, ``loss_<i>``,
        ``tracker_<i>_steps``/``_values``, and the JSON string ``meta`` with the names in
        ``history_order``)."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        arrays, meta = self.to_arrays()
        flat = {"steps": arrays["steps"], "total_loss": arrays["total_loss"],
                "skipped_steps": self.skipped_steps}
        for i, values in enumerate(arrays["losses"].values()):
            flat[f"loss_{i}"] = values
        for i, series in enumerate(arrays["trackers"].values()):
            flat[f"tracker_{i}_steps"] = series["steps"]
            flat[f"tracker_{i}_values"] = series["values"]
        meta = {**meta, "run_id": self.run_id}
        np.savez(path, meta=np.asarray(json.dumps(meta)), **flat)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        """The History that :meth:`save` wrote to ``path``."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`path` {path!r} is not a file; History.load reads the "
                                    "`.npz` file written by History.save.")
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data:
                raise ValueError(f"`path` {path!r} is an .npz file but not a saved History "
                                 f"(no `meta` entry; entries: {sorted(data)}).")
            meta = json.loads(str(data["meta"]))
            order = meta.get("history_order", meta)   # files of earlier versions: top level
            arrays = {"steps": data["steps"], "total_loss": data["total_loss"],
                      "losses": {n: data[f"loss_{i}"] for i, n in enumerate(order["losses"])},
                      "trackers": {n: {"steps": data[f"tracker_{i}_steps"],
                                       "values": data[f"tracker_{i}_values"]}
                                   for i, n in enumerate(order["trackers"])}}
            if "skipped_steps" in data:
                meta = {**meta, "skipped_steps": data["skipped_steps"].tolist()}
            return cls.from_arrays(arrays, meta, run_id=meta.get("run_id"))

    @staticmethod
    def new_run_id() -> str:
        """A fresh run id (random, 16 hex digits)."""
        return uuid.uuid4().hex[:16]

    def plot(self, path: str | None = None):
        """A matplotlib figure: losses (log scale) and scalar trackers over steps.

        Args:
            path: when given, the figure is also saved there (PNG by extension).
        """
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        scalars = {k: s for k, s in self.trackers.items() if s.values.ndim == 1}
        ncols = 2 if scalars else 1
        fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
        ax = axes[0, 0]
        ax.semilogy(self.steps, self.total_loss, label="total", color="k")
        for name, values in self.losses.items():
            ax.semilogy(self.steps, values, label=name, alpha=0.7)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        if scalars:
            ax = axes[0, 1]
            for name, s in scalars.items():
                ax.plot(s.steps, s.values, marker=".", label=name)
            ax.set_xlabel("step")
            ax.set_ylabel("tracked value")
            ax.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig
