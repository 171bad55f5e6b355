"""Two ``jax.distributed`` processes with 2 CPU devices each, on this machine (gloo
collectives): the same numbers as one process, one preemption step for all, exact resume,
logs from process 0 only, and clear errors where the processes disagree."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "multi_process_run.py"
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp: Path, mode: str, processes: int = 2) -> list[dict]:
    """Run ``processes`` processes of the script in ``mode``; their ``RESULT`` lines. Output
    goes to files: a full pipe would block a process's logging threads (JAX's preemption
    notifier among them)."""
    port = str(_free_port())
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    tmp.mkdir(parents=True, exist_ok=True)
    logs = [(open(tmp / f"{mode}.{i}.out", "w+"), open(tmp / f"{mode}.{i}.err", "w+"))
            for i in range(processes)]
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(i), str(processes), port,
                               str(tmp), mode], stdout=out, stderr=err, text=True, env=env)
             for i, (out, err) in enumerate(logs)]
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT)
    finally:
        for p in procs:
            p.kill()
    outputs = []
    for out, err in logs:
        with out, err:
            out.seek(0), err.seek(0)
            outputs.append((out.read(), err.read()))
    results = []
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert lines, (out[-2000:], err[-4000:])
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return results


def _events(tmp: Path) -> list[Path]:
    return sorted((tmp / "logs").rglob("events.out.tfevents.*"))


def _params(tmp: Path) -> dict[str, np.ndarray]:
    with np.load(tmp / "params.npz") as f:
        return {k: f[k] for k in f.files}


def test_two_processes_agree_log_once_and_refuse_what_differs(tmp_path):
    """One launch of two processes, eight fits:

    * points drawn differently on process 1 are refused on both (not a hang);
    * an exception in process 1's ``on_fit_start`` stops both, and process 0 names it;
    * 20 steps on 1001 + 201 points (not divisible by the 4 devices) give the same History
      on both, checkpoints, and event files written by process 0 only;
    * a ``ckpt_path`` that only process 0 can read is refused on both;
    * a different ``overlap_callbacks``, ``max_record_bytes``, learning rate, a schedule
      that differs only from step 31 on, an ``EarlyStopping`` patience, a RAD exponent or one
      more callback on process 1 is refused on both, naming the setting, within 120 s;
    * mini-batches and RAR-D growth (100 points added before step 10: a chunk boundary and
      a new point count) train alike on both;
    * a stop that only process 0's callback decides ends both after the same step.
    """
    p0, p1 = _launch(tmp_path, "checks")
    for r in (p0, p1):
        assert r["differ"].startswith("ValueError: the 2 processes built different runs: the "
                                      "points of process(es) [1] differ from process 0's")
        assert "initial state" not in r["differ"]  # same network seed: only the points differ
        assert r["ckpt"].startswith(f"FileNotFoundError: `ckpt_path` '{tmp_path}/")
        assert "can be read by process(es) [0] but not by [1]" in r["ckpt"]
    for key, setting in (("overlap", "setting `overlap_callbacks`"),
                         ("record", "setting `max_record_bytes`"),
                         ("lr", "optimizers (their updates on a probe problem)"),
                         ("schedule", "optimizers (their updates on a probe problem)"),
                         ("patience", "settings of callback `EarlyStopping[loss]`"),
                         ("rad_k", "settings of callback `ResamplePoints[interior:rad/10]`")):
        for r in (p0, p1):
            assert r[key] == (f"ValueError: the 2 processes built different runs: the {setting} "
                              "of process(es) [1] differ from process 0's. Every process must "
                              "build the same problem (same seeds, points, networks, constraints "
                              "and trackers) and the same Trainer (every setting), optimizers "
                              "and callbacks."), (key, r[key])
    for r in (p0, p1):
        assert r["count"].startswith("ValueError: the 2 processes built different runs: the "
                                     "callbacks of process(es) [1] differ from process 0's "
                                     "(here: ["), r["count"]
    assert "EarlyStopping[loss]" in p1["count"] and "EarlyStopping" not in p0["count"]
    assert p0["settings_seconds"] < 120
    assert p1["fail"].startswith("ValueError: ModelCheckpoint `monitor` 'missing'")
    assert p0["fail"].startswith("RuntimeError: process 1 failed while `fit` started "
                                 "(ValueError: ModelCheckpoint `monitor` 'missing'")
    t0, t1 = p0["train"], p1["train"]
    assert t0["error"] is None and t1["error"] is None
    assert t0["losses"] == t1["losses"] and len(t0["losses"]) == 20
    assert t0["err"] == t1["err"] and len(t0["err"]) == 2
    assert t0["saved"] == t1["saved"] == 20
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["10", "20"]
    events = _events(tmp_path)
    assert len(events) == 1, events  # one fit trained; process 1 wrote nothing
    assert f".{p0['pid']}." in events[0].name
    assert p0["moving"] == p1["moving"]
    assert p0["moving"]["points"] == 1001 + 100 and len(p0["moving"]["losses"]) == 20
    # a stop one process decides ends the chunk at its step on every process
    assert p0["split_stop"] == p1["split_stop"] and p0["split_stop"]["step"] == 5


@pytest.mark.slow
def test_preempted_processes_save_one_step_and_resume_bit_identically(tmp_path):
    """200 steps, checkpoints every 50, chunks of 10. SIGTERM to process 1 alone at step 120:
    both processes stop and save at the same step (JAX's preemption sync point) and exit 0;
    both restart with ``ckpt_path="last"``; the final parameters equal the uninterrupted
    two-process run bit for bit, and a one-process run within rtol 1e-5; every event file
    comes from process 0."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    a0, a1 = _launch(full, "full")
    assert a0["train"]["losses"] == a1["train"]["losses"]
    b0, b1 = _launch(cut, "preempt")
    for r in (b0, b1):
        assert r["train"]["exit"] == 0 and "SIGTERM (preemption)" in r["train"]["stop_reason"]
    step = b0["train"]["saved"]
    assert b1["train"]["saved"] == step == b0["train"]["step"] == b1["train"]["step"]
    assert 120 <= step < 200 and step % 10 == 0, step
    assert max(int(s) for s in os.listdir(cut / "ckpt")) == step
    c0, c1 = _launch(cut, "resume")
    assert c0["train"]["step"] == c1["train"]["step"] == 200
    assert c0["train"]["losses"] == a0["train"]["losses"]  # the History resumes too
    resumed, uninterrupted = _params(cut), _params(full)
    for k in uninterrupted:
        np.testing.assert_array_equal(resumed[k], uninterrupted[k], err_msg=k)
    (one,) = _launch(tmp_path / "one", "full", processes=1)
    np.testing.assert_allclose(a0["train"]["losses"], one["train"]["losses"], rtol=1e-5)
    single = _params(tmp_path / "one")
    for k in single:  # relative to each array's scale: near-zero entries differ by round-off
        scale = np.abs(single[k]).max()
        np.testing.assert_allclose(uninterrupted[k], single[k], rtol=0, atol=1e-5 * scale,
                                   err_msg=k)
    pids = {a0["pid"], b0["pid"], c0["pid"]}
    events = _events(full) + _events(cut)
    assert len(events) == 3, events
    assert {int(e.name.split(".")[-2]) for e in events} == pids
