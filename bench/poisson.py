"""Steady training speed on the reference 2-D Poisson problem, side by side in one process.

Problem: -Δu = 2π² sin(πx) sin(πy) on the unit square, u = 0 on the boundary; 1000 interior +
200 boundary random points; MLP 2-64-64-64-1 tanh; adam(1e-3); float32.

Runners (each advances its own copy of the problem by one chunk of ``--chunk`` steps per
round; rounds alternate the runners so that machine noise hits all of them alike):

* ``hand``: a hand-written ``jax.jit`` + ``lax.scan`` loop, Laplacian by
  ``folx.forward_laplacian`` on an unbatched point (the fastest found);
* ``jno``: ``jno_flax`` with the same network, points and optimizer;
* ``jno+tracker100``, ``jno+tracker1``: with a scalar tracker every 100 / every step;
  ``jno+tracker1_rebuilt``: the every-step tracker builds ``u_net(x, y)`` anew (structurally
  the same expression, so it costs what ``jno+tracker1`` costs);
* ``jno+tensorboard``: with ``TensorBoardLogger`` writing every 100 steps; ``jno+csv``: with
  ``CSVLogger``; ``jno+sleep``: a callback spending 0.2 s of host time (``time.sleep``) per
  chunk, overlapped with the next chunk; ``jno+sleep_sync``: the same with
  ``overlap_callbacks=False`` (host work on the critical path);
* ``jno+resample100_nested``, ``jno+resample100_flat``: RAD resampling every 100 steps and a
  tracker every 100, in the nested layout (both at block starts, no ``lax.cond``) and the
  flat one (a per-step ``lax.cond`` each; ``jno+resample100``: the backend's default);
* ``jno+earlystop``: an ``EarlyStopping`` that never fires (the copy of each chunk's first
  state an exact stop needs);
* ``jno+relobralo``: ReLoBRaLo weights; ``jno+lr_annealing``, ``jno+ntk``: gradient-norm and
  NTK weights refreshed every 100 steps; ``jno+checkpoint``: an orbax checkpoint every 1000
  steps.

Prints steady steps/s (median over rounds after the first), the ratio to ``hand``, the
compile time of each runner's first chunk, and the peak RSS of the process.

Each round above is a separate ``fit`` call, so callbacks with per-``fit`` work (opening a
TensorBoard writer, waiting for an asynchronous checkpoint at the end of ``fit``) pay it every
round. ``--in-fit`` measures them as they run in practice: one long ``fit`` per variant, chunk
times taken by a callback, variants repeated in ABAB order; ratios are against ``jno``.

    python bench/poisson.py --rounds 5 --runners hand,jno
    python bench/poisson.py --in-fit jno+tensorboard,jno+checkpoint
    python bench/poisson.py --in-fit jno+sleep,jno+sleep_sync --chunk 200
    python bench/poisson.py --in-fit jno+sleep,jno+sleep_sync --chunk 200 --depth 12  # 60+ leaves
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import folx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _hand import alternate, scan_runner
from flax import nnx

import jno_flax as jno
import jno_flax.numpy as jnn
from jno_flax.callbacks import Callback
from jno_flax.trainers import Trainer

PI = float(np.pi)


def make_domain():
    return jno.domain.rect((0, 1), (0, 1), n_interior=1000, n_boundary=200, seed=0)


#: hidden layers of the network (``--depth``; 28 gives a state of over 60 leaves)
DEPTH = 3


def make_net():
    return jno.nn.MLP(2, 1, hidden=64, depth=DEPTH, rngs=nnx.Rngs(0))


def hand_runner(chunk: int):
    dom = make_domain()
    xi = jnp.asarray(dom.points("interior"), jnp.float32)
    xb = jnp.asarray(dom.points("boundary"), jnp.float32)
    graphdef, params = nnx.split(make_net())
    tx = optax.adam(1e-3)
    source = 2 * PI**2 * jnp.sin(PI * xi[:, 0]) * jnp.sin(PI * xi[:, 1])

    def loss(params):
        net = nnx.merge(graphdef, params)
        lap = jax.vmap(lambda p: folx.forward_laplacian(net)(p).laplacian)(xi)
        return jnp.mean((lap[:, 0] + source) ** 2) + jnp.mean(jax.vmap(net)(xb) ** 2)

    return scan_runner(loss, params, tx, chunk)


def jno_runner(chunk: int, variant: str, clock=None, steps: int | None = None):
    dom = make_domain()
    x, y = dom.variable("interior")
    xb, yb = dom.variable("boundary")
    net = jno.nn.wrap(make_net(), name="u").optimizer(optax.adam(1e-3))
    u = net(x, y)
    u_exact = jnn.sin(PI * x) * jnn.sin(PI * y)
    pde = u.laplacian(x, y) + 2 * PI**2 * u_exact
    items = [pde.mse, net(xb, yb).mse]
    callbacks = []
    logger = False
    if variant in ("relobralo", "lr_annealing", "ntk"):
        scheme = getattr(jno.adaptive, variant)
        kwargs = {} if variant == "relobralo" else {"period": 100}
        w = scheme(items, **kwargs)
        items = [w[0] * items[0], w[1] * items[1]]
    if variant == "tracker100":
        items.append(jnn.tracker(jnn.mean(jnn.abs(u - u_exact)), interval=100))
    elif variant == "tracker1":
        items.append(jnn.tracker(jnn.mean(jnn.abs(u - u_exact)), interval=1))
    elif variant == "tracker1_rebuilt":  # the tracker builds its own u_net(x, y) and u_exact
        u_again = net(x, y) - jnn.sin(PI * x) * jnn.sin(PI * y)
        items.append(jnn.tracker(jnn.mean(jnn.abs(u_again)), interval=1))
    elif variant == "checkpoint":
        from jno_flax.callbacks import ModelCheckpoint
        callbacks.append(ModelCheckpoint(tempfile.mkdtemp(prefix="jno_bench_ckpt_"),
                                         every_n_train_steps=1000))
    elif variant == "tensorboard":
        from jno_flax.callbacks import TensorBoardLogger
        logger = TensorBoardLogger(tempfile.mkdtemp(prefix="jno_bench_tb_"))
    elif variant == "csv":
        from jno_flax.callbacks import CSVLogger
        logger = CSVLogger(tempfile.mkdtemp(prefix="jno_bench_csv_"))
    elif variant in ("sleep", "sleep_sync"):
        callbacks.append(HostWork(0.2))
    elif variant.startswith("resample100"):  # RAD every 100 steps + a tracker every 100
        from jno_flax.callbacks import ResamplePoints
        items.append(jnn.tracker(jnn.mean(jnn.abs(u - u_exact)), interval=100))
        callbacks.append(ResamplePoints(pde, every_n_train_steps=100, strategy="rad"))
    elif variant == "earlystop":  # never stops: what being ready for an exact stop costs
        from jno_flax.callbacks import EarlyStopping
        callbacks.append(EarlyStopping(patience=10**9))
    crux = jno.core(items)
    if clock is not None:
        callbacks.append(clock)
    trainer = Trainer(max_steps=chunk, chunk_size=chunk, callbacks=callbacks, logger=logger,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False,
                      log_every_n_steps=100, overlap_callbacks=variant != "sleep_sync",
                      nested_intervals={"resample100_nested": True,
                                        "resample100_flat": False}.get(variant))
    if steps is not None:
        def run_all():
            trainer.max_steps = steps
            trainer.fit(crux)
            return clock
        return run_all

    def step():
        trainer.max_steps = crux.global_step + chunk
        history = trainer.fit(crux)
        return float(history.total_loss[-1])
    return step


class HostWork(Callback):
    """Spends ``seconds`` of host time after every chunk (a stand-in for plotting, logging)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_chunk_end(self, trainer, problem, chunk):
        time.sleep(self.seconds)


class ChunkClock(Callback):
    """Records the wall time at the end of every chunk."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_chunk_end(self, trainer, problem, chunk):
        self.times.append(time.perf_counter())


def in_fit(variants: list[str], chunk: int, rounds: int) -> None:
    """Steady steps/s inside one long ``fit`` per variant (ABAB order, two repetitions)."""
    rates: dict[str, list[float]] = {v: [] for v in ["jno"] + variants}
    for _ in range(2):
        for name in rates:
            step = jno_runner(chunk, name.partition("+")[2] or "plain", clock=ChunkClock(),
                              steps=(rounds + 1) * chunk)
            clock = step()
            rates[name].append(chunk / statistics.median(np.diff(clock.times)))
    base = statistics.median(rates["jno"])
    for name, r in rates.items():
        rate = statistics.median(r)
        print(f"in-fit {name:18s} {rate:8.1f} steps/s  {rate / base:6.3f}x jno")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--runners", default="hand,jno,jno+tracker100,jno+tracker1,jno+tensorboard")
    ap.add_argument("--in-fit", default="", help="variants to time inside one long fit")
    ap.add_argument("--depth", type=int, default=3, help="hidden layers of the MLP")
    args = ap.parse_args()
    global DEPTH
    DEPTH = args.depth
    if args.in_fit:
        in_fit(args.in_fit.split(","), args.chunk, args.rounds)
        return
    names = args.runners.split(",")
    runners = {}
    for name in names:
        runners[name] = (hand_runner(args.chunk) if name == "hand"
                         else jno_runner(args.chunk, name.partition("+")[2] or "plain"))
    rates, first, final = alternate(runners, args.rounds, args.chunk)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"chunk={args.chunk}, rounds={args.rounds}")
    base = None
    for name in names:
        rate = rates[name]
        base = rate if name == "hand" else base
        ratio = f"{rate / base:6.3f}x hand" if base else ""
        print(f"{name:18s} {rate:8.1f} steps/s  {ratio}  first chunk (compile+run) "
              f"{first[name]:6.2f} s  -> compile ~{first[name] - args.chunk / rate:5.2f} s  "
              f"final loss {final[name]:.3e}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
