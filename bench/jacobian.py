"""Parameter-Jacobian cost on the reference Poisson problem (1000 + 200 points, 8577 params).

1. One evaluation of ``mean(u.grad(net)**2)`` and of ``pde.grad(net)`` (the Jacobian through
   the Laplacian, ``(1, 1000, 8577)``): compile time, steady time and peak RSS, each measured in
   a fresh subprocess so that the RSS belongs to that evaluation alone.
2. Training speed with a masked output-layer Jacobian tracker every 50 steps, against the same
   problem without it, alternating chunks in one process (ratio of steady steps/s).

    python bench/jacobian.py
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from _hand import alternate, fit_runner
from _reference import reference_poisson
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn

PI = float(jnp.pi)


def build():
    ref = reference_poisson()
    return ref.net, ref.u, ref.pde, [ref.pde.mse, ref.bc.mse]


def one_evaluation(which: str) -> dict:
    net, u, pde, losses = build()
    crux = jno.core(losses)
    expr = jnn.mean(u.grad(net) ** 2) if which == "mean(J**2)" else pde.grad(net)
    t0 = time.perf_counter()
    jax.block_until_ready(crux.eval(expr))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(crux.eval(expr))
        runs.append(time.perf_counter() - t0)
    return {"expr": which, "shape": list(expr.value_shape), "first_s": first,
            "steady_s": statistics.median(runs),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def tracker_overhead(rounds: int = 4, chunk: int = 1000) -> dict:
    runners = {}
    for name in ("plain", "masked-J every 50"):
        net, u, pde, losses = build()
        items = list(losses)
        if name != "plain":
            J_out = u.grad(net.mask(nnx.PathContains("output_layer")))
            items.append(jnn.tracker(jnn.mean(J_out**2), interval=50, name="J_out"))
        runners[name] = fit_runner(jno.core(items), chunk)
    rates, _, _ = alternate(runners, rounds, chunk)
    return {"steps_per_s": rates, "ratio": rates["masked-J every 50"] / rates["plain"]}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one_evaluation(sys.argv[2])))
        return
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    for which in ("mean(J**2)", "pde.grad(net)"):
        out = subprocess.run([sys.executable, __file__, "--one", which], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['expr']:14s} shape {tuple(r['shape'])}: first (compile+run) "
              f"{r['first_s']:.2f} s, steady {r['steady_s'] * 1e3:.1f} ms, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    o = tracker_overhead()
    rates = ", ".join(f"{k} {v:.1f} steps/s" for k, v in o["steps_per_s"].items())
    print(f"training: {rates}; ratio {o['ratio']:.3f} (cost {100 * (1 - o['ratio']):.1f} %)")


if __name__ == "__main__":
    main()
