"""What a checkpoint costs as the History grows, on the reference Poisson problem.

For a History of ``S`` steps (losses of every step and a tracker every 100 steps), prints the
time ``ModelCheckpoint.save`` blocks the training loop (the asynchronous write goes on in the
background), the time until the write is complete, the checkpoint's size on disk, and the
blocking time as a fraction of one 1000-step chunk measured in the same process.

    python bench/checkpoint.py --history 10000,100000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from _reference import reference_poisson

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import ModelCheckpoint
from jno_flax.trainers import History, Trainer

PI = float(np.pi)


def build():
    ref = reference_poisson()
    err = jnn.tracker(jnn.mean(jnn.abs(ref.u - ref.u_exact)), 100, name="err")
    return jno.core([ref.pde.mse.name("pde"), ref.bc.mse.name("bc"), err])


def du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--history", default="10000,100000")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    crux = build()
    trainer = Trainer(max_steps=1000, enable_progress_bar=False, logger=False,
                      enable_model_summary=False,
                      enable_checkpointing=False)
    trainer.fit(crux)                                    # compile
    trainer.max_steps = 2000
    t0 = time.perf_counter()
    trainer.fit(crux)
    chunk = time.perf_counter() - t0                     # one 1000-step chunk (one fit)
    print(f"one 1000-step chunk: {chunk * 1e3:.0f} ms")
    for n in (int(s) for s in args.history.split(",")):
        history = History(list(crux.constraints))
        steps = np.arange(n)
        history.record_steps(steps, np.random.rand(n).astype(np.float32),
                             {k: np.random.rand(n).astype(np.float32) for k in crux.constraints})
        history.record_values("err", steps[::100], np.random.rand(len(steps[::100])))
        trainer.history = history
        blocking, total = [], []
        with tempfile.TemporaryDirectory() as tmp:
            cb = ModelCheckpoint(tmp, save_top_k=-1)
            cb.setup(trainer, crux, "fit")
            for r in range(args.repeats):
                trainer.state = trainer.state.replace(step=trainer.state.step + 1)
                t0 = time.perf_counter()
                cb.save(trainer, crux)
                blocking.append(time.perf_counter() - t0)
                cb.wait()
                total.append(time.perf_counter() - t0)
            size = du(cb.last_model_path)
            cb.close()
        b, t = np.median(blocking), np.median(total)
        print(f"History of {n:7d} steps: save blocks {b * 1e3:6.1f} ms ({b / chunk:6.2%} of a "
              f"1000-step chunk), complete after {t * 1e3:6.1f} ms, {size / 2**20:5.2f} MiB")


if __name__ == "__main__":
    main()
