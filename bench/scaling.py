"""Steps/s and points·steps/s against the number of collocation points, on 1, 2 and 4 devices.

The reference Poisson problem (``bench/_reference.py``: 2-64x3-1 tanh MLP) with ``N`` interior and
``N / 5`` boundary points, trained in fused chunks by ``Trainer(devices=d)``. Each device count
runs in its own process (on CPU, ``--xla_force_host_platform_device_count=d`` splits the host
into ``d`` devices: a check of correctness and overhead, not of speed-up, since they share the
same cores). On an accelerator host, ``--devices`` lists real device counts.

    python bench/scaling.py                                    # N = 1k ... 256k; 1, 2, 4 devices
    python bench/scaling.py --sizes 1000,16000 --devices 1,4 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(sizes: list[int], steps: int, devices: int) -> list[dict]:
    import jno_flax as jno
    from jno_flax.trainers import Trainer
    from _reference import reference_poisson

    rows = []
    for n in sizes:
        n_boundary = max(n // 5, 4)
        ref = reference_poisson(n_interior=n, n_boundary=n_boundary)
        crux = jno.core([ref.pde.mse, ref.bc.mse])
        trainer = Trainer(max_steps=steps, chunk_size=steps, devices=devices, logger=False,
                          enable_progress_bar=False, enable_model_summary=False,
                          enable_checkpointing=False)
        trainer.fit(crux)  # compiles, runs one chunk
        t0 = time.perf_counter()
        trainer.max_steps += steps
        trainer.fit(crux)
        rate = steps / (time.perf_counter() - t0)
        rows.append({"devices": devices, "n": n, "steps_per_s": rate,
                     "points_steps_per_s": rate * (n + n_boundary)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,4000,16000,64000,256000")
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(measure(sizes, args.steps, args.child)))
        return
    import jax
    backend = jax.default_backend()
    print(f"backend: {backend}; {args.steps} timed steps per size")
    print(f"{'devices':>7s} {'N':>8s} {'steps/s':>9s} {'points·steps/s':>15s}")
    for d in [int(s) for s in args.devices.split(",")]:
        env = dict(os.environ)
        if backend == "cpu":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={d}"
        out = subprocess.run([sys.executable, __file__, "--sizes", args.sizes, "--steps",
                              str(args.steps), "--child", str(d)], env=env, check=True,
                             capture_output=True, text=True).stdout
        for row in json.loads(out.strip().splitlines()[-1]):
            print(f"{row['devices']:7d} {row['n']:8d} {row['steps_per_s']:9.2f} "
                  f"{row['points_steps_per_s']:15.3e}", flush=True)


if __name__ == "__main__":
    main()
